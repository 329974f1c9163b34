"""A vehicle's round outcomes kept until the round's own latency is known (docs/algorithms.md section 3).

The reward charges the round's latency, not the vehicle's: the RSU's next announcement of the task carries
`last_round_latency_s` (close + aggregation - announcement), so a straggler pays for the wait it caused. An outcome
that never hears (the task finished, an older RSU, a missed round) is scored with the vehicle's own latency.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Outcome:
    """A finished round's figures."""

    task: str
    round: int
    rank: int
    q: float  # local accuracy after training
    joules: float
    budget_j: float
    n_participants: int
    wall_s: float  # the vehicle's own latency


class PendingOutcomes:
    """At most one kept outcome per "rsu/task"."""

    def __init__(self) -> None:
        self._kept: dict[str, Outcome] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, key: str, outcome: Outcome) -> Outcome | None:
        """Keep `outcome`; returns an older one it displaces (to be scored with its own latency)."""
        old = self._kept.get(key)
        self._kept[key] = outcome
        return old

    def settle(self, key: str, round_: int | None, latency_s: float | None) -> tuple[Outcome, float] | None:
        """(outcome, latency to charge) once an announcement of `round_ + 1` says how long `round_` took; `round_`
        None settles whatever is kept with its own latency. None when nothing is kept for an older round."""
        out = self._kept.get(key)
        if out is None or (round_ is not None and round_ < out.round):
            return None  # nothing kept, or an announcement older than our round (a retained copy)
        del self._kept[key]
        tau = latency_s if round_ == out.round and latency_s is not None else out.wall_s
        return out, max(tau, out.wall_s)
