"""What an RSU does when a round's own machinery fails: close it as failed, with a reason, so the next opens.

`TaskRounds.close` aggregates, takes the dual step and builds the task statistics; anything it raises that the
edge checks did not foresee (an overflow, a numerical library error, a statistics field out of range) must not
leave the round open forever, nor be retried at every deadline and after every restart. `close_failed` ends
the round without touching the global adapter or the dual price: the round's stored updates are dropped with
it (they are what made it fail), the statistics say `updates = 0` and the record's `note` names the reason.
"""

from __future__ import annotations

import logging
import math

from proto.messages import TaskStats
from rsu_agent.rounds import RoundRecord, TaskRounds

log = logging.getLogger(__name__)


def _finite_sum(values: list[float]) -> float:
    total = math.fsum(v for v in values if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0)
    return total if math.isfinite(total) else 0.0


def _finite_or_zero(v: float | None) -> float:
    return v if v is not None and math.isfinite(v) else 0.0


def close_failed(tr: TaskRounds, now: float, rsu_id: str, closed_by: str, reason: str) -> tuple[TaskStats, RoundRecord]:
    """Close `tr`'s open round as failed: global and lambda stay, the round's updates are discarded.

    Args:
        tr: the task whose open round could not close normally.
        now: the RSU's clock.
        rsu_id: this RSU (the statistics' sender).
        closed_by: what triggered the close (`deadline`, `all_arrived`).
        reason: one line naming the failure; goes to the log, the record's note and the statistics' round record.
    """
    p = tr.pending
    assert p is not None
    # Energy the vehicles report they spent is still spent; only finite, plausible figures are summed.
    energy = _finite_sum([c.stored.msg.report.joules for c in tr.accepted.values()])
    note = f"round failed: {reason}; updates discarded, global and lambda kept"
    last_acc = _finite_or_zero(tr.meta.last_accuracy)
    stats = TaskStats(
        sender=rsu_id, sent_at=now, seq=tr.next_seq(), task=tr.cfg.name, round=p.round, energy_j=energy,
        budget_j=p.budget_j, lam=tr.meta.lam, violation_j=tr.meta.violation_j,
        accuracy=None, loss=None, ranks=[],  # nothing aggregated: no measurement to report
        participants=len(p.participants), updates=0, energy_measured=False,
    )
    record = RoundRecord(
        task=tr.cfg.name, round=p.round, lam=tr.meta.lam, lam_announced=tr.meta.lam, energy_j=energy,
        budget_j=p.budget_j, violation_j=tr.meta.violation_j, ranks=[], updates=0,
        participants=list(p.participants), accepted=[], ft={}, round_latency_s=max(0.0, now - p.announced_at),
        closed_by=f"{closed_by}:failed", accuracy=min(1.0, max(0.0, last_acc)), energy_measured=False, note=note,
    )
    meta = tr.meta.model_copy(deep=True)
    tr._commit(meta, p.round, tr.layers, tr.head, moved=False)  # next round, pending cleared; OSError: nothing applied
    tr.meta, tr.meta_dirty = meta, False
    tr.accepted.clear()
    tr.held.clear()
    tr.history.append(record)
    log.error("task %s round %d: %s", tr.cfg.name, p.round, note)
    return stats, record


_META_FIELDS = ("lam", "violation_j", "last_accuracy", "last_loss", "expected_round_s")


def close_or_fail(tr: TaskRounds, now: float, rsu_id: str, closed_by: str) -> tuple[TaskStats, RoundRecord]:
    """`tr.close(...)`, or, when it raises, undo what it changed in memory and `close_failed` the round."""
    layers, head = tr.layers, tr.head
    saved = {k: getattr(tr.meta, k) for k in _META_FIELDS}
    try:
        return tr.close(now, rsu_id, closed_by)
    except Exception as exc:  # whatever it was, the round must end and the next must open
        if tr.pending is None:  # it failed after its commit point: the round is closed, nothing to undo
            raise
        tr.layers, tr.head = layers, head
        for k, v in saved.items():
            setattr(tr.meta, k, v)
        if isinstance(exc, OSError):  # storage, not the round: the caller retries and the updates are kept
            raise
        log.exception("task %s round %d: close failed", tr.cfg.name, tr.pending.round)
        return close_failed(tr, now, rsu_id, closed_by, f"{type(exc).__name__}: {str(exc)[:160]}")
