"""The mock fleet's configuration: one resolved copy is written into every run's output directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edge_agent.model import resolve_targets
from fleet.sim.channel import ChannelConfig, resolve_channel
from fleet.sim.sumo import SumoMobility

Policy = Literal["ucb-dual", "homolora", "hetlora", "flexlora", "fixed-rank"]
POLICIES: tuple[Policy, ...] = ("ucb-dual", "homolora", "hetlora", "flexlora")  # what `compare` sets side by side


class FleetTask(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    task_type: Literal["sentence", "token", "choice"]
    data: str = "default"


DEFAULT_TASKS = [
    FleetTask(name="sentiment", task_type="sentence"),
    FleetTask(name="ner", task_type="token"),
    FleetTask(name="copa", task_type="choice"),
]


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seed: int = Field(0, description="one seed for data, partitions, trajectories and adapter init")
    model: Literal["minilm", "tiny", "bert-base-shape"] = Field(
        "minilm", description="packaged MiniLM-L6, a tiny random BERT, or BERT-base's shape alone (cost studies "
                              "with the surrogate learner: no weights)")
    lora_targets: str | list[str] = Field(
        "qv", description="LoRA target modules: a preset (qv, qkvo, all-linear) or a list of module names")
    model_dir: Path | None = Field(None, description="a local BERT-family directory instead of the packaged model")
    tasks: list[FleetTask] = Field(default_factory=lambda: list(DEFAULT_TASKS))
    policy: Policy = Field("ucb-dual", description="rank choice + aggregation: ours or a baseline")
    vehicles: int = Field(6, ge=1, description="vehicles; each takes one task, round-robin")
    rsus: int = Field(2, ge=1, description="RSUs on the road grid; each hosts every task")
    rounds: int = Field(8, ge=1, description="rounds per RSU and task")
    ranks: list[int] = Field([2, 4, 8, 16, 32], description="candidate LoRA ranks")
    homo_rank: int | None = Field(
        None, description="the one rank of HomoLoRA and of 'fixed-rank' (exact aggregation); unset = sized from the "
        "budget: the largest candidate rank whose modelled full-work spend fits every task's round budget",
    )
    arms: Literal["work", "ranks"] = Field(
        "work", description="the vehicles' decision: work configurations (ranks x work) or ranks only (the paper's)"
    )
    work: list[float] = Field([0.25, 0.5, 1.0], description="fractions of local_steps offered with each rank")
    lora_alpha: float = 16.0
    local_steps: int = Field(10, ge=1)
    batch_size: int = 16
    lr: float = 1e-3
    max_length: int = 64
    train_per_vehicle: int = Field(320, ge=8, description="local training examples per vehicle")
    test_size: int = Field(600, ge=10, description="examples of each task's test split used to score the global "
                           "model (600 per task keeps one standard error of the average accuracy near 1 point)")
    curve_test_size: int = Field(64, ge=10, description="test examples scoring each intermediate round (the "
                                 "accuracy curve: one evaluation batch); the final round of each RSU and task is "
                                 "scored on all test_size")
    devices: list[str] = Field(
        ["jetson-orin-nano", "jetson-xavier-nx", "jetson-agx-orin", "x86-dgpu"],
        description="device profiles, assigned round-robin to vehicles",
    )
    mobility: Literal["grid", "sumo"] | Path = Field(
        "grid", description="synthetic road grid, a SUMO network (settings in `sumo`) or a T-Drive file")
    sumo: SumoMobility = Field(default_factory=SumoMobility, description="network, seed, duration, vehicles, RSUs")
    grid_blocks: int = Field(4, ge=2, description="road grid size in blocks per side")
    block_m: float = Field(200.0, gt=0)
    rsu_radius_m: float = Field(350.0, gt=0)
    energy_budget_scale: float = Field(
        0.5, ge=0, description="tightness of each round's budget between the invited vehicles' cheapest (0) and "
                               "dearest (1) configurations (download + train + upload, modelled); above 1 never binds"
    )
    tau_ref_s: float | None = Field(
        None, gt=0, description="the reward's latency reference; unset = the modelled round time of a middle "
                                "configuration (independent of the round timeout)")
    window_rounds: int = Field(3, ge=1, description="Q: rounds per tri-feedback window")
    tri_feedback: bool = True
    fault_tolerance: bool = True
    round_timeout_s: float = Field(60.0, gt=0, description="simulated seconds before an RSU closes a round")
    round_gap_s: float = Field(2.0, ge=0)
    status_interval_s: float = Field(2.0, gt=0, description="how often vehicles report position (simulated s)")
    learner: Literal["real", "surrogate"] = Field(
        "real", description="real LoRA training, or a labelled learning-curve surrogate for large sweeps"
    )
    threads: int | None = Field(None, description="torch threads; unset = 1 per worker when workers > 1, else torch's "
                                "default")
    workers: int = Field(
        2, ge=1, description="real training runs on this many threads, each with its own copy of the base model, "
        "one vehicle's round at a time (fleet/pool.py); results do not depend on the count as long as torch runs one "
        "thread (workers >= 2, or 1 with threads 1); 1 = train in the fleet's own thread")
    wire_dtype: Literal["F32", "F16", "BF16"] = "F32"
    channel: str | dict[str, Any] = Field(
        "cv2x", description="radio: a preset (paper, dsrc, cv2x, nr5g; fleet/sim/channel.py) or a dict of constants "
                            "(with an optional 'preset' to start from)")

    @field_validator("channel")
    @classmethod
    def _known_channel(cls, v: str | dict[str, Any]) -> str | dict[str, Any]:
        resolve_channel(v)  # ChannelPresetError (a ValueError) names the preset or the bad constant
        return v

    @field_validator("lora_targets")
    @classmethod
    def _known_targets(cls, v: str | list[str]) -> str | list[str]:
        resolve_targets(v)  # ValueError naming lora_targets
        return v

    @model_validator(mode="after")
    def _shape_needs_surrogate(self) -> FleetConfig:
        if self.model == "bert-base-shape" and self.learner != "surrogate":
            raise ValueError("model: 'bert-base-shape' has no weights to train; it needs learner='surrogate'")
        return self

    @property
    def targets(self) -> tuple[str, ...]:
        """The resolved LoRA target modules."""
        return resolve_targets(self.lora_targets)

    @property
    def radio(self) -> ChannelConfig:
        """The resolved channel constants."""
        return resolve_channel(self.channel)

    @classmethod
    def quick(cls, **overrides: object) -> FleetConfig:
        """The smoke-test preset: tiny random model, few vehicles and rounds; under a minute."""
        base: dict[str, object] = dict(model="tiny", vehicles=6, rounds=3, local_steps=4, train_per_vehicle=64,
                                       test_size=60, max_length=32, window_rounds=2)
        base.update(overrides)
        return cls(**base)


# Named experiment presets: FleetConfig overrides, applied under --config and command-line flags.
PRESETS: dict[str, dict[str, object]] = {
    # the paper's setting (docs/algorithms.md): 9 vehicles, 3 tasks, 3 RSUs, 40 rounds, its channel, LoRA on q,k,v,o
    "paper": {"vehicles": 9, "tasks": [t.model_dump() for t in DEFAULT_TASKS], "rsus": 3, "rounds": 40,
              "channel": "paper", "lora_targets": "qkvo"},
}


class PresetError(ValueError):
    """An unknown preset name, or a preset this build's FleetConfig cannot take."""


def preset_overrides(name: str) -> dict[str, object]:
    """The FleetConfig overrides of preset `name` (a copy)."""
    if name not in PRESETS:
        raise PresetError(f"preset: {name!r} is not one of {sorted(PRESETS)}")
    missing = sorted(set(PRESETS[name]) - set(FleetConfig.model_fields))
    if missing:
        raise PresetError(f"preset {name!r}: this FleetConfig has no field {', '.join(missing)}")
    return dict(PRESETS[name])
