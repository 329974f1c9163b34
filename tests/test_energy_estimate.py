"""The CPU-time estimate: joules from configured figures, always labelled as not measured."""

from __future__ import annotations

import pytest
from fake_sysfs import FakeClock

from edge_agent.energy.estimate import SOURCE, CpuTimeEstimate


def test_cpu_seconds_times_watts_per_core_plus_idle_baseline() -> None:
    cpu = [50.0]
    clock = FakeClock()
    meter = CpuTimeEstimate(watts_per_core=12.0, idle_watts=3.0, clock=clock, cpu_seconds=lambda: cpu[0])
    with meter.measure() as span:
        cpu[0] += 1.5  # 1.5 CPU seconds (e.g. two cores for 0.75 s)
        clock.advance(4.0)
    m = span.result
    assert m is not None
    assert m.domain_joules == pytest.approx({"process-cpu": 1.5 * 12.0, "idle-baseline": 3.0 * 4.0})
    assert m.joules == pytest.approx(18.0 + 12.0)
    assert m.measured is False and m.source == SOURCE
    assert m.to_dict()["measured"] is False


def test_without_baseline_there_is_only_the_cpu_domain() -> None:
    meter = CpuTimeEstimate(watts_per_core=10.0, cpu_seconds=lambda: 0.0)
    with meter:
        assert meter.domains == ("process-cpu",)
        assert meter._thread is None  # cumulative inputs: no sampling thread costs CPU


def test_real_cpu_time_grows_with_work() -> None:
    meter = CpuTimeEstimate(watts_per_core=10.0)
    with meter.measure() as span:
        x = 0
        for i in range(2_000_000):
            x += i
    assert span.result is not None and span.result.joules > 0


def test_nonsense_figures_are_rejected() -> None:
    with pytest.raises(ValueError, match="watts_per_core"):
        CpuTimeEstimate(watts_per_core=0)
