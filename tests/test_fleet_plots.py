"""The fleet's plots from synthetic records: expected files and panels, graceful without a latency breakdown."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from matplotlib.figure import Figure

from fleet import plots
from fleet.plots import PLOTS, configs_of, latency_parts, plot_run
from fleet.plots_compare import COMPARE_PLOTS, plot_compare, seeds_of
from fleet.stats import mean_ci95, t975

TASKS = ("sentiment", "ner", "copa")


def records(rounds: int = 3, breakdown: bool = False) -> list[dict[str, Any]]:
    out = []
    for rsu in ("rsu0", "rsu1"):
        for task in TASKS:
            for k in range(rounds):
                r = {"rsu": rsu, "task": task, "round": k, "accuracy": 0.5 + 0.1 * k, "lam": 0.1 * k,
                     "energy_j": 1.0 + k, "budget_j": 2.0, "ranks": [2, 4 * (k + 1)], "round_latency_s": 3.0}
                if breakdown:
                    r["latency_breakdown_s"] = {"download": 0.5, "train": 2.0, "upload": 0.3, "wait": 0.2}
                out.append(r)
    return out


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Figure]]:
    """Every figure plot_run saves, by file name, kept open for inspection."""
    seen: dict[str, Figure] = {}

    def keep(fig: Figure, path: Path) -> Path:
        seen[path.name] = fig
        fig.savefig(path, dpi=40)
        return path

    monkeypatch.setattr(plots, "_save", keep)
    yield seen
    for fig in seen.values():
        plt.close(fig)


def test_run_plots_are_written_with_one_panel_per_task(tmp_path: Path, figures: dict[str, Figure]) -> None:
    paths = plot_run(records(), {"majority_baseline": {t: 0.5 for t in TASKS}}, tmp_path)
    assert [p.name for p in paths] == [i.file for i in PLOTS]
    assert all(p.stat().st_size > 0 for p in paths)
    data_axes = {name: [ax for ax in fig.axes if ax.get_title()] for name, fig in figures.items()}
    assert [ax.get_title() for ax in data_axes["accuracy.png"]] == list(TASKS)
    assert len(figures["budget.png"].axes) == 2 * len(TASKS)  # spend/budget over λ, per task
    # the budget is a horizontal line at 1.0 in every spend/budget panel
    for ax in figures["budget.png"].axes[: len(TASKS)]:
        assert any(list(line.get_ydata()) == [1.0, 1.0] for line in ax.get_lines())
    # integer rounds only on the x axis
    ticks = figures["accuracy.png"].axes[0].get_xticks()
    assert all(float(t).is_integer() for t in ticks)
    # legends sit outside the axes: on the figure, none on a panel
    for fig in figures.values():
        assert fig.legends and not any(ax.get_legend() for ax in fig.axes)
    # titles say where the numbers come from
    assert "measured" in figures["accuracy.png"].get_suptitle()
    assert "modelled" in figures["budget.png"].get_suptitle()
    assert "no download/train/upload/wait breakdown" in figures["latency.png"].get_suptitle()


def test_configuration_mix_is_stacked_per_round(tmp_path: Path, figures: dict[str, Figure]) -> None:
    plot_run(records(), {}, tmp_path)
    ax = figures["configs.png"].axes[0]
    heights: dict[float, float] = {}
    for bar in ax.patches:
        heights[bar.get_x()] = heights.get(bar.get_x(), 0.0) + bar.get_height()
    assert sorted(heights.values()) == [4.0, 4.0, 4.0]  # 2 updates x 2 RSUs per round


def test_latency_breakdown_is_stacked_when_recorded(tmp_path: Path, figures: dict[str, Figure]) -> None:
    plot_run(records(breakdown=True), {}, tmp_path)
    assert "download / train / upload / wait" in figures["latency.png"].get_suptitle()
    labels = figures["latency.png"].legends[0].get_texts()
    assert [t.get_text() for t in labels] == ["download", "train", "upload", "wait"]
    assert latency_parts({"download_s": 1.0, "train_s": float("nan")}) == {"download": 1.0}
    assert latency_parts({"round_latency_s": 2.0}) is None
    assert configs_of({"ranks": [2]}) == ["rank 2"] and configs_of({"configs": ["r8/fp16"]}) == ["r8/fp16"]


def test_mean_ci95_uses_student_t() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(mean_ci95([5.0])[1]) and math.isnan(mean_ci95([])[0])
    assert t975(1000) == pytest.approx(1.9623, abs=1e-3)


def test_compare_plots_take_seeds_from_the_policy_directories(tmp_path: Path) -> None:
    import json

    for seed in range(3):
        d = tmp_path / "ucb-dual" / f"seed{seed}"
        d.mkdir(parents=True)
        (d / "summary.json").write_text(json.dumps({"avg_accuracy": 0.6 + 0.01 * seed, "energy_j": 10.0 + seed}))
    one = {"avg_accuracy": 0.5, "energy_j": 12.0, "mean_round_latency_s": 1.0, "violation_j": 0.0,
           "bytes_on_wire": 1000}
    assert len(seeds_of(tmp_path, "ucb-dual", one)) == 3
    assert seeds_of(tmp_path, "homolora", one) == [one]
    paths = plot_compare({"ucb-dual": one, "homolora": one}, tmp_path)
    assert [p.name for p in paths] == [i.file for i in COMPARE_PLOTS]
    assert all(p.stat().st_size > 0 for p in paths)
