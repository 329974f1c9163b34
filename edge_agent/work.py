"""How a vehicle's round is costed: measured in the field, modelled in the fleet.

The agent never knows which one it has. `MeasuredWork` runs training now under a real energy meter;
the fleet hands the agent a `CostModel` instead, and the agent then defers the round's completion by
the modelled latency on the (simulated) clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ModelledCost:
    """Seconds and joules of one piece of work, with where the figures came from."""

    seconds: float
    joules: float
    source: str  # e.g. "model:jetson-orin-nano"


class CostModel(Protocol):
    """Latency and energy of a round when they are modelled (docs/algorithms.md section 2)."""

    def download(self, vehicle: str, payload_bytes: int) -> ModelledCost: ...

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost: ...

    def upload(self, vehicle: str, payload_bytes: int) -> ModelledCost: ...

    def transmit(self, vehicle: str, rsu: str, payload_bytes: int, deliver: Callable[[], None]) -> None:
        """Carry an upload to `rsu` on the clock and call `deliver()` when it has arrived (the link may be shared,
        so when is the link's business)."""
