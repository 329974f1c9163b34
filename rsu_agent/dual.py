"""The RSU's dual price on a task's energy budget (docs/algorithms.md section 4).

lambda_m <- clip(lambda_m + mu * min(1, (E_round - B_m(t)) / B_m(t)), 0, lambda_max), lambda_m(0) = 0. The step is
normalised by the budget so that mu is unit-free: overspending the budget by 100% raises lambda by mu. The relative
excess is capped at 1 (our decision): a round can lower lambda by at most mu (nothing spent), so one round on a
collapsed budget (the cloud moved it away, 19x overspent) would otherwise raise lambda for many rounds after.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)

# The one default step and cap (docs/algorithms.md section 4): the RSU's config, tests/test_dual.py and
# bench/bench_bandit.py all use these. With the vehicles' LP (edge_agent/bandit.py) holding each vehicle at its
# share, lambda only corrects what the estimates miss; mu = 0.1 moves it by 0.1 per 100 % overspend of a round.
# bench_bandit --quick at T = 1000: mu 0.5 instead of 0.1 raised the regret per vehicle from 2.8 to 5.1 ("tight-mix",
# log-log slope 0.46 -> 0.67) and from 4.1 to 5.3 ("budget-drop") at the same violation.
DEFAULT_MU = 0.1
# The step shrinks as mu / sqrt(1 + t / DEFAULT_MU_DECAY) over a task's rounds t. With a constant mu, lambda is a
# random walk reflected at 0 whenever the vehicles' LP spends the budget on average: it drifts up to where the LP
# switches vertex (in bench_bandit "tight-mix", lambda 0.3 turns the optimal 50/50 mix into the cheap arm for every
# vehicle) and those excursions add regret linearly. A shrinking step keeps them rare while the first rounds still
# correct quickly; the LP, not lambda, follows a changed budget (it normalises by the announced share).
DEFAULT_MU_DECAY = 100.0
# Any lambda >= 1 / (smallest gap between two arms' normalised costs) already makes every vehicle take its cheapest
# arm; with work fractions {0.25, 0.5, 1} that gap is >= 0.25 of the full-work cost, so lambda <= 4 suffices. On a
# feasible budget the spend then falls below B and lambda decreases, so it cannot sit at the cap of 10.
DEFAULT_LAM_MAX = 10.0


def _finite(name: str, value: float, minimum: float | None = None) -> None:
    """Raise ValueError (and log the reason) unless value is finite and >= minimum."""
    if not math.isfinite(value) or (minimum is not None and value < minimum):
        bound = f" and >= {minimum}" if minimum is not None else ""
        log.warning("dual price input rejected: %s = %r must be finite%s", name, value, bound)
        raise ValueError(f"{name} = {value!r} must be finite{bound}")


def _check_budget(budget_j: float) -> None:
    if not math.isfinite(budget_j) or budget_j <= 0:
        log.warning("dual price input rejected: budget_j = %r must be finite and > 0", budget_j)
        raise ValueError(f"budget_j = {budget_j!r} must be finite and > 0")


def step_size(mu: float, step: int, decay_rounds: float = DEFAULT_MU_DECAY) -> float:
    """mu_t = mu / sqrt(1 + t / decay_rounds) for the task's t-th dual step (math.inf: a constant mu)."""
    return mu / math.sqrt(1.0 + max(0, step) / decay_rounds)


def dual_step(lam: float, energy_j: float, budget_j: float, mu: float = DEFAULT_MU,
              lam_max: float = DEFAULT_LAM_MAX, step: int = 0, decay_rounds: float = DEFAULT_MU_DECAY) -> float:
    """One projected dual-ascent step on the round's energy constraint (docs/algorithms.md section 4).

    Args:
        lam: the current price lambda_m(t) (>= 0).
        energy_j: the round's energy E_round = sum_v e_v in joules (>= 0).
        budget_j: the task's per-round budget B_m(t) = A_m / Q in joules (> 0; otherwise ValueError and the
            agent decides what to do).
        mu: the step size (>= 0).
        lam_max: the upper clip (>= 0).
        step: how many steps this price has taken before (the task's round number); with `decay_rounds` it
            shrinks the step, mu_t = mu / sqrt(1 + step / decay_rounds).

    Returns:
        lambda_m(t + 1) in [0, lam_max].
    """
    _finite("lam", lam, 0.0)
    _finite("energy_j", energy_j, 0.0)
    _check_budget(budget_j)
    _finite("mu", mu, 0.0)
    _finite("lam_max", lam_max, 0.0)
    if not decay_rounds > 0:
        log.warning("dual price input rejected: decay_rounds = %r must be > 0", decay_rounds)
        raise ValueError(f"decay_rounds = {decay_rounds!r} must be > 0")
    excess = min(1.0, (energy_j - budget_j) / budget_j)  # one round on a collapsed budget moves lambda by <= mu
    return min(max(lam + step_size(mu, step, decay_rounds) * excess, 0.0), lam_max)


def violation(energy_j: float, budget_j: float) -> float:
    """max(0, E_round - B_m(t)) in joules, the round's term of the cumulative violation (docs/algorithms.md §4)."""
    _finite("energy_j", energy_j, 0.0)
    _check_budget(budget_j)
    return max(0.0, energy_j - budget_j)
