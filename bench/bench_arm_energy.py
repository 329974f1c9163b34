"""How far the vehicle's arms move training energy: rank alone vs rank x local work (docs/algorithms.md section 3).

Two sources, printed side by side:
- modelled: the fleet's FLOP model (fleet/sim/compute.py) for MiniLM-L6 with LoRA on q,v on a jetson-orin-nano
  profile, `steps * batch` samples of `max_length` tokens;
- measured: real CPU training steps of the packaged MiniLM-L6 (or `--model tiny`) through `LocalTrainer`, metered by
  the project's own meter (`detect_meter`: on a machine without RAPL/NVML/Jetson rails that is `estimate-cpu-time`,
  process CPU time x a nominal power, i.e. an estimate), and the CPU seconds themselves. Only the training loop is
  metered (the trainer stops the meter before its held-out evaluation).

Each configuration is the median of `--repeats` runs after one warm-up. The span is max / min energy over the
arm set: ranks {2, 4, 8, 16, 32} at full work, and the same ranks x work {0.25, 0.5, 1.0}.

    python bench/bench_arm_energy.py [--model minilm|tiny] [--steps 20] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_agent.bandit import Arm, arm_set, local_steps
from fleet.sim.compute import MINILM_L6, model_train_flops, train_energy_j, train_time_s
from fleet.sim.devices import get_profile

RANKS = [2, 4, 8, 16, 32]
WORK = [0.25, 0.5, 1.0]


def modelled(arms: list[Arm], steps: int, batch: int, seq: int) -> dict[Arm, float]:
    dev = get_profile("jetson-orin-nano")
    out = {}
    for a in arms:
        flops = model_train_flops(MINILM_L6, a.rank, samples=local_steps(a, steps) * batch, epochs=1.0, seq_len=seq)
        out[a] = train_energy_j(train_time_s(flops, dev), dev)
    return out


def measured(arms: list[Arm], steps: int, batch: int, seq: int, model: str, repeats: int
             ) -> tuple[dict[Arm, float], dict[Arm, float], str]:
    """(joules by the project's meter, CPU seconds, meter source) per arm: medians over `repeats`."""
    import torch

    from edge_agent.data import load_task_dataset
    from edge_agent.energy.detect import detect_meter
    from edge_agent.learner import SpanMeter
    from edge_agent.tasks import TaskSpec
    from edge_agent.trainer import LocalTrainer

    torch.set_num_threads(1)  # one core: steady figures on a shared machine
    model_dir = None
    if model == "tiny":
        from fleet.tiny_model import make_tiny_bert

        model_dir = make_tiny_bert(Path(tempfile.mkdtemp()) / "tiny", seed=0)
    trainer = LocalTrainer(model_dir, max_length=seq, batch_size=batch, threads=1)
    ds = load_task_dataset("sentence", "default", seed=0)
    spec = TaskSpec("sentiment", "sentence", ds.num_labels)
    train, held = list(ds.train[: batch * steps]), list(ds.train[-8:])
    meter = detect_meter()
    meter.open()
    span = SpanMeter(meter)
    joules: dict[Arm, float] = {}
    cpu: dict[Arm, float] = {}

    def once(a: Arm) -> tuple[float, float]:
        c0 = time.process_time()
        res = trainer.train(spec, train, held, rank=a.rank, alpha=16.0, init=None, head=None,
                            steps=local_steps(a, steps), meter=span, seed=0)
        return float(res.energy.joules), time.process_time() - c0

    once(arms[0])  # warm-up: model load, tokenisation cache
    for a in arms:
        runs = [once(a) for _ in range(repeats)]
        joules[a] = statistics.median(r[0] for r in runs)
        cpu[a] = statistics.median(r[1] for r in runs)
    return joules, cpu, str(meter.source)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    ap.add_argument("--steps", type=int, default=20, help="configured local steps (work 1.0)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-measure", action="store_true", help="FLOP model only")
    args = ap.parse_args()
    full = arm_set(RANKS, WORK)
    ranks_only = arm_set(RANKS)
    model_j = modelled(full, args.steps, args.batch, args.max_length)
    meas_j: dict[Arm, float] = {}
    cpu: dict[Arm, float] = {}
    source = "-"
    if not args.no_measure:
        # rank extremes at every work level: enough for both spans
        probe = [a for a in full if a.rank in (2, 32)]
        meas_j, cpu, source = measured(probe, args.steps, args.batch, args.max_length, args.model, args.repeats)
    print(f"local steps {args.steps}, batch {args.batch}, max_length {args.max_length}; modelled = FLOP model "
          f"(MiniLM-L6 q,v, jetson-orin-nano); measured = {args.model} on 1 CPU thread, meter {source}")
    print("| arm | modelled J | measured J | CPU s |")
    print("| --- | ---: | ---: | ---: |")
    for a in full:
        m = f"{meas_j[a]:.2f} | {cpu[a]:.2f}" if a in meas_j else "- | -"
        print(f"| rank {a.rank}, work {a.work:g} | {model_j[a]:.3f} | {m} |")

    def span(d: dict[Arm, float], arms: list[Arm]) -> str:
        vals = [d[a] for a in arms if a in d]
        return f"{max(vals) / min(vals):.2f}x" if vals else "-"

    print("| span (max / min) | modelled | measured J | CPU s |")
    print("| --- | ---: | ---: | ---: |")
    for name, arms in (("ranks only (work 1)", ranks_only), ("ranks x work {0.25, 0.5, 1}", full)):
        print(f"| {name} | {span(model_j, arms)} | {span(meas_j, arms)} | {span(cpu, arms)} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
