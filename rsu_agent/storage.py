"""How the RSU lives with a disk that fails (full, read-only, I/O errors): handled, counted, never swallowed.

- An update that cannot be written is rejected with reason `storage` (counted like every other rejection);
  nothing about it is kept in memory, so a restart and the running agent agree on what counted.
- Opening and closing a round change memory only after the new state is on disk (`rsu_agent/rounds.py`); when
  the write fails the step is retried with capped exponential backoff and goes through by itself once the disk
  is back, without a restart.
- Until then the agent is *degraded*: its status says so (`detail` starts with `degraded:`), the metric
  `fedrank_degraded{component="storage"}` is 1, and while a round cannot open or close (the agent is *stalled*)
  the daemon stops feeding the systemd watchdog, so systemd restarts it if the disk stays broken.
- While degraded, a small probe file is written at each retry: the first success ends the degraded state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from fedrank.state import atomic_write_bytes

log = logging.getLogger(__name__)

STORAGE = "storage"  # rejection reason: the update could not be made durable (it did not count)
PROBE = ".storage-probe"


def backoff_s(failures: int, min_s: float, max_s: float) -> float:
    """Delay before retry number `failures` (1, 2, ...): min_s, 2 min_s, 4 min_s, ... capped at max_s."""
    return min(max_s, min_s * 2.0 ** max(0, failures - 1))


def probe(state_dir: Path) -> None:
    """Write (atomically, with fsync) a tiny file under `state_dir`; raise OSError when the disk cannot."""
    atomic_write_bytes(Path(state_dir) / PROBE, b"ok\n")


class StorageHealth:
    """Whether the state directory takes writes, since when it has not, and when to try again.

    Args:
        min_s, max_s: the retry backoff's first delay and cap (seconds).
    """

    def __init__(self, min_s: float = 1.0, max_s: float = 8.0) -> None:
        self.min_s, self.max_s = min_s, max_s
        self.failures = 0  # consecutive failed writes
        self.total_failures = 0
        self.since: float | None = None  # when the first of the consecutive failures happened
        self.next_try = 0.0
        self.last_error = ""
        self.stalled: set[str] = set()  # steps waiting for the disk ("open:task", "close:task")

    @property
    def degraded(self) -> bool:
        return self.since is not None

    def failed(self, now: float, what: str, exc: OSError) -> float:
        """Record a failed write; returns the delay before the next attempt."""
        self.failures += 1
        self.total_failures += 1
        if self.since is None:
            self.since = now
        self.last_error = f"{what}: {exc.strerror or exc}"
        delay = backoff_s(self.failures, self.min_s, self.max_s)
        self.next_try = now + delay
        log.error("storage: %s failed (%s); degraded, retrying in %.1f s", what, exc, delay,
                  extra={"reason": STORAGE})
        return delay

    def succeeded(self, now: float) -> bool:
        """Record a write that went through; True when this ends a degraded spell."""
        if self.since is None and not self.stalled:
            return False
        log.info("storage: writes go through again after %.1f s degraded (%d failed writes)", now - (self.since or now),
                 self.failures)
        self.since, self.failures, self.last_error = None, 0, ""
        return True

    def due(self, now: float) -> bool:
        """Degraded and the backoff has passed: time for another try."""
        return self.since is not None and now >= self.next_try

    def detail(self) -> str:
        """The status line's `detail`: empty when healthy."""
        if self.since is None:
            return ""
        stalled = f"; waiting: {', '.join(sorted(self.stalled))}" if self.stalled else ""
        return f"degraded: {STORAGE}: {self.last_error}{stalled}"[:500]


class DiskGuard:
    """The RSU agent's side of `StorageHealth`: records failures and successes, tells the world when the agent
    becomes degraded or recovers (status and metric), and retries what is behind (meta.json, the probe).

    Args:
        state_dir: the RSU's state directory (the probe goes there).
        metrics: `set_degraded(component, on)` is called on every change.
        on_change: called after the degraded state changes (the agent republishes its status).
    """

    def __init__(self, state_dir: Path, metrics: object, on_change: Callable[[], None],
                 health: StorageHealth | None = None) -> None:
        self.state_dir = Path(state_dir)
        self.health = health or StorageHealth()
        self._metrics = metrics
        self._on_change = on_change
        self._timer_at = 0.0

    @property
    def healthy(self) -> bool:
        """False while a round cannot open or close for want of a disk (the watchdog is not fed then)."""
        return not self.health.stalled

    def failed(self, now: float, what: str, exc: OSError, stall: str | None = None) -> float:
        """Record a failed write (and the step it stalls); returns the delay before retrying it."""
        was = self.health.degraded
        if stall is not None:
            self.health.stalled.add(stall)
        delay = self.health.failed(now, what, exc)
        if not was:
            self._changed(True)
        return delay

    def ok(self, now: float, unstall: str | None = None) -> None:
        """Record a write that went through (and the step it unstalls)."""
        if unstall is not None:
            self.health.stalled.discard(unstall)
        if not self.health.stalled and self.health.succeeded(now):
            self._changed(False)

    def check(self, now: float, dirty: list[tuple[str, Callable[[], None], OSError | None]]) -> None:
        """On each tick: notice meta.json writes that failed quietly, and while degraded retry them (and the
        probe) when the backoff says so. `dirty`: (what, flush, last error) of each task whose meta is behind."""
        if not self.health.degraded:
            for what, _, err in dirty:
                self.failed(now, what, err or OSError("write failed"))
                break
            return
        if not self.health.due(now):
            return
        try:
            for _, flush, _ in dirty:
                flush()
            probe(self.state_dir)
        except OSError as exc:
            self.failed(now, "retry", exc)
            return
        self.ok(now)

    def watch(self, now: float, tasks: Mapping[str, Any],
              schedule: Callable[[float, Callable[[], None]], None]) -> None:
        """`check` with the tasks' dirty metas; while degraded, make sure the agent gets a turn when the next retry
        is due (a timer that does nothing: the tick after it retries), also under a simulated clock."""
        self.check(now, [(f"task {n}: meta.json", tr.flush, tr.meta_error) for n, tr in tasks.items() if tr.meta_dirty])
        h = self.health
        if h.degraded and self._timer_at != h.next_try:
            self._timer_at = h.next_try
            schedule(h.next_try, lambda: None)

    def _changed(self, degraded: bool) -> None:
        set_degraded = getattr(self._metrics, "set_degraded", None)
        if set_degraded is not None:
            set_degraded(STORAGE, degraded)
        self._on_change()
