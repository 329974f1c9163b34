"""The cloud agent: publishes each task's energy budget (retained) and re-splits E_total every window.

Window rule (docs/algorithms.md §5, decided where the paper is silent): a window closes when every task has reported
Q rounds in it, or, so that a stalled task cannot freeze the budgets, when some task has reported 2Q. A task's
used energy is scaled to a full window, U_m = used * Q / rounds_m, so that a task with fewer rounds is not judged
thrifty (a task with none counts U_m = 0, dq_m = 0); its accuracy gain dq_m is its last reported accuracy minus
the last one before the window (for the first window, its first report). Rounds of every RSU hosting a task count
toward that task's window. A stats message is counted once per
(RSU, task, round); impossible values are refused and never move a budget.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from cloud_agent.settings import CloudSettings
from cloud_agent.tri_feedback import TaskWindow, TriFeedbackState, allocate, equal_split
from fedrank.metrics import Metrics, NullMetrics
from fedrank.ratelimit import RateLimitedLog
from fedrank.runtime import Agent, Clock
from fedrank.state import atomic_write_json, read_json
from proto.bus import Bus, BusError, Delivery, Will
from proto.codec import decode, encode
from proto.errors import WireError
from proto.messages import AgentStatus, TaskBudget, TaskStats
from proto.topics import Channel, Role, Topics

log = logging.getLogger(__name__)


class StatsRejected(WireError):
    """A stats message that decoded but cannot be true or is not ours to count."""


class WindowAcc(BaseModel):
    """One task's feedback so far in the current window."""

    used_j: float = 0.0
    rounds: int = 0
    baseline: float | None = None  # accuracy before the window
    last: float | None = None  # latest accuracy


class CloudState(BaseModel):
    """What survives a restart (written atomically to `{state_dir}/cloud.json`)."""

    window: int = 0
    seq: int = 0
    allocations: dict[str, float] = Field(default_factory=dict)  # A_m of the current window
    difficulty: dict[str, float] = Field(default_factory=dict)  # h_m
    acc: dict[str, WindowAcc] = Field(default_factory=dict)
    last_round: dict[str, int] = Field(default_factory=dict)  # "rsu/task" -> highest round counted


class CloudAgent(Agent):
    """Allocates E_total across `settings.tasks` by tri-feedback (or equally, with tri_feedback off)."""

    def __init__(self, settings: CloudSettings, bus: Bus, clock: Clock, topics: Topics | None = None,
                 metrics: Metrics | None = None) -> None:
        super().__init__(clock)
        self._rlog = RateLimitedLog(log, clock.now)  # a flood of bad stats is a few lines a minute, the rest counted
        self.s = settings
        self.metrics: Metrics = metrics or NullMetrics()
        self.id = settings.id
        self.bus = bus
        self.topics = topics or Topics(settings.topic_root)
        self.state = CloudState()
        self._file = settings.state_dir / "cloud.json"
        self._counts: Counter[str] = Counter()
        self._rejected: Counter[str] = Counter()
        self.windows: list[dict[str, Any]] = []  # per closed window: inputs and the new allocation (fleet reads)

    @property
    def counters(self) -> dict:
        return {"stats": self._counts["stats"], "duplicate": self._counts["duplicate"],
                "windows": self._counts["windows"], "rejected": dict(self._rejected)}

    @property
    def q(self) -> int:
        return self.s.feedback.window_rounds

    # -- lifecycle ------------------------------------------------------------------------------------
    def _status(self, state: str) -> AgentStatus:
        return AgentStatus(sender=self.id, sent_at=self.clock.now(), role="cloud", state=state, tasks=self.s.tasks)

    def will(self) -> Will:
        return Will(self.topics.status(Role.CLOUD, self.id), encode(self._status("offline")), qos=1, retain=True)

    def _subscriptions(self) -> None:
        self.inbox.subscribe(self.bus, self.topics.all_stats())

    def start(self) -> None:
        self._restore()
        self.subscribe()
        self._publish_status()
        self.every(self.s.status_interval_s, self._publish_status, "status",
                   first_at=self.clock.now() + self.s.status_interval_s)
        self._publish_budgets()

    def stop(self) -> None:
        self.timers.clear()  # the subscription stays: the broker queues stats for us until we are back
        self._publish(self.topics.status(Role.CLOUD, self.id), encode(self._status("offline")))

    def _restore(self) -> None:
        raw = read_json(self._file)
        if raw is not None:
            try:
                self.state = CloudState.model_validate(raw)
            except ValidationError as exc:
                log.error("cloud state %s does not validate (%s); starting fresh", self._file, exc)
        if set(self.state.allocations) != set(self.s.tasks):
            if self.state.allocations:
                log.warning("tasks changed from %s to %s; equal split", sorted(self.state.allocations), self.s.tasks)
            self.state.allocations = equal_split(self.s.tasks, self.s.e_total_j)
        for t in self.s.tasks:
            self.state.acc.setdefault(t, WindowAcc())
        self._save()

    def _save(self) -> None:
        atomic_write_json(self._file, self.state.model_dump(mode="json"))

    def _publish(self, topic: str, payload: bytes) -> None:
        try:
            self.bus.publish(topic, payload, qos=1, retain=True)
        except BusError as exc:
            log.error("publish on %s failed: %s", topic, exc)

    def _publish_status(self) -> None:
        self._publish(self.topics.status(Role.CLOUD, self.id), encode(self._status("online")))

    def _publish_budgets(self) -> None:
        for task, a in self.state.allocations.items():
            self.state.seq += 1
            msg = TaskBudget(sender=self.id, sent_at=self.clock.now(), seq=self.state.seq, task=task,
                             round=self.state.window, window_rounds=self.q, window_budget_j=a,
                             round_budget_j=a / self.q)  # B_m(t) = A_m / Q
            self._publish(self.topics.budget(self.id, task), encode(msg))
        self._save()
        log.info("window %d budgets (J per window): %s", self.state.window,
                 {t: round(a, 3) for t, a in self.state.allocations.items()})

    # -- stats ----------------------------------------------------------------------------------------
    def on_delivery(self, d: Delivery) -> None:
        try:
            info = self.topics.parse(d.topic)
            if info.channel is not Channel.STATS:
                raise StatsRejected("unexpected_topic", d.topic)
            msg = decode(d.payload, TaskStats, self.s.broker.max_payload_bytes).msg
            assert isinstance(msg, TaskStats)
            self._on_stats(msg, info.sender, info.task or "")
        except WireError as exc:
            self._rejected[exc.reason] += 1
            self.metrics.message_rejected(exc.reason)
            self._rlog(exc.reason, logging.WARNING, "rejected stats on %s: %s (%s)", d.topic[:200], exc.reason,
                       exc.detail[:300], extra={"topic": d.topic[:200], "reason": exc.reason})

    def _check(self, msg: TaskStats, rsu: str, task: str) -> None:
        """Raise StatsRejected for stats that are not ours or cannot be true."""
        if msg.sender != rsu or msg.task != task:
            raise StatsRejected("topic_mismatch", f"{msg.sender}/{msg.task} on {rsu}/{task}'s topic")
        if task not in self.s.tasks:
            raise StatsRejected("unknown_task", f"{task} is not one of {self.s.tasks}")
        if msg.updates > msg.participants:
            raise StatsRejected("impossible_counts", f"{msg.updates} updates from {msg.participants} participants")
        if msg.energy_j > self.s.e_total_j:
            # One round cannot spend more than every task's whole window: a unit error or a lie.
            raise StatsRejected("impossible_energy", f"{msg.energy_j} J in one round > E_total {self.s.e_total_j} J")

    def _on_stats(self, msg: TaskStats, rsu: str, task: str) -> None:
        self._check(msg, rsu, task)
        key = f"{rsu}/{task}"
        if msg.round <= self.state.last_round.get(key, -1):
            self._counts["duplicate"] += 1
            log.info("stats %s round %d already counted", key, msg.round)
            return
        self.state.last_round[key] = msg.round
        acc = self.state.acc.setdefault(task, WindowAcc())
        acc.used_j += msg.energy_j
        acc.rounds += 1
        if msg.accuracy is not None:  # null: no update was aggregated, nothing was measured
            if acc.baseline is None:
                acc.baseline = acc.last if acc.last is not None else msg.accuracy
            acc.last = msg.accuracy
        self._counts["stats"] += 1
        self.metrics.set_energy(task, acc.used_j, self.state.allocations.get(task))
        self._save()
        log.info("stats %s round %d: %.1f J (%s), accuracy %s", key, msg.round, msg.energy_j,
                 "measured" if msg.energy_measured else "estimated/modelled",
                 "none (no update)" if msg.accuracy is None else f"{msg.accuracy:.3f}")
        rounds = [self.state.acc[t].rounds for t in self.s.tasks]
        if min(rounds) >= self.q or max(rounds) >= 2 * self.q:
            self._close_window()

    def _close_window(self) -> None:
        """Split E_total for the next window (docs/algorithms.md section 5) and publish the budgets."""
        windows = []
        for t in self.s.tasks:
            acc = self.state.acc[t]
            used = acc.used_j * self.q / acc.rounds if acc.rounds else 0.0  # a full window's worth
            gain = acc.last - acc.baseline if acc.last is not None and acc.baseline is not None else 0.0
            windows.append(TaskWindow(task=t, used_j=used, allocated_j=self.state.allocations[t], accuracy_gain=gain))
        new = self.state.allocations
        if self.s.tri_feedback:
            try:
                new, fb = allocate(windows, TriFeedbackState(dict(self.state.difficulty)), self.s.e_total_j,
                                   self.s.feedback)
                self.state.difficulty = fb.difficulty
            except Exception as exc:  # numerical trouble (overflow, ...) too: the window still closes
                self.failures["allocate"] += 1
                log.error("window %d: allocation failed (%s: %s); budgets unchanged", self.state.window,
                          type(exc).__name__, exc)
        else:
            new = equal_split(self.s.tasks, self.s.e_total_j)
        self.windows.append({"window": self.state.window, "inputs": [vars(w).copy() for w in windows],
                             "allocations": dict(new), "difficulty": dict(self.state.difficulty)})
        self.state.allocations = dict(new)
        self.state.window += 1
        for t in self.s.tasks:
            last = self.state.acc[t].last
            self.state.acc[t] = WindowAcc(baseline=last, last=last)
        self._counts["windows"] += 1
        self._publish_budgets()  # saves the state
