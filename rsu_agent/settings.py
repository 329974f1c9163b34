"""RSU settings (TOML + `FEDRANK_*` env): the coverage area, the hosted tasks and their round rules."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from fedrank.settings import AgentSettings
from rsu_agent.coverage import Coverage
from rsu_agent.dual import DEFAULT_LAM_MAX, DEFAULT_MU, DEFAULT_MU_DECAY
from rsu_agent.fault_tolerance import FtWeights

_ID = r"^[A-Za-z0-9_.\-]{1,64}$"


class RsuTaskConfig(BaseModel):
    """One task this RSU runs rounds for."""

    name: str = Field(pattern=_ID, description="task id, as vehicles and the cloud know it")
    task_type: Literal["sentence", "token", "choice"] = Field(description="sentence / token (NER) / choice (COPA)")
    ranks: list[int] = Field([2, 4, 8, 16, 32], description="candidate LoRA ranks K; the global is kept at max(K)")
    work: list[float] = Field(
        [1.0], description="fractions of each vehicle's local steps offered with every rank: the candidate "
        "configurations are ranks x work (docs/algorithms.md section 3); [1.0] = rank-only arms, as in the paper",
    )
    lora_alpha: float = Field(16.0, gt=0, description="LoRA alpha; the scale of a rank-eta adapter is alpha/eta")
    layers: dict[str, tuple[int, int]] = Field(
        min_length=1,
        description="adapted module name -> (d_out, d_in); explicit so that updates can be validated "
        "(A is (eta, d_in), B is (d_out, eta)); the fleet fills it from the model",
    )
    aggregator: Literal["svd", "homo", "het"] = Field(
        "svd", description="svd = ours/FlexLoRA, homo = HomoLoRA, het = HetLoRA (docs/algorithms.md section 1)"
    )
    round_timeout_s: float = Field(120.0, gt=0, description="a round closes this long after its announcement")
    min_updates: int = Field(1, ge=1, description="fewer accepted updates than this and the global stays")
    min_participants: int = Field(1, ge=1, description="fewer eligible vehicles than this and the round waits")
    round_gap_s: float = Field(1.0, gt=0, description="pause between a round's close and the next announcement")
    participant_retry_s: float = Field(5.0, gt=0, description="how often a waiting round looks for vehicles again")
    default_round_budget_j: float = Field(
        1000.0, gt=0, description="per-round energy budget B_m(t) used until the cloud's first budget arrives"
    )
    mu: float = Field(DEFAULT_MU, gt=0, description="dual step size mu_0 (docs/algorithms.md section 4)")
    mu_decay_rounds: float = Field(
        DEFAULT_MU_DECAY, gt=0, description="the step shrinks as mu_0 / sqrt(1 + t / mu_decay_rounds) over the "
        "task's rounds t (inf: constant)")
    lam_max: float = Field(DEFAULT_LAM_MAX, gt=0, description="upper clip of the dual price (docs/algorithms.md "
                           "section 4)")
    expected_round_s: float = Field(
        60.0, gt=0, description="initial estimate of a vehicle's round time for fault tolerance; then a moving "
        "average of the wall_s the vehicles report"
    )
    max_rounds: int | None = Field(None, ge=1, description="stop announcing after this many rounds; unset = forever")

    @field_validator("ranks")
    @classmethod
    def _ranks_sorted(cls, v: list[int]) -> list[int]:
        if not v or sorted(set(v)) != v or v[0] < 1:
            raise ValueError("ranks must be a non-empty, strictly increasing list of positive integers")
        return v

    @field_validator("work")
    @classmethod
    def _work_sorted(cls, v: list[float]) -> list[float]:
        if not v or sorted(set(v)) != v or not all(0 < w <= 1 for w in v) or v[-1] != 1.0:
            # 1.0 is the reference configuration of the share rule (rsu_agent/shares.py) and what a migration
            # target reports; it is always offered
            raise ValueError("work must be a strictly increasing list of fractions in (0, 1] ending with 1.0")
        return v

    @field_validator("layers")
    @classmethod
    def _dims_positive(cls, v: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        for name, (d_out, d_in) in v.items():
            if d_out < 1 or d_in < 1:
                raise ValueError(f"layer {name}: dimensions ({d_out}, {d_in}) must be positive")
        return v

    @property
    def r_max(self) -> int:
        return self.ranks[-1]


class RsuSettings(AgentSettings):
    ROLE: ClassVar[str] = "rsu"

    coverage: Coverage = Field(description="the area this RSU serves: a circle or a rectangle in metres")
    tasks: list[RsuTaskConfig] = Field(min_length=1, description="tasks this RSU runs rounds for")
    ft: FtWeights = Field(default_factory=FtWeights, description="fault-tolerance cost weights (docs/algorithms.md §6)")
    fault_tolerance: bool = Field(True, description="decide early upload / migrate / abandon for leaving vehicles")
    vehicle_silence_s: float = Field(
        120.0, gt=0, description="a vehicle whose last status is older than this is not invited to rounds"
    )
    round_time_ema: float = Field(
        0.3, gt=0, le=1, description="weight of the newest report in the moving average of vehicle round time"
    )
    wire_dtype: Literal["F32", "F16", "BF16"] = Field("F32", description="dtype of the global factors on the wire")
    join_wait_s: float = Field(
        2.0, ge=0, description="after start, how long to collect vehicle statuses before the first announcement"
    )
    max_vehicles: int = Field(
        10_000, ge=1, description="vehicles tracked at once; a status from one more is rejected (too_many_vehicles) "
        "until silent ones are evicted (after vehicle_silence_s)"
    )
    inbox_max_items: int = Field(10_000, ge=1, description="deliveries waiting for the agent at most; more are dropped")
    inbox_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1, description="payload bytes waiting for the agent at most; more are dropped"
    )
    log_burst: int = Field(5, ge=1, description="rejection log lines per reason per minute; the rest are counted")
    max_clock_skew_s: float = Field(
        300.0, gt=0, description="a status or update whose sent_at is further than this ahead of our clock is "
        "rejected (clock_skew): it would make later genuine statuses look old"
    )
    cold_start_s: float = Field(
        120.0, ge=0, description="added to a round's deadline when a participant has not delivered to this RSU since "
        "it (or the vehicle) last started: its first round loads the model"
    )

    @model_validator(mode="after")
    def _unique_tasks(self) -> RsuSettings:
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        return self
