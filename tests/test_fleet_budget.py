"""Budgets that bind: sized from the invited vehicles between their cheapest and dearest configurations."""

from __future__ import annotations

import pytest

from edge_agent.bandit import Arm, arm_set
from fleet.budget import budget_range, sized_budget
from fleet.config import FleetConfig
from fleet.cost import FleetCostModel
from fleet.costing import FleetCosting, WireSizes
from fleet.sim.compute import MINILM_L6
from fleet.sim.devices import get_profile

LAYERS = {f"l{i}.{t}": (384, 384) for i in range(6) for t in ("q", "v")}


def costing(**over: object) -> FleetCosting:
    cfg = FleetConfig(**{"ranks": [2, 4, 8, 16, 32], "local_steps": 10, **over})
    devices = {"nano": get_profile("jetson-orin-nano"), "agx": get_profile("jetson-agx-orin")}
    where = {"nano": (100.0, 0.0), "agx": (250.0, 0.0)}
    cost = FleetCostModel(devices, MINILM_L6, cfg.batch_size, cfg.max_length, locate=lambda v: where[v],
                          rsu_sites=[(0.0, 0.0)], channel=cfg.radio)
    return FleetCosting(cfg, cost, devices, LAYERS, "svd")


def test_range_and_tightness_by_hand() -> None:
    cost = {("a", 1): 3.0, ("a", 2): 5.0, ("b", 1): 1.0, ("b", 2): 4.0}
    lo, hi = budget_range(["a", "b"], lambda v: [1, 2], lambda v, c: cost[(v, c)])
    assert (lo, hi) == (3.0 + 1.0, 5.0 + 4.0)
    assert sized_budget(lo, hi, 0.0) == 4.0 and sized_budget(lo, hi, 1.0) == 9.0
    assert sized_budget(lo, hi, 0.5) == pytest.approx(4.0 + 0.5 * 5.0)
    with pytest.raises(ValueError):
        sized_budget(lo, hi, -0.1)
    with pytest.raises(ValueError):
        budget_range(["a"], lambda v: [], lambda v, c: 1.0)


@pytest.mark.parametrize("tightness", [0.0, 1.0])
def test_tightness_zero_is_met_by_the_cheapest_configuration_and_one_by_the_dearest(tightness: float) -> None:
    c = costing(energy_budget_scale=tightness)
    hook = c.round_budget(even_split_j=1.0)
    invited = ["nano", "agx"]
    budget = hook("t", invited, None)
    cheapest = sum(min(c.joules(v, r) for r in c.candidates(v)) for v in invited)
    dearest = sum(max(c.joules(v, r) for r in c.candidates(v)) for v in invited)
    played = cheapest if tightness == 0.0 else dearest
    assert played <= budget * (1 + 1e-12)
    # the announced configurations are ranks x work fractions: the cheapest is the smallest rank at the least work,
    # the dearest the largest rank the device allows at full work
    work = [0.25, 0.5, 1.0]
    assert c.candidates("nano") == arm_set([2, 4, 8, 16], work)
    assert c.candidates("agx") == arm_set([2, 4, 8, 16, 32], work)
    assert min(c.candidates("nano"), key=lambda a: c.joules("nano", a)) == Arm(2, 0.25)
    assert max(c.candidates("agx"), key=lambda a: c.joules("agx", a)) == Arm(32, 1.0)
    # ... and nothing dearer fits: tightness 0 refuses the next work fraction up on the smallest board
    if tightness == 0.0:
        assert cheapest - c.joules("nano", Arm(2, 0.25)) + c.joules("nano", Arm(2, 0.5)) > budget


@pytest.mark.parametrize("tightness", [0.0, 1.0])
def test_rank_only_arms_size_the_budget_from_full_work_rounds(tightness: float) -> None:
    c = costing(energy_budget_scale=tightness, arms="ranks")
    assert c.candidates("nano") == [Arm(r, 1.0) for r in (2, 4, 8, 16)]
    budget = c.round_budget(even_split_j=1.0)("t", ["nano", "agx"], None)
    rank = 2 if tightness == 0.0 else None
    played = c.joules("nano", Arm(rank or 16)) + c.joules("agx", Arm(rank or 32))
    assert played == pytest.approx(budget)
    if tightness == 0.0:  # no work fraction below 1 was announced: the floor is higher than with work arms
        floor = costing(energy_budget_scale=0.0).round_budget(even_split_j=1.0)("t", ["nano", "agx"], None)
        assert budget > floor


def test_round_energy_counts_download_train_and_upload_of_the_invited_vehicles_only() -> None:
    c = costing()
    wire = WireSizes(LAYERS, 32, 32)
    d = c.cost.download("nano", wire.download(8)).joules
    t = c.cost.train("nano", "t", 8, 10, 0).joules
    u = c.cost.upload("nano", wire.upload(8)).joules
    assert c.joules("nano", 8) == pytest.approx(d + t + u) and d > 0 and u > 0
    hook = c.round_budget(even_split_j=1.0)
    assert hook("t", ["nano"], None) < hook("t", ["nano", "agx"], None)


def test_the_clouds_share_scales_tightness_and_never_goes_below_the_cheapest() -> None:
    c = costing(energy_budget_scale=0.5)
    hook = c.round_budget(even_split_j=10.0)
    lo, hi = budget_range(["nano"], c.candidates, c.joules)
    assert hook("t", ["nano"], 10.0) == pytest.approx(lo + 0.5 * (hi - lo))  # an even split: as sized
    assert hook("t", ["nano"], 5.0) == pytest.approx(lo + 0.25 * (hi - lo))
    assert hook("t", ["nano"], 0.0) == pytest.approx(lo)


def test_tau_ref_is_independent_of_the_round_timeout_and_can_be_configured() -> None:
    short, long = costing(round_timeout_s=30.0).tau_ref_s(), costing(round_timeout_s=600.0).tau_ref_s()
    assert short == long > 0
    # a middle configuration (rank 8 at half of the 10 local steps) on the slowest board present: more than its
    # training alone
    c = costing()
    assert short > c.cost.train("nano", "t", 8, 5, 0).seconds
    assert costing(arms="ranks").tau_ref_s() > short  # rank-only arms: the middle configuration is full work
    assert costing(tau_ref_s=7.5).tau_ref_s() == 7.5


def test_tau_ref_is_the_same_for_every_compared_policy() -> None:
    c = costing()
    het = FleetCosting(c.cfg, c.cost, c.devices, LAYERS, "het")
    assert het.tau_ref_s() == c.tau_ref_s()
