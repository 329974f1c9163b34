"""The share rule (docs/algorithms.md section 3): budget shares proportional to each vehicle's reference cost."""

from __future__ import annotations

import pytest

from proto.messages import RoundAnnouncement
from proto.topics import Channel
from rsu_agent.shares import CostTable, budget_shares, hardware_factors, learn_reference
from tests.helpers_rsu import Rig, make_update, rsu_settings, task_cfg


def test_shares_are_proportional_to_hardware_factors_and_equal_when_unknown() -> None:
    assert budget_shares(90.0, ["a", "b", "c"], {}) == {"a": 30.0, "b": 30.0, "c": 30.0}
    # a (NX-like) spends twice b (Nano-like) on the same configuration; c unseen counts as the mean of the known
    costs = {"a": {"r8w1": [3.0, 200.0]}, "b": {"r8w1": [5.0, 100.0]}}
    shares = budget_shares(120.0, ["a", "b", "c"], costs)
    assert shares["a"] == pytest.approx(2 * shares["b"]) and sum(shares.values()) == pytest.approx(120.0)
    assert shares["c"] == pytest.approx((shares["a"] + shares["b"]) / 2)
    assert budget_shares(10.0, [], costs) == {}


def test_hardware_factor_compares_like_configurations_not_the_last_round() -> None:
    # b played mostly the cheap quarter-work configuration, a the full one; both have the same hardware, and the
    # quarter-work round is not a quarter of the energy (fixed radio costs): the factors must still be equal
    costs = {"a": {"r8w1": [9.0, 100.0], "r8w0.25": [1.0, 40.0]},
             "b": {"r8w1": [1.0, 100.0], "r8w0.25": [9.0, 40.0]}}
    h = hardware_factors(costs)
    assert h["a"] == pytest.approx(1.0) and h["b"] == pytest.approx(1.0)
    # ... and an NX-like vehicle at twice the energy on every configuration gets twice the factor
    costs["c"] = {"r8w1": [2.0, 200.0], "r8w0.25": [2.0, 80.0]}
    h = hardware_factors(costs)
    assert h["c"] == pytest.approx(2 * h["a"]) and h["a"] == pytest.approx(h["b"])


def test_reference_costs_learn_full_own_rounds_per_configuration_only() -> None:
    costs: CostTable = {}
    assert learn_reference(costs, "a", make_update("a", 0, joules=40.0, work=0.5).report)
    assert learn_reference(costs, "a", make_update("a", 0, joules=60.0, work=0.5).report)
    assert learn_reference(costs, "a", make_update("a", 0, joules=100.0).report)
    assert costs == {"a": {"r4w0.5": [2.0, 50.0], "r4w1": [1.0, 100.0]}}
    for rep in (make_update("a", 0, joules=5.0, partial=True).report,
                make_update("a", 0, joules=5.0, migrated_from="b").report,
                make_update("a", 0, joules=0.0).report):
        assert not learn_reference(costs, "a", rep)
    assert costs == {"a": {"r4w0.5": [2.0, 50.0], "r4w1": [1.0, 100.0]}}


def test_announcements_carry_the_work_fractions_and_shares_learned_from_reports(tmp_path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(work=[0.25, 0.5, 1.0])]))
    for v in ("v1", "v2"):
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)
    ann = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert ann.work == [0.25, 0.5, 1.0] and ann.shares == {"v1": 50.0, "v2": 50.0}  # B = 100 J, nothing known
    rig.upload(make_update("v1", 0, joules=20.0, work=0.5, seed=1))
    rig.upload(make_update("v2", 0, joules=40.0, work=0.5, seed=2))  # v2 spends twice v1 on the same configuration
    rig.advance(7.0)
    ann = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert ann.round == 1 and ann.shares == {"v1": pytest.approx(100 / 3), "v2": pytest.approx(200 / 3)}
    rig.agent = rig.new_agent()  # a restart keeps what the RSU learned
    assert rig.agent.tasks["t1"].meta.ref_costs == {"v1": {"r4w0.5": [1.0, 20.0]}, "v2": {"r4w0.5": [1.0, 40.0]}}


def test_work_fractions_must_end_with_the_reference_configuration() -> None:
    with pytest.raises(ValueError):
        task_cfg(work=[0.25, 0.5])
    with pytest.raises(ValueError):
        task_cfg(work=[0.5, 0.25, 1.0])
