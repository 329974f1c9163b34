"""Vehicles that vanish: a will sent with the connect-time timestamp still drops the vehicle, and a vehicle
that stopped reporting is no longer invited."""

from __future__ import annotations

from pathlib import Path

from proto.messages import RoundAnnouncement
from proto.topics import Channel
from tests.helpers_rsu import TOPICS, Rig, make_update, rsu_settings, task_cfg


def test_will_older_than_the_last_status_still_drops_the_vehicle(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0, sent_at=0.9)
    rig.vehicle("v2", x=20.0, sent_at=0.9)
    rig.advance(1.0)
    rig.upload(make_update("v1", 0, seed=1))
    # the broker publishes v2's will, built when v2 connected (t=0.1), after v2's last status (t=0.9)
    rig.vehicle("v2", x=20.0, state="offline", sent_at=0.1)
    rec = rig.agent.history[-1]
    assert (rec.closed_by, rec.accepted) == ("all_arrived", ["v1"])


def test_vehicle_silent_longer_than_the_limit_is_not_invited(tmp_path: Path) -> None:
    # rounds close at their 5 s deadline; only v1 reports after t = 1
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(round_timeout_s=5.0)], vehicle_silence_s=30.0))
    rig.vehicle("v1", x=10.0, sent_at=1.0)
    rig.vehicle("v2", x=20.0, sent_at=1.0)
    for t in range(2, 60, 2):
        rig.advance(float(t))
        rig.vehicle("v1", x=10.0, sent_at=float(t))
    anns = [a.msg for a in rig.messages(Channel.ROUND, RoundAnnouncement)]
    early = [a for a in anns if a.sent_at < 30.0]
    late = [a for a in anns if a.sent_at > 32.0]
    assert early and all(a.participants == ["v1", "v2"] for a in early)
    assert late and all(a.participants == ["v1"] for a in late)


def test_finished_task_clears_its_retained_announcement(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(max_rounds=1)]))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    assert rig.broker.retained(TOPICS.round(rig.agent.id, "t1")) is not None
    rig.upload(make_update("v1", 0, seed=1))
    assert len(rig.agent.history) == 1
    assert rig.broker.retained(TOPICS.round(rig.agent.id, "t1")) is None
