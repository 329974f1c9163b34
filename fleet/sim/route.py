"""When a vehicle leaves a disc of coverage by following its own route (the trajectory's waypoints).

A navigation system knows the route ahead; the fleet plays that part from the trajectory, and vehicles report
the result in their status (`AgentStatus.exit_in_s`), which the RSU prefers over its straight-line estimate.
"""

from __future__ import annotations

import math

import numpy as np

from fleet.sim.mobility import Trajectory


def route_exit_s(traj: Trajectory, t: float, cx: float, cy: float, radius: float, horizon_s: float) -> float:
    """Seconds from trajectory time `t` until the route first leaves the disc ((cx, cy), `radius`).

    0.0 when outside now; `horizon_s` when the route stays inside for `horizon_s` seconds or ends inside (a
    lower bound, as the status field documents). Between waypoints the motion is linear, so each segment's
    exit is the larger root of |p + s (q - p) - c| = r for s in [0, 1].
    """
    if not (radius > 0 and horizon_s >= 0 and math.isfinite(t)):
        raise ValueError(f"need radius > 0, horizon_s >= 0 and a finite t (got {radius}, {horizon_s}, {t})")
    px, py = traj.position(t)
    r2 = radius * radius
    if (px - cx) ** 2 + (py - cy) ** 2 > r2:
        return 0.0
    end = t + horizon_s
    t_prev = t
    for k in range(int(np.searchsorted(traj.t, t, side="right")), len(traj)):
        tk, qx, qy = float(traj.t[k]), float(traj.x[k]), float(traj.y[k])
        dx, dy = qx - px, qy - py
        a = dx * dx + dy * dy
        if a > 0.0:
            ox, oy = px - cx, py - cy
            b = ox * dx + oy * dy
            c = ox * ox + oy * oy - r2  # <= 0: p is inside
            s = (-b + math.sqrt(max(b * b - a * c, 0.0))) / a
            if s <= 1.0:
                return min(horizon_s, max(0.0, t_prev + s * (tk - t_prev) - t))
        if tk >= end:
            return horizon_s
        t_prev, px, py = tk, qx, qy
    return horizon_s  # the route ends inside the disc
