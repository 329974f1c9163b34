"""What a vehicle's policy learns from a round, and when (docs/algorithms.md section 3).

The policy keeps, per work configuration (rank, work), accuracy, seconds and joules (edge_agent/bandit.py). The
seconds that count are the *round's* latency, not the vehicle's: the RSU's next announcement of the task carries
`last_round_latency_s` (close + aggregation - announcement), so a straggler pays for the wait it caused. A full
round's outcome is therefore kept until that announcement comes, then learned with `max(round latency, own
latency)`; an outcome that never hears (the task finished, an older RSU, a missed round) is learned with the
vehicle's own latency. A round cut short (early upload, migration source) or abandoned is learned at once, its
energy and latency weighted by the work done and its accuracy not at all; the round's latency says nothing about
an arm the RSU stopped. A round this vehicle continued for another (migration target) was not its choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge_agent.bandit import Arm, BanditError, Observation

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """A finished (full) round's figures, waiting for the round's latency."""

    task: str
    round: int
    arm: Arm  # the configuration played: rank and work fraction
    q: float  # local accuracy after training
    joules: float
    wall_s: float  # the vehicle's own latency


class PendingOutcomes:
    """At most one kept outcome per "rsu/task"."""

    def __init__(self) -> None:
        self._kept: dict[str, Outcome] = {}

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, key: str, outcome: Outcome) -> Outcome | None:
        """Keep `outcome`; returns an older one it displaces (to be learned with its own latency)."""
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


class RoundScoring:
    """The learning half of the vehicle's round job (a mixin: the agent provides the attributes annotated here)."""

    _unscored: PendingOutcomes

    def _count(self, key: str) -> None: ...  # provided by the agent

    def _policy(self, task: str) -> Any: ...  # provided by the round job

    def _learn(self, job: Any, joules: float, wall: float) -> None:
        """Learn a published round: at once when cut short, else once the round's latency is known."""
        if job.migrated_from is not None:
            return
        res = job.result
        arm = Arm(job.rank, job.work)
        if res.partial:
            done = min(1.0, max(1, int(res.steps)) / job.steps)
            self._observe(job.task, job.round, arm, Observation(None, wall, joules, done=done))
            return
        old = self._unscored.keep(f"{job.rsu}/{job.task}", Outcome(
            job.task, job.round, arm, min(1.0, max(0.0, float(res.local_accuracy))), joules, wall))
        if old is not None:  # an older outcome nobody told us about
            self._score(old, old.wall_s)

    def _settle(self, key: str, round_: int | None, latency_s: float | None) -> None:
        """An announcement (or a cleared one) of "rsu/task": learn the kept outcome it settles, if any."""
        got = self._unscored.settle(key, round_, latency_s)
        if got is not None:
            self._score(*got)

    def _score(self, out: Outcome, tau_s: float) -> None:
        self._observe(out.task, out.round, out.arm, Observation(out.q, tau_s, out.joules))

    def _observe(self, task: str, round_: int, arm: Arm, obs: Observation) -> None:
        try:
            self._policy(task).update(arm, obs)
        except BanditError as exc:
            self._count("learn_rejected")
            log.warning("round %s/%s: not learned: %s", task, round_, exc.reason)
