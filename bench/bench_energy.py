"""Sampling overhead of the energy meters: CPU time a running meter costs per second of wall time.

For each sampling backend at its default period (Jetson rails and NVML power: 0.1 s, RAPL: 1 s; RAPL also at
0.1 s for comparison) the meter runs on a fake tree / fake NVML for `--seconds` while the main thread sleeps;
the process's CPU time (all threads, time.process_time) over wall time is the cost, as % of one core.
The baseline is the same process sleeping with no meter, measured in the same run; the ratio is
meter / baseline, and the figure that matters is the excess over the baseline (goal: < 0.5 % of one core).
Caveat: fake files live in a tmpfs/page cache; a real sysfs read of energy_uj or an INA3221 channel goes
through the driver (an I2C or MSR read) and a real NVML call through an ioctl, so this measures fedrank's
own cost (Python, threading, parsing), not the kernel's.

    python bench/bench_energy.py [--seconds 5]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_sysfs import FakeGpu, FakeNvml, JetsonHwmonTree, RaplTree  # noqa: E402

from edge_agent.energy.config import EnergyConfig  # noqa: E402
from edge_agent.energy.jetson import JetsonMeter  # noqa: E402
from edge_agent.energy.meter import EnergyMeter  # noqa: E402
from edge_agent.energy.nvml import NvmlMeter  # noqa: E402
from edge_agent.energy.rapl import RaplMeter  # noqa: E402

GOAL_PCT = 0.5


def cpu_pct_of_one_core(seconds: float, meter: EnergyMeter | None) -> tuple[float, int]:
    """(% of one core used by this process over `seconds` of wall time, polls made)."""
    if meter is not None:
        meter.open()
    c0, w0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    c1, w1 = time.process_time(), time.monotonic()
    polls = 0
    if meter is not None:
        polls = meter.polls
        meter.close()
    return 100.0 * (c1 - c0) / (w1 - w0), polls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    cfg = EnergyConfig()
    tmp = Path(tempfile.mkdtemp(prefix="fedrank-bench-energy-"))

    jetson_root = tmp / "jetson"
    jt = JetsonHwmonTree(jetson_root)
    jt.add_chip(["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])  # Orin Nano / NX layout
    for rail in ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"):
        jt.set_rail(rail, 5000, 800)
    rapl_root = tmp / "rapl"
    rt = RaplTree(rapl_root)
    rt.add_zone("intel-rapl:0", "package-0", energy_uj=10**9)
    rt.add_zone("intel-rapl:0:0", "core", energy_uj=10**8)
    rt.add_zone("intel-rapl:0:1", "dram", energy_uj=10**8)
    nv = FakeNvml([FakeGpu(energy_mj=None, power_mw=150_000)])  # no counter: power sampling

    cases: list[tuple[str, Callable[[], EnergyMeter]]] = [
        (f"jetson-ina3221 (3 rails, {cfg.sample_interval_s:g} s)",
         lambda: JetsonMeter(jetson_root, cfg.jetson_input_rails, interval_s=cfg.sample_interval_s)),
        (f"rapl (package+core+dram, {cfg.counter_poll_s:g} s)",
         lambda: RaplMeter(rapl_root, interval_s=cfg.counter_poll_s)),
        (f"rapl (package+core+dram, {cfg.sample_interval_s:g} s)",
         lambda: RaplMeter(rapl_root, interval_s=cfg.sample_interval_s)),
        (f"nvml power sampling (1 GPU, fake module, {cfg.sample_interval_s:g} s)",
         lambda: NvmlMeter(nv, interval_s=cfg.sample_interval_s)),
    ]

    print(f"measured: process CPU time (time.process_time) per wall second, {args.seconds:g} s each")
    base, _ = cpu_pct_of_one_core(args.seconds, None)
    print(f"{'baseline: idle process, no meter':<58} {base:8.4f} % of one core")
    worst = 0.0
    for name, make in cases:
        pct, polls = cpu_pct_of_one_core(args.seconds, make())
        excess = pct - base
        worst = max(worst, excess)
        ratio = pct / base if base > 0 else float("inf")
        print(f"{name:<58} {pct:8.4f} % of one core  excess {excess:7.4f} %  ratio vs idle {ratio:7.1f}x  "
              f"({polls} polls)")
    verdict = "meets" if worst < GOAL_PCT else "MISSES"
    print(f"worst excess over idle: {worst:.4f} % of one core; {verdict} the goal of < {GOAL_PCT} %")
    return 0 if worst < GOAL_PCT else 1


if __name__ == "__main__":
    raise SystemExit(main())
