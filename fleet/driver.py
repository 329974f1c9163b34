"""Drives in-process agents on a simulated clock: deterministic for a seed.

Deliveries are handled in a fixed agent order until nothing moves, then the clock jumps to the
earliest timer any agent has. The agents are the daemons' own classes; only the clock is ours.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from fedrank.runtime import Agent, SimClock

log = logging.getLogger(__name__)


class SimDriver:
    def __init__(self, clock: SimClock, agents: Sequence[Agent], max_settle_iterations: int = 100_000) -> None:
        self.clock = clock
        self.agents = list(agents)
        self.max_settle = max_settle_iterations

    def start(self) -> None:
        for a in self.agents:
            a.start()
        self.settle()

    def settle(self) -> None:
        """Handle every queued delivery and every timer due now, until the system is quiet."""
        for _ in range(self.max_settle):
            moved = 0
            for a in self.agents:
                moved += a.pump()
            now = self.clock.now()
            for a in self.agents:
                due = a.next_deadline()
                if due is not None and due <= now:
                    a._safe(a.on_tick)
                    moved += 1
            if moved == 0:
                return
        raise RuntimeError("the simulated fleet did not settle: an agent keeps scheduling work at the same instant")

    def next_time(self) -> float | None:
        times = [t for a in self.agents if (t := a.next_deadline()) is not None]
        return min(times) if times else None

    def run_until(self, done: Callable[[], bool], max_time: float, on_step: Callable[[], None] | None = None) -> bool:
        """Advance time until `done()` or `max_time`; returns whether `done()` became true."""
        self.settle()
        while not done():
            t = self.next_time()
            if t is None or t > max_time:
                return False
            self.clock.advance_to(max(t, self.clock.now()))
            self.settle()
            if on_step is not None:
                on_step()
        return True
