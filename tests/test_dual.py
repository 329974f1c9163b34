"""The dual price step (docs/algorithms.md section 4) by hand, including both clips."""

from __future__ import annotations

import logging
import math

import pytest

from rsu_agent.dual import DEFAULT_LAM_MAX, DEFAULT_MU, dual_step, violation
from rsu_agent.settings import RsuTaskConfig


def test_the_rsu_deploys_the_default_step_and_cap_the_tests_and_the_bench_use():
    cfg = RsuTaskConfig(name="t", task_type="sentence", layers={"q": (4, 4)})
    assert (cfg.mu, cfg.lam_max) == (DEFAULT_MU, DEFAULT_LAM_MAX) == (0.1, 10.0)


def test_overspending_raises_the_price_by_mu_times_the_relative_excess():
    # 0 + 0.1 * (150 - 100) / 100 = 0.05 (the default mu)
    assert dual_step(0.0, 150.0, 100.0) == pytest.approx(0.05)
    assert dual_step(0.0, 150.0, 100.0, mu=0.5) == pytest.approx(0.25)
    # 0.25 + 0.2 * (300 - 200) / 200 = 0.35
    assert dual_step(0.25, 300.0, 200.0, mu=0.2) == pytest.approx(0.35)


def test_one_round_moves_the_price_by_at_most_mu():
    # a collapsed budget: (1900 - 100) / 100 = 18, clipped to 1 -> 0.5 + 0.1 = 0.6, not 2.3
    assert dual_step(0.5, 1900.0, 100.0) == pytest.approx(0.6)
    # the most a round can lower it: nothing spent, -1 -> 0.5 - 0.1
    assert dual_step(0.5, 0.0, 100.0) == pytest.approx(0.4)


def test_underspending_lowers_the_price_and_clips_at_zero():
    # 0.4 + 0.1 * (80 - 100) / 100 = 0.38
    assert dual_step(0.4, 80.0, 100.0) == pytest.approx(0.38)
    # 0.01 + 0.1 * (50 - 100) / 100 = -0.04 -> 0
    assert dual_step(0.01, 50.0, 100.0) == 0.0


def test_the_price_is_clipped_at_lam_max():
    # 9.9 + 0.1 * (300 - 100) / 100 = 10.1 -> 10
    assert dual_step(9.9, 300.0, 100.0) == 10.0
    # 1 + 0.5 * 2 = 2 -> lam_max 1.5
    assert dual_step(1.0, 300.0, 100.0, mu=0.5, lam_max=1.5) == 1.5


def test_violation_is_the_positive_part_of_the_excess():
    assert violation(150.0, 100.0) == 50.0
    assert violation(50.0, 100.0) == 0.0
    assert violation(100.0, 100.0) == 0.0


@pytest.mark.parametrize("budget", [0.0, -5.0, math.inf, math.nan])
def test_a_non_positive_or_non_finite_budget_is_rejected_with_a_log_line(budget, caplog):
    with caplog.at_level(logging.WARNING, logger="rsu_agent.dual"), pytest.raises(ValueError, match="budget_j"):
        dual_step(0.0, 10.0, budget)
    assert "budget_j" in caplog.text
    with pytest.raises(ValueError, match="budget_j"):
        violation(10.0, budget)


@pytest.mark.parametrize(
    ("lam", "energy", "mu"), [(-0.1, 1.0, 0.5), (0.0, math.nan, 0.5), (0.0, -1.0, 0.5), (0, 1, -1)]
)
def test_bad_price_energy_or_step_is_rejected(lam, energy, mu):
    with pytest.raises(ValueError):
        dual_step(lam, energy, 100.0, mu=mu)


def test_the_step_shrinks_over_a_tasks_rounds_as_mu_over_sqrt_one_plus_t_over_decay() -> None:
    from rsu_agent.dual import DEFAULT_MU_DECAY, step_size

    assert step_size(0.1, 0) == pytest.approx(0.1)
    assert step_size(0.1, 300, decay_rounds=100.0) == pytest.approx(0.05)  # 0.1 / sqrt(4)
    assert step_size(0.1, 10**6, decay_rounds=math.inf) == 0.1  # inf: the constant step
    assert step_size(0.1, -5) == pytest.approx(0.1)  # a negative count is no count
    # the deployed default decays: round 300 moves lambda by half what round 0 does at the default decay of 100
    assert DEFAULT_MU_DECAY == 100.0
    assert dual_step(0.0, 200.0, 100.0, step=300) == pytest.approx(0.05)
    assert dual_step(0.0, 200.0, 100.0, step=300, decay_rounds=math.inf) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="decay_rounds"):
        dual_step(0.0, 200.0, 100.0, decay_rounds=0.0)
