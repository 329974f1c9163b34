"""Fault tolerance that knows the road: exit times along the route, the vehicle's own exit prediction at the RSU,
and V2V/uplink rates from the channel model."""

from __future__ import annotations

import math

import pytest

from fleet.sim.channel import ChannelConfig, rate_bps
from fleet.sim.links import ChannelRates, fleet_channel
from fleet.sim.mobility import Trajectory
from fleet.sim.route import route_exit_s
from proto.messages import AgentStatus, FaultCommand
from proto.topics import Channel
from rsu_agent.fault_tolerance import Candidate, FixedRates, FtWeights, decide
from tests.helpers_rsu import Rig, rsu_settings

# Heading east at 10 m/s from x = 80 toward the edge of a 100 m disc at the origin, then turning north at
# x = 90 and back west along y = 20: it never leaves the disc in the first 20 s (|(90, 20)| = 92.2 < 100).
TURNING = Trajectory("v", [0.0, 1.0, 3.0, 13.0], [80.0, 90.0, 90.0, -10.0], [0.0, 0.0, 20.0, 20.0])


def test_exit_along_a_turning_route_is_later_than_the_straight_line() -> None:
    assert route_exit_s(TURNING, 0.0, 0.0, 0.0, 100.0, horizon_s=600.0) == 600.0  # ends inside: the horizon
    straight = Trajectory("s", [0.0, 10.0], [80.0, 180.0], [0.0, 0.0])
    assert route_exit_s(straight, 0.0, 0.0, 0.0, 100.0, 600.0) == pytest.approx(2.0)
    assert route_exit_s(straight, 5.0, 0.0, 0.0, 100.0, 600.0) == 0.0  # already outside
    # a route that turns and then leaves: north from (90, 0) at 10 m/s leaves at y = sqrt(100^2 - 90^2)
    out = Trajectory("o", [0.0, 1.0, 11.0], [80.0, 90.0, 90.0], [0.0, 0.0, 100.0])
    assert route_exit_s(out, 0.0, 0.0, 0.0, 100.0, 600.0) == pytest.approx(1.0 + math.sqrt(100**2 - 90**2) / 10)
    assert route_exit_s(out, 0.0, 0.0, 0.0, 100.0, horizon_s=2.0) == 2.0  # capped by the look-ahead
    with pytest.raises(ValueError):
        route_exit_s(out, 0.0, 0.0, 0.0, 0.0, 10.0)


def _start(tmp_path) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("v2", x=80.0)
    rig.advance(1.0)
    return rig


def _commands(rig: Rig) -> list[FaultCommand]:
    return [d.msg for d in rig.messages(Channel.COMMAND, FaultCommand)]


def test_a_vehicle_whose_route_stays_in_coverage_gets_no_early_upload(tmp_path) -> None:
    rig = _start(tmp_path)
    # heading for the edge (straight line: out in 1 s) but its route turns: it reports 600 s to this RSU
    exit_ = route_exit_s(TURNING, 1.0, 0.0, 0.0, 100.0, 600.0)
    rig.vehicle("v2", x=90.0, vx=10.0, sent_at=1.0, exits={"rsu1": exit_})
    assert _commands(rig) == []
    assert rig.agent.counters["exit_source"] == {"route": 1}


def test_an_exit_for_another_rsu_falls_back_to_the_straight_line(tmp_path) -> None:
    rig = _start(tmp_path)
    rig.vehicle("v2", x=90.0, vx=10.0, sent_at=1.0, exits={"elsewhere": 600.0})
    [cmd] = _commands(rig)
    assert cmd.action == "early_upload" and cmd.exit_in_s == pytest.approx(1.0)
    assert rig.agent.counters["exit_source"] == {"line": 1}


def test_a_reported_early_exit_triggers_a_decision_without_velocity_toward_the_edge(tmp_path) -> None:
    rig = _start(tmp_path)
    rig.vehicle("v2", x=80.0, vx=0.0, sent_at=1.0, exits={"rsu1": 5.0})  # stopped at a light, the route leaves
    [cmd] = _commands(rig)
    assert cmd.exit_in_s == pytest.approx(5.0)


def test_status_rejects_a_negative_exit_time() -> None:
    with pytest.raises(ValueError):
        AgentStatus(sender="v", role="vehicle", state="online", exit_in_s={"rsu1": -1.0})


def test_rates_come_from_the_channel_model() -> None:
    ch = ChannelConfig()
    rates = ChannelRates(ch)
    assert rates.uplink_bps(100.0) == rate_bps(100.0, ch) and rates.v2v_bps(30.0) == rate_bps(30.0, ch)
    assert rates.v2v_bps(30.0) > rates.v2v_bps(300.0)  # farther peers are slower
    near = Candidate("near", 10.0, 5.0)
    far = Candidate("far", 400.0, 5.0)
    w = FtWeights(alpha_tau=1.0)
    kw = dict(q_target=0.5, q_partial=0.0, e_spent_j=0.0, adapter_bytes=1_000_000, weights=w, exit_in_s=100.0)
    d_near = decide(candidates=[near], rates=rates, rsu_distance_m=50.0, **kw)
    d_far = decide(candidates=[far], rates=rates, rsu_distance_m=50.0, **kw)
    assert d_near.costs["migrate"] == pytest.approx(8e6 / rate_bps(10.0, ch) * (1 + w.beta_e * w.p_tx_w))
    assert d_far.costs["migrate"] > d_near.costs["migrate"]
    # no link model: the rates configured in the weights
    d_fixed = decide(candidates=[near], **kw)
    assert d_fixed.costs["migrate"] == pytest.approx(8e6 / w.v2v_rate_bps * (1 + w.beta_e * w.p_tx_w))
    assert FixedRates.from_weights(w).v2v_bps(1e9) == w.v2v_rate_bps


def test_fleet_channel_defaults_when_the_config_names_none() -> None:
    assert fleet_channel(object()) == ChannelConfig()
