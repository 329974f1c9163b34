"""Overlapping coverage: a vehicle listed in two RSUs' rounds can only train one. When its status says it is busy
with another round, the RSU stops waiting for it instead of holding the round open until the deadline."""

from __future__ import annotations

from pathlib import Path

from proto.codec import encode
from proto.messages import AgentStatus, Position, RoundRef, Velocity
from proto.topics import Role
from tests.helpers_rsu import TOPICS, Rig, make_update, rsu_settings


def busy_status(vid: str, ref: RoundRef, sent_at: float) -> tuple[str, bytes]:
    msg = AgentStatus(sender=vid, sent_at=sent_at, role="vehicle", state="online", tasks=["t1"], busy=True,
                      working_on=ref, position=Position(x=0.0, y=0.0), velocity=Velocity(vx=0.0, vy=0.0))
    return TOPICS.status(Role.VEHICLE, vid), encode(msg)


def test_participant_busy_with_another_rsus_round_is_dropped_and_the_round_closes(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=20.0)
    rig.advance(1.0)
    p = rig.agent.tasks["t1"].pending
    assert p is not None and sorted(p.participants) == ["v1", "v2"]
    rig.upload(make_update("v1", p.round, seed=1))
    assert rig.agent.history == ()  # still waiting for v2
    rig.send(*busy_status("v2", RoundRef(rsu="rsu-other", task="t1", round=0), sent_at=1.5))
    [rec] = rig.agent.history
    assert (rec.closed_by, rec.accepted) == ("all_arrived", ["v1"])
    assert rec.round_latency_s < 1.0  # not the round timeout


def test_participant_busy_with_this_very_round_is_kept(tmp_path: Path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=20.0)
    rig.advance(1.0)
    p = rig.agent.tasks["t1"].pending
    rig.upload(make_update("v1", p.round, seed=1))
    rig.send(*busy_status("v2", RoundRef(rsu=rig.agent.id, task="t1", round=p.round), sent_at=1.5))
    assert rig.agent.history == ()  # v2 is training for us: keep waiting
    rig.upload(make_update("v2", p.round, seed=2))
    assert rig.agent.history[-1].accepted == ["v1", "v2"]
