"""The agent runtime shared by every role: clock, timers, inbox and the single-threaded driver.

An agent is a state machine. Transport threads only put deliveries into its `Inbox`; one thread
(the daemon's loop, or the fleet's scheduler under a simulated clock) takes them out and calls the
agent. Nothing here knows whether time is real or simulated.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import Callable
from typing import Protocol

from proto.bus import Bus, Delivery, Unsubscribe

log = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Seconds since the epoch (what field deployments put on the wire)."""

    def now(self) -> float:
        return time.time()


class SimClock:
    """A clock the fleet moves by hand."""

    def __init__(self, start: float = 0.0) -> None:
        self._t = start

    def now(self) -> float:
        return self._t

    def advance_to(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"time cannot go back ({t} < {self._t})")
        self._t = t


class Timers:
    """A heap of (due time, callback); ties fire in scheduling order so runs are deterministic."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._count = itertools.count()

    def schedule(self, at: float, callback: Callable[[], None]) -> None:
        heapq.heappush(self._heap, (at, next(self._count), callback))

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> list[Callable[[], None]]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def clear(self) -> None:
        self._heap.clear()


class Inbox:
    """The agent's event queue. Bus handlers registered through it only enqueue.

    Bounded: at most `max_items` deliveries and `max_bytes` of payload wait at once (None = unbounded). A
    delivery that does not fit is dropped on arrival (tail drop) and counted in `dropped`; what already waits is
    never discarded, so a flood costs its own messages, not the memory of the host. `priority(d)` (called on the
    transport thread; it must be cheap and thread-safe) marks deliveries that jump the queue and may use a
    reserve of as much again (e.g. the updates an open round waits for), so a flood of strangers can neither
    crowd them out nor delay them past a deadline.
    """

    def __init__(self, max_items: int | None = None, max_bytes: int | None = None,
                 priority: Callable[[Delivery], bool] | None = None) -> None:
        self._hi: deque[Delivery] = deque()
        self._lo: deque[Delivery] = deque()
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.priority = priority
        self._bytes = 0
        self._cv = threading.Condition()
        self.received = 0  # deliveries offered to the inbox
        self.dropped = 0  # deliveries refused because the inbox was full
        self.peak_items = 0

    def subscribe(self, bus: Bus, topic_filter: str, qos: int = 1) -> Unsubscribe:
        return bus.subscribe(topic_filter, self.put, qos=qos)

    def put(self, d: Delivery) -> bool:
        """Enqueue a delivery (transport threads call this, and nothing else); False when it was dropped."""
        size = len(d.payload)
        urgent = self.priority is not None and self.priority(d)
        with self._cv:
            self.received += 1
            n = len(self._hi) + len(self._lo)
            if self._full(n, size, 2 if urgent else 1):
                self.dropped += 1
                return False
            self._bytes += size
            (self._hi if urgent else self._lo).append(d)
            self.peak_items = max(self.peak_items, n + 1)
            self._cv.notify()
        return True

    def depth(self) -> int:
        """Deliveries waiting now (any thread; a snapshot)."""
        return len(self._hi) + len(self._lo)

    def _full(self, n: int, size: int, factor: int) -> bool:
        if self.max_items is not None and n >= factor * self.max_items:
            return True
        return self.max_bytes is not None and n > 0 and self._bytes + size > factor * self.max_bytes

    def get(self, timeout: float | None) -> Delivery | None:
        """The next delivery (urgent ones first), waiting up to `timeout` s (None: forever); None if none came."""
        with self._cv:
            if not (self._hi or self._lo) and (timeout is None or timeout > 0):
                self._cv.wait_for(lambda: bool(self._hi or self._lo), timeout)
            if not (self._hi or self._lo):
                return None
            d = self._hi.popleft() if self._hi else self._lo.popleft()
            self._bytes -= len(d.payload)
            return d


class Agent(ABC):
    """What a driver needs from an agent. Handlers must not raise; the driver logs if they do."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.inbox = Inbox()
        self.timers = Timers()
        self.heartbeat: Callable[[], object] | None = None  # the daemon's watchdog ping, for long work
        self.failures: Counter[str] = Counter()  # handler / job name -> times it raised (and was survived)
        self._subscribed = False

    def every(self, interval_s: float, job: Callable[[], None], name: str, first_at: float | None = None) -> None:
        """Run `job` every `interval_s` from `first_at` (default: now); a failing run is logged, counted in
        `failures[name]` and the job rescheduled all the same, so one bad run never ends a periodic job."""

        def fire() -> None:
            self.timers.schedule(self.clock.now() + interval_s, fire)  # first: whatever the job does, it runs again
            self._safe(job, name=name)

        self.timers.schedule(self.clock.now() if first_at is None else first_at, fire)

    def subscribe(self) -> None:
        """Register the agent's bus handlers (they only enqueue), once; the bus need not be connected.

        A daemon calls this before it connects its persistent session, so that what the broker kept for it while
        it was down has a handler the moment it arrives: it waits in the inbox until `start()` has run.
        """
        if not self._subscribed:
            self._subscribed = True
            self._subscriptions()

    def _subscriptions(self) -> None:
        """Subscribe to every filter the agent needs (called once, by `subscribe`)."""
        return

    @abstractmethod
    def start(self) -> None:
        """Subscribe (if not done yet) and announce (the bus is connected)."""

    @abstractmethod
    def on_delivery(self, d: Delivery) -> None:
        """Handle one message from the inbox."""

    def on_tick(self) -> None:
        """Run the timers that are due; agents may override to add periodic work."""
        for cb in self.timers.pop_due(self.clock.now()):
            self._safe(cb)  # one failing timer does not cost the others due at the same instant

    def healthy(self) -> bool:
        """False while the agent cannot make progress (e.g. its disk refuses writes): the daemon then stops
        feeding the systemd watchdog, so that systemd restarts it if that lasts."""
        return True

    def next_deadline(self) -> float | None:
        return self.timers.next_due()

    def interrupt_work(self) -> None:
        """Ask long-running work to stop at its next safe point; called from a signal handler."""
        return  # agents without long work have nothing to interrupt

    @abstractmethod
    def stop(self) -> None:
        """Finish or abandon the current step, publish offline status. Never unsubscribes: the broker keeps
        queueing for the persistent session while the daemon is down, and hands it over after the restart."""

    def pump(self, max_items: int | None = None) -> int:
        """Handle queued deliveries without blocking (fleet scheduler); returns how many."""
        n = 0
        while max_items is None or n < max_items:
            d = self.inbox.get(timeout=0)
            if d is None:
                break
            self._safe(self.on_delivery, d)
            n += 1
        return n

    def _safe(self, fn: Callable[..., None], *args: object, name: str | None = None) -> bool:
        """Run one handler or timer; an exception is logged and counted, never raised. False when it failed."""
        try:
            fn(*args)
            return True
        except Exception:  # one bad event never takes the agent down
            label = name or str(getattr(fn, "__name__", fn))
            self.failures[label] += 1
            metrics = getattr(self, "metrics", None)  # agents with metrics export the count
            if metrics is not None:
                metrics.job_failed(label)
            log.exception("%s: handler %s failed (%d times so far)", type(self).__name__, label, self.failures[label])
            return False


def run_forever(agent: Agent, stop: threading.Event, tick_s: float = 0.5, on_idle: Callable[[], None] | None = None):
    """The daemon driver: one thread, inbox first, timers when due, until `stop` is set."""
    agent.start()
    while not stop.is_set():
        due = agent.next_deadline()
        wait = tick_s if due is None else max(0.0, min(tick_s, due - agent.clock.now()))
        d = agent.inbox.get(timeout=wait)
        if d is not None:
            agent._safe(agent.on_delivery, d)
        agent._safe(agent.on_tick)
        if on_idle is not None:
            on_idle()
    agent._safe(agent.stop)
