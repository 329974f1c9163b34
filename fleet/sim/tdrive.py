"""Reader for T-Drive taxi traces (`taxi_id,datetime,longitude,latitude`, datetime `YYYY-MM-DD HH:MM:SS`).

Positions are projected to local metres, equirectangular about the centre of the data's bounding box:
    x = R * (lon - lon0) * cos(lat0),   y = R * (lat - lat0)   (angles in radians, R = mean Earth radius),
good to well under 1% across a city. Times are seconds after the earliest fix in the data. Bad lines are skipped,
counted by reason and logged; they never stop the read.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fleet.sim.mobility import Trajectory

log = logging.getLogger(__name__)

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius
_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
_LOGGED_PER_REASON = 5  # the rest of a reason's lines go to debug, so a dirty file cannot flood the log


@dataclass
class TDriveData:
    """Trajectories by taxi id, the projection origin, and what was skipped."""

    trajectories: dict[str, Trajectory]
    lon0: float
    lat0: float
    t0: datetime | None
    skipped: Counter[str] = field(default_factory=Counter)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())


def project(lon: float, lat: float, lon0: float, lat0: float) -> tuple[float, float]:
    """Equirectangular projection of (lon, lat) about (lon0, lat0), metres east and north."""
    x = EARTH_RADIUS_M * math.radians(lon - lon0) * math.cos(math.radians(lat0))
    y = EARTH_RADIUS_M * math.radians(lat - lat0)
    return x, y


def read_tdrive(paths: Path | Iterable[Path], max_speed_mps: float | None = 70.0) -> TDriveData:
    """Read T-Drive files (a file, a directory of `*.txt`, or several paths) into trajectories.

    Skipped, by reason: `fields` (not 4 comma-separated fields), `time` (bad datetime), `number` (bad lon/lat),
    `range` (lon outside [-180, 180] or lat outside [-90, 90]), `duplicate time` (a second fix of a taxi at the
    same second), `speed` (a jump from the previous kept fix faster than `max_speed_mps`, the GPS glitches such
    traces carry; None disables the check), `unreadable file` (counted once per file). Fixes of a taxi are sorted
    by time first.
    """
    files = _expand(paths)
    skipped: Counter[str] = Counter()
    fixes: dict[str, list[tuple[datetime, float, float]]] = defaultdict(list)
    for path in files:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    reason, fix = _parse(line)
                    if fix is None:
                        _skip(skipped, reason, f"{path}:{lineno}", line)
                        continue
                    fixes[fix[0]].append(fix[1:])
        except OSError as e:
            _skip(skipped, "unreadable file", str(path), str(e))
    if not fixes:
        log.warning("no usable T-Drive fixes in %s (skipped %d lines)", [str(p) for p in files], sum(skipped.values()))
        return TDriveData({}, 0.0, 0.0, None, skipped)
    t0 = min(ts for taxi_fixes in fixes.values() for ts, _, _ in taxi_fixes)
    # Clean with a provisional origin (the speed check needs metres), then centre on the fixes that were kept.
    lon_p, lat_p = _centre([fx for taxi_fixes in fixes.values() for fx in taxi_fixes])
    kept = {taxi: _clean(taxi, sorted(f), lon_p, lat_p, max_speed_mps, skipped) for taxi, f in sorted(fixes.items())}
    lon0, lat0 = _centre([fx for taxi_fixes in kept.values() for fx in taxi_fixes])
    trajectories = {}
    for taxi, taxi_fixes in kept.items():
        ts = [(t - t0).total_seconds() for t, _, _ in taxi_fixes]
        xs, ys = zip(*(project(lon, lat, lon0, lat0) for _, lon, lat in taxi_fixes), strict=True)
        trajectories[taxi] = Trajectory(taxi, ts, xs, ys)
    if skipped:
        log.warning("T-Drive read skipped %d lines: %s", sum(skipped.values()), dict(skipped))
    return TDriveData(trajectories, lon0, lat0, t0, skipped)


def _expand(paths: Path | Iterable[Path]) -> list[Path]:
    """A file, a directory (its *.txt, sorted) or several of either."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    out: list[Path] = []
    for p in map(Path, items):
        out.extend(sorted(p.glob("*.txt")) if p.is_dir() else [p])
    return out


def _parse(line: str) -> tuple[str, tuple[str, datetime, float, float] | None]:
    """One line -> (reason, None) or ("", (taxi, time, lon, lat))."""
    parts = [p.strip() for p in line.strip().split(",")]
    if len(parts) != 4 or not parts[0]:
        return "fields", None
    try:
        ts = datetime.strptime(parts[1], _TIME_FORMAT)
    except ValueError:
        return "time", None
    try:
        lon, lat = float(parts[2]), float(parts[3])
    except ValueError:
        return "number", None
    if not (math.isfinite(lon) and math.isfinite(lat) and -180 <= lon <= 180 and -90 <= lat <= 90):
        return "range", None
    return "", (parts[0], ts, lon, lat)


def _centre(fixes: list[tuple[datetime, float, float]]) -> tuple[float, float]:
    """Centre (lon, lat) of the fixes' bounding box."""
    lons = [lon for _, lon, _ in fixes]
    lats = [lat for _, _, lat in fixes]
    return (min(lons) + max(lons)) / 2, (min(lats) + max(lats)) / 2


def _clean(
    taxi: str,
    fixes: list[tuple[datetime, float, float]],
    lon0: float,
    lat0: float,
    max_speed_mps: float | None,
    skipped: Counter[str],
) -> list[tuple[datetime, float, float]]:
    """A taxi's time-sorted fixes without duplicate seconds and impossible jumps (from the last kept fix)."""
    kept: list[tuple[datetime, float, float]] = []
    for ts, lon, lat in fixes:
        if kept:
            tp, lonp, latp = kept[-1]
            dt = (ts - tp).total_seconds()
            if dt <= 0:
                _skip(skipped, "duplicate time", taxi, f"{ts}")
                continue
            if max_speed_mps is not None:
                (x, y), (xp, yp) = project(lon, lat, lon0, lat0), project(lonp, latp, lon0, lat0)
                if math.hypot(x - xp, y - yp) / dt > max_speed_mps:
                    _skip(skipped, "speed", taxi, f"{ts} {lon},{lat}")
                    continue
        kept.append((ts, lon, lat))
    return kept


def _skip(skipped: Counter[str], reason: str, where: str, text: str) -> None:
    skipped[reason] += 1
    level = logging.WARNING if skipped[reason] <= _LOGGED_PER_REASON else logging.DEBUG
    log.log(level, "T-Drive: skipped %s (%s): %r", where, reason, text.strip()[:120])
