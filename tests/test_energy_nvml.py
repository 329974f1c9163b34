"""NVML meter against a fake pynvml: energy counter, power-sampling fallback, NOT_SUPPORTED and lost GPUs."""

from __future__ import annotations

import pytest
from fake_sysfs import NVML_ERROR_LIBRARY_NOT_FOUND, FakeClock, FakeGpu, FakeNvml

from edge_agent.energy.meter import MeterUnavailable
from edge_agent.energy.nvml import COUNTER, POWER, NvmlMeter


def test_energy_counter_in_millijoules_per_gpu() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=1_000_000), FakeGpu(energy_mj=50_000)])
    clock = FakeClock()
    meter = NvmlMeter(nv, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        nv.gpus[0].energy_mj += 120_000  # 120 J
        nv.gpus[1].energy_mj += 30_500  # 30.5 J
        clock.advance(3.0)
        m = span.stop()
    assert m.domain_joules == pytest.approx({"gpu0": 120.0, "gpu1": 30.5})
    assert m.joules == pytest.approx(150.5)
    assert m.source == "nvml" and m.measured
    assert nv.initialised == 0  # closing the meter shut NVML down
    assert meter.describe()["methods"] == {"gpu0": COUNTER, "gpu1": COUNTER}


def test_not_supported_counter_falls_back_to_power_sampling() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=None, power_mw=100_000)])
    clock = FakeClock()
    meter = NvmlMeter(nv, clock=clock, interval_s=None)
    meter.probe()
    assert meter.describe()["methods"] == {"gpu0": POWER}
    with meter:
        span = meter.start()
        clock.advance(0.1)
        nv.gpus[0].power_mw = 300_000
        meter.poll()
        clock.advance(0.1)
        m = span.stop()
    # (100 + 300) / 2 * 0.1 + (300 + 300) / 2 * 0.1
    assert m.joules == pytest.approx(20.0 + 30.0)
    assert m.source == "nvml-power"


def test_configured_indices_only_and_unusable_gpus_are_skipped_with_reasons() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=0), FakeGpu(energy_mj=None, power_mw=None), FakeGpu(energy_mj=0)])
    meter = NvmlMeter(nv, gpus=[1, 2, 7], interval_s=None)
    meter.probe()
    d = meter.describe()
    assert d["methods"] == {"gpu2": COUNTER}
    reasons = {s["gpu"]: s["reason"] for s in d["skipped_gpus"]}
    assert "Not Supported" in reasons["1"] and "no power reading" in reasons["1"]
    assert "no such GPU" in reasons["7"]


def test_no_usable_gpu_is_unavailable_and_shuts_nvml_down() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=None, power_mw=None)])
    with pytest.raises(MeterUnavailable, match="no GPU can be metered"):
        NvmlMeter(nv).probe()
    assert nv.initialised == 0


def test_init_failure_is_unavailable_with_the_nvml_message() -> None:
    nv = FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(MeterUnavailable, match="Library Not Found"):
        NvmlMeter(nv).probe()


def test_lost_gpu_mid_run_skips_samples_instead_of_crashing() -> None:
    nv = FakeNvml([FakeGpu(energy_mj=0)])
    clock = FakeClock()
    meter = NvmlMeter(nv, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        nv.gpus[0].energy_mj = 10_000
        meter.poll()
        nv.gpus[0].lost = True
        meter.poll()
        m = span.stop()
    assert m.joules == pytest.approx(10.0)
    assert meter.read_errors == 2
