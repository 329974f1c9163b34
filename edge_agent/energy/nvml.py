"""NVIDIA GPU energy through NVML (`pynvml`, the module the `nvidia-ml-py` package installs).

Per GPU, the total-energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ since driver load, Volta and
newer) is used where the GPU supports it; otherwise board power (`nvmlDeviceGetPowerUsage`, mW) is sampled
and integrated. A GPU that supports neither is skipped with its reason; the meter is unavailable only when
no GPU is left. The NVML module is injectable so tests run against a fake one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from edge_agent.energy.meter import Accumulator, Clock, Counter, EnergyMeter, MeterUnavailable, PowerIntegral

log = logging.getLogger(__name__)

BACKEND = "nvml"
COUNTER, POWER = "energy-counter", "power-sampling"


def load_nvml() -> ModuleType:
    """Import pynvml lazily (a machine without NVIDIA never pays for it)."""
    try:
        import pynvml
    except ImportError as exc:
        raise MeterUnavailable(BACKEND, "the nvidia-ml-py package (module pynvml) is not installed") from exc
    return pynvml


class NvmlMeter(EnergyMeter):
    """Energy of all GPUs, or of the configured indices; domains are `gpu<index>`."""

    source = BACKEND

    def __init__(self, nvml: Any | None = None, gpus: Sequence[int] | None = None, clock: Clock = time.monotonic,
                 interval_s: float | None = 0.1) -> None:
        super().__init__(clock=clock, interval_s=interval_s)
        self._nvml = nvml
        self._wanted = list(gpus) if gpus is not None else None
        self._devices: dict[str, tuple[Any, str]] = {}  # domain -> (handle, method)
        self.skipped: list[dict[str, str]] = []  # GPUs left out and why
        self.methods: dict[str, str] = {}  # domain -> COUNTER or POWER, kept after close for reports
        self._initialised = False

    def probe(self) -> None:
        """Initialise NVML and choose a method per GPU; raise MeterUnavailable with the reason otherwise."""
        nv = self._nvml if self._nvml is not None else load_nvml()
        self._nvml = nv
        try:
            nv.nvmlInit()
        except nv.NVMLError as exc:
            raise MeterUnavailable(BACKEND, f"nvmlInit failed: {exc} (no NVIDIA driver or GPU)") from exc
        self._initialised = True
        try:
            count = int(nv.nvmlDeviceGetCount())
            indices = self._wanted if self._wanted is not None else list(range(count))
            devices: dict[str, tuple[Any, str]] = {}
            self.skipped = []
            for i in indices:
                if not 0 <= i < count:
                    self.skipped.append({"gpu": str(i), "reason": f"no such GPU (this machine has {count})"})
                    continue
                handle = nv.nvmlDeviceGetHandleByIndex(i)
                method, why = self._method(nv, handle)
                if method is None:
                    self.skipped.append({"gpu": str(i), "reason": why})
                else:
                    devices[f"gpu{i}"] = (handle, method)
                    if why:
                        log.info("nvml: gpu%d uses power sampling: %s", i, why)
        except nv.NVMLError as exc:
            self._shutdown()
            raise MeterUnavailable(BACKEND, f"NVML query failed: {exc}") from exc
        if not devices:
            self._shutdown()
            reasons = "; ".join(f"gpu{s['gpu']}: {s['reason']}" for s in self.skipped) or "no GPU found"
            raise MeterUnavailable(BACKEND, f"no GPU can be metered ({reasons})")
        self._devices = devices
        self.methods = {name: method for name, (_, method) in devices.items()}
        if any(m == POWER for _, m in devices.values()):
            self.source = "nvml-power"

    @staticmethod
    def _method(nv: Any, handle: Any) -> tuple[str | None, str]:
        """(method, why not the better one); method None when neither works."""
        try:
            nv.nvmlDeviceGetTotalEnergyConsumption(handle)
            return COUNTER, ""
        except nv.NVMLError as exc:  # NOT_SUPPORTED before Volta, on some vGPUs, ...
            counter_why = f"no energy counter ({exc})"
        try:
            nv.nvmlDeviceGetPowerUsage(handle)
            return POWER, counter_why
        except nv.NVMLError as exc:
            return None, f"{counter_why}; no power reading ({exc})"

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["methods"] = dict(self.methods)
        d["skipped_gpus"] = list(self.skipped)
        return d

    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        if not self._devices:
            self.probe()
        acc: dict[str, Accumulator] = {
            name: (Counter(None) if method == COUNTER else PowerIntegral())  # the mJ counter is 64-bit
            for name, (_, method) in self._devices.items()
        }
        return acc, {}

    def _read(self) -> dict[str, float | None]:
        nv = self._nvml
        out: dict[str, float | None] = {}
        for name, (handle, method) in self._devices.items():
            try:
                if method == COUNTER:
                    out[name] = nv.nvmlDeviceGetTotalEnergyConsumption(handle) / 1e3  # mJ -> J
                else:
                    out[name] = nv.nvmlDeviceGetPowerUsage(handle) / 1e3  # mW -> W
            except nv.NVMLError as exc:  # e.g. GPU lost: skip the sample, never take the agent down
                log.warning("nvml: %s read failed: %s", name, exc)
                out[name] = None
        return out

    def _release(self) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except self._nvml.NVMLError as exc:
                log.warning("nvml: shutdown failed: %s", exc)
            self._initialised = False
            self._devices = {}
