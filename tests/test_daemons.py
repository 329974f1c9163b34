"""The daemons as real processes (`python -m fedrank cloud|rsu|edge --config ...`) against a private Mosquitto:
two rounds run, SIGTERM stops every one with exit 0 and the vehicle's retained status says offline; a bad edge
config exits 2 with one line naming the field; an edge daemon whose broker is down keeps retrying and still
stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from proto.codec import decode
from proto.messages import AgentStatus, TaskStats, VehicleUpdate
from proto.topics import Topics
from tests.daemon_proc import wait_for_line
from tests.mosquitto import free_port
from tests.procs import wait_for

REPO = Path(__file__).resolve().parents[1]
T = Topics()
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("model") / "tiny-bert")


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def edge_doc(vid: str, state: Path, port: int, model: Path, x: float) -> dict[str, Any]:
    return {"id": vid, "state_dir": str(state / vid), "status_interval_s": 1.0, "model_dir": str(model),
            "broker": {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5},
            "tasks": [{"name": "t1", "task_type": "sentence"}], "local_steps": 2, "batch_size": 8,
            "max_length": 24, "threads": 1, "position": {"kind": "fixed", "x": x, "y": 0.0},
            "energy": {"backend": "auto"}}


def start(role: str, config: Path, log: Path) -> subprocess.Popen:
    out = open(log, "w")  # noqa: SIM115 - closed with the process by the OS; the test reads the file
    return subprocess.Popen([sys.executable, "-m", "fedrank", role, "--config", str(config)], cwd=REPO, env=ENV,
                            stdout=out, stderr=subprocess.STDOUT)


def stop(procs: dict[str, subprocess.Popen]) -> dict[str, int]:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    codes = {}
    for name, p in procs.items():
        try:
            codes[name] = p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            codes[name] = p.wait()
    return codes


@pytest.mark.mosquitto
@pytest.mark.slow
def test_cloud_rsu_and_vehicles_run_two_rounds_and_stop_cleanly(tmp_path: Path, mosquitto, tiny_model: Path) -> None:
    from edge_agent.model import layer_shapes
    from proto.mqtt_bus import MqttBus
    from proto.mqtt_options import MqttOptions

    port, state = mosquitto.port, tmp_path / "state"
    broker = {"port": port, "reconnect_min_s": 0.05, "reconnect_max_s": 0.5}
    layers = {k: list(v) for k, v in layer_shapes(tiny_model).items()}
    cfgs = {
        "cloud": write(tmp_path / "cloud.toml", {"id": "cloud-d", "state_dir": str(state / "cloud"), "broker": broker,
                                                 "tasks": ["t1"], "e_total_j": 1e6,
                                                 "feedback": {"window_rounds": 2}}),
        "rsu": write(tmp_path / "rsu.toml", {
            "id": "rsu-d", "state_dir": str(state / "rsu"), "broker": broker, "join_wait_s": 1.0,
            "status_interval_s": 5.0, "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 500.0},
            "tasks": [{"name": "t1", "task_type": "sentence", "ranks": [2, 4], "layers": layers,
                       "round_timeout_s": 60.0, "round_gap_s": 0.5, "participant_retry_s": 0.5,
                       "min_participants": 2}]}),
        "veh1": write(tmp_path / "veh1.toml", edge_doc("veh1", state, port, tiny_model, 10.0)),
        "veh2": write(tmp_path / "veh2.toml", edge_doc("veh2", state, port, tiny_model, -20.0)),
    }
    lock = threading.Lock()
    stats: list[TaskStats] = []
    updates: list[VehicleUpdate] = []
    status: dict[str, str] = {}

    def seen(d: Any) -> None:
        info = T.parse(d.topic)
        with lock:
            if info.channel.value == "stats":
                stats.append(decode(d.payload, TaskStats).msg)
            elif info.channel.value == "update":
                updates.append(decode(d.payload, VehicleUpdate).msg)
            elif info.channel.value == "status" and d.payload:
                status[info.sender] = decode(d.payload, AgentStatus).msg.state

    observer = MqttBus(MqttOptions(port=port, reconnect_min_s=0.05), "daemons-observer", clean_start=True)
    observer.subscribe(T.all_stats(), seen)
    observer.subscribe(T.updates_for("rsu-d"), seen)
    observer.subscribe(T.all_status(), seen)
    observer.connect()
    logs = {name: tmp_path / f"{name}.log" for name in cfgs}
    procs = {name: start("edge" if name.startswith("veh") else name, cfg, logs[name]) for name, cfg in cfgs.items()}
    try:
        # a limit against a hang, not a timing claim (14 s idle, 33 s with two busy loops beside it)
        wait_for(lambda: {s.round for s in stats if s.sender == "rsu-d"} >= {0, 1}, 180.0,
                 "RSU stats for rounds 0 and 1", list(logs.values()))
        assert all(p.poll() is None for p in procs.values())
    finally:
        codes = stop(procs)
        try:
            wait_for(lambda: status.get("veh1") == "offline" and status.get("veh2") == "offline", 10.0,
                     "offline statuses", list(logs.values()))
        finally:
            observer.close()
    assert codes == {"cloud": 0, "rsu": 0, "veh1": 0, "veh2": 0}, codes
    with lock:
        first = next(s for s in stats if s.round == 0)
        assert first.participants == 2 and first.updates == 2
        assert {u.sender for u in updates if u.round == 0} == {"veh1", "veh2"}
        for u in updates:  # this machine has no power meter readable by tests: the figures say what they are
            assert u.report.energy_source and u.report.joules >= 0
            assert u.report.energy_measured == (not u.report.energy_source.startswith("estimate"))
        assert first.energy_measured == all(u.report.energy_measured for u in updates if u.round == 0)
    assert (state / "veh1" / "vehicle.json").is_file()


def test_bad_edge_config_exits_2_with_one_line_naming_the_field(tmp_path: Path, tiny_model: Path) -> None:
    doc = edge_doc("veh1", tmp_path, 1883, tiny_model, 0.0)
    doc["local_steps"] = -3
    cfg = write(tmp_path / "bad.toml", doc)
    res = subprocess.run([sys.executable, "-m", "fedrank", "edge", "--config", str(cfg)], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "local_steps" in lines[0] and "bad.toml" in lines[0], res.stderr


def test_idle_edge_daemon_retries_a_down_broker_without_torch_and_stops_on_sigterm(tmp_path: Path,
                                                                                   tiny_model: Path) -> None:
    port = free_port()  # nothing listens here
    cfg = write(tmp_path / "veh.toml", edge_doc("veh1", tmp_path / "state", port, tiny_model, 0.0))
    log = tmp_path / "veh.log"
    proc = start("edge", cfg, log)
    try:
        # Ready to be stopped: the bus's first failed attempt comes after the agent is built and the SIGTERM
        # handler installed, and while start-up still waits for the broker.
        wait_for_line(log, f"connect to 127.0.0.1:{port} failed", 120.0, proc)
        assert proc.poll() is None, log.read_text()
        # idle before its first round: torch is not loaded yet (it loads with the first round's training); the
        # process is past its imports (paho's ssl is mapped), so the check cannot pass on a half-started daemon
        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "_ssl" in maps and "libtorch" not in maps
    finally:
        asked = time.monotonic()
        codes = stop({"veh": proc})
        took = time.monotonic() - asked
    text = log.read_text()
    assert codes == {"veh": 0}, text
    assert took < 5.0, f"SIGTERM while waiting for the broker took {took:.1f}s to act on"
    assert "not reachable" in text  # the daemon said why it is waiting
