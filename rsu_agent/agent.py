"""The RSU agent: wires each task's rounds to the bus, the clock and fault tolerance.

Who takes part in a round (decided here, kept simple): every vehicle whose latest status is online, lists the
task, is inside the coverage (by its position; without one, by `status.rsu == this RSU`), is not still working
on another round of this RSU, and does not report `busy` in a status newer than its last update to us. A task
that finds fewer than `min_participants` waits and looks again every `participant_retry_s`; when another task's
round closes, waiting tasks look at once (before the closing task's next round, `round_gap_s` later), so tasks
sharing vehicles take turns instead of one starving the other.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from fedrank.metrics import Metrics, NullMetrics
from fedrank.ratelimit import RateLimitedLog
from fedrank.runtime import Agent, Clock, Inbox
from proto.adapter import tier_bounds
from proto.bounds import MAX_COST, MAX_DURATION_S, MAX_JOULES
from proto.bus import Bus, BusError, Delivery, Will
from proto.codec import WIRE_DTYPES, decode, encode
from proto.errors import WireError
from proto.messages import (
    AgentStatus,
    FaultCommand,
    Handoff,
    Message,
    RoundAnnouncement,
    RoundTier,
    TaskBudget,
    VehicleUpdate,
)
from proto.topics import Channel, Role, Topics
from rsu_agent.fault_tolerance import Candidate, LinkRates, decide, needs_decision
from rsu_agent.guard import GuardMixin
from rsu_agent.notices import Notices
from rsu_agent.precheck import precheck_update
from rsu_agent.recovery import close_or_fail
from rsu_agent.robust import admit_numerically
from rsu_agent.rounds import RoundRecord, TaskRounds
from rsu_agent.settings import RsuSettings, RsuTaskConfig
from rsu_agent.state import FtRecord, StoredUpdate
from rsu_agent.storage import STORAGE, DiskGuard
from rsu_agent.validate import UpdateRejected, validate_update

log = logging.getLogger(__name__)

DEFAULT_Q_TARGET = 0.5  # q* before any round has reported an accuracy (docs/algorithms.md section 6)


# (the closed round's record, its task config) -> seconds the aggregation takes
AggregateTime = Callable[[RoundRecord, RsuTaskConfig], float]
# (task, invited vehicles, the task budget from the cloud or None) -> this round's budget in joules
RoundBudget = Callable[[str, list[str], float | None], float]


@dataclass
class _Vehicle:
    status: AgentStatus
    seen_at: float  # our clock when the status arrived


class RsuAgent(GuardMixin, Agent):
    """Runs rounds for the tasks in `settings.tasks`; see the module docstring for who takes part."""

    def __init__(self, settings: RsuSettings, bus: Bus, clock: Clock, topics: Topics | None = None,
                 metrics: Metrics | None = None, rates: LinkRates | None = None,
                 aggregate_time: AggregateTime | None = None, round_budget: RoundBudget | None = None) -> None:
        """`aggregate_time` models the aggregation's seconds (the fleet; default: its measured wall time);
        `round_budget` sizes each round's budget from the vehicles invited (the fleet; default: the task's)."""
        super().__init__(clock)
        self.aggregate_time = aggregate_time
        self.round_budget = round_budget
        self.s = settings
        self.rates = rates  # link model for fault tolerance; None = the rates configured in settings.ft
        self.metrics: Metrics = metrics or NullMetrics()
        self.id = settings.id
        self.bus = bus
        self.topics = topics or Topics(settings.topic_root)
        self.tasks: dict[str, TaskRounds] = {}
        self.vehicles: dict[str, _Vehicle] = {}
        self._delivered_at: dict[str, float] = {}  # vehicle -> when we accepted its last update
        self._open_at: dict[str, float] = {}  # task -> time of the one pending "try to open" timer
        self._history: list[RoundRecord] = []
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self.disk = DiskGuard(settings.state_dir, self.metrics, self._status_changed)
        self._close_retry: set[str] = set()  # tasks whose close waits for the disk
        self._expected: frozenset[str] = frozenset()  # topics of updates open rounds wait for (read by transport)
        self.inbox = Inbox(settings.inbox_max_items, settings.inbox_max_bytes, priority=self._awaited)
        self.metrics.watch_inbox(self.inbox.depth)
        self._rlog = RateLimitedLog(log, clock.now, burst=settings.log_burst)
        self._notices = Notices(self.id, self.topics, clock.now, self._publish_notice)
        self._reported = Counter()  # drops already handed to metrics (inbox, bus, log)

    # -- read-only views ------------------------------------------------------------------------------
    @property
    def counters(self) -> dict:
        """accepted, held (migration partials), late, duplicate, commands by action, rejected by reason."""
        out: dict = {k: self._counts.get(k, 0) for k in ("accepted", "held", "late", "duplicate", "handoffs")}
        out["exit_source"] = {k[5:]: v for k, v in self._counts.items() if k.startswith("exit:")}
        out["commands"] = {k[4:]: v for k, v in self._counts.items() if k.startswith("cmd:")}
        out["rejected"] = dict(self._rejected)
        out["dropped"] = self._drops()
        out["vehicles"] = len(self.vehicles)
        out["notices"] = self._notices.sent
        return out

    @property
    def history(self) -> tuple[RoundRecord, ...]:
        return tuple(self._history)

    # -- lifecycle ------------------------------------------------------------------------------------
    def _status(self, state: str) -> AgentStatus:
        return AgentStatus(sender=self.id, sent_at=self.clock.now(), role="rsu", state=state,
                           tasks=[t.name for t in self.s.tasks], detail=self.disk.health.detail())

    def will(self) -> Will:
        """The offline status the broker publishes if this RSU drops uncleanly (set before connect)."""
        return Will(self.topics.status(Role.RSU, self.id), encode(self._status("offline")), qos=1, retain=True)

    def _subscriptions(self) -> None:
        for flt in (self.topics.all_status(Role.VEHICLE), self.topics.all_budgets(), self.topics.updates_for(self.id)):
            self.inbox.subscribe(self.bus, flt)

    def start(self) -> None:
        now = self.clock.now()
        for cfg in self.s.tasks:
            self.tasks[cfg.name] = TaskRounds.restore(cfg, self.s.state_dir, ema=self.s.round_time_ema)
        self.subscribe()
        self._status_changed()
        self.every(self.s.status_interval_s, self._periodic, "status", first_at=now + self.s.status_interval_s)
        every = min(10.0, self.s.vehicle_silence_s / 2)
        self.every(every, self._housekeeping, "housekeeping", first_at=now + every)
        for name, tr in self.tasks.items():
            if tr.pending is not None:  # resumed after a restart: same announcement, same deadline
                ann, tensors, tiers = tr.announcement(self.id)
                self._announce(name, ann, tensors, tiers)
                self.timers.schedule(max(now, tr.pending.deadline), lambda n=name, r=ann.round: self._deadline(n, r))
            else:
                self._schedule_open(name, now + self.s.join_wait_s)
        self._refresh_expected()

    def stop(self) -> None:
        self.timers.clear()  # the subscriptions stay: the broker queues for us until we are back
        self._publish(self.topics.status(Role.RSU, self.id), encode(self._status("offline")), retain=True)

    def _periodic(self) -> None:
        """Every `status_interval_s` (runs again even when it fails): status."""
        self._status_changed()

    def _status_changed(self) -> None:
        self._publish(self.topics.status(Role.RSU, self.id), encode(self._status("online")), retain=True)

    def healthy(self) -> bool:
        """False while a round cannot open or close because the state directory refuses writes."""
        return self.disk.healthy

    def on_tick(self) -> None:
        super().on_tick()
        self._watch_disk()

    def _watch_disk(self) -> None:
        self.disk.watch(self.clock.now(), self.tasks, self.timers.schedule)

    def _publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        try:
            self.bus.publish(topic, payload, qos=1, retain=retain)
        except BusError as exc:  # state is already on disk; the next round or status republishes
            log.error("publish on %s failed: %s", topic, exc)

    # -- inbox ----------------------------------------------------------------------------------------
    def on_delivery(self, d: Delivery) -> None:
        task = None
        vehicle = about = None
        try:
            info = self.topics.parse(d.topic)
            task = info.task if info.channel is Channel.UPDATE else None
            if info.role is Role.VEHICLE and info.channel in (Channel.UPDATE, Channel.STATUS):
                vehicle, about = info.sender, info.channel.value
            if info.channel is Channel.STATUS:
                self._on_status(self._decode(d, AgentStatus, info.sender))
            elif info.channel is Channel.BUDGET:
                self._on_budget(self._decode(d, TaskBudget, info.sender))
            elif info.channel is Channel.UPDATE and info.target == self.id:
                self._on_update(d, info.sender, info.task or "")
            else:
                raise UpdateRejected("unexpected_topic", d.topic)
        except WireError as exc:
            self._refuse(d.topic, exc.reason, exc.detail, task)
            if vehicle is not None and about is not None:  # tell the vehicle why (rate-limited)
                self._notices.refused(vehicle, exc.reason, about, task, exc.detail)
        self._watch_disk()

    def _decode(self, d: Delivery, cls: type[Message], sender: str) -> Message:
        msg = decode(d.payload, cls, self.s.broker.max_payload_bytes).msg
        if msg.sender != sender:
            raise UpdateRejected("sender_mismatch", f"payload sender {msg.sender} on {sender}'s topic")
        self._check_clock(msg)
        return msg

    def _on_budget(self, msg: Message) -> None:
        assert isinstance(msg, TaskBudget)
        tr = self.tasks.get(msg.task)
        if tr is None:
            return  # a task hosted elsewhere
        if msg.round_budget_j <= 0:
            raise UpdateRejected("bad_budget", f"task {msg.task}: round budget {msg.round_budget_j} J must be > 0")
        if tr.set_budget(msg):
            log.info("task %s: budget %.1f J per round from window %d", msg.task, msg.round_budget_j, msg.round)

    def _on_status(self, msg: Message) -> None:
        assert isinstance(msg, AgentStatus)
        old = self.vehicles.get(msg.sender)
        # An older status overtaken by a newer one changes nothing, except the will: the broker sends it with
        # the time the vehicle connected, which is older than every status the vehicle sent since.
        if old is not None and msg.sent_at < old.status.sent_at and msg.state != "offline":
            return
        if msg.state == "online" and not set(msg.tasks) & self.tasks.keys():
            self.vehicles.pop(msg.sender, None)  # nothing for us: not tracked (and bogus task names cost nothing)
            return
        if old is None and msg.state == "online" and len(self.vehicles) >= self.s.max_vehicles:
            raise UpdateRejected("too_many_vehicles", f"already tracking {len(self.vehicles)} vehicles")
        if old is not None or msg.state == "online":  # an offline vehicle we never tracked is not added
            self.vehicles[msg.sender] = _Vehicle(msg, self.clock.now())
        if msg.state == "offline":
            self._delivered_at.pop(msg.sender, None)  # back online, it loads its model again: cold
            for name, tr in self.tasks.items():
                if tr.drop(msg.sender):
                    log.info("task %s: %s went offline; dropped from the round", name, msg.sender)
                    self._maybe_close(name)
            return
        busy_with = msg.working_on
        for name, tr in self.tasks.items():
            p = tr.pending
            if (busy_with is not None and p is not None
                    and (busy_with.rsu, busy_with.task, busy_with.round) != (self.id, name, p.round)
                    and tr.drop(msg.sender)):
                log.info("task %s round %d: %s is busy with %s/%s/%d; dropped from the round", name, p.round,
                         msg.sender, busy_with.rsu, busy_with.task, busy_with.round)
                self._maybe_close(name)
        if self.s.fault_tolerance and msg.position is not None and msg.velocity is not None:
            for name in self.tasks:
                self._check_leaving(name, msg)

    def _on_update(self, d: Delivery, sender: str, task: str) -> None:
        # topic, size and header first: no tensor is loaded for an update that cannot count (rsu_agent/precheck.py)
        tr, identity, hold = precheck_update(self.tasks, self.id, d.payload, sender, task,
                                             self.s.broker.max_payload_bytes, self._check_clock)
        dec = decode(d.payload, VehicleUpdate, self.s.broker.max_payload_bytes)
        msg = dec.msg
        assert isinstance(msg, VehicleUpdate)
        update = validate_update(msg, dec.tensors, tr.cfg, tr.expected_head())
        admit_numerically(update, tr.cfg.aggregator, tr.cfg.r_max)
        try:
            tr.accept(identity, StoredUpdate(sender, msg, dec.tensors), update, hold)
        except OSError as exc:  # not durable, so not counted: rejected (and counted) as `storage`
            self.disk.failed(self.clock.now(), f"task {task} round {msg.round}: saving {identity}'s update", exc)
            raise UpdateRejected(STORAGE, f"{identity}'s update could not be written: {exc}") from exc
        if not tr.meta_dirty:
            self.disk.ok(self.clock.now())
        self._delivered_at[sender] = self.clock.now()
        if hold:
            self._counts["held"] += 1
            self._forward(tr, identity, msg, dec.tensors)
            self._maybe_close(task)  # a failed migration waited only for this partial
            return
        self._counts["accepted"] += 1
        self.metrics.update_accepted(task)
        log.info("task %s round %d: accepted %s (rank %d, %.1f J %s)", task, msg.round, identity, msg.report.rank,
                 msg.report.joules, msg.report.energy_source)
        self._maybe_close(task)

    # -- rounds ---------------------------------------------------------------------------------------
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

    def _working_here(self, except_task: str | None = None) -> set[str]:
        """Vehicles some open round of this RSU still waits for (they are training for us)."""
        return {v for name, tr in self.tasks.items() if name != except_task for v in tr.waiting()}

    def _free(self, vid: str, v: _Vehicle) -> bool:
        """Online, heard from recently, and not reporting busy since its last update to us."""
        st = v.status
        if self.clock.now() - v.seen_at > self.s.vehicle_silence_s:
            return False  # a vehicle that went quiet without a will (power loss, broker lost it) is not invited
        return st.state == "online" and not (st.busy and v.seen_at > self._delivered_at.get(vid, -math.inf))

    def _inside(self, st: AgentStatus) -> bool:
        if st.position is None:
            return st.rsu == self.id
        return self.s.coverage.contains(st.position.x, st.position.y)

    def eligible(self, task: str) -> list[str]:
        """Vehicles that would take part if `task`'s round opened now."""
        busy = self._working_here(except_task=task)
        return sorted(vid for vid, v in self.vehicles.items()
                      if task in v.status.tasks and self._free(vid, v) and vid not in busy and self._inside(v.status))

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

    # -- fault tolerance (docs/algorithms.md section 6) ---------------------------------------------------------
    def _adapter_bytes(self, tr: TaskRounds) -> int:
        """Upper bound of the adapter on the wire: the vehicle's rank is unknown until it uploads, so r_max."""
        per = WIRE_DTYPES[self.s.wire_dtype].itemsize
        head = sum(t.numel() for t in tr.head.values())
        return per * (tr.cfg.r_max * sum(d_out + d_in for d_out, d_in in tr.cfg.layers.values()) + head)

    def _candidates(self, tr: TaskRounds, leaving: AgentStatus, share_j: float) -> list[Candidate]:
        """In-coverage vehicles of the task, free now, with their spare share of the round budget."""
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
            spare = share_j - (done.stored.msg.report.joules if done else 0.0)
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
        share = p.budget_j / max(1, len(p.participants))
        nbytes = self._adapter_bytes(tr)
        dec = decide(q_target=q_target, q_partial=q_target * frac, e_spent_j=share * frac, adapter_bytes=nbytes,
                     candidates=self._candidates(tr, st, share), weights=self.s.ft, exit_in_s=exit_in,
                     rates=self.rates, rsu_distance_m=self.s.coverage.distance_to(st.position.x, st.position.y))
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
