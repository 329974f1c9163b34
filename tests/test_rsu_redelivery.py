"""Redelivery and migration rules at the RSU: a QoS 1 redelivered partial, a target gone before the partial,
the late/wrong-round boundary.

Same geometry as tests/test_rsu_fault_tolerance.py: v1 parks at x = 10, v2 at x = 80 leaves the 100 m disc
in 1 s, v3 (x = 50) arrives after the round opened and is the nearest free vehicle, so v2 migrates to v3.
"""

from __future__ import annotations

import torch

from proto.messages import FaultCommand, Handoff
from proto.topics import Channel
from tests.helpers_rsu import Rig, dense, make_update, rsu_settings


def product(f) -> torch.Tensor:
    return f.U @ torch.diag(f.S) @ f.Vt


def migrating(tmp_path) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=80.0)
    rig.advance(1.0)
    rig.vehicle("v3", x=50.0)
    rig.vehicle("v2", x=90.0, vx=10.0, sent_at=1.0)
    [cmd] = [d.msg for d in rig.messages(Channel.COMMAND, FaultCommand)]
    assert (cmd.vehicle, cmd.action, cmd.migrate_to) == ("v2", "migrate", "v3")
    return rig


def test_a_redelivered_partial_is_held_once_and_forwarded_once(tmp_path):
    rig = migrating(tmp_path)
    partial = make_update("v2", 0, samples=40, joules=12.0, partial=True, seed=2)
    rig.upload(partial)
    rig.upload(partial)  # QoS 1 redelivery of the same message
    assert rig.agent.counters["held"] == 1
    assert rig.agent.counters["duplicate"] == 1
    assert len(rig.messages(Channel.HANDOFF, Handoff)) == 1
    held = tmp_path / "tasks" / "t1" / "round_0" / "held"
    assert sorted(p.name for p in held.iterdir()) == ["v2.safetensors"]


def test_a_failed_migration_still_waits_for_the_sources_partial_and_forwards_nothing(tmp_path):
    rig = migrating(tmp_path)
    rig.vehicle("v3", x=50.0, state="offline", sent_at=2.0)  # the target is gone before v2's partial arrives
    u1 = make_update("v1", 0, samples=60, joules=5.0, seed=1)
    rig.upload(u1)
    assert rig.agent.history == ()  # v2's partial is the fallback: the round must wait for it
    assert rig.agent.tasks["t1"].waiting() == {"v2"}
    partial = make_update("v2", 0, samples=40, joules=12.0, partial=True, seed=2)
    rig.upload(partial)
    assert rig.messages(Channel.HANDOFF, Handoff) == []  # no handoff to a vehicle that is gone
    rec = rig.agent.history[-1]
    assert (rec.accepted, rec.energy_j, rec.closed_by, rec.ft) == (["v1", "v2"], 17.0, "all_arrived",
                                                                    {"v2": "migrate:v3"})
    want = dense([u1.layers, partial.layers], [60, 40])
    for name, w in want.items():
        assert torch.allclose(product(rig.agent.tasks["t1"].layers[name]), w, atol=1e-4)


def test_a_completed_migration_after_the_partial_counts_once(tmp_path):
    rig = migrating(tmp_path)
    rig.upload(make_update("v2", 0, samples=40, joules=12.0, partial=True, seed=2))
    done = make_update("v3", 0, samples=40, joules=20.0, migrated_from="v2", seed=3)
    rig.upload(done)
    rig.upload(done)  # redelivered: v2's identity already counted
    assert rig.agent.counters["duplicate"] == 1
    rig.upload(make_update("v1", 0, samples=60, joules=5.0, seed=1))
    [rec] = rig.agent.history
    assert (rec.accepted, rec.energy_j) == (["v1", "v2"], 25.0)


def test_late_and_wrong_round_are_told_apart_at_the_boundary(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=20.0)
    rig.advance(1.0)
    rig.upload(make_update("v1", 0, seed=1))
    rig.upload(make_update("v2", 0, seed=2))
    assert len(rig.agent.history) == 1 and rig.agent.tasks["t1"].pending is None  # round 1 not yet open (gap)
    rig.upload(make_update("v1", 1, seed=1))  # the next round, before it opened: not late
    assert rig.agent.counters["rejected"] == {"wrong_round": 1}
    assert rig.agent.counters["late"] == 0
    rig.upload(make_update("v1", 0, seed=1))  # the round that just closed
    assert rig.agent.counters["late"] == 1
    rig.advance(10.0)
    assert rig.agent.tasks["t1"].pending is not None and rig.agent.tasks["t1"].pending.round == 1
    rig.upload(make_update("v1", 2, seed=1))  # a round after the open one
    assert rig.agent.counters["rejected"] == {"wrong_round": 2}
    assert rig.agent.counters["late"] == 1
