"""RSU rounds over the mock broker with synthetic updates: open, close, dedupe, dual price, budgets."""

from __future__ import annotations

import pytest
import torch

from proto.messages import RoundAnnouncement, TaskStats
from proto.topics import Channel
from tests.helpers_rsu import Rig, budget, dense, make_update, rsu_settings, task_cfg


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path, rsu_settings(tmp_path))


def open_round(rig: Rig, vehicles=("v1", "v2")) -> RoundAnnouncement:
    for v in vehicles:
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)  # join_wait_s
    return rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg


def product(f) -> torch.Tensor:
    return f.U @ torch.diag(f.S) @ f.Vt


def test_round_opens_for_online_vehicles_in_coverage_that_list_the_task(rig):
    rig.vehicle("inside", x=50.0)
    rig.vehicle("outside", x=150.0)
    rig.vehicle("other_task", x=0.0, tasks=("t2",))
    rig.vehicle("gone", x=0.0, state="offline")
    rig.vehicle("busy", x=0.0, busy=True)
    assert rig.messages(Channel.ROUND, RoundAnnouncement) == []  # still collecting statuses
    rig.advance(1.0)
    dec = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    ann = dec.msg
    assert ann.participants == ["inside"]
    assert (ann.round, ann.rank, ann.lam, ann.round_budget_j, ann.deadline) == (0, 0, 0.0, 100.0, 101.0)
    assert dec.tensors == {}  # round 0: the global is zero, vehicles use peft's init
    assert rig.broker.retained(rig.agent.topics.round("rsu1", "t1")) is not None


def test_round_waits_when_too_few_vehicles_and_retries(rig):
    rig.advance(1.0)
    assert rig.messages(Channel.ROUND, RoundAnnouncement) == []
    rig.vehicle("v1", x=0.0)
    rig.advance(10.0)  # not yet: next look at 1 + participant_retry_s = 11
    assert rig.messages(Channel.ROUND, RoundAnnouncement) == []
    rig.advance(11.0)
    assert rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg.participants == ["v1"]


def test_round_closes_when_all_updates_arrived_and_aggregates_them(rig):
    open_round(rig)
    u1 = make_update("v1", 0, rank=2, samples=100, joules=30.0, accuracy=0.6, seed=1)
    u2 = make_update("v2", 0, rank=8, samples=300, joules=50.0, accuracy=0.8, seed=2)
    rig.upload(u1)
    assert rig.agent.history == ()
    rig.upload(u2)
    rec = rig.agent.history[-1]
    assert (rec.round, rec.updates, rec.closed_by, rec.energy_j) == (0, 2, "all_arrived", 80.0)
    assert sorted(rec.ranks) == [2, 8]
    assert rec.round_latency_s == 0.0  # closed at the same simulated instant it opened
    stats = rig.messages(Channel.STATS, TaskStats)[-1].msg
    assert stats.accuracy == pytest.approx((100 * 0.6 + 300 * 0.8) / 400)
    assert (stats.energy_j, stats.participants, stats.updates, stats.energy_measured) == (80.0, 2, 2, True)
    tr = rig.agent.tasks["t1"]
    want = dense([u1.layers, u2.layers], [100, 300])
    for name, w in want.items():
        assert torch.allclose(product(tr.layers[name]), w, atol=1e-4)
    assert torch.allclose(tr.head["bias"], (100 * u1.head["bias"] + 300 * u2.head["bias"]) / 400, atol=1e-6)


def test_round_closes_at_the_deadline_without_the_missing_vehicle(rig):
    open_round(rig)
    u1 = make_update("v1", 0, seed=1)
    rig.upload(u1)
    rig.advance(100.0)
    assert rig.agent.history == ()
    rig.advance(101.0)
    rec = rig.agent.history[-1]
    assert (rec.closed_by, rec.updates, rec.accepted, rec.round_latency_s) == ("deadline", 1, ["v1"], 100.0)
    # the next round opens round_gap_s later with the global of the one update
    rig.advance(106.0)
    dec = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    assert dec.msg.round == 1 and dec.msg.rank == 4
    assert dec.tensors == {}  # the adapter travels in rank tiers, cut at the candidate ranks: 1-2, 3-4
    assert [(t.index, t.first, t.last) for t in dec.msg.tiers] == [(0, 1, 2), (1, 3, 4)]
    merged = rig.global_tensors(1)
    assert set(merged) == {"q.U", "q.S", "q.Vt", "v.U", "v.S", "v.Vt", "head.weight", "head.bias"}
    assert merged["q.U"].shape[1] == 4 and merged["q.Vt"].shape[0] == 4


def test_duplicate_and_late_updates_are_counted_never_double_counted(rig):
    open_round(rig)
    u1 = make_update("v1", 0, joules=30.0, seed=1)
    rig.upload(u1)
    rig.upload(u1)  # a redelivery
    assert rig.agent.counters["duplicate"] == 1
    assert rig.agent.counters["accepted"] == 1
    rig.advance(101.0)
    rig.upload(make_update("v2", 0, joules=50.0, seed=2))  # after the deadline
    assert rig.agent.counters["late"] == 1
    rec = rig.agent.history[-1]
    assert (rec.updates, rec.energy_j) == (1, 30.0)
    assert len(rig.agent.history) == 1


def test_too_few_updates_keep_the_global_and_say_why(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(min_updates=2)]))
    open_round(rig)
    rig.upload(make_update("v1", 0, joules=30.0))
    rig.advance(101.0)
    rec = rig.agent.history[-1]
    assert rec.updates == 0 and "min_updates" in rec.note
    assert rig.agent.tasks["t1"].layers == {}
    assert rig.messages(Channel.STATS, TaskStats)[-1].msg.updates == 0


def test_lambda_rises_when_overspent_and_falls_when_underspent(rig):
    open_round(rig)  # B = 100 J, mu = DEFAULT_MU = 0.1
    rig.upload(make_update("v1", 0, joules=100.0, seed=1))
    rig.upload(make_update("v2", 0, joules=200.0, seed=2))
    rec = rig.agent.history[-1]
    assert rec.lam == pytest.approx(0 + 0.1 * min(1, (300 - 100) / 100))  # 0.1: the excess is clipped at 1
    assert rec.violation_j == pytest.approx(200.0)
    rig.advance(6.0)  # next round, announced with the new lambda
    assert rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg.lam == pytest.approx(0.1)
    rig.upload(make_update("v1", 1, joules=20.0, seed=3))
    rig.upload(make_update("v2", 1, joules=30.0, seed=4))
    rec = rig.agent.history[-1]
    assert rec.lam == pytest.approx(0.1 + 0.1 / (1 + 1 / 100) ** 0.5 * (50 - 100) / 100)  # round 1: mu_1 < mu_0
    assert rec.violation_j == pytest.approx(200.0)  # cumulative; this round added nothing
    assert rig.messages(Channel.STATS, TaskStats)[-1].msg.lam == pytest.approx(rec.lam)


def test_cloud_budget_applies_from_the_next_announcement(rig):
    ann = open_round(rig)
    rig.send(*budget("t1", 40.0), retain=True)
    rig.upload(make_update("v1", 0, joules=60.0, seed=1))
    rig.upload(make_update("v2", 0, joules=0.0, seed=2))
    rec = rig.agent.history[-1]
    assert ann.round_budget_j == 100.0 and rec.budget_j == 100.0  # the open round keeps what it announced
    assert rec.lam == 0.0  # 60 J of 100 J: underspent, clipped at 0
    rig.advance(6.0)
    assert rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg.round_budget_j == 40.0
    rig.send(*budget("t1", 0.0, window=2))
    assert rig.agent.counters["rejected"] == {"bad_budget": 1}


def test_offline_vehicle_is_dropped_without_stalling_the_round(rig):
    open_round(rig)
    rig.upload(make_update("v1", 0, seed=1))
    rig.vehicle("v2", x=10.0, state="offline", sent_at=0.5)  # its will
    rec = rig.agent.history[-1]
    assert (rec.closed_by, rec.updates, rec.participants) == ("all_arrived", 1, ["v1", "v2"])


def test_two_tasks_sharing_vehicles_take_turns(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg("t1"), task_cfg("t2")]))
    rig.vehicle("v1", x=0.0, tasks=("t1", "t2"))
    rig.advance(1.0)
    anns = rig.messages(Channel.ROUND, RoundAnnouncement)
    assert [(a.msg.task, a.msg.participants) for a in anns] == [("t1", ["v1"])]  # t2 waits: v1 works for t1
    rig.upload(make_update("v1", 0, task="t1"))
    rig.advance(1.0)  # timers due now fire
    anns = rig.messages(Channel.ROUND, RoundAnnouncement)
    assert [(a.msg.task, a.msg.round) for a in anns] == [("t1", 0), ("t2", 0)]  # freed v1 goes to t2 at once


def test_aggregation_time_is_on_the_clock_and_in_the_next_announcement(rig):
    rig.aggregate_s = 1.5
    ann = open_round(rig)  # at 1.0
    assert ann.last_round_latency_s is None  # no round before this one
    rig.advance(4.0)
    rig.upload(make_update("v1", 0, rank=2, samples=100, joules=30.0, accuracy=0.6, seed=1))
    rig.upload(make_update("v2", 0, rank=8, samples=300, joules=50.0, accuracy=0.8, seed=2))
    rec = rig.agent.history[-1]
    # announced at 1.0, closed at 4.0, then 1.5 s aggregating
    assert rec.aggregate_s == 1.5 and rec.round_latency_s == pytest.approx(3.0 + 1.5)
    rig.advance(4.0 + 1.5 + 5.0 - 0.01)  # aggregation + round_gap_s: not yet
    assert rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg.round == 0
    rig.advance(4.0 + 1.5 + 5.0)
    nxt = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert nxt.round == 1 and nxt.last_round_latency_s == pytest.approx(4.5)


def test_a_round_budget_hook_sizes_each_round_from_the_invited_vehicles(rig):
    seen = []

    def sized(task: str, invited: list[str], cloud_j: float | None) -> float:
        seen.append((task, invited, cloud_j))
        return 10.0 * len(invited)

    rig.agent.round_budget = sized
    ann = open_round(rig, vehicles=("v1", "v2", "v3"))
    assert ann.round_budget_j == 30.0 and seen == [("t1", ["v1", "v2", "v3"], None)]
    assert rig.agent.tasks["t1"].pending.budget_j == 30.0  # the dual step prices against what was announced


def test_a_failing_round_budget_hook_leaves_the_task_budget(rig):
    def broken(task: str, invited: list[str], cloud_j: float | None) -> float:
        raise ValueError("no profile for v1")

    rig.agent.round_budget = broken
    assert open_round(rig).round_budget_j == 100.0
