"""The fallback for machines with no meter: an *estimate* from this process's CPU time.

joules = CPU seconds (user + system, this process and its waited-for children) x `watts_per_core`
         + `idle_watts` x wall seconds (optional baseline).
Both figures are configuration, not measurements, so this meter's source is `estimate-cpu-time` and every
Measurement it produces says `measured=False`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from edge_agent.energy.meter import Accumulator, Clock, Counter, EnergyMeter, PowerIntegral

BACKEND = "estimate"
SOURCE = "estimate-cpu-time"


def process_cpu_seconds() -> float:
    """CPU seconds used so far by this process (psutil, imported lazily)."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class CpuTimeEstimate(EnergyMeter):
    """Estimated joules from CPU time; domains `process-cpu` and, if configured, `idle-baseline`."""

    source = SOURCE
    measured = False

    def __init__(self, watts_per_core: float = 10.0, idle_watts: float = 0.0, clock: Clock = time.monotonic,
                 cpu_seconds: Callable[[], float] = process_cpu_seconds) -> None:
        if watts_per_core <= 0 or idle_watts < 0:
            raise ValueError(f"watts_per_core must be > 0 and idle_watts >= 0 (got {watts_per_core}, {idle_watts})")
        super().__init__(clock=clock, interval_s=None)  # both inputs are cumulative: nothing to sample
        self.watts_per_core = watts_per_core
        self.idle_watts = idle_watts
        self._cpu_seconds = cpu_seconds

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d["model"] = {"watts_per_core": self.watts_per_core, "idle_watts": self.idle_watts}
        return d

    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        acc: dict[str, Accumulator] = {"process-cpu": Counter(None)}
        if self.idle_watts > 0:
            baseline = PowerIntegral()
            baseline.needs_polling = False  # constant power: the trapezoid between any two reads is exact
            acc["idle-baseline"] = baseline
        return acc, {}

    def _read(self) -> dict[str, float | None]:
        return {"process-cpu": self._cpu_seconds() * self.watts_per_core, "idle-baseline": self.idle_watts}
