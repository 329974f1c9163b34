"""The meter's background thread: what only its polls can see (a power that varies, several counter wraps).

Every backend here reads its ordinary fake sysfs/NVML files; a scripted `_read` moves the world on (new power
on the rail, more energy on the counter, the fake clock one second on) after each poll the thread takes,
for `steps` polls, then holds it still. Reads at span start/stop see the world only before and after, so a
meter whose thread does not poll gets a different figure, and the test waits for the thread's polls by an
event, never by a fixed sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from fake_sysfs import FakeClock, FakeGpu, FakeNvml, JetsonHwmonTree, RaplTree

from edge_agent.energy.jetson import JetsonMeter
from edge_agent.energy.meter import EnergyMeter
from edge_agent.energy.nvml import NvmlMeter
from edge_agent.energy.rapl import RaplMeter

WAIT_S = 10.0  # generous: only a meter whose thread never polls waits this long, and then the test fails


class Script:
    """After each armed read k (1-based): `step(k)` changes the world, the clock moves 1 s, until `steps` reads."""

    def __init__(self, clock: FakeClock, steps: int, step: Callable[[int], None]) -> None:
        self.clock, self.steps, self.step = clock, steps, step
        self.armed = False
        self.reads = 0
        self.done = threading.Event()

    def after_read(self) -> None:
        if not self.armed or self.done.is_set():
            return
        self.reads += 1
        if self.reads > self.steps:
            self.done.set()
            return
        self.step(self.reads)
        self.clock.advance(1.0)


def scripted(cls: type[EnergyMeter]) -> type[EnergyMeter]:
    class Scripted(cls):  # type: ignore[valid-type, misc]
        script: Script

        def _read(self) -> dict[str, float | None]:
            out = super()._read()
            self.script.after_read()
            return out

    return Scripted


def run_span(meter: EnergyMeter, script: Script):
    meter.script = script  # type: ignore[attr-defined]
    with meter:
        assert meter._thread is not None, "this meter must poll in the background"
        span = meter.start()
        script.armed = True  # only polls after the span started move the world on
        assert script.done.wait(WAIT_S), f"the polling thread took {script.reads} of {script.steps + 1} polls"
        m = span.stop()
    return m


def test_a_varying_jetson_rail_is_integrated_from_the_threads_samples(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VDD_IN", "VDD_CPU_GPU_CV"])
    watts = [5.0, 9.0, 3.0, 12.0, 6.0, 6.0]  # power after poll k; VDD_IN at 5 V so mA = 200 * W
    tree.set_rail("VDD_IN", 5000, int(200 * watts[0]))
    tree.set_rail("VDD_CPU_GPU_CV", 5000, 100)  # a constant 0.5 W sub-rail
    clock = FakeClock()
    script = Script(clock, steps=5, step=lambda k: tree.set_rail("VDD_IN", 5000, int(200 * watts[k])))
    m = run_span(scripted(JetsonMeter)(tmp_path, clock=clock, interval_s=0.001), script)
    # trapezoid over the thread's 1 s samples: (5+9)/2 + (9+3)/2 + (3+12)/2 + (12+6)/2 + (6+6)/2
    assert m.joules == pytest.approx(7 + 6 + 7.5 + 9 + 6)
    assert m.seconds == pytest.approx(5.0)
    assert m.sub_joules == pytest.approx({"VDD_CPU_GPU_CV": 0.5 * 5})


def test_nvml_power_sampling_integrates_a_training_round_that_varies(tmp_path: Path) -> None:
    gpu = FakeGpu(energy_mj=None, power_mw=100_000)  # no energy counter: the meter samples power
    nv = FakeNvml(gpus=[gpu])
    mw = [100_000, 250_000, 250_000, 50_000]

    def step(k: int) -> None:
        gpu.power_mw = mw[k]

    clock = FakeClock()
    script = Script(clock, steps=3, step=step)
    m = run_span(scripted(NvmlMeter)(nvml=nv, clock=clock, interval_s=0.001), script)
    assert m.joules == pytest.approx((100 + 250) / 2 + 250 + (250 + 50) / 2)
    assert m.seconds == pytest.approx(3.0)


def test_several_rapl_wraps_between_start_and_stop_are_counted_by_the_polling_thread(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)  # wraps every 1 J
    raw = [900_000]

    def step(_k: int) -> None:  # +0.6 J per poll: 900k -> 500k -> 100k -> 700k -> 300k -> 900k -> 500k
        raw[0] = (raw[0] + 600_000) % 1_000_000
        tree.set_energy("intel-rapl:0", raw[0])

    clock = FakeClock()
    script = Script(clock, steps=6, step=step)
    meter = scripted(RaplMeter)(tmp_path, clock=clock, interval_s=0.001)
    m = run_span(meter, script)
    # 3.6 J in all, four wraps; start and stop alone would see 900k -> 500k: 0.6 J
    assert m.joules == pytest.approx(6 * 0.6)
    assert m.domain_joules == pytest.approx({"package-0": 3.6})


def test_close_stops_the_thread_and_reads_after_close_are_refused(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VDD_IN"])
    tree.set_rail("VDD_IN", 5000, 1000)
    meter = JetsonMeter(tmp_path, interval_s=0.001)
    meter.open()
    thread = meter._thread
    assert thread is not None and thread.is_alive()
    assert meter.open() is meter and meter._thread is thread  # opening twice starts no second thread
    meter.close()
    assert not thread.is_alive()
    with pytest.raises(RuntimeError, match="not open"):
        meter.poll()


def test_a_meter_that_needs_no_polling_starts_no_thread(tmp_path: Path) -> None:
    nv = FakeNvml(gpus=[FakeGpu(energy_mj=1000, power_mw=5)])  # a 64-bit energy counter never wraps
    meter = NvmlMeter(nvml=nv, interval_s=0.001)
    with meter:
        assert meter._thread is None
