"""The contract stands alone (issue 13): rejection notices reach the vehicle, rate-limited; round 0 puts the
layer dims and the head on the wire; rank 0 has one encoding; the vehicle status names its RSU."""

from __future__ import annotations

from proto.codec import decode
from proto.messages import Rejected, RoundAnnouncement
from proto.reasons import REASONS
from proto.topics import Channel
from tests.helpers_rsu import HEAD, LAYERS, RSU, TOPICS, Rig, make_update, rsu_settings


def _notices(rig: Rig) -> list[Rejected]:
    out = []
    for d in rig.seen:
        if TOPICS.parse(d.topic).channel is Channel.COMMAND:
            msg = decode(d.payload).msg
            if isinstance(msg, Rejected):
                out.append(msg)
    return out


def test_a_refused_update_is_notified_to_its_vehicle_once_per_reason_per_minute(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    for _ in range(3):
        rig.upload(make_update("v1", 0, alpha=8.0))  # alpha_mismatch, three times
    rig.upload(make_update("v1", 0, rank=3))  # rank_not_candidate
    notes = _notices(rig)
    assert [(n.vehicle, n.reason.value, n.about, n.task) for n in notes] == [
        ("v1", "alpha_mismatch", "update", "t1"), ("v1", "rank_not_candidate", "update", "t1")]
    assert all(n.sender == RSU for n in notes)
    rig.upload(make_update("v1", 0))
    rig.upload(make_update("v1", 0))  # QoS 1 redelivery after the round closed: late, notified once
    rig.advance(rig.clock.now() + 61.0)
    rig.upload(make_update("v1", 1, alpha=8.0))  # the minute has passed: notified again
    assert [n.reason.value for n in _notices(rig)][-2:] == ["late", "alpha_mismatch"]


def test_every_reason_the_agents_raise_is_in_the_enum():
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    found = set()
    for pkg in ("proto", "rsu_agent", "cloud_agent", "edge_agent", "fedrank"):
        for f in (root / pkg).rglob("*.py"):
            found |= set(re.findall(r"(?:UpdateRejected|PayloadRejected|TopicRejected|StatsRejected)\(\s*\"([a-z_]+)\"",
                                    f.read_text()))
    assert found and found <= REASONS, sorted(found - REASONS)
    assert "storage" in REASONS


def test_round_0_announces_dims_and_no_factors_and_later_rounds_the_head(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    first = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    assert first.msg.rank == 0 and first.tensors == {} and first.msg.head == {}
    assert {k: tuple(v) for k, v in first.msg.dims.items()} == LAYERS
    rig.upload(make_update("v1", 0))
    rig.advance(rig.clock.now() + 6.0)
    second = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert second.round == 1 and second.head == {f"head.{k}": list(v) for k, v in HEAD.items()}


def test_a_global_that_aggregates_to_rank_0_is_announced_like_round_0(tmp_path):
    import torch

    from tests.helpers_rsu import factors

    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    zero = {n: type(f)(A=torch.zeros_like(f.A), B=torch.zeros_like(f.B)) for n, f in factors(4, 0).items()}
    rig.upload(make_update("v1", 0, layers=zero))
    rig.advance(rig.clock.now() + 6.0)
    dec = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    assert dec.msg.round == 1 and dec.msg.rank == 0
    assert sorted(dec.tensors) == sorted(f"head.{k}" for k in HEAD)  # no zero-width U/S/Vt


def test_the_vehicle_status_names_the_rsu_whose_round_listed_it_and_a_notice_is_counted(tmp_path):
    from proto.codec import encode
    from tests.test_vehicle_agent import Rig as VehicleRig

    rig = VehicleRig(tmp_path)
    assert rig.status[-1].rsu is None  # not configured, no round seen yet
    rig.announce(0)
    rig.agent.pump()
    rig.advance(5.0)
    assert rig.status[-1].rsu == "rsu1"
    note = Rejected(sender="rsu1", vehicle="veh1", reason="alpha_mismatch", task="t1", detail="8 != 16")
    rig.rsu.publish(TOPICS.command("rsu1", "veh1"), encode(note), qos=1)
    rig.agent.pump()
    assert rig.agent.counters.get("refused_alpha_mismatch") == 1
