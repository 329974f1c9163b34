"""The RSU agent: handles its messages and wires each task's rounds to the bus, the clock and fault tolerance.

Round opening and closing live in rsu_agent/round_cycle.py, leaving-vehicle fault tolerance in
rsu_agent/ft_watch.py, resource bounds in rsu_agent/guard.py (mixins of `RsuAgent`).

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
from collections import Counter
from dataclasses import dataclass

from fedrank.metrics import Metrics, NullMetrics
from fedrank.ratelimit import RateLimitedLog
from fedrank.runtime import Agent, Clock, Inbox
from proto.bus import Bus, BusError, Delivery, Will
from proto.codec import decode, encode
from proto.errors import WireError
from proto.messages import AgentStatus, Message, TaskBudget, VehicleUpdate
from proto.topics import Channel, Role, Topics
from rsu_agent.fault_tolerance import LinkRates
from rsu_agent.ft_watch import DEFAULT_Q_TARGET, FtWatchMixin
from rsu_agent.guard import GuardMixin
from rsu_agent.notices import Notices
from rsu_agent.precheck import precheck_update
from rsu_agent.robust import admit_numerically
from rsu_agent.round_cycle import AggregateTime, RoundBudget, RoundCycleMixin
from rsu_agent.rounds import RoundRecord, TaskRounds
from rsu_agent.settings import RsuSettings
from rsu_agent.state import StoredUpdate
from rsu_agent.storage import STORAGE, DiskGuard
from rsu_agent.validate import UpdateRejected, validate_update

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_Q_TARGET", "AggregateTime", "RoundBudget", "RsuAgent"]  # moved names stay importable here


@dataclass
class _Vehicle:
    status: AgentStatus
    seen_at: float  # our clock when the status arrived


class RsuAgent(FtWatchMixin, RoundCycleMixin, GuardMixin, Agent):
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

    # -- who takes part ----------------------------------------------------------------------------
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
