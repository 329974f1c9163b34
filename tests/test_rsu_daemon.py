"""`fedrank rsu` as a process: a bad config exits 2 with one line; against a real Mosquitto it announces, takes
SIGTERM, publishes its offline status and exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fedrank.cli import main
from proto.codec import decode
from proto.messages import AgentStatus, RoundAnnouncement
from proto.topics import Role, Topics
from tests.helpers_rsu import status

REPO = Path(__file__).resolve().parents[1]
T = Topics()


def write_config(path: Path, state_dir: Path, port: int = 1883, extra: str = "") -> Path:
    path.write_text(f"""
id = "rsu-d"
state_dir = "{state_dir}"
join_wait_s = 0.2
status_interval_s = 30.0
coverage = {{ shape = "circle", cx = 0.0, cy = 0.0, radius = 100.0 }}
{extra}
[broker]
port = {port}
reconnect_min_s = 0.05

[[tasks]]
name = "t1"
task_type = "sentence"
layers = {{ q = [16, 12] }}
round_timeout_s = 60.0
""")
    return path


def test_a_missing_or_invalid_config_exits_2_with_one_clear_line(tmp_path, capsys):
    assert main(["rsu", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope.toml" in err[0] and "does not exist" in err[0]
    bad = write_config(tmp_path / "bad.toml", tmp_path, extra='wire_dtype = "F64"')
    assert main(["rsu", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "wire_dtype" in err[0]


def _wait_retained(bus_msgs: dict, topic: str, pred, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        raw = bus_msgs.get(topic)
        if raw is not None and pred(raw):
            return raw
        time.sleep(0.05)
    raise AssertionError(f"nothing on {topic} within {timeout}s; saw {sorted(bus_msgs)}")


@pytest.mark.mosquitto
def test_daemon_announces_and_stops_cleanly_on_sigterm(tmp_path, mosquitto):
    from proto.mqtt_bus import MqttBus
    from proto.mqtt_options import MqttOptions

    cfg = write_config(tmp_path / "rsu.toml", tmp_path / "state", port=mosquitto.port)
    seen: dict[str, bytes] = {}
    client = MqttBus(MqttOptions(port=mosquitto.port, reconnect_min_s=0.05), "daemon-test-client")
    client.connect()
    client.subscribe("fedrank/v1/#", lambda d: seen.__setitem__(d.topic, d.payload))
    client.publish(*status("veh1", x=10.0), qos=1, retain=True)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "fedrank", "rsu", "--config", str(cfg)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        st_topic = T.status(Role.RSU, "rsu-d")
        _wait_retained(seen, st_topic, lambda raw: decode(raw, AgentStatus).msg.state == "online", timeout=30.0)
        raw = _wait_retained(seen, T.round("rsu-d", "t1"), lambda raw: True)
        ann = decode(raw, RoundAnnouncement).msg
        assert (ann.round, ann.participants, ann.layers) == (0, ["veh1"], ["q"])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        _wait_retained(seen, st_topic, lambda raw: decode(raw, AgentStatus).msg.state == "offline")
        assert (tmp_path / "state" / "tasks" / "t1" / "meta.json").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.publish(T.status(Role.VEHICLE, "veh1"), b"", qos=1, retain=True)
        client.close()
