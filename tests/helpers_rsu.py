"""Synthetic updates, statuses and a small rig (mock broker, simulated clock, one RSU) for the RSU/cloud tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from fedrank.runtime import SimClock
from proto.adapter import LoraFactors, pack_lora
from proto.bus import Delivery
from proto.codec import decode, encode
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.messages import AgentStatus, Message, Position, TaskBudget, UpdateReport, VehicleUpdate, Velocity
from proto.topics import Channel, Role, Topics
from rsu_agent.agent import RsuAgent
from rsu_agent.coverage import Circle
from rsu_agent.settings import RsuSettings, RsuTaskConfig

# Two layers with different shapes so that a transposed factor cannot pass validation.
LAYERS: dict[str, tuple[int, int]] = {"q": (16, 12), "v": (10, 16)}  # name -> (d_out, d_in)
HEAD = {"weight": (2, 16), "bias": (2,)}
RSU = "rsu1"
TOPICS = Topics()


def task_cfg(name: str = "t1", **kw: Any) -> RsuTaskConfig:
    base: dict[str, Any] = {"name": name, "task_type": "sentence", "layers": LAYERS, "round_timeout_s": 100.0,
                            "default_round_budget_j": 100.0, "round_gap_s": 5.0, "participant_retry_s": 10.0}
    base.update(kw)
    return RsuTaskConfig(**base)


def rsu_settings(state_dir: Path, tasks: list[RsuTaskConfig] | None = None, **kw: Any) -> RsuSettings:
    base: dict[str, Any] = {"id": RSU, "state_dir": state_dir, "coverage": Circle(cx=0, cy=0, radius=100),
                            "tasks": tasks or [task_cfg()], "join_wait_s": 1.0, "status_interval_s": 1000.0,
                            "cold_start_s": 0.0}  # deadlines exactly round_timeout_s (test_rsu_cold_start adds it)
    base.update(kw)
    return RsuSettings(**base)


def factors(rank: int, seed: int, layers: dict[str, tuple[int, int]] = LAYERS) -> dict[str, LoraFactors]:
    g = torch.Generator().manual_seed(seed)
    return {n: LoraFactors(A=torch.randn(rank, d_in, generator=g), B=torch.randn(d_out, rank, generator=g))
            for n, (d_out, d_in) in layers.items()}


def head(seed: int, shapes: dict[str, tuple[int, ...]] = HEAD) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + seed)
    return {k: torch.randn(*s, generator=g) for k, s in shapes.items()}


@dataclass
class Upd:
    """A synthetic update: what goes on the wire and what went into it."""

    topic: str
    payload: bytes
    layers: dict[str, LoraFactors]
    head: dict[str, torch.Tensor]
    report: UpdateReport


def make_update(vehicle: str, round_: int, rank: int = 4, samples: int = 100, joules: float = 10.0,
                accuracy: float = 0.7, seed: int = 0, task: str = "t1", rsu: str = RSU, alpha: float = 16.0,
                layers: dict[str, LoraFactors] | None = None, head_t: dict[str, torch.Tensor] | None = None,
                migrated_from: str | None = None, partial: bool = False, measured: bool = True,
                sender: str | None = None, wall_s: float = 30.0, work: float = 1.0) -> Upd:
    layers = factors(rank, seed) if layers is None else layers
    head_t = head(seed) if head_t is None else head_t
    rep = UpdateReport(rank=rank, work=work, samples=samples, joules=joules,
                       energy_source="rapl" if measured else "estimate", energy_measured=measured, train_s=wall_s,
                       wall_s=wall_s, local_accuracy=accuracy, loss=0.5,
                       partial=partial, migrated_from=migrated_from)
    msg = VehicleUpdate(sender=sender or vehicle, task=task, round=round_, rsu=rsu, lora_alpha=alpha, report=rep)
    payload = encode(msg, pack_lora(layers, head_t))
    return Upd(TOPICS.update(vehicle, rsu, task), payload, layers, head_t, rep)


def status(vehicle: str, x: float = 0.0, y: float = 0.0, vx: float = 0.0, vy: float = 0.0,
           tasks: tuple[str, ...] = ("t1",), state: str = "online", busy: bool = False, sent_at: float = 0.0,
           exits: dict[str, float] | None = None) -> tuple[str, bytes]:
    msg = AgentStatus(sender=vehicle, sent_at=sent_at, role="vehicle", state=state, tasks=list(tasks), busy=busy,
                      position=Position(x=x, y=y), velocity=Velocity(vx=vx, vy=vy), exit_in_s=exits)
    return TOPICS.status(Role.VEHICLE, vehicle), encode(msg)


def budget(task: str, round_budget_j: float, window: int = 1, cloud: str = "cloud") -> tuple[str, bytes]:
    msg = TaskBudget(sender=cloud, task=task, round=window, window_rounds=5, window_budget_j=5 * round_budget_j,
                     round_budget_j=round_budget_j)
    return TOPICS.budget(cloud, task), encode(msg)


def dense(layers: list[dict[str, LoraFactors]], samples: list[int], alpha: float = 16.0) -> dict[str, torch.Tensor]:
    """sum_v p_v (alpha / eta_v) B_v A_v per layer, formed densely (the test's own reference)."""
    total = sum(samples)
    out: dict[str, torch.Tensor] = {}
    for name in layers[0]:
        out[name] = sum((n / total) * (alpha / f[name].rank) * (f[name].B @ f[name].A)
                        for f, n in zip(layers, samples, strict=True))
    return out


@dataclass
class Rig:
    """A mock broker, a simulated clock, one RSU agent, a publisher for vehicles/cloud and a spy on everything."""

    state_dir: Path
    settings: RsuSettings
    clock: SimClock = field(default_factory=lambda: SimClock(0.0))
    broker: MemoryBroker = field(default_factory=MemoryBroker)
    seen: list[Delivery] = field(default_factory=list)
    aggregate_s: float = 0.0  # modelled aggregation time (None: measured, as a daemon does)

    def aggregate_time(self, record: object, cfg: object) -> float:
        return self.aggregate_s

    def __post_init__(self) -> None:
        self.pub = MemoryBus(self.broker, "test-publisher")
        self.pub.connect()
        self.spy = MemoryBus(self.broker, "test-spy")
        self.spy.connect()
        self.spy.subscribe("fedrank/v1/#", self.seen.append)
        self.agent = self.new_agent()

    def new_agent(self) -> RsuAgent:
        bus = MemoryBus(self.broker, RSU)
        agent = RsuAgent(self.settings, bus, self.clock, aggregate_time=self.aggregate_time)
        bus.connect(will=agent.will())
        agent.start()
        agent.pump()
        return agent

    def send(self, topic: str, payload: bytes, retain: bool = False) -> None:
        self.pub.publish(topic, payload, qos=1, retain=retain)
        self.agent.pump()

    def vehicle(self, vid: str, **kw: Any) -> None:
        self.send(*status(vid, **kw), retain=True)

    def upload(self, u: Upd) -> None:
        self.send(u.topic, u.payload)

    def advance(self, t: float) -> None:
        """Move the clock to t, firing every timer due on the way."""
        while True:
            due = self.agent.next_deadline()
            if due is None or due > t:
                break
            self.clock.advance_to(max(due, self.clock.now()))
            self.agent.on_tick()
            self.agent.pump()
        self.clock.advance_to(t)

    def global_tensors(self, round_: int) -> dict[str, Any]:
        """A round's global adapter as a vehicle fetching every tier would have it (merged, head included)."""
        from proto.adapter import merge_tiers
        from proto.messages import RoundTier

        tiers = {dec.msg.index: dec.tensors for dec in self.messages(Channel.TIER, RoundTier)
                 if dec.msg.round == round_}
        return merge_tiers([tiers[k] for k in sorted(tiers)])

    def messages(self, channel: Channel, cls: type[Message]) -> list[Any]:
        """Decoded messages seen on a channel, oldest first (retained replays skipped)."""
        out = []
        for d in self.seen:
            if not d.retained and TOPICS.parse(d.topic).channel is channel:
                out.append(decode(d.payload, cls))
        return out
