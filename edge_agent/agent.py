"""The vehicle agent: a state machine over its inbox (README "How a round works", docs/algorithms.md sections 1-3).

Round: announcement -> work configuration from the policy -> the rank tiers up to eta -> local LoRA training from
the top-eta global factors -> update (factors + report) -> policy statistics once the RSU says how long the round
took. Fault-tolerance commands cut a round short.
This module handles messages, topics and status; the round job itself lives in `edge_agent.round_job`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_agent.round_job import Job, Learner, Meter, RoundJobs
from edge_agent.scoring import PendingOutcomes
from edge_agent.settings import EdgeSettings
from edge_agent.tiers import TierFetch
from edge_agent.work import CostModel
from fedrank.runtime import Agent, Clock
from fedrank.state import atomic_write_json, move_aside, read_json
from proto.bus import Bus, BusError, Delivery, Will
from proto.codec import decode, decode_header
from proto.errors import PayloadRejected, WireError
from proto.messages import (
    AgentStatus,
    FaultCommand,
    Handoff,
    Position,
    Rejected,
    RoundAnnouncement,
    RoundRef,
    RoundTier,
    Velocity,
)
from proto.topics import Channel, Role, Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fix:
    """Where the vehicle is and how it moves (metres, metres per second)."""

    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    exits: Mapping[str, float] | None = None  # RSU id -> seconds to leave its coverage by the route (navigation)


PositionSource = Callable[[float], Fix | None]

__all__ = ["Fix", "Job", "Learner", "Meter", "PositionSource", "VehicleAgent"]


class VehicleAgent(RoundJobs, Agent):
    """The edge agent. `learner_for(task)` and `policy_for(task)` are injected factories."""

    def __init__(
        self,
        settings: EdgeSettings,
        bus: Bus,
        clock: Clock,
        *,
        learner_for: Callable[[str], Learner],
        policy_for: Callable[[str], Any],
        meter: Meter,
        cost_model: CostModel | None = None,
        position: PositionSource | None = None,
        topics: Topics | None = None,
        metrics: Any = None,
    ) -> None:
        super().__init__(clock)
        self.s = settings
        self.id = settings.id
        self.bus = bus
        self.topics = topics or Topics(settings.topic_root)
        self.learner_for = learner_for
        self.policy_for = policy_for
        self.meter = meter
        self.cost_model = cost_model
        self.position = position
        self.tasks = {t.name: t for t in settings.tasks}
        from fedrank.metrics import NullMetrics

        self.metrics = metrics or NullMetrics()
        self.state_dir = Path(settings.state_dir)
        self._state_file = self.state_dir / "vehicle.json"
        self._policies: dict[str, Any] = {}
        self._fetch: TierFetch | None = None  # the rank tiers the current round still needs
        # "rsu/task" -> the last round's outcome, awaiting the round's latency; next to the bandit state
        self._unscored = PendingOutcomes(self.state_dir / "pending-outcomes.json")
        self.job: Job | None = None
        self.rsu_seen: str | None = None  # the RSU whose latest round listed us (the status's `rsu` when unset)
        self.seq = 0
        self.done_rounds: dict[str, int] = {}  # "rsu/task" -> last round taken
        self.counters: dict[str, int] = {}
        self.history: list[dict] = []  # one record per published update, read by the fleet
        self.interrupt = threading.Event()  # set from the transport thread so training stops at a safe point
        self._job_tokens = 0
        self._next_status_at = 0.0
        self._link_s_per_byte = 0.0  # field: seconds per byte of the last acknowledged upload
        self._restore()

    # -- lifecycle ----------------------------------------------------------------------------------
    def will(self) -> Will:
        return Will(self.topics.status(Role.VEHICLE, self.id), self._status("offline").model_dump_json().encode())

    def _subscriptions(self) -> None:
        for task in self.tasks:
            self.inbox.subscribe(self.bus, self.topics.rounds_for_task(task))
        self.bus.subscribe(self.topics.commands_for(self.id), self._command_arrived)
        self.inbox.subscribe(self.bus, self.topics.handoffs_for(self.id))

    def start(self) -> None:
        self.subscribe()
        self._publish_status()

    def stop(self) -> None:
        self.interrupt.set()
        self.bus.publish(self.topics.status(Role.VEHICLE, self.id), self._status("offline").model_dump_json().encode(),
                         qos=1, retain=True)

    def interrupt_work(self) -> None:
        self.interrupt.set()

    def _command_arrived(self, d: Delivery) -> None:
        """Transport thread: a command about the round being trained must stop it at the next step."""
        job = self.job
        try:
            cmd = decode(d.payload, FaultCommand, self.s.broker.max_payload_bytes).msg
            if job is not None and (cmd.sender, cmd.task, cmd.round, cmd.vehicle) == (job.rsu, job.task, job.round,
                                                                                    self.id):
                self.interrupt.set()
        except WireError:
            pass  # the agent's thread decodes it again, then counts and logs the reason
        self.inbox.put(d)

    # -- status ---------------------------------------------------------------------------------------
    def _status(self, state: str) -> AgentStatus:
        fix = self.position(self.clock.now()) if self.position else None
        busy = self.job is not None and self.job.state != "done"
        return AgentStatus(
            sender=self.id, sent_at=self.clock.now(), seq=self._next_seq(), role="vehicle", state=state,
            tasks=sorted(self.tasks), busy=busy, rsu=self.s.rsu or self.rsu_seen,
            working_on=RoundRef(rsu=self.job.rsu, task=self.job.task, round=self.job.round) if busy else None,
            position=Position(x=fix.x, y=fix.y) if fix else None,
            velocity=Velocity(vx=fix.vx, vy=fix.vy) if fix else None,
            exit_in_s=dict(fix.exits) if fix is not None and fix.exits else None,
        )

    def _publish_status(self, periodic: bool = True) -> None:
        if periodic:  # scheduled first: a failed publish must not end the status reports
            self.timers.schedule(self.clock.now() + self.s.status_interval_s, self._publish_status)
        self._next_status_at = self.clock.now() + self.s.status_interval_s
        try:
            self.bus.publish(self.topics.status(Role.VEHICLE, self.id),
                             self._status("online").model_dump_json().encode(), qos=1, retain=True)
        except BusError as exc:
            self._count("status_publish_failed")
            log.warning("status not acknowledged: %s", exc)

    def _training_tick(self) -> bool:
        """Called between training steps in the field: keep status (position!) and the watchdog going while the
        agent's thread trains, and say whether to stop."""
        if self.clock.now() >= self._next_status_at:
            self._publish_status(periodic=False)
        if self.heartbeat is not None:
            self.heartbeat()
        return self.interrupt.is_set()

    # -- inbox ----------------------------------------------------------------------------------------
    def on_delivery(self, d: Delivery) -> None:
        try:
            info = self.topics.parse(d.topic)
            if not d.payload and info.channel is Channel.ROUND:
                self._settle(f"{info.sender}/{info.task}", None, None)  # the task is finished at that RSU
                return  # an RSU cleared its retained announcement
            limit = self.s.broker.max_payload_bytes
            if info.channel is Channel.ROUND:
                # The header decides whether the round concerns us; only then are the tensors (and torch) loaded.
                head = decode_header(d.payload, RoundAnnouncement, limit)
                self._match_topic(head.sender, head.task, info.sender, info.task)
                self._settle(f"{info.sender}/{head.task}", head.round - 1, head.last_round_latency_s)
                if self._wants_round(head, info.sender):
                    dec = decode(d.payload, RoundAnnouncement, limit)
                    self._on_round(dec.msg, dec.tensors, info.sender)
            elif info.channel is Channel.TIER:
                if not d.payload:
                    return  # a finished task's tiers cleared
                dec = decode(d.payload, RoundTier, limit)
                self._match_topic(dec.msg.sender, dec.msg.task, info.sender, info.task)
                self._on_tier(dec.msg, dec.tensors, info.sender)
            elif info.channel is Channel.COMMAND:
                cmd = decode(d.payload, None, limit).msg  # a FaultCommand, or a `rejected` notice
                if isinstance(cmd, Rejected):
                    self._on_rejected(cmd, info.sender, info.target)
                    return
                if not isinstance(cmd, FaultCommand):
                    raise PayloadRejected("wrong_kind", f"{cmd.KIND} on a command topic")
                self._match_topic(cmd.sender, cmd.vehicle, info.sender, info.target)
                self._on_command(cmd, info.sender)
            elif info.channel is Channel.HANDOFF:
                dec = decode(d.payload, Handoff, limit)
                self._match_topic(dec.msg.sender, dec.msg.vehicle, info.sender, info.target)
                self._on_handoff(dec.msg, dec.tensors)
            else:
                self._reject(d.topic, "unexpected_topic")
        except WireError as exc:
            self._reject(d.topic, exc.reason, exc.detail)

    @staticmethod
    def _match_topic(sender: str, subject: str, topic_sender: str, topic_subject: str | None) -> None:
        """A message must say what its topic says (who sent it, and which task or vehicle it is about)."""
        if (sender, subject) != (topic_sender, topic_subject):
            raise PayloadRejected("topic_mismatch", f"{sender}/{subject} on a topic of {topic_sender}/{topic_subject}")

    def _wants_round(self, msg: RoundAnnouncement, rsu: str) -> bool:
        if msg.task not in self.tasks or self.id not in msg.participants:
            return False
        self.rsu_seen = rsu  # it counts us in its coverage
        if self.done_rounds.get(f"{rsu}/{msg.task}", -1) >= msg.round:
            self._count("round_seen_before")  # a retained copy or a redelivery changes nothing
            return False
        return True

    def _on_rejected(self, note: Rejected, rsu: str, target: str | None) -> None:
        """An RSU refused one of our messages: count it by reason and say why (rate-limited at the RSU)."""
        self._match_topic(note.sender, note.vehicle, rsu, target)
        self._count(f"refused_{note.reason.value}")
        log.warning("%s refused our %s%s: %s (%s)", rsu, note.about, f" for {note.task}" if note.task else "",
                    note.reason.value, note.detail)

    def _reject(self, topic: str, reason: str, detail: str = "") -> None:
        self._count(f"rejected_{reason}")
        self.metrics.message_rejected(reason)
        log.warning("rejected message on %s: %s %s", topic, reason, detail)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- state ----------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _persist(self) -> None:
        atomic_write_json(self._state_file, {"seq": self.seq, "done_rounds": self.done_rounds})

    def _restore(self) -> None:
        data = read_json(self._state_file)
        if not data:
            return
        try:  # valid JSON of the wrong shape (a hand edit, another version): set aside, never a crash at start
            seq = int(data.get("seq", 0))
            done = {str(k): int(v) for k, v in dict(data.get("done_rounds", {})).items()}
        except (AttributeError, TypeError, ValueError) as exc:
            move_aside(self._state_file, "vehicle state", f"{type(exc).__name__}: {exc}")
            return
        self.seq, self.done_rounds = seq, done


