"""The `EnergyMeter` interface: monotonic joules since the meter opened, named by their source.

A backend only says how to read its channels; this module turns readings into joules:
  - a *counter* channel reports cumulative energy (RAPL, NVML's total-energy counter, CPU time) and may
    wrap at a known range, so it must be read at least once per wrap period;
  - a *power* channel reports instantaneous watts (INA3221 rails, NVML power) and is integrated with the
    trapezoidal rule on the monotonic clock.
A background thread polls the channels that need it; reads at span boundaries poll as well, so a span's
figure never waits for the next tick. The clock and the thread are injectable so tests are deterministic.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Clock = Callable[[], float]


def read_sysfs(path: os.PathLike[str] | str) -> str:
    """One small sysfs attribute; raw os calls, since a text-mode open per sample costs most of a poll."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode()
    finally:
        os.close(fd)


class MeterUnavailable(Exception):
    """A backend cannot measure on this machine; `reason` says why in words an operator can act on."""

    def __init__(self, backend: str, reason: str) -> None:
        super().__init__(f"{backend}: {reason}")
        self.backend = backend
        self.reason = reason


@dataclass(frozen=True)
class Measurement:
    """The energy of one piece of work (e.g. a training round).

    `domain_joules` covers exactly `domains` and sums to `joules`; `sub_joules` are parts already inside a
    domain (RAPL core/uncore, Jetson sub-rails of VDD_IN), reported for insight and never added to the total.
    """

    joules: float
    seconds: float
    source: str
    domains: tuple[str, ...]
    measured: bool
    domain_joules: dict[str, float] = field(default_factory=dict)
    sub_joules: dict[str, float] = field(default_factory=dict)
    lower_bound: bool = False

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "measured": self.measured,
            "lower_bound": self.lower_bound,
            "domains": list(self.domains),
            "joules": self.joules,
            "seconds": self.seconds,
            "watts": self.watts,
            "domain_joules": dict(self.domain_joules),
            "domain_watts": {k: (v / self.seconds if self.seconds > 0 else 0.0) for k, v in self.domain_joules.items()},
            "sub_joules": dict(self.sub_joules),
        }


class Counter:
    """Cumulative energy in joules from a raw counter that wraps at `wrap_j` (None: never wraps)."""

    needs_polling: bool

    def __init__(self, wrap_j: float | None = None) -> None:
        self.wrap_j = wrap_j
        self.needs_polling = wrap_j is not None
        self.joules = 0.0
        self._last: float | None = None

    def update(self, t: float, raw_j: float) -> None:
        if self._last is not None:
            delta = raw_j - self._last
            if delta < 0:
                if self.wrap_j is None:  # a counter that should never wrap went back: driver reset
                    log.warning("energy counter went back (%.3f -> %.3f J); counting 0 for this step", self._last,
                                raw_j)
                    delta = 0.0
                else:  # one wrap between polls; the poll interval is chosen so that two cannot happen
                    delta += self.wrap_j
            self.joules += delta
        self._last = raw_j


class PowerIntegral:
    """Energy from power samples: trapezoidal rule on the monotonic clock."""

    needs_polling = True

    def __init__(self) -> None:
        self.joules = 0.0
        self.last_watts: float | None = None
        self._last_t: float | None = None

    def update(self, t: float, watts: float) -> None:
        if self._last_t is not None and self.last_watts is not None and t > self._last_t:
            self.joules += 0.5 * (self.last_watts + watts) * (t - self._last_t)
        self._last_t, self.last_watts = t, watts


Accumulator = Counter | PowerIntegral


class EnergyMeter(ABC):
    """Monotonic joules since `open()`, per domain, from one named source.

    Use as `with meter:` (open/close) and, inside, `span = meter.start(); ...; m = span.stop()` or
    `with meter.measure() as span: ...` then `span.result`. Thread-safe.

    Args:
        clock: monotonic seconds (injectable for tests).
        interval_s: background polling period; None polls only when read (tests drive `poll()`).
    """

    source: str = "unknown"
    measured: bool = True
    lower_bound: bool = False

    def __init__(self, clock: Clock = time.monotonic, interval_s: float | None = 0.1) -> None:
        self._clock = clock
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._domains: dict[str, Accumulator] = {}
        self._subs: dict[str, Accumulator] = {}
        self._opened_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.read_errors = 0
        self.polls = 0
        self.tried: list[dict[str, str]] = []  # set by detect_meter: better backends not used, and why

    # --- what a backend provides -------------------------------------------------------------
    @abstractmethod
    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        """Open the hardware; return the accumulators of the covered domains and of the sub-domains."""

    @abstractmethod
    def _read(self) -> dict[str, float | None]:
        """Raw values by channel name (joules for a Counter, watts for a PowerIntegral); None: read failed."""

    def _release(self) -> None:  # noqa: B027 - an optional hook; most backends hold nothing to release
        """Release the hardware."""

    def describe(self) -> dict[str, Any]:
        """What this meter is, for `fedrank energy` and logs."""
        return {"source": self.source, "measured": self.measured, "lower_bound": self.lower_bound,
                "domains": list(self.domains), "sub_domains": list(self._subs), "interval_s": self.interval_s,
                "tried": list(self.tried)}

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self._domains)

    def open(self) -> EnergyMeter:
        with self._lock:
            if self._opened_at is not None:
                return self
            self._domains, self._subs = self._channels()
            self._opened_at = self._clock()
            self._poll_locked()
        needs = any(a.needs_polling for a in (*self._domains.values(), *self._subs.values()))
        if needs and self.interval_s:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"energy-{self.source}", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        with self._lock:
            if self._opened_at is not None:
                self._release()
            self._opened_at = None

    def __enter__(self) -> EnergyMeter:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        assert self.interval_s
        while not self._stop.wait(self.interval_s):
            self.poll()

    # --- reading -----------------------------------------------------------------------------
    def poll(self) -> None:
        """Take one sample of every channel now."""
        with self._lock:
            self._poll_locked()

    def _poll_locked(self) -> float:
        if self._opened_at is None:
            raise RuntimeError("energy meter is not open")
        t = self._clock()
        self.polls += 1
        try:
            values = self._read()
        except OSError as exc:  # a sysfs file vanished or a driver hiccup: skip this sample, keep going
            self.read_errors += 1
            log.warning("%s: read failed, sample skipped: %s", self.source, exc)
            return t
        for name, acc in (*self._domains.items(), *self._subs.items()):
            v = values.get(name)
            if v is None:
                self.read_errors += 1
                continue
            acc.update(t, v)
        return t

    def snapshot(self) -> tuple[float, dict[str, float], dict[str, float]]:
        """(clock time, joules per domain, joules per sub-domain) since open, polling first."""
        with self._lock:
            t = self._poll_locked()
            return (t, {k: a.joules for k, a in self._domains.items()},
                    {k: a.joules for k, a in self._subs.items()})

    def joules(self) -> float:
        """Total joules since `open()` over the covered domains."""
        return sum(self.snapshot()[1].values())

    def domain_joules(self) -> dict[str, float]:
        return self.snapshot()[1]

    def start(self) -> Span:
        """Begin measuring one piece of work (opens the meter if needed)."""
        self.open()
        return Span(self)

    @contextmanager
    def measure(self) -> Iterator[Span]:
        span = self.start()
        try:
            yield span
        finally:
            span.stop()


class Span:
    """One piece of work between `start()` and `stop()`; `result` holds the Measurement once stopped."""

    def __init__(self, meter: EnergyMeter) -> None:
        self._meter = meter
        self._t0, self._d0, self._s0 = meter.snapshot()
        self.result: Measurement | None = None

    def stop(self) -> Measurement:
        if self.result is not None:
            return self.result
        m = self._meter
        t1, d1, s1 = m.snapshot()
        dj = _diff(d1, self._d0)
        self.result = Measurement(
            joules=sum(dj.values()), seconds=max(0.0, t1 - self._t0), source=m.source, domains=m.domains,
            measured=m.measured, domain_joules=dj, sub_joules=_diff(s1, self._s0), lower_bound=m.lower_bound,
        )
        return self.result


def _diff(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items()}
