"""`fedrank broker-config` against a real Mosquitto, with a CA, server and client certificates made here.

The broker runs the generated configuration unchanged and as in production: started as root (when the tests
are), it drops to user `mosquitto` before reading the ACL and the server key, so the files must be laid out as
the generated README says (conf and ACL 0644, server key 0640 group mosquitto, data dir owned by mosquitto).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedrank import broker_config
from proto.topics import Role, Topics
from tests.mosquitto import broker_dir, broker_user, give_to_broker, share_with_broker

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]
T = Topics()
NOT_AUTHORIZED = 135


def _binary() -> str | None:
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)


# -- a CA made in the test ----------------------------------------------------------------------
def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_pem(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _cert(cn: str, key, issuer_key, issuer_name: x509.Name | None, ca: bool = False, server: bool = False):
    now = dt.datetime.now(dt.timezone.utc)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    b = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    if server:
        b = b.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


@dataclass
class Pki:
    dir: Path

    def pair(self, name: str) -> tuple[str, str]:
        return str(self.dir / f"{name}.crt"), str(self.dir / f"{name}.key")

    @property
    def ca(self) -> str:
        return str(self.dir / "ca.crt")


def make_pki(d: Path, clients: list[str]) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca = _cert("fedrank-test-ca", ca_key, ca_key, None, ca=True)
    _write_pem(d / "ca", ca_key, ca)
    srv_key = _key()
    _write_pem(d / "server", srv_key, _cert("localhost", srv_key, ca_key, ca.subject, server=True))
    for cn in clients:
        k = _key()
        _write_pem(d / cn, k, _cert(cn, k, ca_key, ca.subject))
    share_with_broker(d / "server.key")
    # A certificate for "veh-1" from a CA the broker does not trust.
    rogue_ca_key = _key()
    rogue_ca = _cert("rogue-ca", rogue_ca_key, rogue_ca_key, None, ca=True)
    k = _key()
    _write_pem(d / "rogue-veh-1", k, _cert("veh-1", k, rogue_ca_key, rogue_ca.subject))
    return Pki(d)


# -- the broker -----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Broker:
    port: int
    pki: Pki
    proc: subprocess.Popen[bytes]
    conf_dir: Path


def _start_broker(tmp: Path, pki: Pki, extra_args: list[str]) -> Broker:
    binary = _binary()
    if binary is None:
        pytest.skip("mosquitto not on PATH or at /usr/sbin/mosquitto (run `make mosquitto`)")
    port = _free_port()
    conf_dir = tmp / "broker"
    (tmp / "data").mkdir(exist_ok=True)
    give_to_broker(tmp / "data")  # as the README's `install -d -o mosquitto ...`
    argv = ["--out", str(conf_dir), "--tls", "--port", str(port), "--bind", "127.0.0.1",
            "--install-dir", str(conf_dir), "--cert-dir", str(pki.dir), "--data-dir", str(tmp / "data"),
            "--rsus", "rsu-1", "--cloud", "cloud-1", *extra_args]
    parser = argparse.ArgumentParser()
    broker_config.add_arguments(parser)
    assert broker_config.run(parser.parse_args(argv)) == 0
    conf = conf_dir / "mosquitto.conf"
    log = open(tmp / "mosquitto.log", "wb")  # noqa: SIM115 (closed with the process below)
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"mosquitto exited: {(tmp / 'mosquitto.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
        except OSError:
            time.sleep(0.05)
    return Broker(port, pki, proc, conf_dir)


def _stop(b: Broker) -> None:
    b.proc.terminate()
    try:
        b.proc.wait(10)
    except subprocess.TimeoutExpired:
        b.proc.kill()
        b.proc.wait()


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    d = broker_dir("fedrank-pki-")
    yield make_pki(d, ["veh-1", "veh-2", "rsu-1", "cloud-1", "mon-1"])
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tmp_broker_dir() -> Iterator[Path]:
    """Like tmp_path, but readable by the broker after its privilege drop."""
    d = broker_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def broker(pki: Pki) -> Iterator[Broker]:
    d = broker_dir()
    b = _start_broker(d, pki, ["--monitor", "mon-1"])
    yield b
    _stop(b)
    shutil.rmtree(d, ignore_errors=True)


# -- raw paho clients ----------------------------------------------------------------------------
class Client:
    """A paho MQTT v5 client that records deliveries and the reason codes of its PUBACKs."""

    def __init__(self, b: Broker, cert: str | None, client_id: str, ca: str | None = None,
                 password: str | None = None) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.pubacks: dict[int, int] = {}
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        certfile, keyfile = b.pki.pair(cert) if cert else (None, None)
        self.c.tls_set(ca_certs=ca or b.pki.ca, certfile=certfile, keyfile=keyfile)
        if password is not None:
            self.c.username_pw_set(client_id, password)
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.suback: dict[int, list[int]] = {}
        self.port = b.port

    def connect(self) -> Client:
        self.c.connect("127.0.0.1", self.port, keepalive=30)
        self.c.loop_start()
        deadline = time.monotonic() + 5
        while not self.c.is_connected() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.c.is_connected(), "did not connect"
        return self

    def _on_message(self, c, u, msg) -> None:
        with self.cond:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.cond.notify_all()

    def _on_publish(self, c, u, mid, reason, props) -> None:
        with self.cond:
            self.pubacks[mid] = reason.value
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, props) -> None:
        with self.cond:
            self.suback[mid] = [x.value for x in codes]
            self.cond.notify_all()

    def publish(self, topic: str, payload: bytes = b"x") -> int:
        """QoS 1 publish; returns the PUBACK reason code."""
        mid = self.c.publish(topic, payload, qos=1).mid
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.pubacks, 5), f"no PUBACK for {topic}"
            return self.pubacks[mid]

    def subscribe(self, flt: str) -> list[int]:
        _, mid = self.c.subscribe(flt, qos=1)
        with self.cond:
            assert self.cond.wait_for(lambda: mid in self.suback, 5)
            return self.suback[mid]

    def wait_for(self, topic: str, timeout: float = 5.0) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: any(t == topic for t, _ in self.got), timeout)

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.fixture
def clients(broker: Broker) -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _client(clients: list[Client], b: Broker, cert: str, client_id: str | None = None) -> Client:
    c = Client(b, cert, client_id or cert).connect()
    clients.append(c)
    return c


# -- tests ---------------------------------------------------------------------------------------
def test_allowed_traffic_of_every_role_flows_through_mqttbus(broker: Broker) -> None:
    mqtt_bus = pytest.importorskip("proto.mqtt_bus")
    from proto.bus import Will
    from proto.mqtt_options import MqttOptions, TlsOptions

    def bus(who: str):
        crt, key = broker.pki.pair(who)
        opts = MqttOptions(host="127.0.0.1", port=broker.port, tls=TlsOptions(ca_file=broker.pki.ca, cert_file=crt,
                                                                              key_file=key))
        return mqtt_bus.MqttBus(opts, client_id=who, clean_start=True)

    got: dict[str, list[str]] = {"veh-1": [], "rsu-1": [], "cloud-1": []}
    done = threading.Event()

    def record(who: str):
        def handler(d) -> None:
            got[who].append(d.topic)
            if sum(map(len, got.values())) >= 7:
                done.set()
        return handler

    veh, rsu, cloud = bus("veh-1"), bus("rsu-1"), bus("cloud-1")
    try:
        rsu.connect(will=Will(T.status(Role.RSU, "rsu-1"), b"offline"))
        cloud.connect(will=Will(T.status(Role.CLOUD, "cloud-1"), b"offline"))
        veh.connect(will=Will(T.status(Role.VEHICLE, "veh-1"), b"offline"))
        for flt in (T.all_status(Role.VEHICLE), T.all_budgets(), T.updates_for("rsu-1")):
            rsu.subscribe(flt, record("rsu-1"))
        for flt in (T.rounds_for_task("sst2"), T.commands_for("veh-1"), T.handoffs_for("veh-1")):
            veh.subscribe(flt, record("veh-1"))
        cloud.subscribe(T.all_stats(), record("cloud-1"))
        veh.publish(T.status(Role.VEHICLE, "veh-1"), b"online", retain=True)
        veh.publish(T.update("veh-1", "rsu-1", "sst2"), b"factors")
        rsu.publish(T.round("rsu-1", "sst2"), b"announcement", retain=True)
        rsu.publish(T.command("rsu-1", "veh-1"), b"upload-now")
        rsu.publish(T.handoff("rsu-1", "veh-1"), b"adapter")
        rsu.publish(T.stats("rsu-1", "sst2"), b"stats")
        cloud.publish(T.budget("cloud-1", "sst2"), b"budget", retain=True)
        assert done.wait(10), got
    finally:
        for b in (veh, rsu, cloud):
            b.close()
    assert sorted(got["rsu-1"]) == sorted([T.status(Role.VEHICLE, "veh-1"), T.update("veh-1", "rsu-1", "sst2"),
                                           T.budget("cloud-1", "sst2")])
    assert sorted(got["veh-1"]) == sorted([T.round("rsu-1", "sst2"), T.command("rsu-1", "veh-1"),
                                           T.handoff("rsu-1", "veh-1")])
    assert got["cloud-1"] == [T.stats("rsu-1", "sst2")]


@pytest.mark.parametrize(
    "topic",
    [
        T.update("veh-2", "rsu-1", "sst2"),  # another vehicle's update
        T.status(Role.VEHICLE, "veh-2"),  # another vehicle's status
        T.round("rsu-1", "sst2"),  # an announcement
        T.command("rsu-1", "veh-2"),
        T.stats("rsu-1", "sst2"),
        T.budget("cloud-1", "sst2"),  # a budget
        T.budget("veh-1", "sst2"),  # a budget under its own id
        T.status(Role.RSU, "veh-1"),  # posing as an RSU under its own id
    ],
)
def test_vehicle_publishing_outside_its_own_topics_is_refused_and_not_delivered(
    broker: Broker, clients: list[Client], topic: str
) -> None:
    rsu = _client(clients, broker, "rsu-1")
    cloud = _client(clients, broker, "cloud-1")
    for flt in (T.updates_for("rsu-1"), T.all_budgets(), T.all_status(Role.VEHICLE)):
        assert rsu.subscribe(flt) == [1]
    assert cloud.subscribe(T.all_stats()) == [1] and cloud.subscribe(T.all_status()) == [1]
    veh = _client(clients, broker, "veh-1")
    assert veh.subscribe("fedrank/v1/#")[0] in (1, NOT_AUTHORIZED)  # whatever it gets, it must not see the forged one
    assert veh.publish(topic, b"forged") == NOT_AUTHORIZED
    # A sentinel the vehicle may send: once the RSU has it, the forged message would have arrived before it.
    sentinel = T.update("veh-1", "rsu-1", "sentinel")
    assert veh.publish(sentinel, b"ok") == 0
    assert rsu.wait_for(sentinel)
    time.sleep(0.2)
    for c in (rsu, cloud, veh):
        assert all(p != b"forged" for _, p in c.got), (topic, c.got)


def test_vehicle_cannot_read_another_vehicles_commands(broker: Broker, clients: list[Client]) -> None:
    rsu = _client(clients, broker, "rsu-1")
    spy = _client(clients, broker, "veh-1")
    codes = spy.subscribe(T.commands_for("veh-2"))
    # Mosquitto 2.0 grants the subscription (PUBACK 0, not 16 "no subscribers") but checks read access
    # on delivery; either way the secret must not arrive.
    assert rsu.publish(T.command("rsu-1", "veh-2"), b"secret") in (0, 16)
    assert spy.subscribe(T.commands_for("veh-1")) == [1]
    assert rsu.publish(T.command("rsu-1", "veh-1"), b"mine") == 0
    assert spy.wait_for(T.command("rsu-1", "veh-1"))
    time.sleep(0.2)
    assert codes[0] in (1, NOT_AUTHORIZED)
    assert all(p != b"secret" for _, p in spy.got)


def test_client_id_is_the_certificate_identity(broker: Broker, clients: list[Client]) -> None:
    victim = _client(clients, broker, "veh-2")
    rsu = _client(clients, broker, "rsu-1")
    assert rsu.subscribe(T.updates_for("rsu-1")) == [1]
    # veh-1 claims veh-2's client id: the broker renames it to veh-1, so veh-2 keeps its session and
    # veh-1 still cannot write under veh-2's id.
    imposter = _client(clients, broker, "veh-1", client_id="veh-2")
    assert imposter.publish(T.update("veh-2", "rsu-1", "sst2"), b"forged") == NOT_AUTHORIZED
    time.sleep(0.3)
    assert victim.c.is_connected()
    assert victim.publish(T.update("veh-2", "rsu-1", "sst2"), b"real") == 0
    assert rsu.wait_for(T.update("veh-2", "rsu-1", "sst2"))
    assert [p for _, p in rsu.got] == [b"real"]


def _try_connect(b: Broker, cert: str | None, ca: str | None = None) -> bool:
    c = Client(b, cert, "veh-1", ca=ca)
    connected = threading.Event()
    c.c.on_connect = lambda cl, u, flags, rc, props: connected.set() if not rc.is_failure else None
    try:
        c.c.connect("127.0.0.1", b.port, keepalive=30)
        c.c.loop_start()
        return connected.wait(2.0)
    except (ssl.SSLError, OSError):
        return False
    finally:
        c.c.loop_stop()
        c.c.disconnect()


def test_client_without_a_valid_certificate_cannot_connect(broker: Broker, pki: Pki) -> None:
    assert _try_connect(broker, "veh-1")  # the control: a good certificate connects
    assert not _try_connect(broker, None)  # no client certificate
    assert not _try_connect(broker, "rogue-veh-1")  # CN veh-1, signed by another CA


def test_plain_tcp_without_tls_is_not_accepted(broker: Broker) -> None:
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="veh-1", protocol=mqtt.MQTTv5)
    connected = threading.Event()
    c.on_connect = lambda cl, u, flags, rc, props: connected.set() if not rc.is_failure else None
    try:
        c.connect("127.0.0.1", broker.port, keepalive=30)
        c.loop_start()
        assert not connected.wait(1.5)
    except OSError:
        pass
    finally:
        c.loop_stop()
        c.disconnect()


def test_strict_vehicle_list_refuses_an_unlisted_vehicle(pki: Pki, tmp_broker_dir: Path) -> None:
    b = _start_broker(tmp_broker_dir, pki, ["--vehicles", "veh-1"])
    made: list[Client] = []
    try:
        rsu = _client(made, b, "rsu-1")
        assert rsu.subscribe(T.updates_for("rsu-1")) == [1]
        listed, unlisted = _client(made, b, "veh-1"), _client(made, b, "veh-2")
        assert unlisted.publish(T.update("veh-2", "rsu-1", "sst2"), b"unlisted") == NOT_AUTHORIZED
        assert listed.publish(T.update("veh-1", "rsu-1", "sst2"), b"listed") == 0
        assert rsu.wait_for(T.update("veh-1", "rsu-1", "sst2"))
        time.sleep(0.2)
        assert [p for _, p in rsu.got] == [b"listed"]
    finally:
        for c in made:
            c.close()
        _stop(b)


def test_passwords_over_tls_pin_each_user_to_its_own_topics(pki: Pki, tmp_broker_dir: Path) -> None:
    passwd_tool = shutil.which("mosquitto_passwd")
    if passwd_tool is None:
        pytest.skip("mosquitto_passwd not installed")
    (tmp_broker_dir / "broker").mkdir()
    for i, user in enumerate(["veh-1", "rsu-1"]):
        flags = ["-c"] if i == 0 else []
        subprocess.run([passwd_tool, *flags, "-b", str(tmp_broker_dir / "broker" / "passwd"), user, f"pw-{user}"],
                       check=True, capture_output=True)
    share_with_broker(tmp_broker_dir / "broker" / "passwd")  # as the README's chown root:mosquitto, chmod 0640
    b = _start_broker(tmp_broker_dir, pki, ["--password"])
    assert "require_certificate" not in (b.conf_dir / "mosquitto.conf").read_text()
    made: list[Client] = []
    try:
        rsu = Client(b, None, "rsu-1", password="pw-rsu-1").connect()
        made.append(rsu)
        assert rsu.subscribe(T.updates_for("rsu-1")) == [1]
        veh = Client(b, None, "veh-1", password="pw-veh-1").connect()
        made.append(veh)
        assert veh.publish(T.update("veh-2", "rsu-1", "sst2"), b"forged") == NOT_AUTHORIZED
        assert veh.publish(T.update("veh-1", "rsu-1", "sst2"), b"real") == 0
        assert rsu.wait_for(T.update("veh-1", "rsu-1", "sst2"))
        time.sleep(0.2)
        assert [p for _, p in rsu.got] == [b"real"]
        wrong = Client(b, None, "veh-1", password="guess")
        ok = threading.Event()
        wrong.c.on_connect = lambda cl, u, flags, rc, props: ok.set() if not rc.is_failure else None
        wrong.c.connect("127.0.0.1", b.port, keepalive=30)
        wrong.c.loop_start()
        assert not ok.wait(1.5)
        wrong.c.loop_stop()
    finally:
        for c in made:
            c.close()
        _stop(b)


def test_the_generated_config_starts_unmodified_under_the_privilege_drop(broker: Broker) -> None:
    """The module's broker runs the generated files as written; started as root, it now runs as `mosquitto`."""
    for name in ("mosquitto.conf", "acl", "README.md"):
        assert (broker.conf_dir / name).stat().st_mode & 0o777 == 0o644, name
    conf = (broker.conf_dir / "mosquitto.conf").read_text()
    assert "\nuser " not in conf
    ids = broker_user()
    if ids is None:
        pytest.skip("not root: Mosquitto does not drop privileges")
    uids = next(line for line in Path(f"/proc/{broker.proc.pid}/status").read_text().splitlines()
                if line.startswith("Uid:"))
    assert uids.split()[1:] == [str(ids[0])] * 4, uids


def test_the_monitor_reads_everything_and_writes_nothing_of_the_rsus_or_the_cloud(
        broker: Broker, clients: list[Client]) -> None:
    mon = _client(clients, broker, "mon-1")
    assert mon.subscribe("fedrank/v1/#") == [1]
    rsu = _client(clients, broker, "rsu-1")
    assert rsu.publish(T.stats("rsu-1", "sst2"), b"stats") == 0
    assert mon.wait_for(T.stats("rsu-1", "sst2"))
    for topic in (T.stats("rsu-1", "sst2"), T.round("rsu-1", "sst2"), T.budget("cloud-1", "sst2"),
                  T.command("rsu-1", "veh-1"), T.update("veh-1", "rsu-1", "sst2"), T.status(Role.RSU, "mon-1")):
        assert mon.publish(topic, b"forged") == NOT_AUTHORIZED, topic


def test_proto_readme_shows_the_generated_acl(tmp_path: Path) -> None:
    assert _run_cli(tmp_path, "--rsus", "rsu-1", "--cloud", "cloud-1", "--monitor", "mon-1") == 0
    text = (REPO / "proto" / "README.md").read_text()
    shown = text.split("<!-- generated-acl:begin -->\n```\n", 1)[1].split("```\n<!-- generated-acl:end -->", 1)[0]
    assert shown == (tmp_path / "out" / "acl").read_text()
    assert "%c" not in shown and "%u" in shown


def test_config_keeps_sessions_across_a_crash_and_sizes_packets_for_the_largest_payload(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    small = tmp_path / "veh.toml"
    small.write_text('id = "v"\n[broker]\nmax_payload_bytes = 3000000\n')
    big = tmp_path / "rsu.toml"
    big.write_text('id = "r"\n[broker]\nmax_payload_bytes = 5000000\n')
    assert _run_cli(tmp_path, "--rsus", "r", "--cloud", "c", "--payload-from", str(small), str(big)) == 0
    conf = (tmp_path / "out" / "mosquitto.conf").read_text().splitlines()
    assert "autosave_interval 1" in conf and "max_queued_messages 100000" in conf
    assert f"max_packet_size {5000000 + 64 * 1024}" in conf
    assert _run_cli(tmp_path, "--rsus", "r", "--cloud", "c", "--max-payload", str(300 * 1024 * 1024)) == 0
    assert "above the largest MQTT packet" in capsys.readouterr().err
    assert _run_cli(tmp_path, "--rsus", "r", "--cloud", "c", "--autosave", "0") == 2


# -- generation without a broker -----------------------------------------------------------------
def _run_cli(tmp_path: Path, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    broker_config.add_arguments(parser)
    return broker_config.run(parser.parse_args(["--out", str(tmp_path / "out"), *argv]))


def test_bad_or_clashing_ids_are_refused_with_a_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(tmp_path, "--rsus", "rsu/1", "--cloud", "c1") == 2
    assert "rsu/1" in capsys.readouterr().err
    assert _run_cli(tmp_path, "--rsus", "r1", "--cloud", "r1") == 2
    assert "two roles: r1" in capsys.readouterr().err
    assert _run_cli(tmp_path, "--vehicles", "v1,v1", "--rsus", "r1", "--cloud", "c1") == 2
    assert "duplicate" in capsys.readouterr().err
    assert _run_cli(tmp_path, "--root", "a/+/b", "--rsus", "r1", "--cloud", "c1") == 2
    assert not (tmp_path / "out").exists()


def test_acl_lines_follow_the_topic_tree_under_a_custom_root(tmp_path: Path) -> None:
    assert _run_cli(tmp_path, "--root", "site-a/fedrank/v1", "--vehicles", "v1", "--rsus", "r1", "--cloud", "c1") == 0
    acl = (tmp_path / "out" / "acl").read_text().splitlines()
    r = "site-a/fedrank/v1"
    v1 = acl[acl.index("user v1") + 1 : acl.index("user r1") - 2]
    assert v1 == [
        f"topic write {r}/status/vehicle/v1",
        f"topic write {r}/vehicle/v1/update/+/+",
        f"topic read {r}/rsu/+/round/+",
        f"topic read {r}/rsu/+/tier/+/+",
        f"topic read {r}/rsu/+/command/v1",
        f"topic read {r}/rsu/+/handoff/v1",
    ]
    assert not any(line.startswith("pattern") for line in acl)  # strict: no identity gets vehicle rights by default
    budget_writers = [line for line in acl if "/budget/" in line and ("write" in line)]
    assert budget_writers == [f"topic readwrite {r}/cloud/c1/budget/+"]
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    assert "listener 8883" in conf and "require_certificate true" in conf and "use_identity_as_username true" in conf
    assert conf.index("listener 8883") < conf.index("allow_anonymous false")
    assert "openssl" in (tmp_path / "out" / "README.md").read_text()


def test_password_without_tls_is_plain_and_warned(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _run_cli(tmp_path, "--password", "--rsus", "r1", "--cloud", "c1") == 0
    assert "passwords without --tls" in capsys.readouterr().err
    conf = (tmp_path / "out" / "mosquitto.conf").read_text()
    assert "listener 1883" in conf and "cafile" not in conf and "password_file" in conf
    assert "in clear" in (tmp_path / "out" / "README.md").read_text()
