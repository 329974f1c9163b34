"""RAPL through the Linux powercap sysfs (Intel, and AMD which exposes the same interface).

Zones used, and why nothing is counted twice:
  - `intel-rapl:N` named `package-N`: the whole socket; this is a covered domain.
  - `intel-rapl:N:M` named `dram`: memory, which RAPL reports *outside* the package even though the
    kernel lists it under it; a covered domain of its own.
  - other sub-zones (`core`, `uncore`/PP0, PP1) are already inside their package: sub-domains, not summed.
  - `psys` (whole platform, contains the packages) is left out so packages are not counted twice.
  - `intel-rapl-mmio:N` reads the same package energy through MMIO; used only when no MSR zone exists.
Counters are microjoules that wrap at `max_energy_range_uj`; the meter polls far more often than the
shortest wrap period (>= ~60 s at any CPU power we expect), so each wrap is seen once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

from edge_agent.energy.meter import Accumulator, Clock, Counter, EnergyMeter, MeterUnavailable, read_sysfs

log = logging.getLogger(__name__)

BACKEND = "rapl"
# A generous ceiling on one zone's power; the poll period is kept under a quarter of range / this power.
MAX_ZONE_WATTS = 500.0
_ZONE = re.compile(r"^(intel-rapl|intel-rapl-mmio):(\d+)(?::(\d+))?$")

# The fixes named when energy_uj is root-only (kernel >= 5.10 and backports, since CVE-2020-8694).
PERMISSION_FIX = (
    "energy_uj is readable by root only (kernel mitigation of CVE-2020-8694). Fix one of: "
    "(a) a tmpfiles rule /etc/tmpfiles.d/fedrank-energy.conf with the lines "
    "'z /sys/class/powercap/intel-rapl:*/energy_uj 0440 root fedrank - -' and "
    "'z /sys/class/powercap/intel-rapl-mmio:*/energy_uj 0440 root fedrank - -', then "
    "`systemd-tmpfiles --create /etc/tmpfiles.d/fedrank-energy.conf`; "
    "(b) a udev rule /etc/udev/rules.d/99-fedrank-energy.rules: "
    "'ACTION==\"add\", SUBSYSTEM==\"powercap\", KERNEL==\"intel-rapl*:*\", "
    "RUN+=\"/bin/chgrp fedrank /sys%p/energy_uj\", RUN+=\"/bin/chmod g+r /sys%p/energy_uj\"'; "
    "(c) give the service CAP_DAC_READ_SEARCH (AmbientCapabilities=CAP_DAC_READ_SEARCH; broader: it bypasses "
    "all read permission checks). The service user must be in group fedrank for (a) and (b)."
)


class RaplZone:
    """One powercap zone: its domain name, energy file and wrap range (joules)."""

    def __init__(self, domain: str, path: Path, wrap_j: float | None, covered: bool) -> None:
        self.domain, self.path, self.wrap_j, self.covered = domain, path, wrap_j, covered


def discover_zones(sysfs_root: Path, read_text: Callable[[Path], str] = read_sysfs) -> list[RaplZone]:
    """Zones under `<sysfs>/class/powercap`, classified as covered domains or sub-domains (see module doc)."""
    base = sysfs_root / "class" / "powercap"
    if not base.is_dir():
        raise MeterUnavailable(BACKEND, f"no powercap sysfs at {base} (not Linux, no RAPL driver, or masked in a "
                               "container)")
    found: dict[str, list[RaplZone]] = {"intel-rapl": [], "intel-rapl-mmio": []}
    for entry in sorted(base.iterdir(), key=lambda p: p.name):
        m = _ZONE.match(entry.name)
        if m is None or not (entry / "energy_uj").exists():
            continue
        family, pkg, sub = m.group(1), m.group(2), m.group(3)
        name = read_text(entry / "name").strip() if (entry / "name").exists() else entry.name
        wrap_j = _wrap(entry, read_text)
        if sub is None:
            if name == "psys":  # the platform domain contains the packages
                continue
            domain = name if name.startswith("package") else f"{name}-{pkg}"
            found[family].append(RaplZone(domain, entry / "energy_uj", wrap_j, covered=True))
        else:
            covered = name == "dram"  # RAPL DRAM energy is outside the package energy
            found[family].append(RaplZone(f"{name}-{pkg}", entry / "energy_uj", wrap_j, covered=covered))
    zones = found["intel-rapl"] or found["intel-rapl-mmio"]
    if not any(z.covered for z in zones):
        raise MeterUnavailable(BACKEND, f"no RAPL package zone under {base}")
    return zones


def _wrap(zone_dir: Path, read_text: Callable[[Path], str]) -> float | None:
    try:
        return int(read_text(zone_dir / "max_energy_range_uj")) / 1e6
    except (OSError, ValueError):
        log.warning("rapl: %s has no readable max_energy_range_uj; wrap-around cannot be corrected", zone_dir)
        return None


class RaplMeter(EnergyMeter):
    """Package (+ DRAM) energy from RAPL counters; see the module doc for what is covered."""

    source = BACKEND

    def __init__(self, sysfs_root: Path, clock: Clock = time.monotonic, interval_s: float | None = 1.0,
                 read_text: Callable[[Path], str] = read_sysfs) -> None:
        super().__init__(clock=clock, interval_s=interval_s)
        self._root = sysfs_root
        self._read_text = read_text
        self._zones: list[RaplZone] = []

    def probe(self) -> None:
        """Find the zones and read each once; raise MeterUnavailable with the reason (and fix) otherwise."""
        zones = discover_zones(self._root, self._read_text)
        for z in zones:
            try:
                int(self._read_text(z.path))
            except PermissionError as exc:
                raise MeterUnavailable(BACKEND, f"cannot read {z.path}: {PERMISSION_FIX}") from exc
            except (OSError, ValueError) as exc:
                raise MeterUnavailable(BACKEND, f"cannot read {z.path}: {exc}") from exc
        self._zones = zones
        wraps = [z.wrap_j for z in zones if z.wrap_j]
        if self.interval_s and wraps:
            safe = min(wraps) / (4 * MAX_ZONE_WATTS)
            if self.interval_s > safe:  # a second wrap between two polls would go unseen
                log.warning("rapl: poll period %.3g s shortened to %.3g s (counter wraps after %.0f J)",
                            self.interval_s, safe, min(wraps))
                self.interval_s = safe

    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        if not self._zones:
            self.probe()
        covered: dict[str, Accumulator] = {z.domain: Counter(z.wrap_j) for z in self._zones if z.covered}
        subs: dict[str, Accumulator] = {z.domain: Counter(z.wrap_j) for z in self._zones if not z.covered}
        return covered, subs

    def _read(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for z in self._zones:
            try:
                out[z.domain] = int(self._read_text(z.path)) / 1e6
            except (OSError, ValueError) as exc:
                log.warning("rapl: cannot read %s: %s", z.path, exc)
                out[z.domain] = None
        return out
