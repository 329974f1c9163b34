"""Message models (pydantic v2). Every message carries `kind` and schema version `v`.

Decision: unknown fields are IGNORED (a newer sender may add optional fields within the same
major version); a different `v` or an unknown `kind` is REJECTED. Messages that change state
carry (sender, task, round, seq) so a receiver can recognise a redelivery or duplicate.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proto import SCHEMA_VERSION

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Message(WireModel):
    """Common envelope."""

    KIND: ClassVar[str] = ""
    HAS_TENSORS: ClassVar[bool] = False

    v: Literal[2] = SCHEMA_VERSION
    sender: Id
    sent_at: Finite = 0.0  # sender's clock, seconds (epoch in the field, simulated in the fleet)
    seq: int = Field(0, ge=0)  # per-sender counter; with (sender, task, round) it identifies a message


class Position(WireModel):
    """Planar position in metres in the deployment's local frame (east, north)."""

    x: Finite
    y: Finite


class Velocity(WireModel):
    """Metres per second (east, north)."""

    vx: Finite
    vy: Finite


class RoundRef(WireModel):
    """Which round a vehicle is busy with."""

    rsu: Id
    task: Id
    round: int = Field(ge=0)


class AgentStatus(Message):
    """Retained per agent; the broker publishes `state=offline` as the will on an unclean drop."""

    KIND: ClassVar[str] = "status"
    kind: Literal["status"] = "status"
    role: Literal["vehicle", "rsu", "cloud"]
    state: Literal["online", "offline"]
    tasks: list[Id] = Field(default_factory=list)
    position: Position | None = None
    velocity: Velocity | None = None
    rsu: Id | None = None  # vehicles: the RSU whose coverage it is in, when known
    busy: bool = False  # vehicles: training now
    working_on: RoundRef | None = None  # vehicles: the round they are busy with (an RSU stops waiting on others)
    detail: str = ""


class TaskBudget(Message):
    """Cloud -> RSUs (retained): the energy allocation of one task for the current window."""

    KIND: ClassVar[str] = "budget"
    kind: Literal["budget"] = "budget"
    task: Id
    round: int = Field(ge=0)  # the cloud's window index
    window_rounds: int = Field(ge=1)  # Q in PAPER.md section 5
    window_budget_j: NonNeg  # A_m
    round_budget_j: NonNeg  # B_m(t) = A_m / Q


class TensorSpec(WireModel):
    shape: list[Annotated[int, Field(ge=0)]]
    dtype: Literal["F32", "F16", "BF16"]


class TensorMessage(Message):
    """A message that travels as one safetensors blob; `tensors` is filled in by the codec."""

    HAS_TENSORS: ClassVar[bool] = True
    tensors: dict[str, TensorSpec] = Field(default_factory=dict)


class TierRef(WireModel):
    """One nested rank tier of the global adapter: components `first..last` (1-based, inclusive)."""

    index: int = Field(ge=0)
    first: int = Field(ge=1)
    last: int = Field(ge=1)


class RoundAnnouncement(TensorMessage):
    """RSU -> vehicles (retained): the round, and where its global adapter is.

    The adapter travels in nested rank `tiers`, each a retained `RoundTier` on its own topic (proto/README.md);
    a rank-eta vehicle fetches the tiers whose `first <= eta`. The announcement itself carries no tensors.
    `rank == 0` means the adapter is still zero (round 0, no tiers): vehicles use peft's default init.
    """

    KIND: ClassVar[str] = "round"
    kind: Literal["round"] = "round"
    task: Id
    task_type: Literal["sentence", "token", "choice"]
    round: int = Field(ge=0)
    deadline: Finite  # on the RSU's clock
    lam: NonNeg  # dual price lambda_m(t), PAPER.md section 4
    round_budget_j: NonNeg  # B_m(t)
    ranks: list[Annotated[int, Field(ge=1)]]  # candidate ranks K
    rank: int = Field(ge=0)  # rank of the broadcast factors (<= max(ranks))
    lora_alpha: Finite = 16.0
    layers: list[str] = Field(default_factory=list)  # adapted module names
    participants: list[Id] = Field(default_factory=list)  # vehicles expected in this round
    aggregator: Literal["svd", "homo", "het"] = "svd"
    # tau_round of this RSU's previous round of the task (close + aggregation - announcement); what a vehicle's
    # reward charges for latency, so the straggler is charged for the round it held up. None before any round.
    last_round_latency_s: NonNeg | None = None
    tiers: list[TierRef] = Field(default_factory=list)  # nested, in order, covering components 1..rank

    @field_validator("tiers")
    @classmethod
    def _nested(cls, v: list[TierRef]) -> list[TierRef]:
        nxt = 1
        for k, t in enumerate(v):
            if t.index != k or t.first != nxt or t.last < t.first:
                raise ValueError("tiers must be indexed 0.. and cover components 1..rank in order, without gaps")
            nxt = t.last + 1
        return v

    @field_validator("ranks")
    @classmethod
    def _sorted_unique(cls, v: list[int]) -> list[int]:
        if not v or sorted(set(v)) != v:
            raise ValueError("ranks must be a non-empty, strictly increasing list")
        return v


class UpdateReport(WireModel):
    """What a vehicle measured while producing an update."""

    rank: int = Field(ge=1)
    samples: int = Field(ge=1)
    joules: NonNeg  # e_v = e_train + e_up
    energy_source: str  # e.g. "nvml", "rapl", "estimate-cpu-time", "model:jetson-orin-nano"
    energy_measured: bool  # False for an estimate or a modelled figure
    train_s: NonNeg
    upload_s: NonNeg = 0.0
    wall_s: NonNeg  # tau_v
    local_accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    loss: NonNeg
    steps: int = Field(0, ge=0)
    partial: bool = False  # early upload before the planned steps were done
    migrated_from: Id | None = None


class VehicleUpdate(TensorMessage):
    """Vehicle -> its RSU: `{layer}.lora_A` (eta, d_in), `{layer}.lora_B` (d_out, eta), `head.*`."""

    KIND: ClassVar[str] = "update"
    kind: Literal["update"] = "update"
    task: Id
    round: int = Field(ge=0)
    rsu: Id
    lora_alpha: Finite
    report: UpdateReport


class TaskStats(Message):
    """RSU -> cloud after each round."""

    KIND: ClassVar[str] = "task_stats"
    kind: Literal["task_stats"] = "task_stats"
    task: Id
    round: int = Field(ge=0)
    energy_j: NonNeg  # E_round
    budget_j: NonNeg  # B_m(t)
    lam: NonNeg
    violation_j: NonNeg  # cumulative
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    loss: NonNeg
    ranks: list[Annotated[int, Field(ge=1)]] = Field(default_factory=list)
    participants: int = Field(ge=0)
    updates: int = Field(ge=0)
    energy_measured: bool = True


class FaultCommand(Message):
    """RSU -> vehicle: what to do before leaving coverage (PAPER.md section 6)."""

    KIND: ClassVar[str] = "command"
    kind: Literal["command"] = "command"
    task: Id
    round: int = Field(ge=0)
    vehicle: Id
    action: Literal["early_upload", "migrate", "abandon"]
    migrate_to: Id | None = None
    costs: dict[str, Finite] = Field(default_factory=dict)
    exit_in_s: NonNeg = 0.0


class Handoff(TensorMessage):
    """RSU -> the vehicle chosen to continue a migrated task: its partial `lora_A/lora_B/head.*`."""

    KIND: ClassVar[str] = "handoff"
    kind: Literal["handoff"] = "handoff"
    task: Id
    round: int = Field(ge=0)
    rsu: Id
    vehicle: Id  # the receiver
    migrated_from: Id
    lora_alpha: Finite
    rank: int = Field(ge=1)
    joules_spent: NonNeg = 0.0


class RoundTier(TensorMessage):
    """RSU -> vehicles (retained, one topic per tier): components `first..last` of the round's global adapter,
    `{layer}.U` (d_out, n), `{layer}.S` (n,), `{layer}.Vt` (n, d_in) with n = last - first + 1; tier 0 also
    carries the task head `head.*`. A valid safetensors payload on its own."""

    KIND: ClassVar[str] = "round_tier"
    kind: Literal["round_tier"] = "round_tier"
    task: Id
    round: int = Field(ge=0)
    index: int = Field(ge=0)
    first: int = Field(ge=1)
    last: int = Field(ge=1)


ALL_MESSAGES: tuple[type[Message], ...] = (
    AgentStatus,
    TaskBudget,
    RoundAnnouncement,
    RoundTier,
    VehicleUpdate,
    TaskStats,
    FaultCommand,
    Handoff,
)
BY_KIND: dict[str, type[Message]] = {m.KIND: m for m in ALL_MESSAGES}

