"""MqttBus reconnection: broker restart with a persistent session offline, backoff, refused credentials,
and oversized messages on receipt. Needs the mosquitto binary (skipped with a reason otherwise)."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest

from proto.bus import AuthRejected, BusError, Delivery
from proto.mqtt_bus import MqttBus, backoff_delay
from proto.mqtt_options import MqttOptions
from tests.mosquitto import Mosquitto, MosquittoUnavailable, broker_dir, free_port, share_with_broker

pytestmark = pytest.mark.mosquitto


def wait_until(cond, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def broker() -> Mosquitto:
    try:
        mosq = Mosquitto()
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    yield mosq.start()
    mosq.cleanup()


def fast(port: int, **kw: object) -> MqttOptions:
    return MqttOptions(port=port, reconnect_min_s=0.05, reconnect_max_s=0.2, ack_timeout_s=5.0, **kw)


class DedupInbox:
    """What an application does with at-least-once delivery: drop a message whose id it has seen
    (fedrank messages carry (sender, task, round, sequence); here the payload's `id`)."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.duplicates = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, d: Delivery) -> None:
        msg_id = json.loads(d.payload)["id"]
        with self._lock:
            if msg_id in self._seen:
                self.duplicates += 1
                return
            self._seen.add(msg_id)
            self.ids.append(msg_id)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_queued_qos1_messages_survive_a_broker_restart_and_reach_the_app_once(broker: Mosquitto, how: str) -> None:
    opts = fast(broker.port)
    vehicle, inbox = MqttBus(opts, "veh-1"), DedupInbox()
    vehicle.subscribe("cmd/veh-1", inbox)
    vehicle.connect()
    vehicle.close()  # offline; its persistent session stays on the broker
    rsu = MqttBus(opts, "rsu-1")
    rsu.connect()
    expected = [f"rsu-1:{i}" for i in range(20)]
    for msg_id in expected:
        rsu.publish("cmd/veh-1", json.dumps({"id": msg_id}).encode(), qos=1)
    rsu.publish("cmd/veh-1", json.dumps({"id": "rsu-1:7"}).encode(), qos=1)  # a resend after a lost ack
    t_published = time.time_ns()
    if how == "kill":  # SIGKILL: only what autosave (every 1 s) wrote survives, so wait for a save
        assert wait_until(lambda: broker.db.exists() and broker.db.stat().st_mtime_ns > t_published, 5.0)
        broker.kill()
    else:
        broker.stop()
    assert wait_until(lambda: not rsu.connected, 5.0)
    broker.start()
    assert wait_until(lambda: rsu.connected, 10.0), "publisher did not reconnect after the restart"

    restarted, inbox2 = MqttBus(opts, "veh-1"), DedupInbox()  # the vehicle's process restarted too
    restarted.subscribe("cmd/veh-1", inbox2)
    restarted.connect()
    try:
        assert wait_until(lambda: len(inbox2.ids) >= len(expected), 10.0)
        rsu.publish("cmd/veh-1", json.dumps({"id": "sentinel"}).encode())
        assert wait_until(lambda: inbox2.ids[-1:] == ["sentinel"], 5.0)
        assert inbox2.ids == [*expected, "sentinel"]  # each once, in order
        assert inbox2.duplicates >= 1  # the resend was delivered by MQTT and dropped by the app
    finally:
        restarted.close()
        rsu.close()


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    # cap = min(30, 0.5 * 2^(n-1)); delay = cap/2 + u*cap/2
    assert backoff_delay(1, 0.5, 30.0, 0.0) == 0.25
    assert backoff_delay(1, 0.5, 30.0, 1.0) == 0.5
    assert backoff_delay(3, 0.5, 30.0, 0.5) == 2.0 / 2 + 0.5 * 2.0 / 2
    assert backoff_delay(10, 0.5, 30.0, 0.0) == 15.0  # 0.5 * 512 is capped at 30


def test_bus_keeps_retrying_with_backoff_and_connects_when_the_broker_appears() -> None:
    try:
        late = Mosquitto(port=free_port())
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    waits: list[float] = []
    bus = MqttBus(MqttOptions(port=late.port, reconnect_min_s=0.02, reconnect_max_s=0.08), "early",
                  wait=lambda s: (waits.append(s), time.sleep(s)), rng=lambda: 0.0)
    try:
        with pytest.raises(BusError):
            bus.connect(timeout=0.3)
        assert waits[:3] == [0.01, 0.02, 0.04]  # cap/2 with u=0: 0.02/2, 0.04/2, 0.08/2, then capped
        assert all(w == 0.04 for w in waits[3:])
        late.start()
        assert wait_until(lambda: bus.connected, 5.0)
        bus.connect()  # already connected: returns at once
    finally:
        bus.close()
        late.cleanup()


def test_refused_credentials_raise_auth_rejected_and_are_not_retried() -> None:
    try:
        locked = Mosquitto(anonymous=False)  # no password file: every client is refused (CONNACK 135)
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    locked.start()
    waits: list[float] = []
    bus = MqttBus(fast(locked.port, username="veh-1", password="wrong"), "veh-1", wait=waits.append)
    try:
        with pytest.raises(AuthRejected):
            bus.connect(timeout=5.0)
        time.sleep(0.3)
        assert bus.attempts == 1 and waits == []
        with pytest.raises(AuthRejected):
            bus.connect()
    finally:
        bus.close()
        locked.cleanup()


def test_oversized_message_is_dropped_on_receipt_and_the_next_one_arrives(broker: Mosquitto) -> None:
    small = MqttBus(fast(broker.port, max_payload_bytes=2048), "small")
    big = MqttBus(fast(broker.port), "big")
    got: list[int] = []
    small.subscribe("sz", lambda d: got.append(len(d.payload)))
    small.connect()
    big.connect()
    try:
        big.publish("sz", b"\0" * 4096)
        big.publish("sz", b"\0" * 100)
        assert wait_until(lambda: got == [100], 5.0)
        assert small.rejected == 1
        with pytest.raises(BusError):
            small.publish("sz", b"\0" * 2049)
    finally:
        small.close()
        big.close()


def _cert(subject: str, key, issuer_cert=None, issuer_key=None, ca: bool = False, ip: str | None = None):  # type: ignore[no-untyped-def]
    """A minimal X.509 certificate (CA, server with an IP SAN, or client) signed by the issuer."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.datetime.now(datetime.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer_cert.subject if issuer_cert else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return b.sign(issuer_key or key, hashes.SHA256())


def test_mutual_tls_connects_and_carries_messages(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("cryptography")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from proto.mqtt_options import TlsOptions

    tmp_path = broker_dir()  # the broker reads the key after dropping to user `mosquitto`

    def write(name: str, cert, key) -> None:  # type: ignore[no-untyped-def]
        (tmp_path / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / f"{name}.key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    ca_key, srv_key, cli_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("fedrank-test-ca", ca_key, ca=True)
    write("ca", ca, ca_key)
    write("server", _cert("broker", srv_key, ca, ca_key, ip="127.0.0.1"), srv_key)
    share_with_broker(tmp_path / "server.key")
    write("veh-1", _cert("veh-1", cli_key, ca, ca_key), cli_key)
    try:
        mosq = Mosquitto(extra_conf=f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/server.crt\n"
                                    f"keyfile {tmp_path}/server.key\nrequire_certificate true\n")
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    mosq.start()
    tls = TlsOptions(ca_file=tmp_path / "ca.crt", cert_file=tmp_path / "veh-1.crt", key_file=tmp_path / "veh-1.key")
    bus = MqttBus(fast(mosq.port, tls=tls), "veh-1")
    no_cert = MqttBus(fast(mosq.port, tls=TlsOptions(ca_file=tmp_path / "ca.crt")), "anon")
    got: list[bytes] = []
    try:
        bus.subscribe("tls/echo", lambda d: got.append(d.payload))
        bus.connect(timeout=5.0)
        bus.publish("tls/echo", b"over tls")
        assert wait_until(lambda: got == [b"over tls"], 5.0)
        with pytest.raises(BusError):  # the broker requires a client certificate
            no_cert.connect(timeout=0.5)
    finally:
        bus.close()
        no_cert.close()
        mosq.cleanup()
        shutil.rmtree(tmp_path, ignore_errors=True)
