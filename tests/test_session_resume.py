"""What the broker queued for a daemon while it was down is handled after the restart (real Mosquitto, daemons
as processes): an update sent while the RSU was killed (-9) or stopped (SIGTERM) counts and closes the round
early; stats sent while the cloud was down are counted; a handoff sent while a vehicle was down is trained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fedrank.state import read_json
from proto.adapter import LoraFactors, pack_lora
from proto.codec import encode
from proto.messages import AgentStatus, Handoff, RoundAnnouncement, TaskStats, VehicleUpdate
from proto.mqtt_bus import MqttBus
from proto.mqtt_options import MqttOptions
from tests.helpers_rsu import LAYERS, make_update, status
from tests.procs import Daemon, T, Wire, wait_for, write_toml

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5}


def client(port: int, cid: str, wire: Wire | None = None) -> MqttBus:
    bus = MqttBus(MqttOptions(port=port, **FAST), cid, clean_start=True)
    if wire is not None:
        bus.subscribe(f"{T.root}/#", wire)
    bus.connect()
    return bus


def stop_it(d: Daemon, how: str) -> None:
    if how == "kill":
        d.kill()
    else:
        assert d.term() == 0, d.text()


def rsu_doc(rid: str, state: Path, port: int, task: str, timeout_s: float = 60.0) -> dict:
    return {"id": rid, "state_dir": str(state), "broker": {"port": port, **FAST}, "join_wait_s": 0.2,
            "status_interval_s": 30.0, "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 100.0},
            "tasks": [{"name": task, "task_type": "sentence", "layers": {k: list(v) for k, v in LAYERS.items()},
                       "round_timeout_s": timeout_s, "min_participants": 1, "participant_retry_s": 0.5,
                       "max_rounds": 1}]}


@pytest.mark.parametrize("how", ["kill", "term"])
def test_an_update_sent_while_the_rsu_is_down_counts_after_its_restart(tmp_path: Path, mosquitto, how: str) -> None:
    rid, vid, task = f"rsu-r{how}", f"veh-r{how}", f"t-r{how}"  # its own task: no other test's vehicle joins
    wire = Wire()
    pub = client(mosquitto.port, f"obs-r{how}", wire)
    rsu = Daemon("rsu", write_toml(tmp_path / "rsu.toml", rsu_doc(rid, tmp_path / "state", mosquitto.port, task)),
                 tmp_path / "rsu.log")
    try:
        topic, payload = status(vid, x=10.0, tasks=(task,))
        pub.publish(topic, payload, retain=True)
        rsu.start()
        wait_for(lambda: wire.of(RoundAnnouncement, lambda m: m.sender == rid, live_only=False), 30,
                 "round 0 announced", (rsu.log,))
        stop_it(rsu, how)
        upd = make_update(vid, 0, rsu=rid, task=task)
        pub.publish(upd.topic, upd.payload)  # the RSU is down: only its persistent session can keep this
        rsu.start()
        wait_for(lambda: wire.of(TaskStats, lambda m: m.sender == rid), 30, "stats of round 0", (rsu.log,))
    finally:
        rsu.term()
        pub.close()
    stats = wire.of(TaskStats, lambda m: m.sender == rid)
    assert [(s.round, s.updates) for s in stats] == [(0, 1)], rsu.text()
    ann = wire.of(RoundAnnouncement, lambda m: m.sender == rid, live_only=False)[0]
    assert stats[0].sent_at < ann.deadline  # closed because the update arrived, not at the deadline
    assert "no handler" not in rsu.text()


@pytest.mark.parametrize("how", ["kill", "term"])
def test_stats_sent_while_the_cloud_is_down_are_counted_after_its_restart(tmp_path: Path, mosquitto,
                                                                         how: str) -> None:
    cid, rid = f"cloud-s{how}", f"rsu-s{how}"
    state = tmp_path / "cloud"
    cfg = write_toml(tmp_path / "cloud.toml", {"id": cid, "state_dir": str(state), "tasks": ["t1"],
                                               "e_total_j": 1e6, "broker": {"port": mosquitto.port, **FAST},
                                               "feedback": {"window_rounds": 5}})
    cloud = Daemon("cloud", cfg, tmp_path / "cloud.log")
    pub = client(mosquitto.port, f"pub-s{how}")

    def counted() -> int:
        raw = read_json(state / "cloud.json") or {}
        return int(raw.get("last_round", {}).get(f"{rid}/t1", -1))

    def stats(r: int) -> bytes:
        return encode(TaskStats(sender=rid, sent_at=float(r), seq=r + 1, task="t1", round=r, energy_j=5.0,
                                budget_j=10.0, lam=0.0, violation_j=0.0, accuracy=0.5, loss=0.5, participants=1,
                                updates=1))
    try:
        cloud.start()
        wait_for(lambda: (state / "cloud.json").is_file(), 30, "cloud state written", (cloud.log,))
        pub.publish(T.stats(rid, "t1"), stats(0))
        wait_for(lambda: counted() == 0, 30, "round 0 counted", (cloud.log,))
        stop_it(cloud, how)
        pub.publish(T.stats(rid, "t1"), stats(1))
        pub.publish(T.stats(rid, "t1"), stats(2))
        cloud.start()
        wait_for(lambda: counted() == 2, 30, "rounds 1 and 2 counted after the restart", (cloud.log,))
    finally:
        cloud.term()
        pub.close()
    acc = json.loads((state / "cloud.json").read_text())["acc"]["t1"]
    assert acc["rounds"] == 3 and acc["used_j"] == pytest.approx(15.0), cloud.text()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_model import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("model") / "tiny-bert")


def test_a_handoff_sent_while_the_vehicle_is_down_is_trained_after_its_restart(tmp_path: Path, mosquitto,
                                                                               tiny_model: Path) -> None:
    from edge_agent.model import layer_shapes

    vid, rid = "veh-h", "rsu-h"
    doc = {"id": vid, "state_dir": str(tmp_path / "state"), "status_interval_s": 1.0, "model_dir": str(tiny_model),
           "broker": {"port": mosquitto.port, **FAST}, "tasks": [{"name": "t1", "task_type": "sentence"}],
           "local_steps": 2, "batch_size": 8, "max_length": 24, "threads": 1,
           "position": {"kind": "fixed", "x": 0.0, "y": 0.0}, "energy": {"backend": "auto"}}
    veh = Daemon("edge", write_toml(tmp_path / "veh.toml", doc), tmp_path / "veh.log")
    wire = Wire()
    pub = client(mosquitto.port, "obs-h", wire)
    g = torch.Generator().manual_seed(0)
    layers = {n: LoraFactors(A=torch.randn(2, d_in, generator=g), B=torch.randn(d_out, 2, generator=g))
              for n, (d_out, d_in) in layer_shapes(tiny_model).items()}
    handoff = Handoff(sender=rid, sent_at=0.0, seq=1, task="t1", round=0, rsu=rid, vehicle=vid,
                      migrated_from="veh-src", lora_alpha=16.0, rank=2, joules_spent=1.0)
    try:
        veh.start()
        wait_for(lambda: wire.of(AgentStatus, lambda m: m.sender == vid and m.state == "online",
                                 live_only=False), 60, "vehicle online", (veh.log,))
        veh.kill()
        pub.publish(T.handoff(rid, vid), encode(handoff, pack_lora(layers, {})))
        veh.start()
        wait_for(lambda: wire.of(VehicleUpdate, lambda m: m.sender == vid), 120, "the handoff's update",
                 (veh.log,))
    finally:
        veh.term()
        pub.close()
    upd = wire.of(VehicleUpdate, lambda m: m.sender == vid)[0]
    assert (upd.rsu, upd.round, upd.report.migrated_from) == (rid, 0, "veh-src"), veh.text()

