"""A vehicle's round job: choose -> fetch the rank tiers -> train -> report -> learn (README "How a round works",
docs/algorithms.md sections 1-3, 6).

`RoundJobs` is the part of `edge_agent.agent.VehicleAgent` that works on one round; the agent's message handling
(inbox, topics, status) calls into it with an accepted announcement, a fault-tolerance command or a handoff.
In the field the work is measured and runs now; with a `CostModel` (the fleet) its latency and energy are
modelled and the round completes later on the clock. What the policy learns, and when, is in
`edge_agent.scoring`; which tiers a rank needs is in `edge_agent.tiers`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from edge_agent.bandit import Arm, BanditError, Decision, Observation, arm_set, local_steps
from edge_agent.scoring import RoundScoring
from edge_agent.settings import EdgeSettings
from edge_agent.tiers import TierFetch, tiers_needed
from edge_agent.work import CostModel, ModelledCost
from fedrank.runtime import Inbox, Timers
from proto.bus import Bus, BusError
from proto.codec import encode
from proto.errors import PayloadRejected
from proto.messages import FaultCommand, Handoff, RoundAnnouncement, RoundTier, UpdateReport, VehicleUpdate
from proto.topics import Topics

log = logging.getLogger(__name__)


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
    work: float = 1.0  # the chosen configuration is Arm(rank, work); steps = round(work * local_steps)
    share_j: float = 0.0  # this vehicle's share b_v of the round budget
    down_s: float = 0.0  # field: the announcement's download time, estimated from the measured link rate
    migrated_from: str | None = None
    carried_joules: float = 0.0  # energy a migrated-from vehicle already spent on this work
    modelled_down: ModelledCost | None = None
    modelled_train: ModelledCost | None = None
    result: Any = None
    state: str = "training"  # (fetching ->) training -> trained -> done
    token: int = 0


class RoundJobs(RoundScoring):
    """The round job of the vehicle agent (a mixin: the agent provides the attributes annotated here)."""

    s: EdgeSettings
    id: str
    bus: Bus
    topics: Topics
    timers: Timers
    inbox: Inbox
    clock: Any
    metrics: Any
    learner_for: Callable[[str], Learner]
    policy_for: Callable[[str], Any]
    meter: Meter
    cost_model: CostModel | None
    interrupt: threading.Event
    job: Job | None
    _fetch: TierFetch | None  # the rank tiers the current round still needs
    done_rounds: dict[str, int]
    history: list[dict]
    _policies: dict[str, Any]
    _job_tokens: int
    _link_s_per_byte: float

    def _count(self, key: str) -> None: ...  # provided by the agent

    def _publish_status(self, periodic: bool = True) -> None: ...

    def _training_tick(self) -> bool: ...

    def _persist(self) -> None: ...

    def _next_seq(self) -> int: ...

    # -- rounds ---------------------------------------------------------------------------------------
    def _on_round(self, msg: RoundAnnouncement, tensors: dict, rsu: str) -> None:
        """A round `_wants_round` accepted (ours, listed, not done before)."""
        from proto.adapter import split_head

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
        # The arms are this announcement's candidates (each RSU and round says its own), minus what cannot fit.
        offered = [a for a in arm_set(msg.ranks, msg.work) if self.s.max_rank is None or a.rank <= self.s.max_rank]
        offered = offered or arm_set([min(msg.ranks)], msg.work)
        n = max(1, len(msg.participants))
        share = msg.shares.get(self.id, msg.round_budget_j / n)  # docs/algorithms.md section 3: the share rule
        policy = self._policy(msg.task)
        try:
            policy.offer(offered)
            arm = policy.select(Decision(offered, msg.lam, share, self.s.tau_ref_s, self.s.w_tau))
        except BanditError as exc:  # e.g. a zero budget share: nothing may be spent, so no training
            self._count("round_refused_by_policy")
            log.warning("round %s/%s from %s not taken: %s", msg.task, msg.round, rsu, exc.reason)
            return
        self.metrics.rank_chosen(msg.task, arm.rank)
        self.metrics.set_lambda(msg.task, msg.lam)
        self.done_rounds[key] = msg.round
        self._persist()
        job = Job(rsu=rsu, task=msg.task, round=msg.round, rank=arm.rank, alpha=msg.lora_alpha, lam=msg.lam,
                  budget_j=msg.round_budget_j, n_participants=n, started=self.clock.now(), init=None, head=None,
                  steps=local_steps(arm, self.s.local_steps), work=arm.work, share_j=share)
        if msg.rank == 0:  # round 0 (or a global that aggregated to rank 0): peft's own init, a head may exist
            job.head = split_head(tensors)[1] or None
            payload_bytes = sum(t.numel() * t.element_size() for t in tensors.values())
            job.down_s = payload_bytes * self._link_s_per_byte
            self._begin(job, payload_bytes=payload_bytes)
            return
        job.state = "fetching"  # busy from now: the tiers up to our rank come next
        self.job = job
        fetch = self._fetch = TierFetch(rsu, msg, tiers_needed(msg, arm.rank))
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
        job.down_s = fetch.nbytes * self._link_s_per_byte  # field: estimated from the last measured link rate
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

    def _policy(self, task: str) -> Any:
        """One policy per task; it learns from every RSU's rounds, the candidate set comes with each round."""
        if task not in self._policies:
            self._policies[task] = self.policy_for(task)
        return self._policies[task]

    def _begin(self, job: Job, payload_bytes: int) -> None:
        self._job_tokens += 1
        job.token = self._job_tokens
        self.job = job
        log.info("round %s/%s: training at rank %d, %d steps", job.task, job.round, job.rank, job.steps,
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
        prefetch = getattr(self.learner_for(job.task), "prefetch", None)
        if prefetch is not None:  # the fleet's pool starts the real work now; _modelled_done collects it
            prefetch(rank=job.rank, alpha=job.alpha, init=job.init, head=job.head, steps=job.steps,
                     seed=self.s.seed + job.round)

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

    # -- fault tolerance (docs/algorithms.md section 6) --------------------------------------------------------
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
            discard = getattr(self.learner_for(job.task), "discard", None)
            if discard is not None:  # the fleet's pool: the round's training is no longer wanted
                discard()
            self._charge_abandoned(job)
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

    def _charge_abandoned(self, job: Job) -> None:
        """Abandoned work still spent energy: the arm's energy and latency learn it, weighted by the work done."""
        if job.migrated_from is not None:
            return
        if job.state == "training" and job.modelled_train is not None:  # modelled: as far as the clock got
            f = self._progress(job)
            down, down_j = (job.modelled_down.seconds, job.modelled_down.joules) if job.modelled_down else (0.0, 0.0)
            seconds, joules = down + job.modelled_train.seconds * f, down_j + job.modelled_train.joules * f
        elif job.result is not None:  # field: training was stopped at a safe point and measured
            f = min(1.0, job.result.steps / job.steps)
            seconds, joules = job.down_s + float(job.result.train_s), float(job.result.energy.joules)
        else:
            return
        if f > 0:
            self._observe(job.task, job.round, Arm(job.rank, job.work), Observation(None, seconds, joules, done=f))

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
            probe = encode(self._update(job, 0.0, "model", False, train.seconds, 0.0, down, probe=True), tensors,
                           self.s.wire_dtype)
            up = self.cost_model.upload(self.id, len(probe))  # airtime with the cell to itself
            down_j = job.modelled_down.joules if job.modelled_down else 0.0  # at the vehicle's receive power
            joules, source, measured = down_j + train.joules + up.joules, train.source, False
            train_s, up_s = train.seconds, up.seconds
            wall = down + train_s + up_s
        else:
            # The report cannot contain its own upload: it carries an estimate from the last measured link rate
            # (s/byte); the bandit learns the round after the publish is acknowledged, with the measured upload.
            meas = res.energy
            source, measured = str(meas.source), bool(meas.measured)
            train_s, down = float(res.train_s), job.down_s
            probe = encode(self._update(job, 0.0, source, measured, train_s, 0.0, 0.0, probe=True), tensors,
                           self.s.wire_dtype)
            up_s = len(probe) * self._link_s_per_byte
            joules = float(meas.joules) + self.s.p_tx_w * up_s
            wall = down + train_s + up_s
        joules += job.carried_joules
        payload = encode(self._update(job, joules, source, measured, train_s, up_s, wall), tensors,
                         self.s.wire_dtype)
        topic = self.topics.update(self.id, job.rsu, job.task)
        job.state = "done"  # whatever the link does next, this round's work is over
        if self.cost_model is not None:  # the cell's uplink is shared: when it arrives is the link's business
            self.cost_model.transmit(self.id, job.rsu, len(payload), lambda: self._send(topic, payload, job))
        else:
            t0 = self.clock.now()
            if self._send(topic, payload, job):
                up_s = max(0.0, self.clock.now() - t0)  # this round's own upload, acknowledged
                self._link_s_per_byte = up_s / max(1, len(payload))
                joules = float(res.energy.joules) + self.s.p_tx_w * up_s + job.carried_joules
                wall = job.down_s + float(res.train_s) + up_s
        self._learn(job, joules, wall)
        self.metrics.energy_spent(job.task, joules, source)
        self.history.append({"rsu": job.rsu, "task": job.task, "round": job.round, "rank": job.rank,
                             "work": job.work, "joules": joules,
                             "down_s": job.modelled_down.seconds if job.modelled_down else job.down_s,
                             "train_s": train_s, "up_s": up_s, "energy_source": source, "wall_s": wall,
                             "local_accuracy": res.local_accuracy,
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
                wall: float, probe: bool = False) -> VehicleUpdate:
        """The update's header; a `probe` (to size the payload) takes no sequence number."""
        res = job.result
        return VehicleUpdate(
            sender=self.id, sent_at=self.clock.now(), seq=0 if probe else self._next_seq(), task=job.task,
            round=job.round, rsu=job.rsu, lora_alpha=job.alpha,
            report=UpdateReport(rank=job.rank, work=job.work, samples=max(1, int(res.samples)),
                                joules=max(0.0, joules),
                                energy_source=source, energy_measured=measured, train_s=max(0.0, train_s),
                                upload_s=max(0.0, up_s), wall_s=max(0.0, wall),
                                local_accuracy=min(1.0, max(0.0, float(res.local_accuracy))),
                                loss=max(0.0, float(res.loss)), steps=int(res.steps), partial=bool(res.partial),
                                migrated_from=job.migrated_from),
        )
