"""The run report: written beside the plots by every run, naming every plot; `fleet report` rebuilds it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedrank.cli import main
from fleet.config import FleetConfig
from fleet.plots import PLOTS
from fleet.report import ReportError, read_records, write_report
from fleet.run import run_fleet


def _embedded(report: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)


@pytest.mark.slow
def test_a_run_writes_its_report_and_fleet_report_rebuilds_the_same(tmp_path: Path) -> None:
    cfg = FleetConfig.quick(rounds=2, vehicles=3, rsus=1, test_size=20, train_per_vehicle=24, local_steps=2,
                            batch_size=8, max_length=24, threads=1)
    run_fleet(cfg, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert _embedded(report) == [p.file for p in PLOTS]  # every plot, embedded, in order
    for p in PLOTS:
        assert (tmp_path / p.file).stat().st_size > 0
        assert p.shows in report  # what it shows and where it came from, beside it
    assert "ucb-dual" in report and "| ner |" in report and "measured" in report and "modelled" in report
    assert "data wnut16" in report or "data generated" in report  # which NER data the run read
    for p in [tmp_path / "report.md", *(tmp_path / i.file for i in PLOTS)]:
        p.unlink()
    assert main(["fleet", "report", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").read_text() == report
    assert all((tmp_path / p.file).stat().st_size > 0 for p in PLOTS)


def test_report_from_metrics_alone_and_a_bad_line_is_skipped(tmp_path: Path) -> None:
    rows = [{"policy": "homolora", "rsu": "rsu0", "task": t, "round": k, "accuracy": 0.5 + k / 10, "lam": 0.0,
             "energy_j": 1.0, "budget_j": 2.0, "ranks": [8], "round_latency_s": 1.5,
             "accuracy_source": "measured (test split)", "energy_source": "modelled", "latency_source": "modelled"}
            for t in ("sentiment", "copa") for k in range(2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    assert len(read_records(tmp_path)) == len(rows)
    report = write_report(tmp_path).read_text()
    assert "# Fleet run: homolora" in report and "| copa | 0.600 |" in report and "| sentiment | 0.600 |" in report
    assert "spend / budget" in report and "| 0.50 |" in report
    assert _embedded(report) == [p.file for p in PLOTS]


def test_report_refuses_a_directory_without_metrics(tmp_path: Path) -> None:
    with pytest.raises(ReportError):
        write_report(tmp_path)
    assert main(["fleet", "report", str(tmp_path)]) == 2
