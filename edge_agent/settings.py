"""Vehicle settings (TOML + `FEDRANK_*` env). Runtime-only knobs are never persisted."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field

from edge_agent.bandit import DEFAULT_BETA
from edge_agent.energy.config import EnergyConfig
from fedrank.settings import AgentSettings


class EdgeTaskConfig(BaseModel):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$", description="task id, as the RSUs host it")
    task_type: Literal["sentence", "token", "choice"] = Field(description="sentence / token (NER) / choice (COPA)")
    data: str = Field(
        "default",
        description="'default' (the offline default data, partitioned) or a path to a local file in the task's "
        "real format: GLUE SST-2 TSV, CoNLL-2003 columns, COPA JSONL",
    )
    partition: int = Field(0, ge=0, description="with data='default': which partition of the default data is ours")
    num_partitions: int = Field(1, ge=1, description="with data='default': how many vehicles share it")
    dirichlet_alpha: float | None = Field(None, gt=0, description="label skew of the partitions; unset = IID")
    heldout_fraction: float = Field(0.2, gt=0, lt=1, description="share of local data kept for local accuracy")


class PositionConfig(BaseModel):
    kind: Literal["none", "fixed", "file"] = Field("none", description="where positions come from")
    x: float = Field(0.0, description="fixed position, metres east in the deployment frame")
    y: float = Field(0.0, description="fixed position, metres north in the deployment frame")
    file: Path | None = Field(None, description="CSV of fixes 't,x,y' (seconds, metres); replayed from start")


class EdgeSettings(AgentSettings):
    ROLE: ClassVar[str] = "edge"

    tasks: list[EdgeTaskConfig] = Field(description="tasks this vehicle trains")
    model_dir: Path | None = Field(None, description="local BERT-family model directory; unset = packaged MiniLM-L6")
    targets: list[str] = Field(["query", "value"], description="module names that get LoRA adapters")
    rank_policy: Literal["ucb-dual", "fixed", "capacity"] = Field("ucb-dual", description="how ranks are chosen")
    fixed_rank: int = Field(8, ge=1, description="rank for the fixed/capacity policies")
    max_rank: int | None = Field(None, ge=1, description="largest rank this device can fit; larger ones excluded")
    beta: float = Field(DEFAULT_BETA, gt=0, description="UCB exploration weight (docs/algorithms.md section 3)")
    device_memory_gb: float | None = Field(
        None, gt=0, description="memory for training; the capacity policy derives its rank from it"
    )
    w_tau: float = Field(0.1, ge=0, description="latency weight in the round reward")
    tau_ref_s: float = Field(60.0, gt=0, description="reference round latency for the reward")
    local_steps: int = Field(20, ge=1, description="optimiser steps per round")
    batch_size: int = Field(16, ge=1, description="training batch size")
    lr: float = Field(2e-3, gt=0, description="learning rate (LoRA and head)")
    max_length: int = Field(64, ge=8, description="max tokens per example")
    threads: int | None = Field(None, ge=1, description="torch CPU threads; unset = torch default")
    wire_dtype: Literal["F32", "F16", "BF16"] = Field("F32", description="dtype of the factors on the wire")
    seed: int = Field(0, description="seed for data partitioning and adapter init")
    rsu: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_.\-]{1,64}$",
        description="the RSU this vehicle works with when it has no position source (a fixed roadside install)",
    )
    position: PositionConfig = Field(default_factory=PositionConfig, description="position source")
    energy: EnergyConfig = Field(default_factory=EnergyConfig, description="energy metering")
    p_tx_w: float = Field(0.2, ge=0, description="radio transmit power (W); upload energy = p_tx * upload time")
