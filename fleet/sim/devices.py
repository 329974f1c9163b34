"""Device profiles of the simulated vehicles: training throughput, power and memory (docs/algorithms.md section 2).

These are model constants, not measurements. The public figures below are peak numbers from vendor spec sheets;
the `flops` field is an *effective* training throughput, a fraction of the fp16 peak, because LoRA fine-tuning of a
small transformer at batch 16 keeps tensor cores far from saturated. Change them through config, not here.
"""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class DeviceProfile(BaseModel):
    """A vehicle's compute and radio, as the fleet models them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, description="profile name, e.g. jetson-orin-nano")
    flops: float = Field(gt=0, description="effective training throughput, FLOP/s (modelled)")
    power_w: float = Field(gt=0, description="board power while training, W (modelled)")
    idle_w: float = Field(ge=0, description="board power while idle, W (modelled)")
    memory_gb: float = Field(gt=0, description="memory available to training, GB")
    rx_w: float = Field(gt=0, description="radio power while receiving, W (download energy; modelled)")
    max_rank: int = Field(ge=1, description="largest LoRA rank the device is allowed to train")


# Sources (rounded, public): NVIDIA Jetson Orin Nano 8GB: 40 TOPS sparse INT8 (67 with the 2024 "Super" clocks),
# 7-15 W modes, 8 GB shared LPDDR5; Jetson Xavier NX: 21 TOPS INT8, 10-20 W, 8 GB; Jetson AGX Orin 32GB: 200 TOPS
# sparse INT8, 15-40 W, 32 GB; x86 vehicle PC with an RTX A4000 (16 GB, ~19 TFLOPS fp32, 140 W) plus ~60 W of host.
# Effective fp16 training throughput taken as ~2-3% of the sparse-INT8 headline (dense fp16 is ~1/4 of it,
# and small-batch LoRA reaches ~10% of dense fp16 peak). Radio: receiving costs about 1 W (LTE modem power measured
# at low downlink throughput, Huang et al., MobiSys 2012); the transmit power is the channel preset's, one per fleet.
# max_rank: 16 on the 8 GB shared-memory boards to leave headroom for the OS and the base model.
BUILTIN_PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile(name="jetson-orin-nano", flops=1.0e12, power_w=15.0, idle_w=5.0, memory_gb=8.0,
                      rx_w=1.0, max_rank=16),
        DeviceProfile(name="jetson-xavier-nx", flops=0.5e12, power_w=15.0, idle_w=4.5, memory_gb=8.0,
                      rx_w=1.0, max_rank=16),
        DeviceProfile(name="jetson-agx-orin", flops=5.0e12, power_w=40.0, idle_w=10.0, memory_gb=32.0,
                      rx_w=1.0, max_rank=32),
        DeviceProfile(name="x86-dgpu", flops=10.0e12, power_w=200.0, idle_w=50.0, memory_gb=16.0,
                      rx_w=1.0, max_rank=32),
    )
}


class UnknownDevice(KeyError):
    """A device profile name that is neither built in nor supplied."""


def get_profile(name: str, extra: dict[str, DeviceProfile] | None = None) -> DeviceProfile:
    """Look up a profile by name, in `extra` (config-supplied profiles) first, then the built-ins."""
    table = {**BUILTIN_PROFILES, **(extra or {})}
    if name not in table:
        log.warning("unknown device profile %r", name)
        raise UnknownDevice(f"unknown device profile {name!r}; known: {sorted(table)}")
    return table[name]
