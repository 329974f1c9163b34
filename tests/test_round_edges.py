"""Edges of a round that cost accuracy or rounds in the field: a round without updates reports no accuracy (null,
not 0.0) and the cloud does not take it as a measurement; the observer of `fleet run --broker` writes one row per
round however often the broker delivers its stats; a vehicle's first round (after it or the RSU started) gets
the cold-start allowance on its deadline."""

from __future__ import annotations

from pathlib import Path

from fleet.processes import StatsRows
from proto.messages import RoundAnnouncement, TaskStats
from proto.topics import Channel
from tests.helpers_rsu import Rig, make_update, rsu_settings, task_cfg
from tests.test_cloud_agent import CloudRig


def test_a_round_without_updates_reports_null_accuracy_and_loss(tmp_path: Path) -> None:
    r = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(round_timeout_s=50.0)]))
    r.vehicle("veh1", x=10.0)
    r.advance(1.0)
    r.upload(make_update("veh1", 0, accuracy=0.7))  # round 0: one update, accuracy 0.7
    r.advance(60.0)  # round 1 opens at 6 and gets nothing by its deadline
    r.advance(120.0)
    stats = [d.msg for d in r.messages(Channel.STATS, TaskStats)]
    assert [(s.round, s.updates, s.accuracy) for s in stats[:2]] == [(0, 1, 0.7), (1, 0, None)]
    assert stats[1].loss is None
    assert r.agent.history[1].accuracy == 0.7  # the fleet's record: the global stayed, so did its accuracy


def test_the_cloud_ignores_a_null_accuracy(tmp_path: Path) -> None:
    rig = CloudRig(tmp_path)
    rig.stats("a", 0, 10.0, 0.0, accuracy=None, loss=None, updates=0)  # no update: must not become the baseline
    rig.stats("a", 1, 10.0, 0.6)
    rig.stats("b", 0, 10.0, 0.5)
    acc = rig.agent.state.acc["a"]
    assert (acc.rounds, acc.baseline, acc.last) == (2, 0.6, 0.6)


def test_the_observer_writes_one_row_per_round_however_often_stats_arrive() -> None:
    rows = StatsRows()
    msg = TaskStats(sender="rsu-1", task="t", round=3, energy_j=1.0, budget_j=2.0, lam=0.0, violation_j=0.0,
                    accuracy=None, loss=None, participants=1, updates=0)
    assert rows.add(msg) and not rows.add(msg) and not rows.add(msg.model_copy(update={"seq": 9}))
    assert rows.add(msg.model_copy(update={"round": 4}))
    got = [(row["rsu"], row["round"], row["accuracy"]) for row in rows.rows]
    assert got == [("rsu-1", 3, None), ("rsu-1", 4, None)]


def test_a_cold_vehicle_gets_the_cold_start_allowance_and_a_warm_one_does_not(tmp_path: Path) -> None:
    r = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(round_timeout_s=50.0, round_gap_s=5.0)],
                                   cold_start_s=100.0))
    r.vehicle("veh1", x=10.0)
    r.advance(1.0)
    r.upload(make_update("veh1", 0))
    r.advance(6.5)  # round 1 opens at 6: veh1 delivered to us, it is warm
    r.vehicle("veh1", x=10.0, state="offline", sent_at=2.0)  # restarted: it loads its model again
    r.vehicle("veh1", x=10.0, sent_at=3.0)
    r.advance(60.0)  # round 1 closes at its deadline (56); round 2 opens at 61 with a cold veh1
    r.advance(62.0)
    anns = [d.msg for d in r.messages(Channel.ROUND, RoundAnnouncement)]
    assert [(a.round, a.deadline - a.sent_at) for a in anns] == [(0, 150.0), (1, 50.0), (2, 150.0)]
