"""Budgets that bind, and the latency reference of the reward (docs/algorithms.md sections 2-4).

A round's budget is sized from the vehicles the RSU actually invites: each at its cheapest and at its dearest
candidate configuration (download + train + upload, from its own device profile and where it is now), and the
tightness `energy_budget_scale` places the budget between the two sums: 0 = every invited vehicle at its cheapest
configuration, 1 = every one at its dearest. The sizing takes any list of candidate configurations and a cost
function, so it does not care whether a configuration is a rank or a (rank, work) pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

C = TypeVar("C")


def budget_range(vehicles: Sequence[str], candidates: Callable[[str], Sequence[C]],
                 joules: Callable[[str, C], float]) -> tuple[float, float]:
    """(sum of each vehicle's cheapest configuration, sum of each one's dearest), in joules.

    Args:
        vehicles: the invited vehicles.
        candidates: the configurations a vehicle may play (non-empty).
        joules: modelled energy of one vehicle's round at one configuration.
    """
    lo = hi = 0.0
    for v in vehicles:
        costs = [joules(v, c) for c in candidates(v)]
        if not costs or not all(math.isfinite(e) and e >= 0 for e in costs):
            raise ValueError(f"vehicle {v}: no usable configuration costs ({costs})")
        lo += min(costs)
        hi += max(costs)
    return lo, hi


def sized_budget(lo: float, hi: float, tightness: float) -> float:
    """`lo + tightness * (hi - lo)`: 0 is met only by the cheapest configurations, 1 by any."""
    if not (math.isfinite(tightness) and tightness >= 0) or not (0 <= lo <= hi):
        raise ValueError(f"need 0 <= lo <= hi and tightness >= 0 (got {lo}, {hi}, {tightness})")
    return lo + tightness * (hi - lo)


class RoundBudget:
    """The fleet's per-round budget hook for an RSU: sized from the invited vehicles at a tightness that the cloud's
    allocation scales relative to an even split (tri-feedback moves budget between tasks; with it off, or before
    its first window, the factor is 1). Scaling the tightness, not the joules, keeps every budget feasible: a task
    the cloud starves is held to its cheapest configurations, never below them."""

    def __init__(self, candidates: Callable[[str], Sequence[C]], joules: Callable[[str, C], float],
                 tightness: float, even_split_j: float) -> None:
        self.candidates = candidates
        self.joules = joules
        self.tightness = tightness
        self.even_split_j = even_split_j
        self.sized: list[tuple[str, float, float, float]] = []  # (task, lo, hi, announced) per round opened

    def __call__(self, task: str, invited: list[str], cloud_j: float | None) -> float:
        lo, hi = budget_range(invited, self.candidates, self.joules)
        factor = cloud_j / self.even_split_j if cloud_j is not None and self.even_split_j > 0 else 1.0
        budget = sized_budget(lo, hi, self.tightness * max(0.0, factor))
        self.sized.append((task, lo, hi, budget))
        return budget
