"""Mobility-aware fault tolerance of an RSU (docs/algorithms.md section 6), as a mixin of `RsuAgent`.

A participant whose status shows it leaving coverage before the round is expected to end gets a decision (early
upload, migrate to a nearby free vehicle, or abandon) sent as a `FaultCommand`; a migrating vehicle's partial
adapter is forwarded to its target as a `Handoff`.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from proto.bounds import MAX_COST, MAX_DURATION_S
from proto.codec import WIRE_DTYPES, encode
from proto.messages import AgentStatus, FaultCommand, Handoff, VehicleUpdate
from rsu_agent.fault_tolerance import Candidate, LinkRates, decide, needs_decision
from rsu_agent.rounds import TaskRounds
from rsu_agent.state import FtRecord

if TYPE_CHECKING:
    from fedrank.runtime import Clock
    from proto.topics import Topics
    from rsu_agent.settings import RsuSettings

log = logging.getLogger("rsu_agent.agent")  # one logger name for the RSU's lines, wherever the code lives

DEFAULT_Q_TARGET = 0.5  # q* before any round has reported an accuracy (docs/algorithms.md section 6)


class FtWatchMixin:
    """Watches leaving vehicles and hands off migrations; `RsuAgent` provides the attributes annotated here."""

    s: RsuSettings
    id: str
    clock: Clock
    topics: Topics
    rates: LinkRates | None
    tasks: dict[str, TaskRounds]
    vehicles: dict[str, Any]
    _counts: Counter[str]

    def _adapter_bytes(self, tr: TaskRounds) -> int:
        """Upper bound of the adapter on the wire: the vehicle's rank is unknown until it uploads, so r_max."""
        per = WIRE_DTYPES[self.s.wire_dtype].itemsize
        head = sum(t.numel() for t in tr.head.values())
        return per * (tr.cfg.r_max * sum(d_out + d_in for d_out, d_in in tr.cfg.layers.values()) + head)

    def _candidates(self, tr: TaskRounds, leaving: AgentStatus) -> list[Candidate]:
        """In-coverage vehicles of the task, free now, with their spare share of the round budget (their own
        announced share, the equal share for one that was not invited)."""
        p = tr.pending
        assert p is not None and leaving.position is not None
        busy = self._working_here()
        targets = {rec.migrate_to for rec in p.ft.values() if rec.action == "migrate" and not rec.failed}
        out = []
        for vid, v in self.vehicles.items():
            st = v.status
            if vid == leaving.sender or vid in busy or vid in targets or tr.cfg.name not in st.tasks:
                continue
            if st.position is None or not self._free(vid, v) or not self._inside(st):
                continue
            done = tr.accepted.get(vid)
            spare = p.share_j(vid) - (done.stored.msg.report.joules if done else 0.0)
            dist = math.hypot(st.position.x - leaving.position.x, st.position.y - leaving.position.y)
            out.append(Candidate(vehicle=vid, distance_m=dist, spare_budget_j=max(0.0, spare)))
        return out

    def _exit_in(self, st: AgentStatus) -> float:
        """T_exit: the vehicle's own prediction for this RSU (it knows its route) when its status carries one,
        else the straight line from its position and velocity (docs/algorithms.md section 6)."""
        own = (st.exit_in_s or {}).get(self.id)
        if own is not None:
            self._counts["exit:route"] += 1
            return own
        self._counts["exit:line"] += 1
        assert st.position is not None and st.velocity is not None
        return self.s.coverage.time_to_exit(st.position.x, st.position.y, st.velocity.vx, st.velocity.vy)

    def _check_leaving(self, task: str, st: AgentStatus) -> None:
        tr = self.tasks[task]
        p = tr.pending
        vid = st.sender
        if p is None or vid in p.ft or vid not in tr.waiting():
            return
        assert st.position is not None and st.velocity is not None
        exit_in = self._exit_in(st)
        elapsed = max(0.0, self.clock.now() - p.announced_at)
        expected = tr.meta.expected_round_s
        if not needs_decision(exit_in, max(0.0, expected - elapsed)):
            return
        frac = min(1.0, elapsed / expected)
        q_target = tr.meta.last_accuracy if tr.meta.last_accuracy is not None else DEFAULT_Q_TARGET
        spent = p.share_j(vid) * frac  # the elapsed fraction of the vehicle's own announced share
        dec = decide(q_target=q_target, q_partial=q_target * frac, e_spent_j=spent,
                     adapter_bytes=self._adapter_bytes(tr), candidates=self._candidates(tr, st), weights=self.s.ft,
                     exit_in_s=exit_in, rates=self.rates,
                     rsu_distance_m=self.s.coverage.distance_to(st.position.x, st.position.y))
        action = dec.action  # decide() already rules out transfers that cannot finish before the exit
        costs = {k: min(MAX_COST, max(-MAX_COST, v)) for k, v in dec.costs.items() if math.isfinite(v)}
        rec = FtRecord(action=action, migrate_to=dec.migrate_to if action == "migrate" else None, costs=costs,
                       exit_in_s=min(exit_in, MAX_DURATION_S) if math.isfinite(exit_in) else 0.0,
                       decided_at=self.clock.now())
        tr.record_ft(vid, rec)
        self._refresh_expected()
        cmd = FaultCommand(sender=self.id, sent_at=self.clock.now(), seq=tr.next_seq(), task=task, round=p.round,
                           vehicle=vid, action=action, migrate_to=rec.migrate_to, costs=costs, exit_in_s=rec.exit_in_s)
        self._publish(self.topics.command(self.id, vid), encode(cmd))
        self._counts[f"cmd:{action}"] += 1
        log.info("task %s round %d: %s leaves in %.1f s -> %s%s (costs %s)", task, p.round, vid, exit_in, action,
                 f" to {rec.migrate_to}" if rec.migrate_to else "", costs)
        if action == "abandon":
            self._maybe_close(task)

    def _forward(self, tr: TaskRounds, source: str, msg: VehicleUpdate, tensors: dict) -> None:
        """Send a migrating vehicle's partial adapter to the vehicle chosen to continue it."""
        p = tr.pending
        assert p is not None
        rec = p.ft[source]
        if rec.failed or rec.migrate_to is None:
            log.info("task %s round %d: target of %s is gone; its partial stays as the fallback", tr.cfg.name,
                     p.round, source)
            return
        h = Handoff(sender=self.id, sent_at=self.clock.now(), seq=tr.next_seq(), task=tr.cfg.name, round=p.round,
                    rsu=self.id, vehicle=rec.migrate_to, migrated_from=source, lora_alpha=msg.lora_alpha,
                    rank=msg.report.rank, joules_spent=msg.report.joules)
        self._publish(self.topics.handoff(self.id, rec.migrate_to), encode(h, tensors, self.s.wire_dtype))
        self._counts["handoffs"] += 1
        log.info("task %s round %d: forwarded %s's partial (rank %d) to %s", tr.cfg.name, p.round, source,
                 msg.report.rank, rec.migrate_to)
