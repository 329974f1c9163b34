"""Fleet overhead: a fleet run's wall time against the bare training and evaluation steps it performs.

The run is timed end to end (building the world, loading the model once, tokenising, every agent, the bus,
the codec, aggregation, the recorder's evaluations, plots). Every `LocalTrainer.train` / `evaluate` call the
run makes is recorded with its arguments, then replayed in the same process on the same (warm) trainer with
nothing else around it: the replay's wall time is the baseline, and the ratio fleet / baseline is the fleet's
own overhead factor (goal <= 1.15). Both are measured in the same run on the same machine, so machine load
shifts both; a loaded machine still distorts the ratio a little (state that next to any figure).

The replay runs the calls one after another on one thread; the fleet trains and evaluates on `workers` threads
(fleet/pool.py, default 2), so on a machine with two free cores the ratio can go below 1. `--workers 1` times the
fleet on one thread, the like-for-like overhead figure.

    python bench/bench_fleet.py            # the default `fedrank fleet run` config (MiniLM, real training)
    python bench/bench_fleet.py --quick    # the tiny model, a few rounds: seconds (exercised by the tests)
    python bench/bench_fleet.py --workers 1 --threads 1   # the fleet on one thread, like the replay
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedrank.cli import passive_omp  # noqa: E402

passive_omp()  # before torch loads, as the `fedrank` command does

from edge_agent.learner import NoMeter  # noqa: E402
from edge_agent.trainer import LocalTrainer  # noqa: E402
from fleet.config import FleetConfig  # noqa: E402

GOAL = 1.15


@dataclass
class Recorded:
    trains: list[tuple[tuple, dict]] = field(default_factory=list)
    evals: list[tuple[tuple, dict]] = field(default_factory=list)
    in_fleet_s: float = 0.0  # summed over the pool's threads: can exceed the run's wall time
    trainer: LocalTrainer | None = None


def _record(rec: Recorded) -> tuple[Any, Any]:
    """Wrap LocalTrainer.train / evaluate so the run's calls are kept (arguments and time spent)."""
    orig_train, orig_eval = LocalTrainer.train, LocalTrainer.evaluate

    lock = threading.Lock()  # the fleet calls these from its pool's worker threads

    def recording(orig: Any, calls: list[tuple[tuple, dict]]) -> Any:
        def call(self: LocalTrainer, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return orig(self, *args, **kw)
            finally:
                with lock:
                    rec.trainer = self
                    rec.in_fleet_s += time.perf_counter() - t0
                    calls.append((args, {k: v for k, v in kw.items() if k not in ("meter", "should_stop")}))
        return call

    LocalTrainer.train = recording(orig_train, rec.trains)  # type: ignore[method-assign]
    LocalTrainer.evaluate = recording(orig_eval, rec.evals)  # type: ignore[method-assign]
    return orig_train, orig_eval


def replay(rec: Recorded, orig_train: Any, orig_eval: Any) -> tuple[float, float]:
    """(train s, eval s): the recorded calls again, back to back, on the warm trainer."""
    assert rec.trainer is not None
    t0 = time.perf_counter()
    for args, kw in rec.trains:
        orig_train(rec.trainer, *args, meter=NoMeter(), **kw)
    t1 = time.perf_counter()
    for args, kw in rec.evals:
        orig_eval(rec.trainer, *args, **kw)
    return t1 - t0, time.perf_counter() - t1


def bench(cfg: FleetConfig) -> dict[str, Any]:
    from fleet.run import run_fleet

    rec = Recorded()
    orig_train, orig_eval = _record(rec)
    with tempfile.TemporaryDirectory() as tmp:  # the replay needs the run's model directory
        try:
            t0 = time.perf_counter()
            summary = run_fleet(cfg, Path(tmp) / "run")
            fleet_s = time.perf_counter() - t0
        finally:
            LocalTrainer.train, LocalTrainer.evaluate = orig_train, orig_eval  # type: ignore[method-assign]
        if rec.trainer is None:
            raise SystemExit("the run trained and evaluated nothing: no baseline to compare with")
        train_s, eval_s = replay(rec, orig_train, orig_eval)
    bare = train_s + eval_s
    return {"fleet_s": round(fleet_s, 2), "bare_train_s": round(train_s, 2), "bare_eval_s": round(eval_s, 2),
            "train_calls": len(rec.trains), "eval_calls": len(rec.evals),
            "in_fleet_train_eval_s": round(rec.in_fleet_s, 2), "ratio": round(fleet_s / bare, 3) if bare else None,
            "goal": GOAL, "finished": summary["finished"], "model": cfg.model, "vehicles": cfg.vehicles,
            "rounds": cfg.rounds, "workers": cfg.workers,
            "source": "measured (time.perf_counter wall time, this process)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model, 2 rounds")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None,
                    help="the fleet's training threads (default: the config's; the replay is always one thread)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args(argv)
    over: dict[str, Any] = {"threads": args.threads} if args.threads else {}
    if args.workers:
        over["workers"] = args.workers
    cfg = FleetConfig.quick(rounds=2, **over) if args.quick else FleetConfig(**over)
    result = bench(cfg)
    print(json.dumps(result, indent=2))
    print(f"fleet {result['fleet_s']} s vs bare train+eval {result['bare_train_s'] + result['bare_eval_s']:.2f} s: "
          f"{result['ratio']}x (goal <= {GOAL}x{'; the quick mode is not held to it' if args.quick else ''})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
