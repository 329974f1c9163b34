"""An RSU killed mid-round (no stop(), no clean shutdown) loses no accepted update and no closed round."""

from __future__ import annotations

import pytest
import torch

from proto.messages import RoundAnnouncement
from proto.topics import Channel
from tests.helpers_rsu import Rig, dense, make_update, rsu_settings


def product(f) -> torch.Tensor:
    return f.U @ torch.diag(f.S) @ f.Vt


def start_round(tmp_path) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    for v in ("v1", "v2", "v3"):
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)
    return rig


def test_restart_mid_round_keeps_accepted_updates_and_the_aggregate_includes_them(tmp_path):
    rig = start_round(tmp_path)
    u1 = make_update("v1", 0, rank=2, samples=50, joules=10.0, seed=1)
    u2 = make_update("v2", 0, rank=4, samples=150, joules=20.0, seed=2)
    rig.upload(u1)
    rig.upload(u2)
    first = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    rig.agent = rig.new_agent()  # the old object is thrown away as a kill -9 would: no stop(), nothing flushed
    rig.clock.advance_to(20.0)
    tr = rig.agent.tasks["t1"]
    assert tr.pending is not None and tr.pending.round == 0
    assert set(tr.accepted) == {"v1", "v2"}
    again = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert (again.round, again.deadline, again.participants, again.seq) == (0, first.deadline, first.participants,
                                                                           first.seq)
    rig.upload(u1)  # a redelivery after the restart is still a duplicate
    assert rig.agent.counters["duplicate"] == 1
    u3 = make_update("v3", 0, rank=8, samples=200, joules=30.0, seed=3)
    rig.upload(u3)
    rec = rig.agent.history[-1]
    assert (rec.accepted, rec.energy_j, rec.closed_by) == (["v1", "v2", "v3"], 60.0, "all_arrived")
    want = dense([u1.layers, u2.layers, u3.layers], [50, 150, 200])
    for name, w in want.items():
        assert torch.allclose(product(tr.layers[name]), w, atol=1e-4)


def test_restart_after_a_round_closed_announces_the_saved_global_and_lambda(tmp_path):
    rig = start_round(tmp_path)
    for i, v in enumerate(("v1", "v2", "v3")):
        rig.upload(make_update(v, 0, joules=100.0, seed=i))  # 300 J of a 100 J budget: lam 0.1 * min(1, 2) = 0.1
    layers = rig.agent.tasks["t1"].layers
    rig.agent = rig.new_agent()
    rig.advance(rig.clock.now() + 1.0)  # join_wait_s
    dec = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    assert (dec.msg.round, dec.msg.lam, dec.msg.rank) == (1, pytest.approx(0.1), 12)  # 3 updates of rank 4
    assert [(t.first, t.last) for t in dec.msg.tiers] == [(1, 2), (3, 4), (5, 8), (9, 12)]
    merged = rig.global_tensors(1)
    for name, f in layers.items():
        assert torch.allclose(merged[f"{name}.S"], f.S)
    assert sorted(p.name for p in (tmp_path / "tasks" / "t1").iterdir()) == ["global_r1.safetensors", "meta.json"]


def test_a_corrupt_stored_update_is_set_aside_and_the_rest_resume(tmp_path):
    rig = start_round(tmp_path)
    rig.upload(make_update("v1", 0, seed=1))
    rig.upload(make_update("v2", 0, seed=2))
    bad = tmp_path / "tasks" / "t1" / "round_0" / "accepted" / "v2.safetensors"
    bad.write_bytes(b"garbage")
    rig.agent = rig.new_agent()
    assert set(rig.agent.tasks["t1"].accepted) == {"v1"}
    assert bad.with_suffix(".corrupt").exists()


def test_a_corrupt_meta_file_starts_the_task_fresh(tmp_path):
    rig = start_round(tmp_path)
    (tmp_path / "tasks" / "t1" / "meta.json").write_text("{not json")
    rig.agent = rig.new_agent()
    assert rig.agent.tasks["t1"].pending is None and rig.agent.tasks["t1"].meta.next_round == 0
    assert (tmp_path / "tasks" / "t1" / "meta.json.corrupt").exists()
