"""A vehicle leaving coverage mid-round (docs/algorithms.md §6): early upload, migration with handoff, abandonment.

Coverage: a disc of radius 100 m at the origin. v1 parks at x = 10; v2 is at x = 90 moving east at 10 m/s, so it
leaves in 1 s while its round is expected to take 60 s (expected_round_s default).
"""

from __future__ import annotations

import pytest
import torch

from proto.messages import FaultCommand, Handoff, TaskStats
from proto.topics import Channel
from rsu_agent.fault_tolerance import FtWeights
from tests.helpers_rsu import Rig, dense, make_update, rsu_settings


def product(f) -> torch.Tensor:
    return f.U @ torch.diag(f.S) @ f.Vt


def start(tmp_path, **kw) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path, **kw))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=80.0)
    rig.advance(1.0)
    return rig


def leave(rig: Rig, t: float = 1.0) -> None:
    rig.vehicle("v2", x=90.0, vx=10.0, sent_at=t)


def commands(rig: Rig) -> list[FaultCommand]:
    return [d.msg for d in rig.messages(Channel.COMMAND, FaultCommand)]


def test_a_parked_vehicle_gets_no_command(tmp_path):
    rig = start(tmp_path)
    rig.vehicle("v2", x=90.0, sent_at=1.0)
    rig.vehicle("v1", x=10.0, vx=1.0, sent_at=1.0)  # leaves in 90 s, after its expected 60 s round
    assert commands(rig) == []


def test_leaving_vehicle_without_a_candidate_is_told_to_upload_early(tmp_path):
    rig = start(tmp_path)
    leave(rig)
    [cmd] = commands(rig)
    assert (cmd.vehicle, cmd.task, cmd.round, cmd.action, cmd.migrate_to) == ("v2", "t1", 0, "early_upload", None)
    assert cmd.exit_in_s == pytest.approx(1.0)
    # q* = 0.5 (no previous round), elapsed 0: early upload 1 * (0.5 - 0) = 0.5; abandon 0.001 * 0 + 0.5 = 0.5 (tie)
    assert cmd.costs == {"early_upload": pytest.approx(0.5), "abandon": pytest.approx(0.5)}
    leave(rig, t=2.0)  # a later status changes nothing: one command per (vehicle, task, round)
    assert len(commands(rig)) == 1
    rig.upload(make_update("v2", 0, partial=True, seed=2))
    rig.upload(make_update("v1", 0, seed=1))
    rec = rig.agent.history[-1]
    assert (rec.accepted, rec.ft) == (["v1", "v2"], {"v2": "early_upload"})


def test_leaving_vehicle_migrates_to_the_nearest_free_vehicle_and_the_handoff_is_forwarded(tmp_path):
    rig = start(tmp_path)
    rig.vehicle("v3", x=50.0)  # arrived after the round opened: free, in coverage, lists t1
    rig.vehicle("v4", x=-50.0)  # free too, but farther from v2
    leave(rig)
    [cmd] = commands(rig)
    assert (cmd.action, cmd.migrate_to) == ("migrate", "v3")
    partial = make_update("v2", 0, rank=4, samples=40, joules=12.0, partial=True, seed=2)
    rig.upload(partial)
    assert rig.agent.counters["held"] == 1 and rig.agent.history == ()
    [h] = rig.messages(Channel.HANDOFF, Handoff)
    assert rig.seen[-1].topic == rig.agent.topics.handoff("rsu1", "v3")
    assert (h.msg.vehicle, h.msg.migrated_from, h.msg.rank, h.msg.joules_spent) == ("v3", "v2", 4, 12.0)
    assert torch.equal(h.tensors["q.lora_A"], partial.layers["q"].A)
    assert torch.equal(h.tensors["head.bias"], partial.head["bias"])
    # only the chosen target may continue v2's work
    rig.upload(make_update("v4", 0, migrated_from="v2", seed=4))
    assert rig.agent.counters["rejected"] == {"bad_migration": 1}
    done = make_update("v3", 0, rank=4, samples=40, joules=20.0, migrated_from="v2", seed=3)  # 12 J carried + 8 J
    rig.upload(done)
    u1 = make_update("v1", 0, rank=2, samples=60, joules=5.0, seed=1)
    rig.upload(u1)
    rec = rig.agent.history[-1]
    assert (rec.accepted, rec.ft, rec.energy_j) == (["v1", "v2"], {"v2": "migrate:v3"}, 25.0)
    want = dense([u1.layers, done.layers], [60, 40])  # the target's update stands for v2; the partial is not used
    for name, w in want.items():
        assert torch.allclose(product(rig.agent.tasks["t1"].layers[name]), w, atol=1e-4)


def test_when_the_migration_target_vanishes_the_held_partial_is_aggregated(tmp_path):
    rig = start(tmp_path)
    rig.vehicle("v3", x=50.0)
    leave(rig)
    partial = make_update("v2", 0, samples=40, joules=12.0, partial=True, seed=2)
    rig.upload(partial)
    u1 = make_update("v1", 0, samples=60, joules=5.0, seed=1)
    rig.upload(u1)
    assert rig.agent.history == ()  # still waiting for v3 to finish v2's work
    rig.vehicle("v3", x=50.0, state="offline", sent_at=3.0)
    rec = rig.agent.history[-1]
    assert (rec.accepted, rec.energy_j, rec.closed_by) == (["v1", "v2"], 17.0, "all_arrived")
    want = dense([u1.layers, partial.layers], [60, 40])
    for name, w in want.items():
        assert torch.allclose(product(rig.agent.tasks["t1"].layers[name]), w, atol=1e-4)


def test_a_vehicle_that_cannot_upload_before_leaving_is_abandoned_and_not_waited_for(tmp_path):
    # 1 bit/s uplink: even the smallest adapter cannot reach the RSU in the 1 s left, and no vehicle can take over
    rig = start(tmp_path, ft=FtWeights(uplink_rate_bps=1.0))
    leave(rig)
    [cmd] = commands(rig)
    assert cmd.action == "abandon"
    rig.upload(make_update("v1", 0, seed=1))
    rec = rig.agent.history[-1]
    assert (rec.closed_by, rec.accepted, rec.ft) == ("all_arrived", ["v1"], {"v2": "abandon"})
    assert rig.agent.counters["commands"] == {"abandon": 1}
    stats = rig.messages(Channel.STATS, TaskStats)[-1].msg
    assert (stats.participants, stats.updates) == (2, 1)


def test_decision_inputs_use_each_vehicles_own_announced_share(tmp_path, monkeypatch):
    """Issue 10: e_spent of the leaving vehicle and a candidate's spare budget come from the shares the RSU
    announced (proportional to each vehicle's full-work cost), not from the equal split B / |V|."""
    import rsu_agent.ft_watch as ft_watch
    from proto.messages import RoundAnnouncement

    seen: list[dict] = []
    real = ft_watch.decide
    monkeypatch.setattr(ft_watch, "decide", lambda **kw: seen.append(kw) or real(**kw))
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    # v2 costs three times v1 per round
    rig.agent.tasks["t1"].meta.ref_costs = {"v1": {"r4w1": [1.0, 1.0]}, "v2": {"r4w1": [1.0, 3.0]}}
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=80.0)
    rig.advance(1.0)
    [ann] = [d.msg for d in rig.messages(Channel.ROUND, RoundAnnouncement)]
    assert ann.participants == ["v1", "v2"]
    assert ann.shares["v2"] == pytest.approx(3 * ann.shares["v1"])  # unequal: 25 / 75 of a 100 J budget
    rig.upload(make_update("v1", 0, joules=5.0, seed=1))  # v1 is done: free, a candidate with spare share
    rig.clock.advance_to(31.0)
    rig.vehicle("v1", x=10.0, sent_at=31.0)
    rig.vehicle("v3", x=-50.0, sent_at=31.0)  # arrived after the round opened: announced no share
    expected = rig.agent.tasks["t1"].meta.expected_round_s
    rig.vehicle("v2", x=90.0, vx=10.0, sent_at=31.0)  # leaves in 1 s, 30 s into its round
    [kw] = seen
    assert kw["e_spent_j"] == pytest.approx(ann.shares["v2"] * min(1.0, 30.0 / expected))
    spare = {c.vehicle: c.spare_budget_j for c in kw["candidates"]}
    assert spare == {"v1": pytest.approx(ann.shares["v1"] - 5.0), "v3": pytest.approx(ann.round_budget_j / 2)}
    assert len(commands(rig)) == 1


def test_a_round_stored_without_its_shares_takes_them_from_its_announcement(tmp_path):
    """meta.json written before PendingRound kept `shares`: a restart mid-round still uses the announced ones."""
    from rsu_agent.state import PendingRound

    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.agent.tasks["t1"].meta.ref_costs = {"v1": {"r4w1": [1.0, 1.0]}, "v2": {"r4w1": [1.0, 3.0]}}
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=80.0)
    rig.advance(1.0)
    doc = rig.agent.tasks["t1"].pending.model_dump()
    del doc["shares"]
    old = PendingRound.model_validate(doc)
    assert old.share_j("v2") == pytest.approx(75.0) and old.share_j("v1") == pytest.approx(25.0)
    assert old.share_j("v9") == pytest.approx(50.0)  # not invited: the equal share
