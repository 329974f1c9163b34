"""CPU profile of one fleet run (cProfile timed by process CPU time, so a loaded machine distorts it less than
wall time would): where the run's CPU goes, training and evaluation against everything else.

    python bench/profile_fleet.py --rounds 3 --out runs/profile     # default config, 3 rounds
    python -m pstats runs/profile/fleet.prof                        # browse
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedrank.cli import passive_omp  # noqa: E402

passive_omp()  # before torch loads, as the `fedrank` command does

from fleet.config import FleetConfig  # noqa: E402
from fleet.run import run_fleet  # noqa: E402

PARTS = {"training (LocalTrainer.train)": "trainer.py:.*\\(train\\)", "evaluation (recorder)": "run.py:.*\\(_record\\)",
         "building the world": "world.py:.*\\(build_world\\)", "plots": "plots.py:.*\\(plot_run\\)",
         "aggregation": "aggregate.py:.*\\(aggregate\\)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs") / "profile")
    args = ap.parse_args(argv)
    cfg = FleetConfig.quick(rounds=args.rounds) if args.quick else FleetConfig(rounds=args.rounds)
    prof = cProfile.Profile(time.process_time)
    wall = time.perf_counter()
    prof.enable()
    run_fleet(cfg, args.out)
    prof.disable()
    wall = time.perf_counter() - wall
    prof.dump_stats(args.out / "fleet.prof")
    stats = pstats.Stats(prof)
    total = max(v[3] for v in stats.stats.values())  # type: ignore[attr-defined]
    print(f"run_fleet: {total:.1f} s CPU, {wall:.1f} s wall (measured: process CPU time / perf_counter)")
    import re

    for name, pattern in PARTS.items():
        cum = sum(v[3] for k, v in stats.stats.items()  # type: ignore[attr-defined]
                  if re.search(pattern, f"{k[0]}:{k[1]}({k[2]})"))
        print(f"  {name:<32} {cum:8.1f} s CPU  {100 * cum / total:5.1f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
