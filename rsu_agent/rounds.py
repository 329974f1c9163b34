"""One task's rounds at an RSU: open, admit updates, close (aggregate, dual step), persist.

No bus and no timers here: `RsuAgent` decides when to open and close and publishes what this returns.
State that must survive a restart goes through `TaskStore` before it counts (see rsu_agent/state.py).

An update's identity is `report.migrated_from or sender`: a migrated update stands in for its source.
Each identity counts once per round. Late = for a round that has closed; wrong_round = for a round that
has not opened.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from proto.adapter import Factored, pack_tier, tier_bounds
from proto.errors import PayloadRejected
from proto.messages import RoundAnnouncement, RoundTier, TaskBudget, TaskStats, TierRef, VehicleUpdate
from rsu_agent.aggregate import ClientUpdate, aggregate
from rsu_agent.dual import dual_step, violation
from rsu_agent.settings import RsuTaskConfig
from rsu_agent.state import FtRecord, PendingRound, StoredUpdate, TaskMeta, TaskStore
from rsu_agent.validate import HeadSpec, UpdateRejected, head_spec, validate_update

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RoundRecord:
    """What one closed round did; the fleet and the tests read these."""

    task: str
    round: int
    lam: float  # lambda after this round's dual step (goes out with the next round)
    lam_announced: float  # lambda this round was announced with
    energy_j: float  # E_round: reported joules of the updates that counted
    budget_j: float  # B_m(t) the round was announced with
    violation_j: float  # cumulative, PAPER.md section 4
    ranks: list[int]
    updates: int  # updates aggregated (0 when the global stayed)
    participants: list[str]
    accepted: list[str]  # identities whose updates counted
    ft: dict[str, str]  # vehicle -> action ("migrate:target" for migrations)
    round_latency_s: float  # close time - announce time
    closed_by: str  # "all_arrived" or "deadline"
    accuracy: float
    energy_measured: bool
    note: str = ""  # why the global stayed, or "" when it moved
    aggregate_s: float = 0.0  # aggregation time (measured, or modelled in the fleet); part of round_latency_s


@dataclass
class _Counted:
    stored: StoredUpdate
    update: ClientUpdate


@dataclass
class TaskRounds:
    """Round state of one task."""

    cfg: RsuTaskConfig
    store: TaskStore
    meta: TaskMeta
    layers: dict[str, Factored] = field(default_factory=dict)  # the global, empty before the first aggregate
    head: dict[str, torch.Tensor] = field(default_factory=dict)
    accepted: dict[str, _Counted] = field(default_factory=dict)  # identity -> update (open round)
    held: dict[str, _Counted] = field(default_factory=dict)  # migrating source -> its partial (open round)
    history: list[RoundRecord] = field(default_factory=list)
    ema: float = 0.3  # weight of the newest report in the moving average of vehicle round time

    # -- construction and restore -------------------------------------------------------------------
    @classmethod
    def restore(cls, cfg: RsuTaskConfig, state_dir: Path, ema: float = 0.3) -> TaskRounds:
        """Load the task's state from disk, or start fresh; an unreadable piece is logged and dropped."""
        store = TaskStore(state_dir, cfg.name)
        meta = store.load_meta() or TaskMeta(task=cfg.name, expected_round_s=cfg.expected_round_s)
        tr = cls(cfg=cfg, store=store, meta=meta, ema=ema)
        if meta.global_file:
            try:
                tr.layers, tr.head = store.load_global(meta.global_file, list(cfg.layers))
            except PayloadRejected as exc:
                log.error("task %s: global %s unusable (%s); starting from a zero adapter", cfg.name,
                          meta.global_file, exc)
                meta.global_file = None
        if meta.pending is not None:
            r = meta.pending.round
            for kind, target in (("accepted", tr.accepted), ("held", tr.held)):
                for ident, st in store.load_updates(r, kind).items():
                    try:
                        target[ident] = _Counted(st, validate_update(st.msg, st.tensors, cfg, tr.expected_head()))
                    except UpdateRejected as exc:
                        log.error("task %s round %d: stored update %s no longer valid (%s)", cfg.name, r, ident, exc)
            meta.pending.accepted = {i: c.stored.msg.report for i, c in tr.accepted.items()}
            log.info("task %s: resumed round %d with %d accepted updates", cfg.name, r, len(tr.accepted))
        return tr

    # -- small views --------------------------------------------------------------------------------
    @property
    def pending(self) -> PendingRound | None:
        return self.meta.pending

    @property
    def budget_j(self) -> float:
        return self.meta.budget_j if self.meta.budget_j is not None else self.cfg.default_round_budget_j

    def next_seq(self) -> int:
        self.meta.seq += 1
        return self.meta.seq

    def expected_head(self) -> HeadSpec | None:
        """The head every update must carry: the global's, else the first accepted one's, else free."""
        if self.head:
            return head_spec(self.head)
        first = next(iter(self.accepted.values()), None) or next(iter(self.held.values()), None)
        return head_spec(first.update.head) if first else None

    def waiting(self) -> set[str]:
        """Identities the open round still waits for."""
        p = self.pending
        if p is None:
            return set()
        # a failed migration still waits for the source's partial (the fallback) until it is held
        settled = {v for v, rec in p.ft.items() if rec.action == "abandon" or (rec.failed and v in self.held)}
        gone = set(p.dropped) | settled
        return set(p.participants) - set(self.accepted) - gone

    def finished(self) -> bool:
        return self.cfg.max_rounds is not None and self.meta.next_round >= self.cfg.max_rounds

    # -- budget -------------------------------------------------------------------------------------
    def set_budget(self, msg: TaskBudget) -> bool:
        """Take the cloud's B_m(t) for rounds announced from now on; False for an older window."""
        if msg.round < self.meta.budget_window:
            return False
        self.meta.budget_j, self.meta.budget_window = msg.round_budget_j, msg.round
        self.store.save_meta(self.meta)
        return True

    # -- open -----------------------------------------------------------------------------------------
    def tiers(self, round_: int, rsu_id: str) -> list[tuple[RoundTier, dict]]:
        """The global adapter in nested rank tiers (proto/README.md), each a message and its tensors."""
        rank = max((f.rank for f in self.layers.values()), default=0)
        return [(RoundTier(sender=rsu_id, seq=0, task=self.cfg.name, round=round_, index=k, first=first, last=last),
                 pack_tier(self.layers, self.head, first, last, with_head=k == 0))
                for k, (first, last) in enumerate(tier_bounds(self.cfg.ranks, rank))]

    def open(self, participants: list[str], now: float, rsu_id: str,
             budget_j: float | None = None) -> tuple[RoundAnnouncement, list[tuple[RoundTier, dict]]]:
        """Open the next round; returns the announcement and its rank tiers (none while the global is 0).

        `budget_j` replaces the task budget for this round (sized from the invited vehicles); default the task's.
        """
        tiers = self.tiers(self.meta.next_round, rsu_id) if self.layers else []
        ann = RoundAnnouncement(
            sender=rsu_id, sent_at=now, seq=self.next_seq(), task=self.cfg.name, task_type=self.cfg.task_type,
            round=self.meta.next_round, deadline=now + self.cfg.round_timeout_s, lam=self.meta.lam,
            round_budget_j=self.budget_j if budget_j is None else budget_j, ranks=self.cfg.ranks,
            rank=max((f.rank for f in self.layers.values()), default=0), lora_alpha=self.cfg.lora_alpha,
            layers=list(self.cfg.layers), participants=sorted(participants), aggregator=self.cfg.aggregator,
            last_round_latency_s=self.meta.last_round_latency_s,
            tiers=[TierRef(index=t.index, first=t.first, last=t.last) for t, _ in tiers],
        )
        self.meta.pending = PendingRound(
            round=ann.round, announced_at=now, deadline=ann.deadline, participants=ann.participants,
            budget_j=ann.round_budget_j, lam=ann.lam, announcement=ann.model_dump_json(),
        )
        self.accepted.clear()
        self.held.clear()
        self.store.save_meta(self.meta)
        return ann, tiers

    def announcement(self, rsu_id: str) -> tuple[RoundAnnouncement, list[tuple[RoundTier, dict]]]:
        """The open round's announcement and tiers again (a restart republishes them unchanged)."""
        assert self.pending is not None
        ann = RoundAnnouncement.model_validate_json(self.pending.announcement)
        return ann, (self.tiers(ann.round, rsu_id) if self.layers else [])

    # -- updates --------------------------------------------------------------------------------------
    def admit(self, sender: str, msg: VehicleUpdate) -> tuple[str, bool]:
        """(identity, hold) for an update that may count; raise UpdateRejected (late/duplicate/...) otherwise.

        hold = True for a migrating vehicle's partial: kept aside, forwarded, aggregated only as a fallback.
        """
        p = self.pending
        if p is None or msg.round != p.round:
            if msg.round < self.meta.next_round:
                raise UpdateRejected("late", f"round {msg.round} has closed")
            raise UpdateRejected("wrong_round", f"round {msg.round} is not open (next {self.meta.next_round})")
        source = msg.report.migrated_from
        if source is not None:
            rec = p.ft.get(source)
            if rec is None or rec.action != "migrate" or rec.migrate_to != sender:
                raise UpdateRejected("bad_migration", f"{sender} was not asked to continue {source}'s update")
            identity = source
        elif sender not in p.participants:
            raise UpdateRejected("not_participant", f"{sender} is not in round {p.round}")
        else:
            identity = sender
        if identity in self.accepted:
            raise UpdateRejected("duplicate", f"{identity} already counted in round {p.round}")
        rec = p.ft.get(identity)
        hold = source is None and rec is not None and rec.action == "migrate" and msg.report.partial
        if hold and identity in self.held:
            raise UpdateRejected("duplicate", f"{identity}'s partial is already held")
        return identity, hold

    def accept(self, identity: str, stored: StoredUpdate, update: ClientUpdate, hold: bool) -> None:
        """Write the update to disk, then count it (a kill -9 after this loses nothing)."""
        assert self.pending is not None
        r = self.pending.round
        self.store.save_update(r, "held" if hold else "accepted", identity, stored)
        if hold:
            self.held[identity] = _Counted(stored, update)
            return
        self.accepted[identity] = _Counted(stored, update)
        self.pending.accepted[identity] = stored.msg.report
        self.store.save_meta(self.meta)

    def record_ft(self, vehicle: str, rec: FtRecord) -> None:
        assert self.pending is not None
        self.pending.ft[vehicle] = rec
        self.store.save_meta(self.meta)

    def drop(self, vehicle: str) -> bool:
        """A participant went offline: stop waiting for it (a migration it was the target of falls back)."""
        p = self.pending
        if p is None:
            return False
        changed = False
        if vehicle in p.participants and vehicle not in self.accepted and vehicle not in p.dropped:
            rec = p.ft.get(vehicle)
            # a migrating source whose partial is held is carried by its target (or the fallback)
            if rec is None or rec.action != "migrate" or vehicle not in self.held:
                p.dropped.append(vehicle)
                changed = True
        for source, rec in p.ft.items():
            if rec.action == "migrate" and rec.migrate_to == vehicle and not rec.failed and source not in self.accepted:
                rec.failed = True
                changed = True
        if changed:
            self.store.save_meta(self.meta)
        return changed

    # -- close ----------------------------------------------------------------------------------------
    def close(self, now: float, rsu_id: str, closed_by: str) -> tuple[TaskStats, RoundRecord]:
        """Aggregate (or keep the global and say why), take the dual step, persist; return stats and record."""
        p = self.pending
        assert p is not None
        counted = dict(self.accepted)
        for source, c in self.held.items():  # migrations whose target never delivered: use the partial
            if source not in counted:
                log.info("task %s round %d: migration of %s not completed; aggregating its partial", self.cfg.name,
                         p.round, source)
                counted[source] = c
        reports = [c.stored.msg.report for c in counted.values()]
        energy = sum(r.joules for r in reports)  # a migrated report already carries its source's joules
        note = ""
        if len(counted) < self.cfg.min_updates:
            note = f"{len(counted)} updates < min_updates {self.cfg.min_updates}: global kept"
        else:
            try:
                self.layers, self.head = aggregate([c.update for c in counted.values()], self.cfg.aggregator,
                                                   self.cfg.r_max)
            except ValueError as exc:
                note = f"aggregation failed ({exc}): global kept"
        if note:
            log.warning("task %s round %d: %s", self.cfg.name, p.round, note)
        lam_before = self.meta.lam
        try:  # PAPER.md section 4
            self.meta.lam = dual_step(self.meta.lam, energy, p.budget_j, self.cfg.mu, self.cfg.lam_max)
            self.meta.violation_j += violation(energy, p.budget_j)
        except ValueError as exc:  # a zero budget has no meaningful price: keep lambda, say why
            log.error("task %s round %d: dual step skipped (%s); lambda stays %.3f", self.cfg.name, p.round, exc,
                      self.meta.lam)
        samples = sum(r.samples for r in reports)
        if samples > 0:
            self.meta.last_accuracy = sum(r.samples * r.local_accuracy for r in reports) / samples
            self.meta.last_loss = sum(r.samples * r.loss for r in reports) / samples
        self._learn_round_time([r.wall_s for r in reports if not r.partial and r.migrated_from is None])
        stats = TaskStats(
            sender=rsu_id, sent_at=now, seq=self.next_seq(), task=self.cfg.name, round=p.round, energy_j=energy,
            budget_j=p.budget_j, lam=self.meta.lam, violation_j=self.meta.violation_j,
            accuracy=min(1.0, max(0.0, self.meta.last_accuracy or 0.0)), loss=max(0.0, self.meta.last_loss or 0.0),
            ranks=[r.rank for r in reports] if not note else [], participants=len(p.participants),
            updates=0 if note else len(counted),
            energy_measured=bool(reports) and all(r.energy_measured for r in reports),
        )
        record = RoundRecord(
            task=self.cfg.name, round=p.round, lam=self.meta.lam, lam_announced=lam_before, energy_j=energy,
            budget_j=p.budget_j, violation_j=self.meta.violation_j, ranks=stats.ranks, updates=stats.updates,
            participants=list(p.participants), accepted=sorted(counted) if not note else [],
            ft={v: rec.action + (f":{rec.migrate_to}" if rec.migrate_to else "") for v, rec in p.ft.items()},
            round_latency_s=now - p.announced_at, closed_by=closed_by, accuracy=stats.accuracy,
            energy_measured=stats.energy_measured, note=note,
        )
        self._commit(p.round, moved=not note)
        self.history.append(record)
        return stats, record

    def add_aggregation_time(self, seconds: float, on_clock: float) -> RoundRecord:
        """Put the last closed round's aggregation time into its record; `on_clock` of it was not yet on the
        clock when the round closed (all of it on a simulated clock, none on a wall clock). Persisted, so the next
        announcement carries the round's full latency."""
        rec = self.history[-1]
        rec = replace(rec, aggregate_s=seconds, round_latency_s=rec.round_latency_s + on_clock)
        self.history[-1] = rec
        self.meta.last_round_latency_s = rec.round_latency_s
        self.store.save_meta(self.meta)
        return rec

    def _learn_round_time(self, walls: list[float]) -> None:
        """Moving average of full (not partial, not migrated) vehicle round times, for fault tolerance."""
        for w in walls:
            if math.isfinite(w) and w > 0:
                self.meta.expected_round_s = (1 - self.ema) * self.meta.expected_round_s + self.ema * w

    def _commit(self, round_: int, moved: bool) -> None:
        """New global to a fresh file, then meta (the commit point), then clean up the round's files."""
        old = self.meta.global_file
        if moved:
            self.meta.global_file = self.store.save_global(round_, self.layers, self.head)
        self.meta.next_round = round_ + 1
        self.meta.pending = None
        self.store.save_meta(self.meta)
        if moved and old != self.meta.global_file:
            self.store.prune_globals(self.meta.global_file)
        self.store.drop_round(round_)
        self.accepted.clear()
        self.held.clear()
