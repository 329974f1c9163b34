"""Message models (pydantic v2). Every message carries `kind` and schema version `v`.

Decision: unknown fields are IGNORED (a newer sender may add optional fields within the same
major version); a different `v` or an unknown `kind` is REJECTED. Messages that change state
carry (sender, task, round, seq) so a receiver can recognise a redelivery or duplicate.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from proto import SCHEMA_VERSION
from proto.bounds import (
    MAX_ANNOUNCE_ABS,
    MAX_COSTS,
    MAX_DIMS,
    MAX_ID_LIST,
    MAX_LAYERS,
    MAX_RANKS,
    MAX_TASKS,
    MAX_TENSORS,
    MAX_UPDATE_ABS,
    Alpha,
    Coord,
    Cost,
    Count,
    CumulativeJoules,
    Dim,
    Duration,
    Joules,
    Label,
    Lambda,
    Loss,
    Rank,
    RoundNo,
    Samples,
    Seq,
    Speed,
    Steps,
    Text,
    Timestamp,
)
from proto.reasons import Reason

Finite = Annotated[float, Field(allow_inf_nan=False)]
NonNeg = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Id = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
Work = Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]  # fraction of the configured local steps


class WireModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Message(WireModel):
    """Common envelope."""

    KIND: ClassVar[str] = ""
    HAS_TENSORS: ClassVar[bool] = False

    v: Literal[2] = SCHEMA_VERSION
    sender: Id
    sent_at: Timestamp = 0.0  # sender's clock, seconds (epoch in the field, simulated in the fleet)
    seq: Seq = 0  # per-sender counter; with (sender, task, round) it identifies a message


class Position(WireModel):
    """Planar position in metres in the deployment's local frame (east, north)."""

    x: Coord
    y: Coord


class Velocity(WireModel):
    """Metres per second (east, north)."""

    vx: Speed
    vy: Speed


class RoundRef(WireModel):
    """Which round a vehicle is busy with."""

    rsu: Id
    task: Id
    round: RoundNo


class AgentStatus(Message):
    """Retained per agent; the broker publishes `state=offline` as the will on an unclean drop."""

    KIND: ClassVar[str] = "status"
    kind: Literal["status"] = "status"
    role: Literal["vehicle", "rsu", "cloud"]
    state: Literal["online", "offline"]
    tasks: list[Id] = Field(default_factory=list, max_length=MAX_TASKS)
    position: Position | None = None
    velocity: Velocity | None = None
    rsu: Id | None = None  # vehicles: the RSU whose coverage it is in, when known
    busy: bool = False  # vehicles: training now
    working_on: RoundRef | None = None  # vehicles: the round they are busy with (an RSU stops waiting on others)
    # vehicles, optional: RSU id -> seconds until the vehicle leaves that RSU's coverage by its own route (a
    # navigation system knows it); a lower bound when the route stays inside over the whole look-ahead. An RSU
    # uses it before its straight-line estimate from position and velocity.
    exit_in_s: Annotated[dict[Id, Duration], Field(max_length=MAX_TASKS)] | None = None
    detail: Text = ""


class TaskBudget(Message):
    """Cloud -> RSUs (retained): the energy allocation of one task for the current window."""

    KIND: ClassVar[str] = "budget"
    kind: Literal["budget"] = "budget"
    task: Id
    round: RoundNo  # the cloud's window index
    window_rounds: int = Field(ge=1, le=10**6)  # Q in docs/algorithms.md section 5
    window_budget_j: Joules  # A_m
    round_budget_j: Joules  # B_m(t) = A_m / Q


class TensorSpec(WireModel):
    shape: list[Dim] = Field(max_length=MAX_DIMS)
    dtype: Literal["F32", "F16", "BF16"]


class TensorMessage(Message):
    """A message that travels as one safetensors blob; `tensors` is filled in by the codec."""

    HAS_TENSORS: ClassVar[bool] = True
    MAX_ABS: ClassVar[float] = MAX_UPDATE_ABS  # the largest |element| the codec lets through (proto/bounds.py)
    tensors: dict[str, TensorSpec] = Field(default_factory=dict, max_length=MAX_TENSORS)


class TierRef(WireModel):
    """One nested rank tier of the global adapter: components `first..last` (1-based, inclusive)."""

    index: int = Field(ge=0, le=MAX_RANKS)
    first: Rank
    last: Rank


class RoundAnnouncement(TensorMessage):
    """RSU -> vehicles (retained): the round, and where its global adapter is.

    The adapter travels in nested rank `tiers`, each a retained `RoundTier` on its own topic (proto/README.md);
    a rank-eta vehicle fetches the tiers whose `first <= eta`. The announcement itself carries no tensors.
    `rank == 0` means the adapter is still zero (round 0, no tiers): vehicles use peft's default init.
    """

    KIND: ClassVar[str] = "round"
    MAX_ABS: ClassVar[float] = MAX_ANNOUNCE_ABS  # singular values grow with the layer: finite in float32 only
    kind: Literal["round"] = "round"
    task: Id
    task_type: Literal["sentence", "token", "choice"]
    round: RoundNo
    deadline: Timestamp  # on the RSU's clock
    lam: Lambda  # dual price lambda_m(t), docs/algorithms.md section 4
    round_budget_j: Joules  # B_m(t)
    ranks: list[Rank] = Field(max_length=MAX_RANKS)  # candidate ranks K
    rank: int = Field(ge=0, le=MAX_RANKS * 4096)  # rank of the broadcast factors (<= max(ranks))
    lora_alpha: Alpha = 16.0
    layers: list[Annotated[str, Field(max_length=512)]] = Field(default_factory=list, max_length=MAX_LAYERS)
    participants: list[Id] = Field(default_factory=list, max_length=MAX_ID_LIST)  # vehicles expected
    aggregator: Literal["svd", "homo", "het"] = "svd"
    # Work fractions W (of each vehicle's configured local steps): the candidate configurations are K x W
    # (docs/algorithms.md section 3). [1.0] = rank-only arms.
    work: list[Work] = Field(default_factory=lambda: [1.0], max_length=MAX_RANKS)
    # vehicle -> its share b_v of round_budget_j (J)
    shares: dict[Id, Joules] = Field(default_factory=dict, max_length=MAX_ID_LIST)
    # What an update must look like, on the wire from round 0 on (when no tensor carries it yet):
    dims: dict[str, tuple[Dim, Dim]] = Field(default_factory=dict, max_length=MAX_LAYERS)  # layer -> (d_out, d_in)
    head: dict[str, list[Dim]] = Field(default_factory=dict, max_length=1024)  # `head.*` name -> shape; {} = free
    # tau_round of this RSU's previous round of the task (close + aggregation - announcement); what a vehicle's
    # reward charges for latency, so the straggler is charged for the round it held up. None before any round.
    last_round_latency_s: Duration | None = None
    # nested, in order, covering components 1..rank (at most one tier per candidate rank, and one above)
    tiers: list[TierRef] = Field(default_factory=list, max_length=MAX_RANKS + 1)

    @field_validator("tiers")
    @classmethod
    def _nested(cls, v: list[TierRef]) -> list[TierRef]:
        nxt = 1
        for k, t in enumerate(v):
            if t.index != k or t.first != nxt or t.last < t.first:
                raise ValueError("tiers must be indexed 0.. and cover components 1..rank in order, without gaps")
            nxt = t.last + 1
        return v

    @field_validator("ranks", "work")
    @classmethod
    def _sorted_unique(cls, v: list) -> list:
        if not v or sorted(set(v)) != v:
            raise ValueError("ranks and work must be non-empty, strictly increasing lists")
        return v


class UpdateReport(WireModel):
    """What a vehicle measured while producing an update."""

    rank: Rank
    work: Work = 1.0  # the chosen configuration is (rank, work); it must be one the round offered
    samples: Samples
    joules: Joules  # e_v = e_train + e_up
    energy_source: Label  # e.g. "nvml", "rapl", "estimate-cpu-time", "model:jetson-orin-nano"
    energy_measured: bool  # False for an estimate or a modelled figure
    train_s: Duration
    upload_s: Duration = 0.0
    wall_s: Duration  # tau_v
    local_accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
    loss: Loss
    steps: Steps = 0
    partial: bool = False  # early upload before the planned steps were done
    migrated_from: Id | None = None


class VehicleUpdate(TensorMessage):
    """Vehicle -> its RSU: `{layer}.lora_A` (eta, d_in), `{layer}.lora_B` (d_out, eta), `head.*`."""

    KIND: ClassVar[str] = "update"
    kind: Literal["update"] = "update"
    task: Id
    round: RoundNo
    rsu: Id
    lora_alpha: Alpha
    report: UpdateReport


class TaskStats(Message):
    """RSU -> cloud after each round."""

    KIND: ClassVar[str] = "task_stats"
    kind: Literal["task_stats"] = "task_stats"
    task: Id
    round: RoundNo
    energy_j: CumulativeJoules  # E_round (a sum of updates' joules)
    budget_j: Joules  # B_m(t)
    lam: Lambda
    violation_j: CumulativeJoules  # cumulative
    # Mean local accuracy/loss of the updates aggregated this round; null when none was (the global stayed), so
    # that a receiver never takes a round without updates for a measurement.
    accuracy: Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)] | None
    loss: Loss | None
    ranks: list[Rank] = Field(default_factory=list, max_length=MAX_ID_LIST)
    participants: Count
    updates: Count
    energy_measured: bool = True


class FaultCommand(Message):
    """RSU -> vehicle: what to do before leaving coverage (docs/algorithms.md section 6)."""

    KIND: ClassVar[str] = "command"
    kind: Literal["command"] = "command"
    task: Id
    round: RoundNo
    vehicle: Id
    action: Literal["early_upload", "migrate", "abandon"]
    migrate_to: Id | None = None
    costs: dict[Label, Cost] = Field(default_factory=dict, max_length=MAX_COSTS)
    exit_in_s: Duration = 0.0


class Handoff(TensorMessage):
    """RSU -> the vehicle chosen to continue a migrated task: its partial `lora_A/lora_B/head.*`."""

    KIND: ClassVar[str] = "handoff"
    kind: Literal["handoff"] = "handoff"
    task: Id
    round: RoundNo
    rsu: Id
    vehicle: Id  # the receiver
    migrated_from: Id
    lora_alpha: Alpha
    rank: Rank
    joules_spent: Joules = 0.0


class Rejected(Message):
    """RSU -> vehicle, on the vehicle's command topic: one of its messages was refused, and why.

    Rate-limited per (vehicle, reason), so a vehicle learns each kind of mistake without a flood; `duplicate`
    (a QoS 1 redelivery) is never notified. `about` is the refused message's kind, `task`/`round` as it claimed
    (when its header could be read).
    """

    KIND: ClassVar[str] = "rejected"
    kind: Literal["rejected"] = "rejected"
    vehicle: Id  # the receiver
    reason: Reason
    about: Literal["update", "status", "other"] = "update"
    task: Id | None = None
    round: RoundNo | None = None
    detail: Text = ""


class RoundTier(TensorMessage):
    """RSU -> vehicles (retained, one topic per tier): components `first..last` of the round's global adapter,
    `{layer}.U` (d_out, n), `{layer}.S` (n,), `{layer}.Vt` (n, d_in) with n = last - first + 1; tier 0 also
    carries the task head `head.*`. A valid safetensors payload on its own."""

    KIND: ClassVar[str] = "round_tier"
    MAX_ABS: ClassVar[float] = MAX_ANNOUNCE_ABS  # singular values, like the announcement's used to be
    kind: Literal["round_tier"] = "round_tier"
    task: Id
    round: RoundNo
    index: int = Field(ge=0, le=MAX_RANKS)
    first: Rank
    last: Rank


ALL_MESSAGES: tuple[type[Message], ...] = (
    AgentStatus,
    TaskBudget,
    RoundAnnouncement,
    RoundTier,
    VehicleUpdate,
    TaskStats,
    FaultCommand,
    Handoff,
    Rejected,
)
BY_KIND: dict[str, type[Message]] = {m.KIND: m for m in ALL_MESSAGES}

