"""The cell uplink as a processor-sharing server on the simulated clock (docs/algorithms.md section 2).

Each upload needs `bits / R_v` seconds of airtime at its own solo rate `R_v` (its distance, the vehicle's transmit
power). The `n` uploads in flight to one RSU share the cell's time equally, so each advances at `1/n` of its solo
speed: two uploads that start together finish together, after twice the time one would take alone. Energy is
airtime (`p_tx * bits / R_v`), which sharing does not change; only the wait grows.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from fedrank.runtime import Agent, Clock
from proto.bus import Delivery

log = logging.getLogger(__name__)
_EPS = 1e-12


@dataclass
class _Flow:
    left_s: float  # solo airtime still to go
    started: float
    on_done: Callable[[float], None]  # called with the transfer's duration


class SharedCell:
    """One RSU's uplink: flows in flight and their progress, advanced to a given time."""

    def __init__(self) -> None:
        self.flows: dict[int, _Flow] = {}
        self.at = 0.0

    def advance(self, now: float) -> list[_Flow]:
        """Progress every flow to `now`; returns (and removes) those that finished, in start order."""
        if self.flows and now > self.at:
            step = (now - self.at) / len(self.flows)
            for f in self.flows.values():
                f.left_s -= step
        self.at = max(self.at, now)
        done = [k for k, f in self.flows.items() if f.left_s <= _EPS * max(1.0, now)]
        return [self.flows.pop(k) for k in done]

    def next_done(self) -> float | None:
        if not self.flows:
            return None
        return self.at + min(f.left_s for f in self.flows.values()) * len(self.flows)


class SharedUplink(Agent):
    """Every RSU's cell; the fleet's driver runs it like an agent (it has no inbox, only completions)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.cells: dict[str, SharedCell] = {}
        self._ids = 0

    def start(self) -> None:
        return

    def stop(self) -> None:
        return

    def on_delivery(self, d: Delivery) -> None:
        return

    def send(self, cell: str, airtime_s: float, on_done: Callable[[float], None]) -> None:
        """Start an upload that needs `airtime_s` seconds alone in `cell`; `on_done(duration)` when it arrives."""
        if not math.isfinite(airtime_s) or airtime_s < 0:
            raise ValueError(f"airtime must be finite and >= 0 (got {airtime_s})")
        now = self.clock.now()
        c = self.cells.setdefault(cell, SharedCell())
        self._finish(c.advance(now), now)  # flows already done by now leave before this one shares the cell
        self._ids += 1
        c.flows[self._ids] = _Flow(airtime_s, now, on_done)
        self._finish(c.advance(now), now)  # a zero-length upload arrives at once

    def in_flight(self, cell: str) -> int:
        c = self.cells.get(cell)
        return len(c.flows) if c else 0

    def next_deadline(self) -> float | None:
        times = [t for c in self.cells.values() if (t := c.next_done()) is not None]
        return min(times) if times else None

    def on_tick(self) -> None:
        now = self.clock.now()
        for c in self.cells.values():
            self._finish(c.advance(now), now)

    def _finish(self, flows: list[_Flow], now: float) -> None:
        for f in flows:
            self._safe(f.on_done, now - f.started)
