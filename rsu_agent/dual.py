"""The RSU's dual price on a task's energy budget (PAPER.md section 4).

lambda_m <- clip(lambda_m + mu * (E_round - B_m(t)) / B_m(t), 0, lambda_max), lambda_m(0) = 0. The step is
normalised by the budget so that mu is unit-free: overspending the budget by 100% raises lambda by mu.
"""

from __future__ import annotations

import logging
import math

log = logging.getLogger(__name__)


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


def dual_step(lam: float, energy_j: float, budget_j: float, mu: float = 0.5, lam_max: float = 10.0) -> float:
    """One projected dual-ascent step on the round's energy constraint (PAPER.md section 4).

    Args:
        lam: the current price lambda_m(t) (>= 0).
        energy_j: the round's energy E_round = sum_v e_v in joules (>= 0).
        budget_j: the task's per-round budget B_m(t) = A_m / Q in joules (> 0; otherwise ValueError and the
            agent decides what to do).
        mu: the step size (>= 0).
        lam_max: the upper clip (>= 0).

    Returns:
        lambda_m(t + 1) in [0, lam_max].
    """
    _finite("lam", lam, 0.0)
    _finite("energy_j", energy_j, 0.0)
    _check_budget(budget_j)
    _finite("mu", mu, 0.0)
    _finite("lam_max", lam_max, 0.0)
    return min(max(lam + mu * (energy_j - budget_j) / budget_j, 0.0), lam_max)


def violation(energy_j: float, budget_j: float) -> float:
    """max(0, E_round - B_m(t)) in joules, the round's term of the cumulative violation (PAPER.md section 4)."""
    _finite("energy_j", energy_j, 0.0)
    _check_budget(budget_j)
    return max(0.0, energy_j - budget_j)
