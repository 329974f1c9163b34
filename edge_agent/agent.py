"""The vehicle agent: a state machine over its inbox (DESIGN.md "one round", PAPER.md sections 1-3).

Round: announcement -> rank from the policy -> local LoRA training from the top-eta global factors
-> update (factors + report) -> policy statistics. Fault-tolerance commands cut a round short.
In the field the work is measured and runs now; with a `CostModel` (the fleet) its latency and
energy are modelled and the round completes later on the clock.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from edge_agent.scoring import Outcome, PendingOutcomes
from edge_agent.settings import EdgeSettings
from edge_agent.tiers import TierFetch, tiers_needed
from edge_agent.work import CostModel, ModelledCost
from fedrank.runtime import Agent, Clock
from fedrank.state import atomic_write_json, read_json
from proto.bus import Bus, BusError, Delivery, Will
from proto.codec import decode, decode_header, encode
from proto.errors import PayloadRejected, WireError
from proto.messages import (
    AgentStatus,
    FaultCommand,
    Handoff,
    Position,
    RoundAnnouncement,
    RoundRef,
    RoundTier,
    UpdateReport,
    VehicleUpdate,
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


PositionSource = Callable[[float], Fix | None]


class Learner(Protocol):
    """One task's local training on this vehicle (edge_agent.learner builds the real one)."""

    def train(self, *, rank: int, alpha: float, init: Any, head: Any, steps: int, meter: Any,
              should_stop: Callable[[], bool] | None, seed: int) -> Any: ...


class Meter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Any: ...


@dataclass
class Job:
    """One round this vehicle is working on."""

    rsu: str
    task: str
    round: int
    rank: int
    alpha: float
    lam: float
    budget_j: float
    n_participants: int
    started: float
    init: Any
    head: Any
    steps: int
    migrated_from: str | None = None
    carried_joules: float = 0.0  # energy a migrated-from vehicle already spent on this work
    modelled_down: ModelledCost | None = None
    modelled_train: ModelledCost | None = None
    result: Any = None
    state: str = "training"  # (fetching ->) training -> trained -> done
    token: int = 0


class VehicleAgent(Agent):
    """The edge agent. `learner_for(task)` and `policy_for(task, ranks)` are injected factories."""

    def __init__(
        self,
        settings: EdgeSettings,
        bus: Bus,
        clock: Clock,
        *,
        learner_for: Callable[[str], Learner],
        policy_for: Callable[[str, list[int]], Any],
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
        self._unscored = PendingOutcomes()  # "rsu/task" -> the last round's outcome, awaiting the round's latency
        self.job: Job | None = None
        self.seq = 0
        self.done_rounds: dict[str, int] = {}  # "rsu/task" -> last round taken
        self.counters: dict[str, int] = {}
        self.history: list[dict] = []  # one record per published update, read by the fleet
        self.interrupt = threading.Event()  # set from the transport thread so training stops at a safe point
        self._job_tokens = 0
        self._next_status_at = 0.0
        self._last_upload_s = 0.0
        self._restore()

    # -- lifecycle ----------------------------------------------------------------------------------
    def will(self) -> Will:
        return Will(self.topics.status(Role.VEHICLE, self.id), self._status("offline").model_dump_json().encode())

    def start(self) -> None:
        for task in self.tasks:
            self.inbox.subscribe(self.bus, self.topics.rounds_for_task(task))
        self.bus.subscribe(self.topics.commands_for(self.id), self._command_arrived)
        self.inbox.subscribe(self.bus, self.topics.handoffs_for(self.id))
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
            tasks=sorted(self.tasks), busy=busy, rsu=self.s.rsu,
            working_on=RoundRef(rsu=self.job.rsu, task=self.job.task, round=self.job.round) if busy else None,
            position=Position(x=fix.x, y=fix.y) if fix else None,
            velocity=Velocity(vx=fix.vx, vy=fix.vy) if fix else None,
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
                    self._on_round(decode(d.payload, RoundAnnouncement, limit).msg, info.sender)
            elif info.channel is Channel.TIER:
                if not d.payload:
                    return  # a finished task's tiers cleared
                dec = decode(d.payload, RoundTier, limit)
                self._match_topic(dec.msg.sender, dec.msg.task, info.sender, info.task)
                self._on_tier(dec.msg, dec.tensors, info.sender)
            elif info.channel is Channel.COMMAND:
                cmd = decode(d.payload, FaultCommand, limit).msg
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
        if self.done_rounds.get(f"{rsu}/{msg.task}", -1) >= msg.round:
            self._count("round_seen_before")  # a retained copy or a redelivery changes nothing
            return False
        return True

    def _reject(self, topic: str, reason: str, detail: str = "") -> None:
        self._count(f"rejected_{reason}")
        self.metrics.message_rejected(reason)
        log.warning("rejected message on %s: %s %s", topic, reason, detail)

    def _count(self, key: str) -> None:
        self.counters[key] = self.counters.get(key, 0) + 1

    # -- rounds ---------------------------------------------------------------------------------------
    def _on_round(self, msg: RoundAnnouncement, rsu: str) -> None:
        """A round `_wants_round` accepted (ours, listed, not done before)."""
        key = f"{rsu}/{msg.task}"
        if self.job is not None and self.job.state != "done":
            self._count("round_while_busy")
            log.info("round %s/%s from %s skipped: busy with %s/%s", msg.task, msg.round, rsu, self.job.task,
                     self.job.round)
            self._publish_status(periodic=False)  # says what we are busy with, so that RSU stops waiting for us
            return
        if msg.deadline <= self.clock.now():
            self._count("round_past_deadline")
            return
        if msg.rank > 0 and not msg.tiers:
            raise PayloadRejected("bad_layers", f"round {msg.round}: a rank-{msg.rank} global without tiers")
        ranks = [r for r in msg.ranks if self.s.max_rank is None or r <= self.s.max_rank] or [min(msg.ranks)]
        rank = int(self._policy(msg.task, ranks).select(msg.lam))
        self.metrics.rank_chosen(msg.task, rank)
        self.metrics.set_lambda(msg.task, msg.lam)
        self.done_rounds[key] = msg.round
        self._persist()
        job = Job(rsu=rsu, task=msg.task, round=msg.round, rank=rank, alpha=msg.lora_alpha, lam=msg.lam,
                  budget_j=msg.round_budget_j, n_participants=max(1, len(msg.participants)),
                  started=self.clock.now(), init=None, head=None, steps=self.s.local_steps)
        if msg.rank == 0:  # round 0: peft's own init
            self._begin(job, payload_bytes=0)
            return
        job.state = "fetching"  # busy from now: the tiers up to our rank come next
        self.job = job
        fetch = self._fetch = TierFetch(rsu, msg, tiers_needed(msg, rank))
        for ref in fetch.need:  # retained: each arrives at once, into the inbox
            fetch.unsubscribe.append(self.inbox.subscribe(self.bus, self.topics.tier(rsu, msg.task, ref.index)))
        self.timers.schedule(msg.deadline, lambda: self._fetch_failed(fetch, "tier_fetch_timeout"))

    def _on_tier(self, msg: RoundTier, tensors: dict, rsu: str) -> None:
        """One rank tier of the global adapter; the last one needed starts the round's work."""
        from proto.adapter import unpack_factored

        fetch = self._fetch
        if fetch is None or not fetch.belongs(rsu, msg):
            self._count("tier_not_needed")  # another round's, or a tier above our rank
            return
        if not fetch.add(msg, tensors):
            return
        try:
            init, head = unpack_factored(fetch.merged(), fetch.ann.layers)
        except PayloadRejected:
            self._fetch_failed(fetch, "tier_bad")
            raise
        self._fetch = None
        fetch.close()
        job = self.job
        assert job is not None and job.state == "fetching"
        job.init, job.head, job.state = init, head or None, "training"
        self._begin(job, payload_bytes=fetch.nbytes)

    def _fetch_failed(self, fetch: TierFetch, reason: str) -> None:
        """Give the round up: its tiers did not come (or did not fit together), or a command stopped it."""
        if self._fetch is not fetch:
            return  # already complete
        self._fetch = None
        fetch.close()
        self._count(reason)
        log.warning("round %s/%s from %s given up while fetching its tiers: %s", fetch.ann.task, fetch.ann.round,
                    fetch.rsu, reason)
        if self.job is not None and self.job.state == "fetching":
            self.job.state, self.job.token = "done", -1

    def _policy(self, task: str, ranks: list[int]) -> Any:
        if task not in self._policies:
            self._policies[task] = self.policy_for(task, ranks)
        return self._policies[task]

    def _begin(self, job: Job, payload_bytes: int) -> None:
        self._job_tokens += 1
        job.token = self._job_tokens
        self.job = job
        log.info("round %s/%s: training at rank %d", job.task, job.round, job.rank,
                 extra={"task": job.task, "round": job.round})
        if self.cost_model is None:
            self.interrupt.clear()
            self._publish_status(periodic=False)  # busy with this round, from now
            self._train(job, job.steps, should_stop=self._training_tick)
            if job.result is not None and not job.result.partial:
                self._publish(job)
            # else: a command interrupted training; it is in the inbox and decides what happens next
            return
        job.modelled_down = self.cost_model.download(self.id, payload_bytes)
        job.modelled_train = self.cost_model.train(self.id, job.task, job.rank, job.steps, self._samples(job.task))
        done_at = job.started + job.modelled_down.seconds + job.modelled_train.seconds
        token = job.token
        self.timers.schedule(done_at, lambda: self._modelled_done(token))

    def _samples(self, task: str) -> int:
        learner = self.learner_for(task)
        return int(getattr(learner, "num_train", self.s.batch_size * self.s.local_steps))

    def _modelled_done(self, token: int) -> None:
        job = self.job
        if job is None or job.token != token or job.state != "training":
            return  # cancelled or already cut short by a command
        if self._train(job, job.steps, should_stop=None):
            self._publish(job)

    def _train(self, job: Job, steps: int, should_stop: Callable[[], bool] | None) -> bool:
        """Train the job; False when training failed (the round is given up, the vehicle is free again)."""
        try:
            learner = self.learner_for(job.task)
            job.result = learner.train(rank=job.rank, alpha=job.alpha, init=job.init, head=job.head, steps=steps,
                                       meter=self.meter, should_stop=should_stop, seed=self.s.seed + job.round)
        except Exception as exc:  # e.g. factors that do not fit our model: without this the vehicle stays busy
            self._count(f"train_failed_{type(exc).__name__}")
            log.error("round %s/%s from %s: training failed, round given up: %s", job.task, job.round, job.rsu, exc,
                      extra={"task": job.task, "round": job.round})
            job.result, job.state, job.token = None, "done", -1
            return False
        if steps < job.steps and not job.result.partial:
            job.result.partial = True
        job.state = "trained"
        return True

    # -- fault tolerance (PAPER.md section 6) --------------------------------------------------------
    def _on_command(self, cmd: FaultCommand, rsu: str) -> None:
        job = self.job
        if cmd.vehicle != self.id or job is None or (job.rsu, job.task, job.round) != (rsu, cmd.task, cmd.round):
            self._count("command_not_for_current_round")
            return
        if job.state == "done":
            self._count("command_too_late")
            return
        if job.state == "fetching" and self._fetch is not None:  # nothing trained yet: nothing to send
            self._fetch_failed(self._fetch, f"command_{cmd.action}_while_fetching")
            return
        self._count(f"command_{cmd.action}")
        log.info("round %s/%s: RSU %s says %s (exit in %.1f s)", job.task, job.round, rsu, cmd.action, cmd.exit_in_s,
                 extra={"task": job.task, "round": job.round})
        if cmd.action == "abandon":
            job.state = "done"
            job.token = -1
            return
        if job.state == "training":  # modelled: train as far as the clock got, no further
            f = self._progress(job)
            steps = max(1, round(f * job.steps))
            job.modelled_train = ModelledCost(job.modelled_train.seconds * f, job.modelled_train.joules * f,
                                              job.modelled_train.source)
            if not self._train(job, steps, should_stop=None):
                return
            job.result.partial = True
        self._publish(job)

    def _progress(self, job: Job) -> float:
        down = job.modelled_down.seconds if job.modelled_down else 0.0
        total = job.modelled_train.seconds if job.modelled_train else 0.0
        if total <= 0:
            return 1.0
        return min(1.0, max(0.0, (self.clock.now() - job.started - down) / total))

    def _on_handoff(self, msg: Handoff, tensors: dict) -> None:
        from proto.adapter import unpack_lora

        if msg.vehicle != self.id or msg.task not in self.tasks:
            self._count("handoff_not_for_us")
            return
        if self.job is not None and self.job.state != "done":
            self._count("handoff_while_busy")
            log.warning("handoff of %s/%s from %s refused: busy", msg.task, msg.round, msg.migrated_from)
            return
        layers, head = unpack_lora(tensors)
        self._begin(Job(rsu=msg.rsu, task=msg.task, round=msg.round, rank=msg.rank, alpha=msg.lora_alpha, lam=0.0,
                        budget_j=0.0, n_participants=1, started=self.clock.now(), init=layers, head=head or None,
                        steps=max(1, self.s.local_steps // 2), migrated_from=msg.migrated_from,
                        carried_joules=msg.joules_spent),
                    payload_bytes=sum(t.numel() * t.element_size() for t in tensors.values()))

    # -- publishing ----------------------------------------------------------------------------------
    def _publish(self, job: Job) -> None:
        from proto.adapter import pack_lora

        res = job.result
        tensors = pack_lora(res.layers, res.head)
        if self.cost_model is not None:
            train = job.modelled_train
            down = job.modelled_down.seconds if job.modelled_down else 0.0
            probe = encode(self._update(job, 0.0, "model", False, train.seconds, 0.0, down), tensors,
                           self.s.wire_dtype)
            up = self.cost_model.upload(self.id, len(probe))
            down_j = job.modelled_down.joules if job.modelled_down else 0.0
            joules, source, measured = down_j + train.joules + up.joules, train.source, False
            train_s, up_s = train.seconds, up.seconds
            wall = down + train_s + up_s
        else:
            meas = res.energy
            up_s = self._last_upload_s  # the upload of this payload cannot be in its own report
            joules = float(meas.joules) + self.s.p_tx_w * up_s
            source, measured = str(meas.source), bool(meas.measured)
            train_s = float(res.train_s)
            wall = train_s + up_s
        joules += job.carried_joules
        payload = encode(self._update(job, joules, source, measured, train_s, up_s, wall), tensors,
                         self.s.wire_dtype)
        topic = self.topics.update(self.id, job.rsu, job.task)
        job.state = "done"  # whatever the link does next, this round's work is over
        if self.cost_model is not None:
            self.cost_model.transmit(self.id, job.rsu, len(payload), lambda: self._send(topic, payload, job))
        else:
            t0 = self.clock.now()
            if self._send(topic, payload, job):
                self._last_upload_s = max(0.0, self.clock.now() - t0)
        self._learn(job, joules, wall)
        self.history.append({"rsu": job.rsu, "task": job.task, "round": job.round, "rank": job.rank, "joules": joules,
                             "down_s": job.modelled_down.seconds if job.modelled_down else 0.0,
                             "train_s": train_s, "up_s": up_s,
                             "energy_source": source, "wall_s": wall, "local_accuracy": res.local_accuracy,
                             "partial": bool(res.partial), "migrated_from": job.migrated_from, "bytes": len(payload)})

    def _send(self, topic: str, payload: bytes, job: Job) -> bool:
        """Publish an update; a broker that does not acknowledge in time is logged (paho keeps the message queued)."""
        try:
            self.bus.publish(topic, payload, qos=1)
            return True
        except BusError as exc:
            self._count("update_publish_failed")
            log.error("round %s/%s: update not acknowledged (%s); the transport keeps it queued", job.task,
                      job.round, exc, extra={"task": job.task, "round": job.round})
            return False

    def _update(self, job: Job, joules: float, source: str, measured: bool, train_s: float, up_s: float,
                wall: float) -> VehicleUpdate:
        res = job.result
        return VehicleUpdate(
            sender=self.id, sent_at=self.clock.now(), seq=self._next_seq(), task=job.task, round=job.round,
            rsu=job.rsu, lora_alpha=job.alpha,
            report=UpdateReport(rank=job.rank, samples=max(1, int(res.samples)), joules=max(0.0, joules),
                                energy_source=source, energy_measured=measured, train_s=max(0.0, train_s),
                                upload_s=max(0.0, up_s), wall_s=max(0.0, wall),
                                local_accuracy=min(1.0, max(0.0, float(res.local_accuracy))),
                                loss=max(0.0, float(res.loss)), steps=int(res.steps), partial=bool(res.partial),
                                migrated_from=job.migrated_from),
        )

    def _learn(self, job: Job, joules: float, wall: float) -> None:
        """Keep the round's outcome until the RSU says how long the whole round took (edge_agent/scoring.py)."""
        if job.migrated_from is not None:
            return  # not this vehicle's rank choice
        old = self._unscored.keep(f"{job.rsu}/{job.task}", Outcome(
            job.task, job.round, job.rank, float(job.result.local_accuracy), joules, job.budget_j, job.n_participants,
            wall))
        if old is not None:  # an older outcome nobody told us about
            self._score(old, old.wall_s)

    def _settle(self, key: str, round_: int | None, latency_s: float | None) -> None:
        got = self._unscored.settle(key, round_, latency_s)
        if got is not None:
            self._score(*got)

    def _score(self, out: Outcome, tau_s: float) -> None:
        """Feed an outcome's reward and normalised cost to the policy (docs/algorithms.md section 3)."""
        from edge_agent.bandit import normalised_cost, round_reward

        reward = round_reward(out.q, tau_s, self.s.tau_ref_s, self.s.w_tau)
        cost = normalised_cost(out.joules, out.budget_j, out.n_participants)
        self._policy(out.task, [out.rank]).update(out.rank, reward, cost)

    # -- state ----------------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def _persist(self) -> None:
        atomic_write_json(self._state_file, {"seq": self.seq, "done_rounds": self.done_rounds})

    def _restore(self) -> None:
        data = read_json(self._state_file)
        if data:
            self.seq = int(data.get("seq", 0))
            self.done_rounds = {str(k): int(v) for k, v in dict(data.get("done_rounds", {})).items()}


