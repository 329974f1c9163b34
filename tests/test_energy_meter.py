"""The EnergyMeter core: counters with wrap, trapezoidal power integration, spans."""

from __future__ import annotations

import pytest
from fake_sysfs import FakeClock

from edge_agent.energy.meter import Accumulator, Counter, EnergyMeter, PowerIntegral


def test_counter_adds_deltas_and_one_wrap() -> None:
    c = Counter(wrap_j=100.0)
    for raw in (90.0, 95.0, 10.0, 30.0):  # 95 -> 10 wraps once: 5 + 10
        c.update(0.0, raw)
    assert c.joules == pytest.approx(5 + (100 - 95 + 10) + 20)


def test_counter_without_wrap_range_never_goes_back() -> None:
    c = Counter(None)
    for raw in (10.0, 12.0, 3.0, 4.0):  # a reset to 3: that step counts 0
        c.update(0.0, raw)
    assert c.joules == pytest.approx(2 + 0 + 1)


def test_power_integral_is_trapezoidal() -> None:
    p = PowerIntegral()
    for t, w in ((0.0, 2.0), (0.5, 4.0), (1.5, 0.0)):
        p.update(t, w)
    assert p.joules == pytest.approx((2 + 4) / 2 * 0.5 + (4 + 0) / 2 * 1.0)


class _Scripted(EnergyMeter):
    """One counter domain and one power domain fed from lists."""

    source = "scripted"

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock, interval_s=None)
        self.energy = 0.0
        self.power = 0.0

    def _channels(self) -> tuple[dict[str, Accumulator], dict[str, Accumulator]]:
        return {"counter": Counter(None), "power": PowerIntegral()}, {}

    def _read(self) -> dict[str, float | None]:
        return {"counter": self.energy, "power": self.power}


def test_overlapping_spans_each_get_their_own_share() -> None:
    clock = FakeClock()
    m = _Scripted(clock)
    with m:
        outer = m.start()
        m.energy, m.power = 10.0, 0.0
        clock.advance(1.0)
        inner = m.start()
        m.energy = 25.0
        clock.advance(1.0)
        a = inner.stop()
        b = outer.stop()
    assert a.domain_joules == pytest.approx({"counter": 15.0, "power": 0.0})
    assert b.joules == pytest.approx(25.0)
    assert (a.seconds, b.seconds) == (1.0, 2.0)
    assert inner.stop() is a  # stopping twice returns the same measurement


def test_joules_are_monotonic_since_open_and_reading_a_closed_meter_is_an_error() -> None:
    clock = FakeClock()
    m = _Scripted(clock)
    m.open()
    m.power = 2.0
    clock.advance(3.0)
    assert m.joules() == pytest.approx(3.0)  # (0 + 2) / 2 * 3
    assert m.domain_joules() == pytest.approx({"counter": 0.0, "power": 3.0})
    m.close()
    with pytest.raises(RuntimeError, match="not open"):
        m.poll()


def test_measurement_dict_carries_provenance_fields() -> None:
    clock = FakeClock()
    m = _Scripted(clock)
    with m.measure() as span:
        m.energy = 8.0
        clock.advance(2.0)
    d = span.result.to_dict() if span.result else {}
    assert d["source"] == "scripted" and d["measured"] is True
    assert d["watts"] == pytest.approx(4.0) and d["domain_watts"]["counter"] == pytest.approx(4.0)
