"""Pick the best energy meter this machine has, and say why each better one was not used.

Order (`ORDER`), best first:
  1. jetson:   the INA3221 board input rail measures the whole module (CPU, GPU, memory) on the vehicle
               computers fedrank targets; tried first because JetPack 6 may also ship a partial NVML that
               would otherwise win with a GPU-only figure. The probe is a cheap sysfs scan elsewhere.
  2. nvml:     a discrete NVIDIA GPU (counter or power), where training runs when CUDA is present.
  3. rapl:     CPU package (+ DRAM) counters on x86 hosts.
  4. estimate: CPU time x configured watts per core; never fails, labelled `measured=False`.
The sysfs root comes from the config or `FEDRANK_SYSFS_ROOT` (default /sys) and the NVML module is
injectable, so the same code runs on fake trees in tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.estimate import CpuTimeEstimate, process_cpu_seconds
from edge_agent.energy.jetson import JetsonMeter
from edge_agent.energy.meter import Clock, EnergyMeter, MeterUnavailable, read_sysfs
from edge_agent.energy.nvml import NvmlMeter
from edge_agent.energy.rapl import RaplMeter

log = logging.getLogger(__name__)

ORDER: tuple[str, ...] = ("jetson", "nvml", "rapl", "estimate")


def build_meter(backend: str, config: EnergyConfig, *, nvml_module: Any | None = None, clock: Clock = time.monotonic,
                read_text: Callable[[Path], str] = read_sysfs,
                cpu_seconds: Callable[[], float] = process_cpu_seconds) -> EnergyMeter:
    """Construct and probe one backend; raise MeterUnavailable(backend, reason) if it cannot measure here."""
    root = config.resolved_sysfs_root()
    meter: EnergyMeter
    if backend == "jetson":
        meter = JetsonMeter(root, config.jetson_input_rails, clock=clock, interval_s=config.sample_interval_s,
                            read_text=read_text)
        meter.probe()
    elif backend == "nvml":
        meter = NvmlMeter(nvml_module, config.gpus, clock=clock, interval_s=config.sample_interval_s)
        meter.probe()
    elif backend == "rapl":
        meter = RaplMeter(root, clock=clock, interval_s=config.counter_poll_s, read_text=read_text)
        meter.probe()
    elif backend == "estimate":
        meter = CpuTimeEstimate(config.watts_per_core, config.idle_watts, clock=clock, cpu_seconds=cpu_seconds)
        try:
            cpu_seconds()
        except Exception as exc:  # psutil missing or /proc unreadable: say so rather than crash
            raise MeterUnavailable(backend, f"cannot read this process's CPU time: {exc}") from exc
    else:
        raise MeterUnavailable(backend, f"unknown backend (choose one of {', '.join(ORDER)})")
    return meter


def detect_meter(config: EnergyConfig | None = None, *, nvml_module: Any | None = None,
                 clock: Clock = time.monotonic, read_text: Callable[[Path], str] = read_sysfs,
                 cpu_seconds: Callable[[], float] = process_cpu_seconds) -> EnergyMeter:
    """The first backend in `ORDER` that works (or the configured one), not yet opened.

    Args:
        config: energy settings; `backend="auto"` tries `ORDER`, any other value only that backend.
        nvml_module, clock, read_text, cpu_seconds: injectable for tests.
    Returns:
        the meter, with `meter.tried` listing {backend, reason} for every better backend that was not used.
    Raises:
        MeterUnavailable: a configured backend cannot measure here, or (auto) not even the estimate works.
    """
    config = config or EnergyConfig()
    order = ORDER if config.backend == "auto" else (config.backend,)
    tried: list[dict[str, str]] = []
    for backend in order:
        try:
            meter = build_meter(backend, config, nvml_module=nvml_module, clock=clock, read_text=read_text,
                                cpu_seconds=cpu_seconds)
        except MeterUnavailable as exc:
            log.info("energy: %s not used: %s", backend, exc.reason)
            tried.append({"backend": backend, "reason": exc.reason})
            continue
        meter.tried = tried
        if tried:
            log.info("energy: using %s (%s); not used: %s", meter.source, backend,
                     "; ".join(f"{t['backend']}: {t['reason']}" for t in tried))
        return meter
    reasons = "; ".join(f"{t['backend']}: {t['reason']}" for t in tried)
    raise MeterUnavailable(config.backend, f"no energy meter works here ({reasons})")
