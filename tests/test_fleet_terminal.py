"""What a fleet run prints: figures with the precision they need, aligned round lines, no third-party noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from fleet.terminal import RunProgress, fmt, round_line

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("value", "text"), [
    (0.0004, "0.0004"), (0.00139, "0.00139"), (0.005452, "0.00545"), (0.5, "0.5"), (12.345, "12.3"),
    (123.4, "123"), (52341.2, "52,341"), (0.0, "0"), (3.2e-7, "3.20e-07"), (float("nan"), "n/a"), (None, "n/a"),
])
def test_fmt_keeps_the_significant_digits(value: float | None, text: str) -> None:
    assert fmt(value) == text


def _row(**over: object) -> dict:
    row = {"rsu": "rsu0", "task": "ner", "round": 3, "accuracy": 0.5, "lam": 0.25, "energy_j": 0.0005,
           "budget_j": 0.00025, "ranks": [4, 8], "updates": 2, "participants": 2, "ft": {}}
    return {**row, **over}


def test_round_lines_align_and_show_the_spend_ratio() -> None:
    widths = {"rsu": 4, "task": 9, "round": 2}
    a = round_line(_row(), widths)
    b = round_line(_row(task="sentiment", round=12, accuracy=float("nan"), energy_j=0.0), widths)
    assert "spend/budget  2.00" in a and "0.0005/0.00025 J modelled" in a
    assert a.index("acc") == b.index("acc") and a.index("λ") == b.index("λ") and a.index("spend") == b.index("spend")
    assert "n/a" in b


def test_plain_progress_prefixes_each_line_with_count_and_eta() -> None:
    console = Console(record=True, force_terminal=False, width=200)
    progress = RunProgress(console)
    assert not progress.live
    progress.add("ucb-dual", 3)
    for k in range(3):
        progress.advance("ucb-dual", f"round {k}")
    text = console.export_text()
    assert "[1/3]" in text and "[3/3]" in text and "ETA" in text and "round 2" in text


@pytest.mark.slow
def test_fleet_run_stdout_has_no_third_party_progress_bars_or_warnings(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(dict(rounds=1, vehicles=3, rsus=1, test_size=20, train_per_vehicle=24, local_steps=2,
                                   batch_size=8, max_length=24, threads=1)))
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("FORCE_COLOR", None)
    proc = subprocess.run([sys.executable, "-m", "fedrank", "fleet", "run", "--quick", "--config", str(cfg),
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    stdout = proc.stdout
    for noise in ("Writing model shards", "Loading weights", "it/s]", "%|", "Warning", "warnings.warn", "WARNING"):
        assert noise not in stdout, noise
        assert noise not in proc.stderr, noise
    # the progress degrades to plain lines: one per closed round (3 tasks x 1 RSU x 1 round), counted
    assert [line for line in stdout.splitlines() if line.startswith("[")][-1].startswith("[3/3]")
    assert "spend/budget" in stdout
    assert (out / "fleet.log").exists()  # where the run's own warnings went
