"""UCB-DUAL (PAPER.md section 3) on synthetic budgeted environments whose optimum is computed by hand."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest

from edge_agent.bandit import COST_CAP, BanditError, UcbDual, normalised_cost, round_reward

RANKS = [2, 4, 8, 16, 32]
# Mean reward and mean normalised cost (budget = 1) per rank.
MEAN_R = [0.50, 0.60, 0.70, 0.78, 0.82]
MEAN_C = [0.30, 0.50, 0.80, 1.30, 2.20]
# Best budget-feasible policy (the LP over arm mixtures): rank 8 (c=0.8) and rank 16 (c=1.3) time-shared so the
# mean cost is exactly 1: p*1.3 + (1-p)*0.8 = 1 -> p = 0.4; reward 0.4*0.78 + 0.6*0.70 = 0.732. It beats the best
# feasible single arm (rank 8, 0.70), and it is what the dual price steers towards: lambda rises while the spend is
# above budget and falls below it, so the policy time-shares two arms; regret is measured against this mixture.
BEST_MIXTURE = 0.4 * 0.78 + 0.6 * 0.70
# Dual step simulated beside the bandit (PAPER.md section 4), per round: lam <- clip(lam + MU*(c - 1), 0, LAM_MAX).
# PAPER's mu = 0.5 moves lam by ~0.15 a round with a single vehicle, far across the interval (0.044, 0.33) in which
# ranks 8/16 are the Lagrangian optimum, and gave regret slopes ~0.85; 0.1 keeps lam inside it.
MU = 0.1
LAM_MAX = 10.0


def _run_budgeted(T: int, seed: int, beta: float = 0.2) -> tuple[np.ndarray, float, dict[int, int]]:
    rng = np.random.default_rng(seed)
    bandit = UcbDual(RANKS, beta=beta)
    lam, regret, spent = 0.0, 0.0, 0.0
    curve = np.zeros(T)
    pulls = dict.fromkeys(RANKS, 0)
    for t in range(T):
        rank = bandit.select(lam)
        i = RANKS.index(rank)
        pulls[rank] += 1
        reward = float(np.clip(MEAN_R[i] + 0.05 * rng.standard_normal(), 0.0, 1.0))  # clipped Gaussian
        cost = max(0.0, MEAN_C[i] * (1.0 + 0.1 * rng.standard_normal()))
        bandit.update(rank, reward, cost)
        lam = min(LAM_MAX, max(0.0, lam + MU * (cost - 1.0)))
        regret += BEST_MIXTURE - MEAN_R[i]  # pseudo-regret: expected reward of the arm played
        curve[t] = regret
        spent += cost
    return curve, spent / T, pulls


def test_regret_against_best_budget_feasible_mixture_is_sublinear_and_spend_meets_budget() -> None:
    T = 2000
    curve, mean_cost, pulls = _run_budgeted(T, seed=7)
    ts = np.unique(np.logspace(2, math.log10(T), 20).astype(int))
    assert (curve[ts - 1] > 0).all(), "regret below zero means overspending; the cost check below would fail"
    slope = np.polyfit(np.log(ts), np.log(curve[ts - 1]), 1)[0]
    assert slope < 0.8, f"log-log regret slope {slope:.2f}"
    assert abs(mean_cost - 1.0) <= 0.05, f"mean normalised cost {mean_cost:.3f}"
    # The two arms of the optimal mixture dominate; the others are explored only logarithmically often.
    assert pulls[8] + pulls[16] > 0.8 * T, pulls


def test_regret_per_round_shrinks_with_horizon() -> None:
    curve, _, _ = _run_budgeted(2000, seed=11)
    assert curve[1999] / 2000 < curve[199] / 200


def test_with_a_slack_budget_the_best_reward_arm_wins() -> None:
    rng = np.random.default_rng(3)
    bandit = UcbDual(RANKS)
    for _ in range(500):
        rank = bandit.select(0.0)  # lam stays 0 when every arm is under budget
        i = RANKS.index(rank)
        bandit.update(rank, float(np.clip(MEAN_R[i] + 0.05 * rng.standard_normal(), 0, 1)), 0.1)
    assert bandit.stats[32].n > 400


def test_each_arm_pulled_once_first_smallest_first() -> None:
    bandit = UcbDual([16, 2, 8])
    order = []
    for _ in range(3):
        r = bandit.select(5.0)
        order.append(r)
        bandit.update(r, 0.5, 0.5)
    assert order == [2, 8, 16]


def test_ties_go_to_the_smaller_rank() -> None:
    bandit = UcbDual([4, 8, 16])
    for r in (4, 8, 16):
        bandit.update(r, 0.6, 0.0)
    assert bandit.select(1.0) == 4


def test_index_matches_the_formula_by_hand() -> None:
    bandit = UcbDual([2, 4], beta=0.5)
    bandit.update(2, 0.4, 2.0)
    bandit.update(2, 0.6, 1.0)  # n=2, r_hat=0.5, c_hat=1.5
    bandit.update(4, 0.9, 3.0)  # n=1
    # t = 3 pulls + 1 = 4
    bonus2 = 0.5 * math.sqrt(math.log(4) / 2)
    bonus4 = 0.5 * math.sqrt(math.log(4) / 1)
    assert bandit.index(2, 0.3) == pytest.approx(0.5 + bonus2 - 0.3 * max(0.0, 1.5 - bonus2))
    assert bandit.index(4, 0.3) == pytest.approx(0.9 + bonus4 - 0.3 * max(0.0, 3.0 - bonus4))
    # A high price flips the choice to the cheaper rank.
    assert bandit.select(0.0) == 4
    assert bandit.select(1.0) == 2


def test_excluded_and_too_large_ranks_are_never_chosen() -> None:
    rng = np.random.default_rng(0)
    bandit = UcbDual(RANKS, excluded={16}, max_rank=16)
    for _ in range(200):
        r = bandit.select(float(rng.uniform(0, 2)))
        assert r in (2, 4, 8)
        bandit.update(r, float(rng.uniform()), float(rng.uniform(0, 2)))
    with pytest.raises(BanditError):
        UcbDual([8, 16], excluded={8, 16})


def test_bad_inputs_are_typed_errors(caplog: pytest.LogCaptureFixture) -> None:
    bandit = UcbDual(RANKS)
    with caplog.at_level(logging.WARNING):
        for call in (
            lambda: bandit.update(3, 0.5, 0.5),
            lambda: bandit.update(2, float("nan"), 0.5),
            lambda: bandit.update(2, 1.5, 0.5),
            lambda: bandit.update(2, 0.5, -1.0),
            lambda: bandit.select(float("inf")),
            lambda: bandit.select(-0.1),
        ):
            with pytest.raises(BanditError):
                call()
    assert "rejected" in caplog.text
    assert bandit.total_pulls == 0


def test_round_reward_and_normalised_cost_by_hand() -> None:
    assert round_reward(0.8, 10.0, 40.0, 0.4) == pytest.approx(0.8 - 0.4 * 10 / 40)
    assert round_reward(0.1, 100.0, 10.0, 1.0) == 0.0
    assert round_reward(1.0, 0.0, 10.0, 1.0) == 1.0
    assert normalised_cost(30.0, 200.0, 4) == pytest.approx(30.0 / (200.0 / 4))
    assert normalised_cost(30.0, None, 4) is None  # no budget yet: cost unknown
    assert normalised_cost(30.0, 0.0, 4) == COST_CAP
    assert normalised_cost(0.0, 0.0, 4) == 0.0
    assert normalised_cost(30.0, 100.0, 0) == pytest.approx(0.3)  # 0 participants treated as 1
    assert normalised_cost(1e9, 1.0, 1) == COST_CAP
    with pytest.raises(BanditError):
        normalised_cost(-1.0, 10.0, 1)
    with pytest.raises(BanditError):
        round_reward(0.5, 1.0, 0.0, 1.0)


def test_unknown_cost_moves_only_the_reward_statistics() -> None:
    bandit = UcbDual([2, 4])
    bandit.update(2, 0.4, None)
    bandit.update(2, 0.8, 2.0)
    s = bandit.stats[2]
    assert (s.n, s.r_hat, s.n_cost, s.c_hat) == (2, pytest.approx(0.6), 1, 2.0)


def test_statistics_survive_a_crash_and_restore(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bandit-sentiment.json"
    a = UcbDual(RANKS, state_path=path)
    for rank, reward, cost in [(2, 0.5, 0.2), (4, 0.7, 0.6), (4, 0.9, 1.0)]:
        a.update(rank, reward, cost)
    del a  # the "crash": nothing but the file survives
    b = UcbDual(RANKS, state_path=path)
    assert b.stats[4].n == 2 and b.stats[4].r_hat == pytest.approx(0.8) and b.stats[4].c_hat == pytest.approx(0.8)
    assert b.stats[2].n == 1 and b.total_pulls == 3
    assert b.select(0.0) == 8  # first never-pulled arm, as before the crash
    assert not list(path.parent.glob(".*tmp*"))  # no temp file left behind


def test_corrupt_state_is_moved_aside_and_bandit_starts_fresh(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bandit.json"
    path.write_text("{ not json")
    with caplog.at_level(logging.WARNING):
        bandit = UcbDual(RANKS, state_path=path)
    assert bandit.total_pulls == 0
    assert "unusable" in caplog.text
    assert len(list(tmp_path.glob("bandit.json.bad-*"))) == 1
    bandit.update(2, 0.5, 0.5)
    assert json.loads(path.read_text())["arms"]["2"]["n"] == 1


def test_state_for_a_different_rank_set_is_not_reused(tmp_path: Path) -> None:
    path = tmp_path / "bandit.json"
    UcbDual([2, 4, 8], state_path=path).update(8, 0.9, 0.1)
    bandit = UcbDual([2, 4, 8, 16], state_path=path)
    assert bandit.total_pulls == 0
    assert list(tmp_path.glob("bandit.json.bad-*"))


def test_state_with_impossible_statistics_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bandit.json"
    UcbDual([2, 4], state_path=path).update(2, 0.5, 0.5)
    doc = json.loads(path.read_text())
    doc["arms"]["2"]["n_cost"] = 5  # more cost observations than pulls
    path.write_text(json.dumps(doc))
    assert UcbDual([2, 4], state_path=path).total_pulls == 0
