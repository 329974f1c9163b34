"""NVIDIA Jetson power rails from the INA3221 monitors, integrated on the monotonic clock.

Two kernel interfaces:
  - mainline hwmon driver (JetPack 5/6, Orin): `/sys/class/hwmon/hwmonN/name` == `ina3221`, per channel
    `inK_label`, `inK_input` (bus voltage, mV) and `currK_input` (mA); power = mV * mA / 1e6 W.
  - older `ina3221x` IIO driver (JetPack 4: Nano, TX2, Xavier): `/sys/bus/i2c/drivers/ina3221x/*/iio:device*/`
    with `rail_name_K` and `in_powerK_input` (mW).
The board input rail (`VDD_IN`, `POM_5V_IN`) measures everything the module draws, so it alone is the total
and the other rails are sub-domains inside it. Boards without one (AGX Xavier/Orin) get the sum of their
rails, which misses whatever is not on a monitored rail: the meter then says `lower_bound` and its source
is `jetson-ina3221-lower-bound`, so the label survives onto the wire.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.energy.meter import Accumulator, Clock, EnergyMeter, MeterUnavailable, PowerIntegral, read_sysfs

log = logging.getLogger(__name__)

BACKEND = "jetson"
SOURCE = "jetson-ina3221"
SOURCE_LOWER_BOUND = "jetson-ina3221-lower-bound"
_UNUSED_LABELS = {"NC", ""}


@dataclass(frozen=True)
class Rail:
    """One monitored rail: power is `volt_file * curr_file * scale` (hwmon) or `power_file * scale` (IIO)."""

    name: str
    power_file: Path | None = None
    volt_file: Path | None = None
    curr_file: Path | None = None
    scale: float = 1e-3

    def watts(self, read_text: Callable[[Path], str]) -> float:
        if self.power_file is not None:
            return int(read_text(self.power_file)) * self.scale
        assert self.volt_file is not None and self.curr_file is not None
        return int(read_text(self.volt_file)) * int(read_text(self.curr_file)) * self.scale


def discover_rails(sysfs_root: Path, read_text: Callable[[Path], str] = read_sysfs) -> list[Rail]:
    """All INA3221 rails under `sysfs_root` (hwmon first, then IIO), names made unique."""
    rails = _hwmon_rails(sysfs_root, read_text) + _iio_rails(sysfs_root, read_text)
    seen: dict[str, int] = {}
    unique = []
    for r in rails:
        n = seen.get(r.name, 0)
        seen[r.name] = n + 1
        unique.append(r if n == 0 else Rail(f"{r.name}#{n + 1}", r.power_file, r.volt_file, r.curr_file, r.scale))
    return unique


def _hwmon_rails(root: Path, read_text: Callable[[Path], str]) -> list[Rail]:
    base = root / "class" / "hwmon"
    rails: list[Rail] = []
    if not base.is_dir():
        return rails
    for hw in sorted(base.iterdir(), key=lambda p: p.name):
        name_file = hw / "name"
        if not name_file.exists() or read_text(name_file).strip() != "ina3221":
            continue
        for k in (1, 2, 3):
            label, volt, curr = hw / f"in{k}_label", hw / f"in{k}_input", hw / f"curr{k}_input"
            if not (label.exists() and volt.exists() and curr.exists()):
                continue
            enable = hw / f"in{k}_enable"
            if enable.exists() and read_text(enable).strip() == "0":
                continue
            rail = read_text(label).strip()
            if rail not in _UNUSED_LABELS:
                rails.append(Rail(rail, volt_file=volt, curr_file=curr, scale=1e-6))  # mV * mA = µW
    return rails


def _iio_rails(root: Path, read_text: Callable[[Path], str]) -> list[Rail]:
    rails: list[Rail] = []
    for dev in sorted((root / "bus" / "i2c" / "drivers" / "ina3221x").glob("*/iio:device*")):
        for k in (0, 1, 2):
            label, power = dev / f"rail_name_{k}", dev / f"in_power{k}_input"
            if label.exists() and power.exists():
                rail = read_text(label).strip()
                if rail not in _UNUSED_LABELS:
                    rails.append(Rail(rail, power_file=power, scale=1e-3))  # mW
    return rails


class JetsonMeter(EnergyMeter):
    """Board energy from the input rail, or a labelled lower bound from the sum of rails."""

    source = SOURCE

    def __init__(self, sysfs_root: Path, input_rails: Sequence[str] = ("VDD_IN", "POM_5V_IN"),
                 clock: Clock = time.monotonic, interval_s: float | None = 0.1,
                 read_text: Callable[[Path], str] = read_sysfs) -> None:
        super().__init__(clock=clock, interval_s=interval_s)
        self._root = sysfs_root
        self._input_names = {n.upper() for n in input_rails}
        self._read_text = read_text
        self._rails: list[Rail] = []
        self._total: list[str] = []

    def probe(self) -> None:
        """Find the rails and read each once; raise MeterUnavailable with the reason otherwise."""
        try:
            rails = discover_rails(self._root, self._read_text)
        except (OSError, ValueError) as exc:
            raise MeterUnavailable(BACKEND, f"cannot read INA3221 sysfs under {self._root}: {exc}") from exc
        if not rails:
            raise MeterUnavailable(BACKEND, f"no INA3221 rails under {self._root}/class/hwmon or "
                                   f"{self._root}/bus/i2c/drivers/ina3221x (not a Jetson)")
        for r in rails:
            try:
                r.watts(self._read_text)
            except (OSError, ValueError) as exc:
                raise MeterUnavailable(BACKEND, f"cannot read rail {r.name}: {exc}") from exc
        inputs = [r.name for r in rails if r.name.upper() in self._input_names]
        self._rails = rails
        if inputs:
            self._total = inputs[:1]  # the board input already contains every other rail
            self.source, self.lower_bound = SOURCE, False
        else:
            self._total = [r.name for r in rails]
            self.source, self.lower_bound = SOURCE_LOWER_BOUND, True
            log.info("jetson: no board input rail among %s; reporting their sum as a lower bound",
                     [r.name for r in rails])

    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        if not self._rails:
            self.probe()
        covered: dict[str, Accumulator] = {n: PowerIntegral() for n in self._total}
        subs: dict[str, Accumulator] = {r.name: PowerIntegral() for r in self._rails if r.name not in covered}
        return covered, subs

    def _read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for r in self._rails:
            try:
                out[r.name] = r.watts(self._read_text)
            except (OSError, ValueError) as exc:
                log.warning("jetson: cannot read rail %s: %s", r.name, exc)
                out[r.name] = None
        return out
