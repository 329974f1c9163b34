"""Where the fleet drives and where its RSUs stand: the road grid, a T-Drive file, or a SUMO network.

Grid: RSUs along the middle road (fleet.world.rsu_layout). Traces (T-Drive, SUMO): RSUs at configured lon/lat
(SUMO), else spread over the trace's bounding box, each moved to the nearest recorded vehicle position so that
it stands on a road.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from fleet.config import FleetConfig
from fleet.sim.mobility import Trajectory
from fleet.sim.sumo import SumoError, sumo_trace
from fleet.sim.tdrive import project, read_tdrive

log = logging.getLogger(__name__)
Sites = dict[str, tuple[float, float, float]]  # rsu id -> (x, y, radius)


class MobilityError(ValueError):
    """A mobility source the fleet cannot use (missing file, too few usable vehicles); names the field."""


def spread_sites(trajectories: list[Trajectory], n: int, radius: float) -> Sites:
    """`n` RSUs at the centres of a near-square grid of cells over the bounding box of every waypoint, each moved
    to the nearest waypoint (on the road network)."""
    xs = np.concatenate([t.x for t in trajectories])
    ys = np.concatenate([t.y for t in trajectories])
    if xs.size == 0:
        raise MobilityError("mobility: no positions to place RSUs on")
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    sites: Sites = {}
    for k in range(n):
        i, j = k % cols, k // cols
        cx = x0 + (i + 0.5) / cols * (x1 - x0)
        cy = y0 + (j + 0.5) / rows * (y1 - y0)
        m = int(np.argmin((xs - cx) ** 2 + (ys - cy) ** 2))
        sites[f"rsu{k}"] = (float(xs[m]), float(ys[m]), radius)
    return sites


def trace_layout(cfg: FleetConfig, horizon_s: float, cache_dir: Path | None = None) -> tuple[list[Trajectory], Sites]:
    """Trajectories and RSU sites of a T-Drive file (`mobility: PATH`) or a SUMO run (`mobility: sumo`)."""
    lonlat: list[tuple[float, float]] | None = None
    if cfg.mobility == "sumo":
        s = cfg.sumo
        n = s.vehicles if s.vehicles is not None else cfg.vehicles
        if n < cfg.vehicles:
            raise SumoError(f"sumo.vehicles: {n} is fewer than the fleet's {cfg.vehicles} vehicles")
        path = sumo_trace(s.network, cfg.seed if s.seed is None else s.seed,
                          s.duration_s if s.duration_s is not None else horizon_s, n, cache_dir)
        lonlat = s.rsu_lonlat
        where = f"sumo.network {s.network!r}"
    else:
        path = Path(cfg.mobility)
        if not path.exists():
            raise MobilityError(f"mobility: {path} is neither 'grid', 'sumo' nor an existing T-Drive file or directory")
        where = f"mobility {path}"
    data = read_tdrive(path)
    usable = [t for t in data.trajectories.values() if len(t) >= 2]
    if len(usable) < cfg.vehicles:
        raise MobilityError(f"{where}: {len(usable)} usable vehicles (skipped lines: {dict(data.skipped)}), the fleet "
                         f"needs {cfg.vehicles}")
    trajs = usable[: cfg.vehicles]
    if lonlat:
        if len(lonlat) != cfg.rsus:
            raise SumoError(f"sumo.rsu_lonlat: {len(lonlat)} sites for {cfg.rsus} RSUs")
        sites = {f"rsu{k}": (*project(lon, lat, data.lon0, data.lat0), cfg.rsu_radius_m)
                 for k, (lon, lat) in enumerate(lonlat)}
    else:
        sites = spread_sites(trajs, cfg.rsus, cfg.rsu_radius_m)
    log.info("%s: %d vehicles, RSUs at %s", where, len(trajs), {k: (round(x), round(y)) for k, (x, y, _) in
                                                               sites.items()})
    return trajs, sites
