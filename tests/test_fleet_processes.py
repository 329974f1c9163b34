"""`fedrank fleet run --broker`: every agent as its own daemon process against a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def test_fleet_of_daemon_processes_runs_a_round_and_every_daemon_exits_0(tmp_path: Path, mosquitto) -> None:
    cfg = tmp_path / "fleet.json"
    cfg.write_text(json.dumps({"vehicles": 3, "rsus": 1, "rounds": 1, "train_per_vehicle": 24, "local_steps": 2,
                               "batch_size": 8, "max_length": 24}))
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "fedrank", "fleet", "run", "--quick", "--config", str(cfg), "--out", str(out),
         "--broker", f"mqtt://127.0.0.1:{mosquitto.port}"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and set(summary["exit_codes"].values()) == {0}
    assert set(summary["exit_codes"]) == {"cloud", "rsu0", "veh00", "veh01", "veh02"}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"sentiment", "ner", "copa"}
    # the vehicles' own meters: no meter here, so the estimate, and the stats say it was not measured
    assert all(r["energy_measured"] is False and r["updates"] >= 1 for r in rows)
