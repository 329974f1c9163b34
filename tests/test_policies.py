"""Baseline rank policies (HomoLoRA, HetLoRA/FlexLoRA) and the policy factory."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.bandit import BanditError, UcbDual
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


def test_fixed_policy_always_plays_its_rank_and_records_rounds() -> None:
    p = FixedRank(8)
    assert {p.select(lam) for lam in (0.0, 3.0, 10.0)} == {8}
    p.update(8, 0.5, 1.0)
    p.update(8, 0.7, None)
    assert (p.stats.n, p.stats.r_hat, p.stats.n_cost, p.stats.c_hat) == (2, pytest.approx(0.6), 1, 1.0)
    with pytest.raises(BanditError):
        p.update(4, 0.5, 1.0)
    with pytest.raises(BanditError):
        p.update(8, float("nan"), 1.0)


def test_make_policy_builds_each_kind(tmp_path: Path) -> None:
    bandit = make_policy("ucb-dual", RANKS, state_path=tmp_path / "b.json", max_rank=16)
    assert isinstance(bandit, UcbDual) and bandit.allowed == [2, 4, 8, 16]
    fixed = make_policy("fixed", RANKS)
    assert isinstance(fixed, FixedRank) and fixed.select(0.0) == 8  # middle of the sorted candidates
    assert make_policy("fixed", RANKS, rank=4).select(0.0) == 4
    cap = make_policy("capacity", RANKS, device=16.0)
    assert isinstance(cap, CapacityRank) and cap.select(1.0) == 16


def test_capacity_policy_steps_down_to_a_rank_that_fits() -> None:
    assert make_policy("capacity", RANKS, device=32.0, max_rank=16).select(0.0) == 16
    assert make_policy("capacity", RANKS, device=32.0, excluded={32, 16}).select(0.0) == 8


def test_make_policy_refuses_impossible_configs() -> None:
    with pytest.raises(PolicyError):
        make_policy("fixed", RANKS, rank=3)
    with pytest.raises(PolicyError):
        make_policy("fixed", RANKS, rank=32, max_rank=16)
    with pytest.raises(PolicyError):
        make_policy("capacity", RANKS)
    with pytest.raises(PolicyError):
        make_policy("ucb-dual", RANKS, excluded=set(RANKS))
    with pytest.raises(PolicyError):
        make_policy("greedy", RANKS)  # type: ignore[arg-type]
