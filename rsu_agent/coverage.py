"""An RSU's coverage area and a vehicle's time to leave it (docs/algorithms.md section 6, T_exit).

Positions are metres in the fleet's plane, velocities metres per second. The models are pydantic so that a
settings file can hold `coverage = {shape = "circle", cx = 0, cy = 0, radius = 300}`; `Coverage` picks the
shape by its `shape` tag. Points on the boundary count as inside.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


def _check_motion(x: float, y: float, vx: float = 0.0, vy: float = 0.0) -> None:
    """Raise ValueError (and log) on a non-finite position or velocity."""
    if not all(math.isfinite(v) for v in (x, y, vx, vy)):
        log.warning("coverage query rejected: non-finite position/velocity (%r, %r, %r, %r)", x, y, vx, vy)
        raise ValueError(f"position ({x}, {y}) and velocity ({vx}, {vy}) must be finite")


class Circle(BaseModel):
    """A disc of `radius` metres around (cx, cy)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    shape: Literal["circle"] = "circle"
    cx: float = Field(0.0, description="centre x, metres")
    cy: float = Field(0.0, description="centre y, metres")
    radius: float = Field(gt=0, description="radius, metres")

    def contains(self, x: float, y: float) -> bool:
        _check_motion(x, y)
        return (x - self.cx) ** 2 + (y - self.cy) ** 2 <= self.radius**2

    def distance_to(self, x: float, y: float) -> float:
        """Distance in metres from (x, y) to the centre; 'nearest RSU' compares these."""
        _check_motion(x, y)
        return math.hypot(x - self.cx, y - self.cy)

    def time_to_exit(self, x: float, y: float, vx: float, vy: float) -> float:
        """Seconds until the straight line p + v t leaves the disc: the positive root of |p + v t - c| = r.

        0.0 when already outside, math.inf when stationary (a moving point always leaves a bounded disc).
        """
        _check_motion(x, y, vx, vy)
        if not self.contains(x, y):
            return 0.0
        a = vx * vx + vy * vy
        if a == 0.0:
            return math.inf
        px, py = x - self.cx, y - self.cy
        b = px * vx + py * vy  # half the linear coefficient
        c = px * px + py * py - self.radius**2  # <= 0 inside
        # t = (-b + sqrt(b^2 - a c)) / a; c <= 0 keeps the discriminant >= b^2 and the root >= 0.
        return max(0.0, (-b + math.sqrt(max(b * b - a * c, 0.0))) / a)


class Rect(BaseModel):
    """An axis-aligned rectangle [xmin, xmax] x [ymin, ymax] (e.g. a stretch of road)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    shape: Literal["rect"] = "rect"
    xmin: float = Field(description="west edge, metres")
    ymin: float = Field(description="south edge, metres")
    xmax: float = Field(description="east edge, metres")
    ymax: float = Field(description="north edge, metres")

    @model_validator(mode="after")
    def _ordered(self) -> Rect:
        if not (self.xmin < self.xmax and self.ymin < self.ymax):
            raise ValueError(
                f"need xmin < xmax and ymin < ymax, got x [{self.xmin}, {self.xmax}] y [{self.ymin}, {self.ymax}]"
            )
        return self

    def contains(self, x: float, y: float) -> bool:
        _check_motion(x, y)
        return self.xmin <= x <= self.xmax and self.ymin <= y <= self.ymax

    def distance_to(self, x: float, y: float) -> float:
        """Distance in metres from (x, y) to the rectangle's centre; 'nearest RSU' compares these."""
        _check_motion(x, y)
        return math.hypot(x - (self.xmin + self.xmax) / 2, y - (self.ymin + self.ymax) / 2)

    def time_to_exit(self, x: float, y: float, vx: float, vy: float) -> float:
        """Seconds until p + v t crosses an edge: the earliest of the per-axis crossing times.

        0.0 when already outside (or on an edge and moving out), math.inf when stationary.
        """
        _check_motion(x, y, vx, vy)
        if not self.contains(x, y):
            return 0.0
        return min(_axis_exit(x, vx, self.xmin, self.xmax), _axis_exit(y, vy, self.ymin, self.ymax))


def _axis_exit(p: float, v: float, lo: float, hi: float) -> float:
    """Time for coordinate p moving at v to leave [lo, hi]; inf when v == 0."""
    if v > 0:
        return (hi - p) / v
    if v < 0:
        return (lo - p) / v
    return math.inf


Coverage = Annotated[Circle | Rect, Field(discriminator="shape")]
