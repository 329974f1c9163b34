"""Rate-limited logging: at most `burst` lines per key per `window_s`, the rest counted and summarised.

A flood of hostile messages must not become a flood of log lines (at 1,100 rejections/s one WARNING each is
about 33 GB a day). Each key (a rejection reason) gets `burst` lines per window; further lines are suppressed
and counted, and the first line of the next window says how many were suppressed. `suppressed` is the running
total, for metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Window:
    start: float
    lines: int = 0
    held_back: int = 0


class RateLimitedLog:
    """Log through `logger` with at most `burst` lines per key per `window_s` seconds of `now()`."""

    def __init__(self, logger: logging.Logger, now: Callable[[], float], burst: int = 5, window_s: float = 60.0,
                 max_keys: int = 256) -> None:
        self.log = logger
        self.now = now
        self.burst = burst
        self.window_s = window_s
        self.max_keys = max_keys  # keys are our own reason names; the cap only guards against a caller's bug
        self._w: dict[str, _Window] = {}
        self.suppressed = 0  # lines not written, all keys, since start

    def __call__(self, key: str, level: int, msg: str, *args: object, **kw: object) -> bool:
        """Log `msg % args` unless `key` used up its lines in this window; True when the line was written."""
        t = self.now()
        w = self._w.get(key)
        if w is None or t - w.start >= self.window_s or t < w.start:
            if w is not None and w.held_back:
                self.log.log(level, "%d more %r lines suppressed in the last %.0f s", w.held_back, key, t - w.start)
            if w is None and len(self._w) >= self.max_keys:
                key = "_other"
            w = self._w[key] = _Window(start=t)
        if w.lines >= self.burst:
            w.held_back += 1
            self.suppressed += 1
            return False
        w.lines += 1
        self.log.log(level, msg, *args, **kw)  # type: ignore[arg-type]
        return True
