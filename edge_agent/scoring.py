"""What a vehicle's policy learns from a round, and when (docs/algorithms.md section 3).

The policy keeps, per work configuration (rank, work), accuracy, seconds and joules (edge_agent/bandit.py). The
seconds that count are the *round's* latency, not the vehicle's: the RSU's next announcement of the task carries
`last_round_latency_s` (close + aggregation - announcement), so a straggler pays for the wait it caused. A full
round's outcome is therefore kept until that announcement comes, then learned with `max(round latency, own
latency)`; an outcome that never hears (the task finished, an older RSU, a missed round) is learned with the
vehicle's own latency. A round cut short (early upload, migration source) or abandoned is learned at once, its
energy and latency weighted by the work done and its accuracy not at all; the round's latency says nothing about
an arm the RSU stopped. A round this vehicle continued for another (migration target) was not its choice.

The kept outcomes live in `{state_dir}/pending-outcomes.json` (written atomically on every change), so a restart
between a round's update and the next announcement still learns that round, once: an outcome leaves the file
before the policy learns it, so a crash in between loses it rather than counting it twice.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.bandit import Arm, BanditError, Observation
from fedrank.state import atomic_write_json, move_aside

log = logging.getLogger(__name__)

STATE_KIND = "fedrank.pending-outcomes"
STATE_VERSION = 1


@dataclass(frozen=True)
class Outcome:
    """A finished (full) round's figures, waiting for the round's latency."""

    task: str
    round: int
    arm: Arm  # the configuration played: rank and work fraction
    q: float  # local accuracy after training
    joules: float
    wall_s: float  # the vehicle's own latency

    def to_json(self) -> dict[str, Any]:
        return {"task": self.task, "round": self.round, "arm": self.arm.key, "q": self.q, "joules": self.joules,
                "wall_s": self.wall_s}

    @classmethod
    def from_json(cls, doc: Any) -> Outcome:
        """Inverse of `to_json`; ValueError on anything malformed or out of range."""
        if not isinstance(doc, dict) or not isinstance(doc.get("task"), str) or type(doc.get("round")) is not int:
            raise ValueError(f"not an outcome: {doc!r}")
        nums = [doc.get(k) for k in ("q", "joules", "wall_s")]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in nums) or nums[0] > 1 or doc["round"] < 0:
            raise ValueError(f"outcome figures out of range: {doc!r}")
        return cls(doc["task"], doc["round"], Arm.parse(str(doc.get("arm"))), float(nums[0]), float(nums[1]),
                   float(nums[2]))


class PendingOutcomes:
    """At most one kept outcome per "rsu/task"; persisted at `path` when given (None: memory only)."""

    def __init__(self, path: Path | None = None) -> None:
        self._kept: dict[str, Outcome] = {}
        self.path = Path(path) if path is not None else None
        if self.path is not None:
            self._restore()

    def __len__(self) -> int:
        return len(self._kept)

    def keep(self, key: str, outcome: Outcome) -> Outcome | None:
        """Keep `outcome`; returns an older one it displaces (to be learned with its own latency)."""
        old = self._kept.get(key)
        self._kept[key] = outcome
        self._save()
        return old

    def settle(self, key: str, round_: int | None, latency_s: float | None) -> tuple[Outcome, float] | None:
        """(outcome, latency to charge) once an announcement of `round_ + 1` says how long `round_` took; `round_`
        None settles whatever is kept with its own latency. None when nothing is kept for an older round."""
        out = self._kept.get(key)
        if out is None or (round_ is not None and round_ < out.round):
            return None  # nothing kept, or an announcement older than our round (a retained copy)
        del self._kept[key]
        self._save()
        tau = latency_s if round_ == out.round and latency_s is not None else out.wall_s
        return out, max(tau, out.wall_s)

    # -- persistence -------------------------------------------------------------------------------------------
    def _save(self) -> None:
        if self.path is None:
            return
        doc = {"kind": STATE_KIND, "version": STATE_VERSION, "kept": {k: o.to_json() for k, o in self._kept.items()}}
        try:
            atomic_write_json(self.path, doc)
        except OSError as e:  # the outcomes stay in memory; only a restart before the next write would lose them
            log.warning("pending outcomes not written to %s (%s); kept in memory", self.path, e)

    def _restore(self) -> None:
        assert self.path is not None
        if not self.path.exists():
            return
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("kind") != STATE_KIND or doc.get("version") != STATE_VERSION:
                raise ValueError("not a fedrank pending-outcomes file of this version")
            kept = doc.get("kept")
            if not isinstance(kept, dict):
                raise ValueError("kept outcomes malformed")
            self._kept = {str(k): Outcome.from_json(v) for k, v in kept.items()}
        except (OSError, UnicodeDecodeError, ValueError) as e:  # json.JSONDecodeError is a ValueError
            self._kept = {}
            self._move_aside(f"{type(e).__name__}: {e}")
            return
        if self._kept:
            log.info("restored %d round outcome(s) awaiting their round latency from %s", len(self._kept), self.path)

    def _move_aside(self, reason: str) -> None:
        assert self.path is not None
        move_aside(self.path, "pending outcomes", reason, starting="empty")


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
        # the arm was played; an outcome restored after a restart meets a policy that has not been offered it yet
        self._policy(out.task).offer([out.arm])
        self._observe(out.task, out.round, out.arm, Observation(out.q, tau_s, out.joules))

    def _observe(self, task: str, round_: int, arm: Arm, obs: Observation) -> None:
        try:
            self._policy(task).update(arm, obs)
        except BanditError as exc:
            self._count("learn_rejected")
            log.warning("round %s/%s: not learned: %s", task, round_, exc.reason)
