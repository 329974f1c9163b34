"""The share rule (docs/algorithms.md section 3): budget shares proportional to each vehicle's reference cost."""

from __future__ import annotations

import pytest

from proto.messages import RoundAnnouncement, UpdateReport
from proto.topics import Channel
from rsu_agent.shares import MAX_CONFIGS, CostTable, budget_shares, hardware_factors, learn_reference
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


def test_hardware_factors_by_hand_with_uneven_coverage() -> None:
    """Two fixed-point passes of h_v = sum n e / sum n E_a, E_a the mean of e_ua / h_u over the vehicles that
    played a; normalised to mean 1. Three vehicles played x and two y, in different numbers: no term cancels."""
    costs: CostTable = {"a": {"x": [1.0, 100.0], "y": [3.0, 50.0]}, "b": {"x": [2.0, 200.0]},
                        "c": {"x": [1.0, 130.0], "y": [1.0, 75.0]}}

    def factors(ex: float, ey: float) -> dict[str, float]:
        h = {"a": 250 / (ex + 3 * ey), "b": 400 / (2 * ex), "c": 205 / (ex + ey)}
        return {v: x / (sum(h.values()) / 3) for v, x in h.items()}

    h1 = factors(430 / 3, 125 / 2)  # pass 1, every h = 1
    h2 = factors((100 / h1["a"] + 200 / h1["b"] + 130 / h1["c"]) / 3, (50 / h1["a"] + 75 / h1["c"]) / 2)
    h = hardware_factors(costs)
    assert h == pytest.approx(h2, rel=1e-12)
    assert h == pytest.approx({"a": 0.67619, "b": 1.38878, "c": 0.93502}, abs=1e-5)
    assert sum(h.values()) == pytest.approx(3.0)
    assert hardware_factors({"a": {}}) == {}  # a vehicle with no known cost has no factor


def _report(rank: int, joules: float) -> UpdateReport:
    return UpdateReport(rank=rank, samples=10, joules=joules, energy_source="rapl", energy_measured=True,
                        train_s=1.0, wall_s=1.0, local_accuracy=0.5, loss=0.5)


def test_small_energies_are_learned_and_the_table_keeps_the_most_played_configurations() -> None:
    costs: CostTable = {}
    assert learn_reference(costs, "a", _report(1, 0.5))  # below 1 J is still a measurement
    assert costs["a"]["r1w1"] == [1.0, 0.5]
    learn_reference(costs, "a", _report(1, 11.0))
    # MAX_CONFIGS configurations, each played twice but rank 30: the least played one is the dearest, and it is
    # the first key in neither insertion nor string order
    for rank in range(2, MAX_CONFIGS + 1):
        for _ in range(1 if rank == 30 else 2):
            learn_reference(costs, "a", _report(rank, 1000.0 if rank == 30 else 10.0 + rank))
    assert len(costs["a"]) == MAX_CONFIGS
    learn_reference(costs, "a", _report(MAX_CONFIGS + 1, 5.0))
    assert len(costs["a"]) == MAX_CONFIGS and "r30w1" not in costs["a"] and "r65w1" in costs["a"]
