"""The mock fleet end to end with the tiny model: output files, every policy, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fleet.compare import ABLATIONS, compare
from fleet.config import POLICIES, FleetConfig
from fleet.run import run_fleet
from tests.test_fleet_labels import claims_measured

pytestmark = pytest.mark.slow

SMALL = dict(rounds=2, vehicles=3, rsus=1, test_size=20, train_per_vehicle=24, local_steps=2, batch_size=8,
             max_length=24, threads=1)


def small(**over: object) -> FleetConfig:
    return FleetConfig.quick(**{**SMALL, **over})


def test_run_writes_metrics_summary_config_and_plots(tmp_path: Path) -> None:
    summary = run_fleet(small(), tmp_path)
    assert summary["finished"]
    for name in ("config.json", "metrics.jsonl", "summary.json", "accuracy.png", "budget.png", "configs.png",
                 "latency.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    # one record per task per round (one RSU here), each labelled with where its figures came from
    assert sorted((r["task"], r["round"]) for r in rows) == sorted(
        (t, k) for t in ("sentiment", "ner", "copa") for k in range(2))
    assert all(r["energy_source"].startswith("modelled") and r["accuracy_source"].startswith("measured")
               for r in rows)
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert summary["bytes_on_wire"] > 0 and summary["energy_j"] > 0
    assert FleetConfig.model_validate_json((tmp_path / "config.json").read_text()) == small()


def test_same_seed_gives_identical_metrics(tmp_path: Path) -> None:
    run_fleet(small(), tmp_path / "a")
    run_fleet(small(), tmp_path / "b")
    a = (tmp_path / "a" / "metrics.jsonl").read_text()
    assert a and a == (tmp_path / "b" / "metrics.jsonl").read_text()


def test_compare_runs_every_policy_and_the_ablations(tmp_path: Path) -> None:
    results = compare(small(rounds=1), tmp_path, seeds=[0, 1])
    assert set(results) == set(POLICIES) | set(ABLATIONS)
    table = (tmp_path / "compare.md").read_text()
    on_disk = json.loads((tmp_path / "compare.json").read_text())
    for name in results:
        assert name in table
        assert {"per_task_accuracy", "avg_accuracy", "mean_round_latency_s", "energy_j", "budget_j", "violation_j",
                "bytes_on_wire"} <= set(on_disk[name])
        assert on_disk[name]["bytes_on_wire"] > 0
        for seed in (0, 1):
            cfg = json.loads((tmp_path / name / f"seed-{seed}" / "config.json").read_text())
            assert cfg["policy"] == (name if name in POLICIES else "ucb-dual") and cfg["seed"] == seed
        assert on_disk[name]["seeds"] == [0, 1] and set(on_disk[name]["runs"]) == {"0", "1"}
        assert "avg_accuracy" in on_disk[name]["ci95"]
    assert "±" in table and "Seeds 0, 1 (n = 2)" in table and "measured" in table
    # HomoLoRA trains one rank everywhere, the one sized from the budget; the bandit explores several
    homo = json.loads((tmp_path / "homolora" / "seed-0" / "summary.json").read_text())["homo_rank"]
    assert set(results["homolora"]["rank_counts"]) == {str(homo)}
    assert all("spend_ratio" in r and "lam_max" in r for r in on_disk.values()) and "spend / budget" in table
    assert (tmp_path / "compare_metrics.png").exists() and (tmp_path / "accuracy_vs_energy.png").exists()


def test_surrogate_sweep_is_labelled(tmp_path: Path) -> None:
    summary = run_fleet(small(learner="surrogate"), tmp_path)
    assert "surrogate" in summary["sources"]["accuracy"]
    compare(small(rounds=1, learner="surrogate"), tmp_path / "cmp", ["ucb-dual"], ablations=False, seeds=[0])
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "SURROGATE" in table and "surrogate acc" in table and "Accuracy: measured" not in table
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows and all("surrogate" in r["accuracy_source"] for r in rows)
    report = (tmp_path / "report.md").read_text()
    assert "final accuracy (surrogate, not measured)" in report
    assert claims_measured(report) == [] and claims_measured(table) == []


def test_a_second_run_in_the_same_directory_starts_afresh(tmp_path: Path) -> None:
    first = run_fleet(small(rounds=1), tmp_path)
    second = run_fleet(small(rounds=1), tmp_path)
    assert first["finished"] and second["finished"]
    assert (tmp_path / "metrics.jsonl").read_text().count("\n") == first["rounds_recorded"]


def test_regret_against_every_fixed_rank_is_reported(tmp_path: Path) -> None:
    from fleet.compare import regret

    r = regret(small(rounds=2, learner="surrogate", ranks=[2, 8]), tmp_path)
    assert set(r["fixed_rank_reward"]) == {"2", "8"} and r["best_fixed_rank"] in (2, 8)
    assert r["regret"] == max(r["fixed_rank_reward"].values()) - r["ucb_dual_reward"]
    ranks_used = {json.loads(line)["ranks"][0] for line in (tmp_path / "fixed-8" / "metrics.jsonl").read_text()
                  .splitlines() if json.loads(line)["ranks"]}
    assert ranks_used == {8}
    assert "surrogate" in json.loads((tmp_path / "regret.json").read_text())["note"]
