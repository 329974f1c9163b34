"""VehicleAgent over the in-process broker with a simulated clock, a fake learner and a fake policy.

The RSU side is played by hand: announcements, commands and handoffs are encoded here with `proto` and published
through a second MemoryBus, and the test reads what the vehicle publishes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from edge_agent.agent import Fix, VehicleAgent
from edge_agent.bandit import Arm, Decision, Observation, UcbDual, arm_set
from edge_agent.cli import position_source
from edge_agent.energy.meter import Measurement
from edge_agent.settings import EdgeSettings, EdgeTaskConfig, PositionConfig
from edge_agent.work import ModelledCost
from fedrank.runtime import SimClock
from proto.adapter import Factored, LoraFactors, pack_lora, pack_tier, tier_bounds
from proto.bus import Delivery
from proto.codec import decode, encode
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.messages import AgentStatus, FaultCommand, Handoff, RoundAnnouncement, RoundTier, TierRef, VehicleUpdate
from proto.topics import Role, Topics

T = Topics()
D_OUT, D_IN = 8, 6  # the one adapted layer "q"
STEPS = 10  # local_steps
P_TX = 0.2


# -- fakes ------------------------------------------------------------------------------------------
@dataclass
class FakeResult:
    layers: dict[str, LoraFactors]
    head: dict[str, torch.Tensor]
    samples: int
    loss: float
    local_accuracy: float
    train_s: float
    energy: Measurement
    steps: int
    partial: bool


@dataclass
class FakeLearner:
    """Records each call; each step costs 1.5 J and 0.2 s on a pretend meter; stops when `should_stop` says so."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    during_step: Any = None  # called after step 1 (a test publishes a command from here)
    num_train: int = 40
    fail_next: Exception | None = None


    def train(self, *, rank: int, alpha: float, init: Any, head: Any, steps: int, meter: Any, should_stop: Any,
              seed: int) -> FakeResult:
        self.calls.append(dict(rank=rank, alpha=alpha, init=init, head=head, steps=steps, seed=seed))
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        done = 0
        for _ in range(steps):
            done += 1
            if done == 1 and self.during_step is not None:
                self.during_step()
            if should_stop is not None and should_stop():
                break
        gen = torch.Generator().manual_seed(seed)
        layers = {"q": LoraFactors(A=torch.randn(rank, D_IN, generator=gen), B=torch.randn(D_OUT, rank, generator=gen))}
        return FakeResult(layers=layers, head={}, samples=self.num_train, loss=0.7, local_accuracy=0.6,
                          train_s=0.2 * done, energy=Measurement(joules=1.5 * done, seconds=0.2 * done,
                                                                 source="rapl", domains=("package-0",), measured=True),
                          steps=done, partial=done < steps)


@dataclass
class FakePolicy:
    rank: int = 4
    work: float = 1.0
    selected_with: list[Decision] = field(default_factory=list)
    offered: set[Arm] = field(default_factory=set)
    updates: list[tuple[Arm, Observation]] = field(default_factory=list)

    def select(self, d: Decision) -> Arm:
        self.selected_with.append(d)
        return Arm(self.rank, self.work)

    def offer(self, arms: Any) -> None:
        self.offered |= set(arms)

    def update(self, arm: Arm, obs: Observation) -> None:
        self.updates.append((arm, obs))


class FakeCost:
    """Download 1 s, training 10 s and 2 J per rank, upload 0.5 s and 0.25 J: all labelled model:fake."""

    downloaded: list[int]

    def download(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        self.__dict__.setdefault("downloaded", []).append(payload_bytes)
        return ModelledCost(1.0, 0.0, "model:fake")

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost:
        return ModelledCost(10.0, 2.0 * rank, "model:fake")

    def upload(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        return ModelledCost(0.5, 0.25, "model:fake")

    def transmit(self, vehicle: str, rsu: str, payload_bytes: int, deliver: Any) -> None:
        self.agent.timers.schedule(self.agent.clock.now() + 0.5, deliver)  # a link of its own


class Rig:
    """One vehicle `veh1` (task t1) and a hand-driven RSU `rsu1` on a shared MemoryBroker."""

    def __init__(self, state: Path, *, cost: FakeCost | None = None, position: Any = None,
                 broker: MemoryBroker | None = None, client: str = "veh1") -> None:
        self.clock = SimClock(0.0)
        self.broker = broker or MemoryBroker()
        self.learner = FakeLearner()
        self.policy = FakePolicy()
        task = EdgeTaskConfig(name="t1", task_type="sentence")
        self.settings = EdgeSettings(id="veh1", state_dir=state, tasks=[task], local_steps=STEPS,
                                     status_interval_s=5.0, p_tx_w=P_TX)
        self.bus = MemoryBus(self.broker, client)
        self.agent = VehicleAgent(self.settings, self.bus, self.clock, learner_for=lambda task: self.learner,
                                  policy_for=lambda task: self.policy, meter=object(), cost_model=cost,
                                  position=position)
        if cost is not None:
            cost.agent = self.agent
        self.bus.connect(will=self.agent.will())
        self.rsu = MemoryBus(self.broker, f"rsu1-{client}")
        self.rsu.connect()
        self.updates: list[VehicleUpdate] = []
        self.update_tensors: list[dict] = []
        self.status: list[AgentStatus] = []
        self.rsu.subscribe(T.update("veh1", "rsu1", "t1"), self._got_update)
        self.rsu.subscribe(T.status(Role.VEHICLE, "veh1"), lambda d: self.status.append(decode(d.payload).msg))
        self.agent.start()

    def _got_update(self, d: Delivery) -> None:
        dec = decode(d.payload, VehicleUpdate)
        self.updates.append(dec.msg)
        self.update_tensors.append(dec.tensors)

    def announce(self, round_: int = 0, *, participants: tuple[str, ...] = ("veh1", "veh2"), deadline: float = 100.0,
                 lam: float = 0.5, budget: float = 30.0, retain: bool = True, ranks: tuple[int, ...] = (2, 4, 8),
                 work: tuple[float, ...] = (1.0,), shares: dict[str, float] | None = None,
                 last_latency: float | None = None) -> dict:
        torch.manual_seed(round_)
        U = torch.linalg.qr(torch.randn(D_OUT, 4))[0]  # (d_out, r)
        Vt = torch.linalg.qr(torch.randn(D_IN, 4))[0].T  # (r, d_in)
        factored = {"q": Factored(U=U, S=torch.tensor([4.0, 3.0, 2.0, 1.0]), Vt=Vt)}
        bounds = tier_bounds([2, 4, 8], 4)  # components 1-2 and 3-4
        for k, (first, last) in enumerate(bounds):
            tier = RoundTier(sender="rsu1", task="t1", round=round_, index=k, first=first, last=last)
            self.rsu.publish(T.tier("rsu1", "t1", k), encode(tier, pack_tier(factored, {}, first, last, k == 0)),
                             qos=1, retain=True)
        msg = RoundAnnouncement(sender="rsu1", sent_at=self.clock.now(), seq=round_ + 1, task="t1",
                                task_type="sentence", round=round_, deadline=deadline, lam=lam, round_budget_j=budget,
                                ranks=list(ranks), rank=4, lora_alpha=16.0, layers=["q"],
                                participants=list(participants), work=list(work), shares=shares or {},
                                last_round_latency_s=last_latency,
                                tiers=[TierRef(index=k, first=f, last=la) for k, (f, la) in enumerate(bounds)])
        self.rsu.publish(T.round("rsu1", "t1"), encode(msg, {}), qos=1, retain=retain)
        return factored

    def command(self, action: str, round_: int = 0) -> None:
        cmd = FaultCommand(sender="rsu1", sent_at=self.clock.now(), seq=99, task="t1", round=round_, vehicle="veh1",
                           action=action, exit_in_s=3.0)
        self.rsu.publish(T.command("rsu1", "veh1"), encode(cmd), qos=1)

    def advance(self, t: float) -> None:
        """Move the clock to `t` through every timer due on the way, as the fleet's driver does."""
        self.agent.pump()
        while (due := self.agent.next_deadline()) is not None and due <= t:
            self.clock.advance_to(max(due, self.clock.now()))
            self.agent.on_tick()
            self.agent.pump()
        self.clock.advance_to(t)


# -- rounds in the field (measured) -----------------------------------------------------------------
def test_listed_round_gives_one_update_with_the_measured_report_and_the_policy_rank(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.policy.rank = 2
    factored = rig.announce(0, lam=0.5, budget=30.0)
    rig.agent.pump()
    assert len(rig.updates) == 1
    u = rig.updates[0]
    assert (u.task, u.round, u.rsu, u.sender) == ("t1", 0, "rsu1", "veh1")
    r = u.report
    # 10 steps at 1.5 J / 0.2 s each; no earlier upload, so no radio energy yet
    assert r.rank == 2 and r.steps == STEPS and not r.partial
    assert r.joules == pytest.approx(15.0) and r.energy_source == "rapl" and r.energy_measured is True
    assert r.train_s == pytest.approx(2.0) and r.samples == 40 and r.local_accuracy == pytest.approx(0.6)
    sent = rig.update_tensors[0]
    assert sent["q.lora_A"].shape == (2, D_IN) and sent["q.lora_B"].shape == (D_OUT, 2)
    # the learner started from the announced factors; the policy saw the announced lambda
    init = rig.learner.calls[0]["init"]
    d = rig.policy.selected_with[0]
    # a rank-2 vehicle fetched the first tier only: components 1-2 of the announced rank-4 global
    assert torch.equal(init["q"].U, factored["q"].U[:, :2]) and torch.equal(init["q"].S, factored["q"].S[:2])
    assert d.lam == 0.5
    # no share announced: the equal share B / |V| = 30 / 2; the candidates are ranks x work
    assert d.share_j == pytest.approx(15.0) and set(d.arms) == {Arm(r, 1.0) for r in (2, 4, 8)}
    assert rig.policy.updates == []  # learned once the RSU says how long the round took
    rig.announce(1, participants=("veh2",), last_latency=2.5)
    rig.agent.pump()
    # the policy learns accuracy, the round's seconds (2.5 s > its own 2.0 s) and joules, not a normalised figure
    assert rig.policy.updates == [(Arm(2, 1.0), Observation(0.6, pytest.approx(2.5), pytest.approx(15.0)))]


def test_report_estimates_its_upload_from_the_last_link_rate(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.announce(0)
    rig.agent.pump()
    size = len(rig.updates[0].model_dump_json())  # a lower bound of the payload; only the rate matters below
    rig.agent._link_s_per_byte = 1e-4  # what the first upload took per byte on a real link
    rig.announce(1)
    rig.agent.pump()
    assert [u.round for u in rig.updates] == [0, 1]
    r = rig.updates[1].report
    # e_v = e_train + p_tx * tau_up, tau_up = payload bytes * s/byte (estimated: the payload cannot hold itself)
    assert r.upload_s > size * 1e-4 and r.joules == pytest.approx(15.0 + P_TX * r.upload_s)


def test_field_round_is_learned_with_its_own_upload_and_download(tmp_path: Path) -> None:
    """Old code learned e_train + p_tx * (previous round's upload) and left the download out."""
    rig = Rig(tmp_path)
    rig.agent._link_s_per_byte = 1e-4
    publish = rig.bus.publish

    def slow_publish(topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        if "/update/" in topic or topic.startswith(T.update("veh1", "rsu1", "t1")):
            rig.clock.advance_to(rig.clock.now() + 0.7)  # this round's upload takes 0.7 s to be acknowledged
        publish(topic, payload, qos=qos, retain=retain)

    rig.bus.publish = slow_publish  # type: ignore[method-assign]
    rig.announce(0)
    rig.agent.pump()
    assert rig.policy.updates == []  # kept for the round's latency ...
    rig.rsu.publish(T.round("rsu1", "t1"), b"", qos=1, retain=True)  # ... which never comes: the task finished
    rig.agent.pump()
    (_arm, obs), = rig.policy.updates
    down = rig.agent.job.down_s
    assert down > 0  # the rank tiers' bytes at the measured link rate
    assert obs.joules == pytest.approx(15.0 + P_TX * 0.7) and obs.seconds == pytest.approx(down + 2.0 + 0.7)


def test_redelivered_or_duplicate_announcement_changes_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.broker.duplicate(T.round("rsu1", "t1"))
    rig.announce(0)
    rig.agent.pump()
    seq_after = rig.agent.seq
    # a retained copy reaches a resubscription too
    rig.agent.inbox.subscribe(rig.bus, T.round("rsu1", "t1"))
    rig.agent.pump()
    assert len(rig.updates) == 1 and len(rig.learner.calls) == 1 and len(rig.agent._unscored) == 1
    assert rig.agent.counters["round_seen_before"] == 2 and rig.agent.seq == seq_after


def test_round_not_listing_the_vehicle_gives_no_update(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.announce(0, participants=("veh2", "veh3"))
    rig.agent.pump()
    assert rig.updates == [] and rig.learner.calls == [] and rig.policy.selected_with == []


def test_round_past_its_deadline_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.clock.advance_to(50.0)
    rig.announce(0, deadline=40.0)
    rig.agent.pump()
    assert rig.updates == [] and rig.learner.calls == []
    assert rig.agent.counters["round_past_deadline"] == 1


def test_malformed_round_payload_is_counted_as_rejected_and_the_agent_carries_on(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.rsu.publish(T.round("rsu1", "t1"), b"\x00\x01 not a message", qos=1)
    rig.rsu.publish(T.round("rsu1", "t1"), b'{"kind": "round", "v": 2}', qos=1)  # JSON, but not an announcement
    rig.agent.pump()
    rejected = {k: v for k, v in rig.agent.counters.items() if k.startswith("rejected_")}
    assert sum(rejected.values()) == 2 and rig.updates == []
    rig.announce(0)
    rig.agent.pump()
    assert len(rig.updates) == 1


def test_command_during_field_training_stops_it_and_early_upload_sends_the_partial(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.learner.during_step = lambda: rig.command("early_upload")  # arrives while step 1 runs
    rig.announce(0)
    rig.agent.pump()
    assert len(rig.updates) == 1
    r = rig.updates[0].report
    assert r.partial and r.steps == 1 and r.joules == pytest.approx(1.5)
    assert rig.agent.counters["command_early_upload"] == 1


@pytest.mark.parametrize("modelled", [False, True])
def test_failed_training_gives_up_that_round_and_leaves_the_vehicle_free(tmp_path: Path, modelled: bool) -> None:
    rig = Rig(tmp_path, cost=FakeCost() if modelled else None)
    rig.learner.fail_next = ValueError("layers ['x'] do not match targets")  # e.g. an RSU set up for another model
    rig.announce(0)
    rig.advance(20.0)
    assert rig.updates == [] and rig.agent.counters["train_failed_ValueError"] == 1
    rig.advance(25.0)  # next status
    assert rig.status[-1].busy is False
    rig.announce(1, deadline=200.0)
    rig.advance(40.0)
    assert [u.round for u in rig.updates] == [1]


# -- rounds in the fleet (modelled) -----------------------------------------------------------------
def test_modelled_round_publishes_only_after_the_modelled_time_with_modelled_joules(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    rig.announce(0)
    rig.agent.pump()
    assert rig.updates == []
    rig.advance(10.9)  # down 1 s + train 10 s not over yet
    assert rig.updates == []
    rig.advance(11.0)  # trained; the upload takes 0.5 s more
    assert rig.updates == []
    rig.advance(11.5)
    assert len(rig.updates) == 1
    r = rig.updates[0].report
    # rank 4: train 2 * 4 J + upload 0.25 J; wall = 1 + 10 + 0.5
    assert r.joules == pytest.approx(8.25) and r.energy_source == "model:fake" and r.energy_measured is False
    assert r.wall_s == pytest.approx(11.5) and r.train_s == pytest.approx(10.0) and r.upload_s == pytest.approx(0.5)
    assert r.steps == STEPS and not r.partial
    assert rig.learner.calls[0]["steps"] == STEPS


def test_early_upload_mid_modelled_round_sends_a_partial_update_with_fewer_steps(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    rig.announce(0)
    rig.agent.pump()
    rig.advance(6.0)  # 5 of the 10 modelled training seconds done
    rig.command("early_upload")
    rig.advance(6.0)
    rig.advance(6.5)  # + upload
    assert len(rig.updates) == 1
    r = rig.updates[0].report
    assert r.partial and r.steps == 5 and rig.learner.calls[0]["steps"] == 5
    # half the training energy (0.5 * 8 J) + the upload 0.25 J
    assert r.joules == pytest.approx(4.25) and r.train_s == pytest.approx(5.0)
    # learned in proportion to the work done: weight 0.5, no accuracy (old code: a full observation at half cost)
    (arm, obs), = rig.policy.updates
    assert arm == Arm(4, 1.0) and obs.accuracy is None and obs.done == pytest.approx(0.5)
    assert obs.joules == pytest.approx(4.25)
    rig.advance(20.0)  # the original completion timer finds the job done
    assert len(rig.updates) == 1 and len(rig.learner.calls) == 1


def test_abandon_mid_modelled_round_sends_nothing(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    rig.announce(0)
    rig.agent.pump()
    rig.advance(4.0)
    rig.command("abandon")
    rig.advance(4.0)
    rig.advance(30.0)
    assert rig.updates == [] and rig.learner.calls == []
    assert rig.agent.counters["command_abandon"] == 1
    # the abandoned work is charged: 3 of the 10 modelled seconds trained (download 1 s), 0.3 * 8 J, weight 0.3;
    # no accuracy is learned from it (old code learned nothing)
    (arm, obs), = rig.policy.updates
    assert arm == Arm(4, 1.0) and obs.accuracy is None and obs.done == pytest.approx(0.3)
    assert obs.joules == pytest.approx(0.3 * 8.0) and obs.seconds == pytest.approx(1.0 + 3.0)


def test_command_for_another_round_is_ignored(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    rig.announce(3)
    rig.agent.pump()
    rig.command("abandon", round_=2)
    rig.advance(12.0)
    assert [u.round for u in rig.updates] == [3]
    assert rig.agent.counters["command_not_for_current_round"] == 1


def test_handoff_trains_from_the_given_factors_and_reports_where_it_came_from(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    A, B = torch.randn(2, D_IN), torch.randn(D_OUT, 2)  # (eta, d_in), (d_out, eta)
    h = Handoff(sender="rsu1", seq=7, task="t1", round=4, rsu="rsu1", vehicle="veh1", migrated_from="veh9",
                lora_alpha=16.0, rank=2, joules_spent=3.0)
    rig.rsu.publish(T.handoff("rsu1", "veh1"), encode(h, pack_lora({"q": LoraFactors(A=A, B=B)}, {})), qos=1)
    rig.agent.pump()
    call = rig.learner.calls[0]
    assert call["rank"] == 2 and call["steps"] == STEPS // 2
    assert torch.equal(call["init"]["q"].A, A) and torch.equal(call["init"]["q"].B, B)
    assert len(rig.updates) == 1
    r = rig.updates[0].report
    assert r.migrated_from == "veh9" and rig.updates[0].round == 4
    # the energy the first vehicle spent travels with the work: 3 J + 5 steps * 1.5 J
    assert r.joules == pytest.approx(3.0 + 7.5)
    assert rig.policy.updates == []  # not this vehicle's rank choice


# -- status, policy, restart ------------------------------------------------------------------------
def test_status_carries_position_and_velocity_from_the_source(tmp_path: Path) -> None:
    rig = Rig(tmp_path, position=lambda now: Fix(10.0 + 2.0 * now, -5.0, 2.0, 0.0))
    first = rig.status[-1]
    assert first.state == "online" and first.role == "vehicle" and first.tasks == ["t1"]
    assert (first.position.x, first.position.y, first.velocity.vx, first.velocity.vy) == (10.0, -5.0, 2.0, 0.0)
    rig.advance(5.0)  # status_interval_s
    later = rig.status[-1]
    assert later.position.x == pytest.approx(20.0) and later.sent_at == 5.0 and later.seq > first.seq
    rig.agent.stop()
    assert rig.status[-1].state == "offline"


def test_policy_gets_reward_and_cost_after_every_round(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    for k, t0 in enumerate((0.0, 20.0)):
        rig.clock.advance_to(t0)
        rig.announce(k, deadline=t0 + 100.0, budget=40.0, participants=("veh1", "veh2", "veh3", "veh4"))
        rig.advance(t0 + 11.5)
    rig.announce(2, participants=("veh2",), last_latency=30.0)
    rig.agent.pump()
    # round 0: the RSU did not say (an older RSU), so its own wall 11.5 s (1 down + 10 train + 0.5 up);
    # round 1: the round took 30 s (a straggler); both 8 J train + 0.25 J upload
    assert rig.policy.updates == [(Arm(4, 1.0), Observation(0.6, pytest.approx(11.5), pytest.approx(8.25))),
                                  (Arm(4, 1.0), Observation(0.6, pytest.approx(30.0), pytest.approx(8.25)))]


def test_done_rounds_survive_a_restart(tmp_path: Path) -> None:
    first = Rig(tmp_path / "state")
    first.announce(3)
    first.agent.pump()
    assert len(first.updates) == 1
    first.bus.close()
    # a new agent object on the same state dir, on the same broker (the announcement is still retained)
    second = Rig(tmp_path / "state", broker=first.broker, client="veh1-again")
    second.agent.pump()
    assert second.updates == [] and second.learner.calls == []
    assert second.agent.counters["round_seen_before"] == 1
    assert second.agent.seq >= first.agent.seq  # sequence numbers never go back
    second.announce(4)
    second.agent.pump()
    assert [u.round for u in second.updates] == [4]


# -- position sources -------------------------------------------------------------------------------
def test_fixed_position_source_never_moves() -> None:
    src = position_source(PositionConfig(kind="fixed", x=12.5, y=-3.0))
    assert src(0.0) == Fix(12.5, -3.0, 0.0, 0.0) == src(1e9)
    assert position_source(PositionConfig()) is None


def test_file_position_source_replays_fixes_with_velocity_between_them(tmp_path: Path) -> None:
    path = tmp_path / "fixes.csv"
    path.write_text("# t,x,y\n0,0,0\n10,100,0\n20,100,50\n")
    src = position_source(PositionConfig(kind="file", file=path))
    start = 1000.0  # replay starts at the first call
    assert src(start) == Fix(0.0, 0.0, 100.0 / 10.0, 0.0)
    assert src(start + 5.0) == Fix(0.0, 0.0, 10.0, 0.0)
    assert src(start + 15.0) == Fix(100.0, 0.0, 0.0, 50.0 / 10.0)
    assert src(start + 25.0) == Fix(100.0, 50.0, 0.0, 0.0)  # after the last fix: parked there


def test_empty_position_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("# nothing\n")
    with pytest.raises(ValueError, match="no fixes"):
        position_source(PositionConfig(kind="file", file=path))


def test_chosen_configuration_is_always_one_the_current_round_offers(tmp_path: Path) -> None:
    """Old code built its arms from the first announcement: after the RSU's list shrank to [2, 4, 8] it trained
    rank 16, which the RSU rejects, and learned from it."""
    rig = Rig(tmp_path)
    rig.policy = UcbDual(seed=0, stream="veh1/t1", state_path=tmp_path / "bandit-t1.json")  # the real bandit
    big = arm_set([2, 4, 8, 16], [0.5, 1.0])
    for k in range(len(big)):
        rig.announce(k, ranks=(2, 4, 8, 16), work=(0.5, 1.0))
        rig.agent.pump()
    assert {(u.report.rank, u.report.work) for u in rig.updates} == {(a.rank, a.work) for a in big}
    for k in range(len(big), len(big) + 12):
        rig.announce(k, ranks=(2, 4, 8), work=(0.5, 1.0))
        rig.agent.pump()
    late = rig.updates[len(big):]
    assert len(late) == 12 and all(u.report.rank in (2, 4, 8) for u in late)
    # each round trained the steps of its configuration: work 0.5 -> 5 of the 10 local steps
    assert all(c["steps"] == (5 if u.report.work == 0.5 else STEPS) for c, u in zip(rig.learner.calls, rig.updates,
                                                                                    strict=True))


def test_the_announced_share_is_the_one_the_policy_sees(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.announce(0, budget=30.0, shares={"veh1": 20.0, "veh2": 10.0})
    rig.agent.pump()
    assert rig.policy.selected_with[-1].share_j == 20.0


def test_a_zero_budget_is_refused_by_the_bandit_and_counted(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    rig.policy = UcbDual()
    rig.announce(0, budget=0.0)
    rig.agent.pump()
    assert rig.updates == [] and rig.learner.calls == [] and rig.agent.counters["round_refused_by_policy"] == 1
    assert rig.policy.decisions == 0


# -- rank tiers --------------------------------------------------------------------------------------
def publish_rank8_global(rig: Rig) -> tuple[dict, list[dict]]:
    """A rank-8 global in the tiers of ranks [2, 4, 8]: components 1-2, 3-4, 5-8."""
    torch.manual_seed(7)
    g = {"q": Factored(U=torch.linalg.qr(torch.randn(D_OUT, 8))[0], S=torch.arange(8, 0, -1).float(),
                       Vt=torch.randn(8, D_IN))}  # U (d_out, 8), S (8,), Vt (8, d_in)
    head = {"weight": torch.randn(2, D_IN)}
    parts = []
    for k, (first, last) in enumerate(tier_bounds([2, 4, 8], 8)):
        tensors = pack_tier(g, head, first, last, k == 0)
        parts.append(tensors)
        rig.rsu.publish(T.tier("rsu1", "t1", k), encode(RoundTier(sender="rsu1", task="t1", round=0, index=k,
                                                                 first=first, last=last), tensors), retain=True)
    ann = RoundAnnouncement(sender="rsu1", task="t1", task_type="sentence", round=0, deadline=100.0, lam=0.0,
                            round_budget_j=30.0, ranks=[2, 4, 8], rank=8, layers=["q"], participants=["veh1"],
                            tiers=[TierRef(index=0, first=1, last=2), TierRef(index=1, first=3, last=4),
                                   TierRef(index=2, first=5, last=8)])
    rig.rsu.publish(T.round("rsu1", "t1"), encode(ann, {}), retain=True)
    return g, parts


def test_a_rank4_vehicle_fetches_exactly_the_first_two_tiers(tmp_path: Path) -> None:
    cost = FakeCost()
    rig = Rig(tmp_path, cost=cost)
    rig.policy.rank = 4
    g, parts = publish_rank8_global(rig)
    rig.advance(11.5)
    init = rig.learner.calls[0]["init"]["q"]
    assert torch.equal(init.U, g["q"].U[:, :4]) and torch.equal(init.S, g["q"].S[:4])
    assert torch.equal(rig.learner.calls[0]["head"]["weight"], parts[0]["head.weight"])
    want = sum(t.numel() * t.element_size() for p in parts[:2] for t in p.values())
    assert cost.downloaded == [want]  # tiers 1-2 and 3-4 (with the head), never 5-8
    assert want < sum(t.numel() * t.element_size() for p in parts for t in p.values())
    assert "tier_not_needed" not in rig.agent.counters and rig.agent._fetch is None  # tier 5-8 never came
    assert [u.report.rank for u in rig.updates] == [4]


def test_a_round_whose_tiers_never_come_is_given_up_at_its_deadline(tmp_path: Path) -> None:
    rig = Rig(tmp_path, cost=FakeCost())
    ann = RoundAnnouncement(sender="rsu1", task="t1", task_type="sentence", round=0, deadline=30.0, lam=0.0,
                            round_budget_j=30.0, ranks=[2, 4, 8], rank=4, layers=["q"], participants=["veh1"],
                            tiers=[TierRef(index=0, first=1, last=2), TierRef(index=1, first=3, last=4)])
    rig.rsu.publish(T.round("rsu1", "t1"), encode(ann, {}), retain=True)
    rig.advance(10.0)
    assert rig.status[-1].busy  # fetching counts as busy
    rig.advance(30.0)
    assert rig.agent.counters["tier_fetch_timeout"] == 1 and rig.updates == [] and rig.learner.calls == []
    rig.advance(35.0)
    assert not rig.status[-1].busy


def test_a_modelled_download_costs_the_vehicle_its_receive_energy(tmp_path: Path) -> None:
    class ReceivingCost(FakeCost):
        def download(self, vehicle: str, payload_bytes: int) -> ModelledCost:
            return ModelledCost(1.0, 0.3, "model:fake")  # 1 s at a 0.3 W receive power

    rig = Rig(tmp_path, cost=ReceivingCost())
    rig.announce(0)
    rig.advance(11.5)
    # rank 4: download 0.3 J + train 2 * 4 J + upload 0.25 J
    assert rig.updates[0].report.joules == pytest.approx(0.3 + 8.0 + 0.25)
