"""Opening and closing an RSU's rounds on the clock, as a mixin of `RsuAgent` (rsu_agent/agent.py).

One pending "try to open" timer per task (the earliest asked for); a round opens when enough vehicles are
eligible, is announced with its rank tiers, and closes at its deadline or once nothing is awaited. A close the
disk refuses is retried with backoff; one that fails even as a failed close is retried after
`participant_retry_s`. A finished task's retained announcement is cleared.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from proto.adapter import tier_bounds
from proto.bounds import MAX_JOULES
from proto.codec import encode
from proto.messages import RoundAnnouncement, RoundTier
from rsu_agent.recovery import close_or_fail
from rsu_agent.rounds import RoundRecord
from rsu_agent.settings import RsuTaskConfig

if TYPE_CHECKING:
    from fedrank.metrics import Metrics
    from fedrank.runtime import Clock, Timers
    from proto.topics import Topics
    from rsu_agent.rounds import TaskRounds
    from rsu_agent.settings import RsuSettings
    from rsu_agent.storage import DiskGuard

log = logging.getLogger("rsu_agent.agent")  # one logger name for the RSU's lines, wherever the code lives

# (the closed round's record, its task config) -> seconds the aggregation takes
AggregateTime = Callable[[RoundRecord, RsuTaskConfig], float]
# (task, invited vehicles, the task budget from the cloud or None) -> this round's budget in joules
RoundBudget = Callable[[str, list[str], float | None], float]


class RoundCycleMixin:
    """Round opening, announcing and closing with their timers; `RsuAgent` provides the attributes annotated here."""

    s: RsuSettings
    id: str
    clock: Clock
    timers: Timers
    topics: Topics
    metrics: Metrics
    disk: DiskGuard
    tasks: dict[str, TaskRounds]
    failures: Counter[str]
    aggregate_time: AggregateTime | None
    round_budget: RoundBudget | None
    _open_at: dict[str, float]
    _close_retry: set[str]
    _delivered_at: dict[str, float]
    _history: list[RoundRecord]

    def _schedule_open(self, task: str, at: float) -> None:
        """Keep one 'try to open' timer per task, the earliest asked for."""
        if task in self._open_at and self._open_at[task] <= at:
            return
        self._open_at[task] = at
        self.timers.schedule(at, lambda: self._open_due(task, at))

    def _open_due(self, task: str, at: float) -> None:
        if self._open_at.get(task) != at:
            return  # superseded by an earlier one
        del self._open_at[task]
        if not self._safe(self._try_open, task, name=f"open:{task}"):  # logged and counted; look again later
            self._schedule_open(task, self.clock.now() + self.tasks[task].cfg.participant_retry_s)

    def _try_open(self, task: str) -> None:
        tr = self.tasks[task]
        if tr.pending is not None or tr.finished():
            return
        now = self.clock.now()
        parts = self.eligible(task)
        if len(parts) < tr.cfg.min_participants:
            log.info("task %s: %d eligible vehicles < min_participants %d; retrying in %.1f s", task, len(parts),
                     tr.cfg.min_participants, tr.cfg.participant_retry_s)
            self._schedule_open(task, now + tr.cfg.participant_retry_s)
            return
        budget = self._round_budget(task, parts)
        cold = [v for v in parts if v not in self._delivered_at] if self.s.cold_start_s > 0 else []
        try:  # a participant that has not delivered since it or we (re)started loads its model first
            ann, tensors, tiers = tr.open(parts, now, self.id, extra_s=self.s.cold_start_s if cold else 0.0,
                                          budget_j=budget)
        except OSError as exc:  # nothing opened; try again when the backoff says so
            delay = self.disk.failed(now, f"task {task}: opening round {tr.meta.next_round}", exc, stall=f"open:{task}")
            self._schedule_open(task, now + delay)
            return
        self.disk.ok(now, unstall=f"open:{task}")
        self._announce(task, ann, tensors, tiers)
        log.info("task %s: round %d open to %s until %.1f (lam %.3f, budget %.1f J%s)", task, ann.round, parts,
                 ann.deadline, ann.lam, ann.round_budget_j,
                 f"; +{self.s.cold_start_s:.0f} s for cold {cold}" if cold else "")
        self.timers.schedule(ann.deadline, lambda: self._deadline(task, ann.round))
        self._refresh_expected()

    def _round_budget(self, task: str, parts: list[str]) -> float | None:
        """This round's budget from the `round_budget` hook (sized from the invited vehicles), or None for the
        task's: a hook that fails or sizes an unusable figure is logged and the task budget stands."""
        if self.round_budget is None:
            return None
        try:
            budget = float(self.round_budget(task, parts, self.tasks[task].meta.budget_j))
        except (ValueError, KeyError) as exc:  # the round still opens, at the task's budget
            log.error("task %s: sizing the round budget failed (%s); the task budget stands", task, exc)
            return None
        if not (math.isfinite(budget) and 0 < budget <= MAX_JOULES):
            log.error("task %s: sized round budget %r J unusable; the task budget stands", task, budget)
            return None
        return budget

    def _announce(self, task: str, ann: RoundAnnouncement, tensors: dict,
                  tiers: list[tuple[RoundTier, dict]]) -> None:
        """The rank tiers first (retained, so a vehicle that reads the announcement finds them), then the round
        (its own tensors: only a rank-0 global's head)."""
        for tier, tier_tensors in tiers:
            self._publish(self.topics.tier(self.id, task, tier.index),
                          encode(tier, tier_tensors, self.s.wire_dtype), retain=True)
        self._publish(self.topics.round(self.id, task), encode(ann, tensors, self.s.wire_dtype), retain=True)

    def _deadline(self, task: str, round_: int) -> None:
        tr = self.tasks[task]
        if tr.pending is None or tr.pending.round != round_:
            return  # closed early
        missing = sorted(tr.waiting())
        if missing:
            log.info("task %s round %d: deadline passed; dropping %s", task, round_, missing)
        self._close(task, "deadline")

    def _retry_close(self, task: str, closed_by: str) -> None:
        self._close_retry.discard(task)
        if self.tasks[task].pending is not None:
            self._close(task, closed_by)

    def _maybe_close(self, task: str) -> None:
        tr = self.tasks[task]
        if tr.pending is not None and not tr.waiting():
            self._close(task, "all_arrived")

    def _close(self, task: str, closed_by: str) -> None:
        tr = self.tasks[task]
        t0, w0 = self.clock.now(), time.perf_counter()
        round_ = tr.pending.round if tr.pending is not None else -1
        try:  # a round that cannot close normally is closed as failed (rsu_agent/recovery.py)
            stats, record = close_or_fail(tr, t0, self.id, closed_by)
        except OSError as exc:  # storage: the round stays open with what it had; closing is retried with backoff
            delay = self.disk.failed(t0, f"task {task}: closing round {round_}", exc, stall=f"close:{task}")
            if task not in self._close_retry:
                self._close_retry.add(task)
                self.timers.schedule(t0 + delay, lambda: self._retry_close(task, closed_by))
            return
        except Exception:  # not even a failed close: try again later rather than leave the task stuck
            self.failures[f"close:{task}"] += 1
            log.exception("task %s round %d: could not close; retrying in %.1f s", task, round_,
                          tr.cfg.participant_retry_s)
            self.timers.schedule(t0 + tr.cfg.participant_retry_s, lambda: self._deadline(task, round_))
            return
        self.disk.ok(t0, unstall=f"close:{task}")
        wall = time.perf_counter() - w0
        if self.aggregate_time is not None:  # modelled: none of it is on the (simulated) clock yet
            agg = max(0.0, float(self.aggregate_time(record, tr.cfg)))
            later = agg
        else:  # measured: a wall clock already moved by what it took
            agg, later = wall, max(0.0, wall - (self.clock.now() - t0))
        record = tr.add_aggregation_time(agg, later)
        self._history.append(record)
        self._refresh_expected()
        self._publish(self.topics.stats(self.id, task), encode(stats))
        self.metrics.round_done(task)
        self.metrics.set_lambda(task, record.lam)
        self.metrics.set_energy(task, record.energy_j, record.budget_j)
        log.info("task %s round %d closed (%s): %d updates, E %.1f J / B %.1f J, lam %.3f -> %.3f", task,
                 record.round, closed_by, record.updates, record.energy_j, record.budget_j, record.lam_announced,
                 record.lam)
        now = self.clock.now() + later  # the new global exists once aggregation is done
        for other in self.tasks:  # freed vehicles go first to tasks that were waiting for some
            if other != task and other in self._open_at:
                self._schedule_open(other, now)
        if not tr.finished():
            self._schedule_open(task, now + tr.cfg.round_gap_s)
        else:  # clear the retained announcement: a finished task must not invite vehicles that connect later
            self._publish(self.topics.round(self.id, task), b"", retain=True)
            for k in range(len(tier_bounds(tr.cfg.ranks, tr.cfg.r_max))):
                self._publish(self.topics.tier(self.id, task, k), b"", retain=True)
            log.info("task %s finished after %d rounds; retained announcement cleared", task, record.round + 1)
