"""Baseline rank policies (HomoLoRA, HetLoRA/FlexLoRA) and the policy factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.bandit import Arm, BanditError, Decision, Observation, UcbDual, arm_set
from edge_agent.policies import CapacityRank, FixedRank, PolicyError, capacity_rank, make_policy

RANKS = [2, 4, 8, 16, 32]


@pytest.mark.parametrize(
    ("memory_gb", "expected"),
    [(1.0, 2), (3.9, 2), (4.0, 4), (8.0, 8), (15.9, 8), (16.0, 16), (32.0, 32), (128.0, 32)],
)
def test_capacity_rank_steps_up_one_rank_per_doubling_of_memory(memory_gb: float, expected: int) -> None:
    # floor(log2(m / 2)) indexes the sorted candidates, clamped: e.g. 16 GB -> floor(log2 8) = 3 -> 16.
    assert capacity_rank(memory_gb, RANKS) == expected


def test_capacity_rank_by_device_name_and_bigger_devices_get_bigger_ranks() -> None:
    nano = capacity_rank("jetson-orin-nano", RANKS)
    agx = capacity_rank("jetson-agx-orin", RANKS)
    assert (nano, agx) == (8, 32)
    assert capacity_rank(64.0, [4, 8]) == 8
    with pytest.raises(PolicyError):
        capacity_rank("toaster", RANKS)
    with pytest.raises(PolicyError):
        capacity_rank(0.0, RANKS)


def _d(ranks=RANKS, work=(0.5, 1.0), lam: float = 0.0) -> Decision:
    return Decision(arm_set(ranks, work), lam, 10.0, 60.0, 0.1)


def test_fixed_policy_always_plays_its_rank_at_full_work_and_records_rounds() -> None:
    p = FixedRank(8)
    assert {p.select(_d(lam=lam)) for lam in (0.0, 3.0, 10.0)} == {Arm(8, 1.0)}
    p.offer(arm_set(RANKS))
    p.update(Arm(8), Observation(0.5, 1.0, 3.0))
    p.update(Arm(8), Observation(0.7, 1.0, 5.0))
    s = p.stats[Arm(8)]
    assert (s.n_q, s.q_hat, s.e_hat) == (2, pytest.approx(0.6), pytest.approx(4.0))
    with pytest.raises(BanditError):
        p.update(Arm(3), Observation(0.5, 1.0, 1.0))
    with pytest.raises(BanditError):
        p.update(Arm(8), Observation(float("nan"), 1.0, 1.0))
    with pytest.raises(BanditError):  # its rank is no longer offered: a typed error, not a rejected update later
        p.select(_d([2, 4]))


def test_make_policy_builds_each_kind(tmp_path: Path) -> None:
    bandit = make_policy("ucb-dual", state_path=tmp_path / "b.json", seed=3, stream="veh1/t")
    assert isinstance(bandit, UcbDual) and (bandit.seed, bandit.stream) == (3, "veh1/t")
    fixed = make_policy("fixed")
    assert isinstance(fixed, FixedRank) and fixed.select(_d()) == Arm(8)  # middle of the offered ranks
    assert fixed.select(_d([2, 4, 8])) == Arm(4)
    assert make_policy("fixed", rank=4).select(_d()) == Arm(4)
    cap = make_policy("capacity", device=16.0)
    assert isinstance(cap, CapacityRank) and cap.select(_d(lam=1.0)) == Arm(16)


def test_capacity_policy_steps_down_to_a_rank_that_fits() -> None:
    assert make_policy("capacity", device=32.0, fits=lambda r: r <= 16).select(_d()) == Arm(16)
    assert make_policy("capacity", device=32.0, fits=lambda r: r not in (32, 16)).select(_d()) == Arm(8)
    with pytest.raises(BanditError):
        make_policy("capacity", device=4.0, fits=lambda r: False).select(_d())


def test_make_policy_refuses_impossible_configs() -> None:
    with pytest.raises(PolicyError):
        make_policy("fixed", rank=0)
    with pytest.raises(PolicyError):
        make_policy("capacity")
    with pytest.raises(PolicyError):
        make_policy("capacity", device="toaster")
    with pytest.raises(PolicyError):
        make_policy("ucb-dual", beta=-1.0)
    with pytest.raises(PolicyError):
        make_policy("greedy")  # type: ignore[arg-type]
