"""Energy meter settings; the edge agent's settings embed this as `energy` (env `FEDRANK_ENERGY__*`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SYSFS_ENV = "FEDRANK_SYSFS_ROOT"

Backend = Literal["auto", "nvml", "jetson", "rapl", "estimate"]


class EnergyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Backend = Field("auto", description="which meter; auto tries nvml, jetson, rapl, then the estimate")
    gpus: list[int] | None = Field(None, description="NVML device indices to meter; default: all GPUs")
    sample_interval_s: float = Field(
        0.1, gt=0, le=5.0, description="sampling period of power-integrating meters (Jetson rails, NVML power)"
    )
    counter_poll_s: float = Field(
        1.0, gt=0, le=60.0, description="polling period of wrapping counters (RAPL); far below the wrap period"
    )
    jetson_input_rails: list[str] = Field(
        ["VDD_IN", "POM_5V_IN"], description="rail names that measure the whole board input (total, not summed)"
    )
    watts_per_core: float = Field(
        10.0, gt=0, description="estimate only: watts per fully busy core (a figure you configure, not measured)"
    )
    idle_watts: float = Field(0.0, ge=0, description="estimate only: constant baseline added for wall time")
    sysfs_root: Path | None = Field(None, description=f"sysfs mount; default ${SYSFS_ENV} or /sys")

    def resolved_sysfs_root(self) -> Path:
        if self.sysfs_root is not None:
            return self.sysfs_root
        return Path(os.environ.get(SYSFS_ENV) or "/sys")
