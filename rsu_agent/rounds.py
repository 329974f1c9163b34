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
from rsu_agent.aggregate import ClientUpdate
from rsu_agent.dual import dual_step, violation
from rsu_agent.robust import aggregate_robust
from rsu_agent.settings import RsuTaskConfig
from rsu_agent.shares import budget_shares, learn_reference
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
    violation_j: float  # cumulative, docs/algorithms.md section 4
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
    meta_dirty: bool = False  # meta.json is behind memory (a write failed); `flush()` retries
    meta_error: OSError | None = None  # why the last meta.json write failed

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
        self.save_meta()  # the cloud's budget applies even if the disk is down; meta catches up later
        return True

    def save_meta(self) -> bool:
        """Write meta.json for bookkeeping the round files already make durable (or that can be redone);
        on failure log, mark it dirty for `flush()` and return False instead of raising."""
        try:
            self.store.save_meta(self.meta)
        except OSError as exc:
            self.meta_dirty, self.meta_error = True, exc
            log.error("task %s: meta.json not written (%s); kept in memory, retried later", self.cfg.name, exc)
            return False
        self.meta_dirty = False
        return True

    def flush(self) -> None:
        """Write meta.json if a previous write failed; raise OSError if it fails again."""
        if self.meta_dirty:
            self.store.save_meta(self.meta)
            self.meta_dirty = False

    # -- open -----------------------------------------------------------------------------------------
    def tiers(self, round_: int, rsu_id: str) -> list[tuple[RoundTier, dict]]:
        """The global adapter in nested rank tiers (proto/README.md), each a message and its tensors."""
        rank = max((f.rank for f in self.layers.values()), default=0)
        return [(RoundTier(sender=rsu_id, seq=0, task=self.cfg.name, round=round_, index=k, first=first, last=last),
                 pack_tier(self.layers, self.head, first, last, with_head=k == 0))
                for k, (first, last) in enumerate(tier_bounds(self.cfg.ranks, rank))]

    def open(self, participants: list[str], now: float, rsu_id: str, extra_s: float = 0.0,
             budget_j: float | None = None) -> tuple[RoundAnnouncement, dict, list[tuple[RoundTier, dict]]]:
        """Open the next round; returns the announcement, its own tensors (only `head.*`, and only while the global
        is rank 0) and the global's rank tiers (none while the global is rank 0).

        `budget_j` replaces the task budget for this round (sized from the invited vehicles; the shares split it);
        default the task's. The open round is in memory only once it is on disk: an OSError from the write leaves
        everything as it was.
        """
        tensors = self._wire_tensors()
        tiers = self.tiers(self.meta.next_round, rsu_id) if self.layers else []
        head = self.expected_head()
        budget = self.budget_j if budget_j is None else budget_j
        meta = self.meta.model_copy(deep=True)
        meta.seq += 1
        ann = RoundAnnouncement(
            sender=rsu_id, sent_at=now, seq=meta.seq, task=self.cfg.name, task_type=self.cfg.task_type,
            round=meta.next_round, deadline=now + self.cfg.round_timeout_s + extra_s, lam=meta.lam,
            round_budget_j=budget, ranks=self.cfg.ranks,
            rank=max((f.rank for f in self.layers.values()), default=0), lora_alpha=self.cfg.lora_alpha,
            layers=list(self.cfg.layers), participants=sorted(participants), aggregator=self.cfg.aggregator,
            work=self.cfg.work, shares=budget_shares(budget, sorted(participants), self.meta.ref_costs),
            dims=dict(self.cfg.layers), head={f"head.{k}": list(v) for k, v in (head or {}).items()},
            last_round_latency_s=meta.last_round_latency_s,
            tiers=[TierRef(index=t.index, first=t.first, last=t.last) for t, _ in tiers],
        )
        meta.pending = PendingRound(
            round=ann.round, announced_at=now, deadline=ann.deadline, participants=ann.participants,
            budget_j=ann.round_budget_j, lam=ann.lam, announcement=ann.model_dump_json(), shares=dict(ann.shares),
        )
        self.store.save_meta(meta)  # raises OSError: nothing changed
        self.meta, self.meta_dirty = meta, False
        self.accepted.clear()
        self.held.clear()
        return ann, tensors, tiers

    def announcement(self, rsu_id: str) -> tuple[RoundAnnouncement, dict, list[tuple[RoundTier, dict]]]:
        """The open round's announcement, its tensors and tiers again (a restart republishes them unchanged)."""
        assert self.pending is not None
        ann = RoundAnnouncement.model_validate_json(self.pending.announcement)
        return ann, self._wire_tensors(), (self.tiers(ann.round, rsu_id) if self.layers else [])

    def _wire_tensors(self) -> dict[str, torch.Tensor]:
        """The announcement's own tensors. The factors travel in rank tiers (`tiers`); rank 0 has one encoding: no
        `{layer}.U/S/Vt` and no tiers (a global that aggregated to rank 0 is announced like round 0), only the
        `head.*` tensors in the announcement when a head exists."""
        if max((f.rank for f in self.layers.values()), default=0) > 0:
            return {}
        return {f"head.{k}": v for k, v in self.head.items()}

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
        """Write the update to disk, then count it (a kill -9 after this loses nothing). An OSError from the
        write propagates with nothing counted; the update file is the record, meta.json only mirrors it."""
        assert self.pending is not None
        r = self.pending.round
        self.store.save_update(r, "held" if hold else "accepted", identity, stored)
        if hold:
            self.held[identity] = _Counted(stored, update)
            return
        self.accepted[identity] = _Counted(stored, update)
        self.pending.accepted[identity] = stored.msg.report
        learn_reference(self.meta.ref_costs, stored.sender, stored.msg.report)  # the share rule's h_v
        self.save_meta()

    def record_ft(self, vehicle: str, rec: FtRecord) -> None:
        assert self.pending is not None
        self.pending.ft[vehicle] = rec
        self.save_meta()

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
            self.save_meta()
        return changed

    # -- close ----------------------------------------------------------------------------------------
    def close(self, now: float, rsu_id: str, closed_by: str) -> tuple[TaskStats, RoundRecord]:
        """Aggregate (or keep the global and say why), take the dual step, persist; return stats and record.

        Everything is computed on copies and applied only after meta.json (the commit point) is written: an
        OSError leaves the round open and the global, lambda and counters as they were, so the caller can retry.
        """
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
        layers, head = self.layers, self.head
        if len(counted) < self.cfg.min_updates:
            note = f"{len(counted)} updates < min_updates {self.cfg.min_updates}: global kept"
        else:
            try:
                layers, head = aggregate_robust([c.update for c in counted.values()], self.cfg.aggregator,
                                                self.cfg.r_max)
            except (ValueError, ArithmeticError) as exc:  # numerical: even float64 failed (rsu_agent/robust.py)
                note = f"aggregation failed ({exc}): global kept"
        if note:
            log.warning("task %s round %d: %s", self.cfg.name, p.round, note)
        meta = self.meta.model_copy(deep=True)
        lam_before = meta.lam
        try:  # docs/algorithms.md section 4
            meta.lam = dual_step(meta.lam, energy, p.budget_j, self.cfg.mu, self.cfg.lam_max, step=p.round,
                                 decay_rounds=self.cfg.mu_decay_rounds)
            meta.violation_j += violation(energy, p.budget_j)
        except ValueError as exc:  # a zero budget has no meaningful price: keep lambda, say why
            log.error("task %s round %d: dual step skipped (%s); lambda stays %.3f", self.cfg.name, p.round, exc,
                      meta.lam)
        samples = sum(r.samples for r in reports)
        if samples > 0:
            meta.last_accuracy = sum(r.samples * r.local_accuracy for r in reports) / samples
            meta.last_loss = sum(r.samples * r.loss for r in reports) / samples
        self._learn_round_time(meta, [r.wall_s for r in reports if not r.partial and r.migrated_from is None])
        meta.seq += 1
        stats = TaskStats(
            sender=rsu_id, sent_at=now, seq=meta.seq, task=self.cfg.name, round=p.round, energy_j=energy,
            budget_j=p.budget_j, lam=meta.lam, violation_j=meta.violation_j,
            accuracy=min(1.0, max(0.0, meta.last_accuracy)) if samples > 0 and not note else None,
            loss=max(0.0, meta.last_loss) if samples > 0 and not note and meta.last_loss is not None else None,
            ranks=[r.rank for r in reports] if not note else [], participants=len(p.participants),
            updates=0 if note else len(counted),
            energy_measured=bool(reports) and all(r.energy_measured for r in reports),
        )
        record = RoundRecord(
            task=self.cfg.name, round=p.round, lam=meta.lam, lam_announced=lam_before, energy_j=energy,
            budget_j=p.budget_j, violation_j=meta.violation_j, ranks=stats.ranks, updates=stats.updates,
            participants=list(p.participants), accepted=sorted(counted) if not note else [],
            ft={v: rec.action + (f":{rec.migrate_to}" if rec.migrate_to else "") for v, rec in p.ft.items()},
            round_latency_s=now - p.announced_at, closed_by=closed_by,
            accuracy=min(1.0, max(0.0, meta.last_accuracy or 0.0)),  # the global's latest (it stays when none came)
            energy_measured=stats.energy_measured, note=note,
        )
        self._commit(meta, p.round, layers, head, moved=not note)  # raises OSError: nothing applied
        self.meta, self.meta_dirty, self.layers, self.head = meta, False, layers, head
        self.accepted.clear()
        self.held.clear()
        self.history.append(record)
        return stats, record

    def add_aggregation_time(self, seconds: float, on_clock: float) -> RoundRecord:
        """Put the last closed round's aggregation time into its record; `on_clock` of it was not yet on the
        clock when the round closed (all of it on a simulated clock, none on a wall clock). The next announcement
        carries the round's full latency; meta.json catches up like other bookkeeping (`save_meta`: a failed
        write is retried, never raised: the round is already committed)."""
        rec = self.history[-1]
        rec = replace(rec, aggregate_s=seconds, round_latency_s=rec.round_latency_s + on_clock)
        self.history[-1] = rec
        self.meta.last_round_latency_s = rec.round_latency_s
        self.save_meta()
        return rec

    def _learn_round_time(self, meta: TaskMeta, walls: list[float]) -> None:
        """Moving average of full (not partial, not migrated) vehicle round times, for fault tolerance."""
        for w in walls:
            if math.isfinite(w) and w > 0:
                meta.expected_round_s = (1 - self.ema) * meta.expected_round_s + self.ema * w

    def _commit(self, meta: TaskMeta, round_: int, layers: dict[str, Factored], head: dict[str, torch.Tensor],
                moved: bool) -> None:
        """New global to a fresh file, then `meta` (the commit point), then clean up the round's files."""
        old = meta.global_file
        if moved:
            meta.global_file = self.store.save_global(round_, layers, head)
        meta.next_round = round_ + 1
        meta.pending = None
        self.store.save_meta(meta)
        try:  # the round is committed; leftovers are only disk space, removed again next time
            if moved and old != meta.global_file:
                self.store.prune_globals(meta.global_file)
            self.store.drop_round(round_)
        except OSError as exc:
            log.warning("task %s: cleaning up round %d failed: %s", self.cfg.name, round_, exc)
