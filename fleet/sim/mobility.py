"""Modelled vehicle mobility: trajectories on a Manhattan road grid, and RSUs with circular coverage.

Positions are metres in a local plane; times are seconds from the start of the simulation. A `Trajectory` is a
list of timed waypoints with piecewise-linear interpolation, so T-Drive traces (fleet.sim.tdrive) and the
synthetic grid produce the same type. The agents see only (x, y) and (vx, vy) (docs/algorithms.md section 6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

RsuSpec = tuple[str, float, float, float]  # (id, cx, cy, radius_m)


class Trajectory:
    """Timed waypoints of one vehicle; position and velocity between them by linear interpolation.

    Before the first waypoint the vehicle sits at it, after the last it stays at the last (velocity 0).
    """

    def __init__(self, vehicle_id: str, t: Sequence[float], x: Sequence[float], y: Sequence[float]) -> None:
        self.vehicle_id = vehicle_id
        self.t = np.asarray(t, dtype=float)  # (n,)
        self.x = np.asarray(x, dtype=float)  # (n,)
        self.y = np.asarray(y, dtype=float)  # (n,)
        if not (self.t.ndim == 1 and self.t.shape == self.x.shape == self.y.shape and self.t.size >= 1):
            raise ValueError(f"{vehicle_id}: t, x, y must be 1-D of one length >= 1")
        if not (np.isfinite(self.t).all() and np.isfinite(self.x).all() and np.isfinite(self.y).all()):
            raise ValueError(f"{vehicle_id}: waypoints must be finite")
        if (np.diff(self.t) <= 0).any():
            raise ValueError(f"{vehicle_id}: waypoint times must strictly increase")

    @property
    def start_s(self) -> float:
        return float(self.t[0])

    @property
    def end_s(self) -> float:
        return float(self.t[-1])

    def position(self, t: float) -> tuple[float, float]:
        return float(np.interp(t, self.t, self.x)), float(np.interp(t, self.t, self.y))

    def velocity(self, t: float) -> tuple[float, float]:
        """Velocity of the segment that starts at or before `t` (right-continuous at waypoints), m/s."""
        i = int(np.searchsorted(self.t, t, side="right")) - 1
        if i < 0 or i >= self.t.size - 1:
            return 0.0, 0.0
        dt = self.t[i + 1] - self.t[i]
        return float((self.x[i + 1] - self.x[i]) / dt), float((self.y[i + 1] - self.y[i]) / dt)

    def __len__(self) -> int:
        return int(self.t.size)


@dataclass(frozen=True)
class RoadGrid:
    """Intersections at (i * block_m, j * block_m) for 0 <= i < nx, 0 <= j < ny; roads join neighbours."""

    nx: int = 10
    ny: int = 10
    block_m: float = 200.0

    def __post_init__(self) -> None:
        if self.nx < 2 or self.ny < 2 or not (self.block_m > 0):
            raise ValueError(f"grid needs nx, ny >= 2 and block_m > 0 (got {self.nx}, {self.ny}, {self.block_m})")

    def inside(self, i: int, j: int) -> bool:
        return 0 <= i < self.nx and 0 <= j < self.ny


_HEADINGS = ((1, 0), (0, 1), (-1, 0), (0, -1))  # E, N, W, S; left turn = next index


def grid_trajectories(
    n_vehicles: int,
    duration_s: float,
    grid: RoadGrid | None = None,
    seed: int = 0,
    speed_mps: tuple[float, float] = (8.0, 15.0),
    p_straight: float = 0.5,
    stop_prob: float = 0.2,
    stop_s: tuple[float, float] = (5.0, 20.0),
) -> list[Trajectory]:
    """Synthetic urban trajectories on a Manhattan grid, deterministic for a seed (modelled).

    Each vehicle starts at a random point of a random road, drives each block at a speed drawn uniformly from
    `speed_mps` (urban 8-15 m/s = 29-54 km/h), and at each intersection may stop (traffic light, `stop_prob`,
    `stop_s` seconds), then goes straight with `p_straight` or turns left/right with the rest split evenly;
    turns that leave the grid are dropped and a dead end makes it turn back. Vehicle k draws from its own
    stream `(seed, k)`, so adding vehicles does not change the others.
    """
    grid = grid or RoadGrid()
    if n_vehicles < 0 or not (duration_s > 0) or not (0 < speed_mps[0] <= speed_mps[1]):
        raise ValueError("need n_vehicles >= 0, duration_s > 0 and 0 < min speed <= max speed")
    return [_one_vehicle(f"veh-{k:03d}", np.random.default_rng([seed, k]), duration_s, grid, speed_mps,
                         p_straight, stop_prob, stop_s) for k in range(n_vehicles)]


def _one_vehicle(
    vid: str,
    rng: np.random.Generator,
    duration_s: float,
    grid: RoadGrid,
    speed_mps: tuple[float, float],
    p_straight: float,
    stop_prob: float,
    stop_s: tuple[float, float],
) -> Trajectory:
    """Drive one vehicle until `duration_s`; returns its waypoints."""
    i, j = int(rng.integers(grid.nx)), int(rng.integers(grid.ny))
    heading = int(rng.choice([h for h, (di, dj) in enumerate(_HEADINGS) if grid.inside(i + di, j + dj)]))
    # Start part-way along the road behind intersection (i, j) -> (i, j) + heading.
    frac = float(rng.uniform(0.0, 1.0))
    di, dj = _HEADINGS[heading]
    ts, xs, ys = [0.0], [(i + frac * di) * grid.block_m], [(j + frac * dj) * grid.block_m]
    remaining = (1.0 - frac) * grid.block_m
    t = 0.0
    while t < duration_s:
        i, j = i + di, j + dj
        t += max(remaining, 1e-6) / float(rng.uniform(*speed_mps))
        ts.append(t)
        xs.append(i * grid.block_m)
        ys.append(j * grid.block_m)
        remaining = grid.block_m
        if stop_prob > 0 and rng.uniform() < stop_prob:
            t += float(rng.uniform(*stop_s))
            ts.append(t)
            xs.append(xs[-1])
            ys.append(ys[-1])
        heading = _turn(rng, heading, i, j, grid, p_straight)
        di, dj = _HEADINGS[heading]
    return Trajectory(vid, ts, xs, ys)


def _turn(rng: np.random.Generator, heading: int, i: int, j: int, grid: RoadGrid, p_straight: float) -> int:
    """Next heading at intersection (i, j): straight / left / right, U-turn only at a dead end."""
    p_turn = (1 - p_straight) / 2
    options = [(heading, p_straight), ((heading + 1) % 4, p_turn), ((heading + 3) % 4, p_turn)]
    legal = [(h, p) for h, p in options if p > 0 and grid.inside(i + _HEADINGS[h][0], j + _HEADINGS[h][1])]
    if not legal:
        return (heading + 2) % 4
    probs = np.array([p for _, p in legal])
    return legal[int(rng.choice(len(legal), p=probs / probs.sum()))][0]


@dataclass(frozen=True)
class RsuLayout:
    """RSUs with circular coverage, as (id, cx, cy, radius_m) tuples (the fleet turns them into coverage circles)."""

    rsus: tuple[RsuSpec, ...]

    @classmethod
    def on_grid(
        cls, grid: RoadGrid, spacing_blocks: int = 3, radius_m: float = 300.0, prefix: str = "rsu"
    ) -> RsuLayout:
        """One RSU on every `spacing_blocks`-th intersection, starting half a spacing in from the grid's corner.

        Defaults on the 10 x 10 grid: 9 RSUs 600 m apart with 300 m radius, so coverage touches along the roads
        between neighbours and leaves gaps off-axis: vehicles leave coverage and hand over within minutes.
        """
        if spacing_blocks < 1 or not (radius_m > 0):
            raise ValueError(f"need spacing_blocks >= 1 and radius_m > 0 (got {spacing_blocks}, {radius_m})")
        first = spacing_blocks // 2
        rsus = []
        for i in range(first, grid.nx, spacing_blocks):
            for j in range(first, grid.ny, spacing_blocks):
                rsus.append((f"{prefix}-{i:02d}-{j:02d}", i * grid.block_m, j * grid.block_m, float(radius_m)))
        return cls(tuple(rsus))

    def covering(self, x: float, y: float) -> list[str]:
        """Ids of the RSUs whose coverage holds (x, y), nearest first."""
        hits = [(math.hypot(x - cx, y - cy), rid) for rid, cx, cy, r in self.rsus if math.hypot(x - cx, y - cy) <= r]
        return [rid for _, rid in sorted(hits)]

    def serving(self, x: float, y: float) -> str | None:
        """The nearest covering RSU, or None out of coverage."""
        hits = self.covering(x, y)
        return hits[0] if hits else None
