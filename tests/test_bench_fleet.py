"""bench/bench_fleet.py in its quick mode: it runs, records every train/evaluate call and replays them.
(No timing is asserted: the figures go to BENCHMARKS.md.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from edge_agent.trainer import LocalTrainer

pytestmark = pytest.mark.slow
BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_fleet.py"


def test_quick_mode_reports_the_overhead_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("bench_fleet", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_fleet", mod)  # dataclasses look their module up
    spec.loader.exec_module(mod)
    train, evaluate = LocalTrainer.train, LocalTrainer.evaluate
    assert mod.main(["--quick", "--threads", "1", "--json", str(tmp_path / "r.json")]) == 0
    assert (LocalTrainer.train, LocalTrainer.evaluate) == (train, evaluate)  # the recording is undone
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["finished"] and r["train_calls"] > 0 and r["eval_calls"] > 0
    assert r["ratio"] == pytest.approx(r["fleet_s"] / (r["bare_train_s"] + r["bare_eval_s"]), rel=0.05)
    assert "measured" in r["source"] and "goal <= 1.15x" in capsys.readouterr().out
