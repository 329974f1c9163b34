"""Builders of fake sysfs trees (RAPL powercap, Jetson INA3221 hwmon and IIO) and a fake NVML module.

Each builder writes the same files, with the same units, as the kernel driver it imitates, so the
meters read them through their ordinary code path. Tests then set values and advance a `FakeClock`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self, t: float = 100.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, dt: float) -> None:
        self.t += dt


def _write(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


class RaplTree:
    """`<root>/devices/virtual/powercap/<family>/<zone>` plus the `<root>/class/powercap/<zone>` symlinks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zones: dict[str, Path] = {}
        (root / "class" / "powercap").mkdir(parents=True, exist_ok=True)

    def add_zone(self, zone: str, name: str, energy_uj: int = 0, max_range_uj: int | None = 262143328850) -> Path:
        family = zone.split(":")[0]
        parts = zone.split(":")
        parent = self.root / "devices" / "virtual" / "powercap" / family
        if len(parts) == 3:  # a sub-zone lives inside its package's directory
            parent = self.zones[f"{parts[0]}:{parts[1]}"]
        d = parent / zone
        _write(d / "name", name)
        _write(d / "energy_uj", energy_uj)
        if max_range_uj is not None:
            _write(d / "max_energy_range_uj", max_range_uj)
        (self.root / "class" / "powercap" / zone).symlink_to(d)
        self.zones[zone] = d
        return d

    def set_energy(self, zone: str, energy_uj: int) -> None:
        _write(self.zones[zone] / "energy_uj", energy_uj)


class JetsonHwmonTree:
    """Mainline ina3221 hwmon (JetPack 5/6): `inK_label`, `inK_input` (mV), `currK_input` (mA)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rails: dict[str, tuple[Path, int]] = {}
        self._n = 0

    def add_chip(self, labels: list[str], chip_name: str = "ina3221") -> Path:
        d = self.root / "class" / "hwmon" / f"hwmon{self._n}"
        self._n += 1
        _write(d / "name", chip_name)
        for k, label in enumerate(labels, start=1):
            _write(d / f"in{k}_label", label)
            _write(d / f"in{k}_input", 0)
            _write(d / f"curr{k}_input", 0)
            _write(d / f"in{k}_enable", 1)
            self.rails.setdefault(label, (d, k))
        return d

    def set_rail(self, label: str, millivolts: int, milliamps: int) -> None:
        d, k = self.rails[label]
        _write(d / f"in{k}_input", millivolts)
        _write(d / f"curr{k}_input", milliamps)


class JetsonIioTree:
    """JetPack 4 `ina3221x` IIO driver: `rail_name_K` and `in_powerK_input` (mW)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.rails: dict[str, tuple[Path, int]] = {}

    def add_chip(self, address: str, labels: list[str]) -> Path:
        d = self.root / "bus" / "i2c" / "drivers" / "ina3221x" / address / "iio:device0"
        for k, label in enumerate(labels):
            _write(d / f"rail_name_{k}", label)
            _write(d / f"in_power{k}_input", 0)
            self.rails[label] = (d, k)
        return d

    def set_power(self, label: str, milliwatts: int) -> None:
        d, k = self.rails[label]
        _write(d / f"in_power{k}_input", milliwatts)


# --- a fake NVML module: the subset of pynvml the meter calls, with pynvml's error shape ----------
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_GPU_IS_LOST = 15


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return {3: "Not Supported", 12: "NVML Shared Library Not Found", 15: "GPU is lost"}.get(self.value, "Unknown")


@dataclass
class FakeGpu:
    """energy_mj/power_mw None means NVML answers NOT_SUPPORTED; `lost` makes every read fail."""

    energy_mj: int | None = 0
    power_mw: int | None = 0
    lost: bool = False


@dataclass
class FakeNvml:
    gpus: list[FakeGpu] = field(default_factory=list)
    init_error: int | None = None
    initialised: int = 0
    NVMLError: type[NVMLError] = NVMLError
    NVML_ERROR_NOT_SUPPORTED: int = NVML_ERROR_NOT_SUPPORTED

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeGpu) -> int:
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if h.energy_mj is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.energy_mj

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        if h.lost:
            raise NVMLError(NVML_ERROR_GPU_IS_LOST)
        if h.power_mw is None:
            raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
        return h.power_mw
