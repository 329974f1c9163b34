"""PNG plots of one fleet run, each answering one question (matplotlib, headless).

- accuracy.png: does the global model learn each task? (one panel per task, integer rounds, majority baseline)
- budget.png: does each task stay within its energy budget, and what price does that take? (spend/budget with
  the budget a line at 1.0; λ below)
- configs.png: which configurations (LoRA ranks) do the vehicles choose, round by round? (stacked counts)
- latency.png: where does a round's time go? (download / train / upload / wait when the records carry the
  breakdown; the total round latency otherwise, said so in the title)

Every figure's title says whether its quantity is measured, modelled or a surrogate. Legends sit outside the
axes. `PLOTS` lists the files with where their figures come from; the run report (fleet/report.py) embeds them.
Comparison plots are in fleet/plots_compare.py (re-exported here).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

DPI = 100
LATENCY_PARTS = ("download", "train", "upload", "wait")


@dataclass(frozen=True)
class PlotInfo:
    """One figure: its file name, what it shows and where its numbers come from."""

    file: str
    shows: str
    source: str


PLOTS: tuple[PlotInfo, ...] = (
    PlotInfo("accuracy.png", "global model accuracy per task over rounds, one line per RSU, majority baseline dotted",
             "each RSU's global adapter on the task's test split (measured), or the learning-curve surrogate "
             "(not measured) when learner=surrogate"),
    PlotInfo("budget.png", "energy spent / budget per task and round (budget = 1.0) and the dual price λ",
             "modelled energy (fleet.sim device profiles + channel model); λ from the RSUs' dual step"),
    PlotInfo("configs.png", "mix of configurations (LoRA ranks) the vehicles chose, per task and round",
             "counted from the accepted updates' reported ranks"),
    PlotInfo("latency.png", "round latency per round, split into download / train / upload / wait when recorded",
             "modelled (simulated clock)"),
)


def finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def is_surrogate(summary: dict[str, Any], learner: str | None = None) -> bool:
    """Whether a run's accuracy came from the surrogate: its config says learner=surrogate, or its summary's (or
    record's) accuracy source says so. Either is enough, so a summary without sources still gets labelled."""
    src = summary.get("sources", {}).get("accuracy", summary.get("accuracy_source", ""))
    return learner == "surrogate" or "surrogate" in str(src)


def _tasks(records: Sequence[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["task"] for r in records))


def _rsus(records: Sequence[dict[str, Any]]) -> list[str]:
    return sorted({r["rsu"] for r in records})


def _panels(n: int, rows: int = 1, height: float = 3.0) -> tuple[Figure, list[list[Axes]]]:
    fig, axes = plt.subplots(rows, max(1, n), figsize=(3.4 * max(1, n) + 1.6, height * rows), squeeze=False,
                             layout="constrained")
    return fig, [list(row) for row in axes]


def _integer_rounds(ax: Axes) -> None:
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)


def _legend_outside(fig: Figure, axes: Sequence[Axes]) -> None:
    """One legend for the figure, right of the panels (never over the data)."""
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside right upper", fontsize=8, frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _by(records: Sequence[dict[str, Any]], task: str, rsu: str, key: str) -> tuple[list[int], list[float]]:
    pts = [(r["round"], r[key]) for r in records if r["task"] == task and r["rsu"] == rsu and finite(r.get(key))]
    return [p[0] for p in pts], [float(p[1]) for p in pts]


def plot_accuracy(records: Sequence[dict[str, Any]], summary: dict[str, Any], path: Path, surrogate: bool) -> Path:
    tasks = _tasks(records)
    fig, axes = _panels(len(tasks))
    for ax, task in zip(axes[0], tasks, strict=False):
        for i, rsu in enumerate(_rsus(records)):
            xs, ys = _by(records, task, rsu, "accuracy")
            ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=rsu)
        base = summary.get("majority_baseline", {}).get(task)
        if finite(base):
            ax.axhline(base, ls=":", color="grey", label="majority baseline")
        ax.set_title(task)
        ax.set_ylabel("accuracy")
        _integer_rounds(ax)
    fig.suptitle("accuracy per task (SURROGATE learning curve, not measured)" if surrogate
                 else "global model accuracy per task (measured on the test split)")
    _legend_outside(fig, axes[0])
    return _save(fig, path)


def plot_budget(records: Sequence[dict[str, Any]], path: Path) -> Path:
    tasks = _tasks(records)
    fig, axes = _panels(len(tasks), rows=2, height=2.6)
    for k, task in enumerate(tasks):
        top, bottom = axes[0][k], axes[1][k]
        for i, rsu in enumerate(_rsus(records)):
            rows = [r for r in records if r["task"] == task and r["rsu"] == rsu and finite(r.get("energy_j"))
                    and finite(r.get("budget_j")) and r["budget_j"] > 0]
            top.plot([r["round"] for r in rows], [r["energy_j"] / r["budget_j"] for r in rows], marker="o", ms=3,
                     color=f"C{i}", label=rsu)
            xs, ys = _by(records, task, rsu, "lam")
            bottom.plot(xs, ys, marker="s", ms=3, color=f"C{i}", label=rsu)
        top.axhline(1.0, color="black", lw=1.2, label="budget")
        top.set_title(task)
        top.set_ylabel("spend / budget")
        bottom.set_ylabel("λ (dual price)")
        _integer_rounds(top)
        _integer_rounds(bottom)
    fig.suptitle("energy spent vs budget per round (modelled energy) and the dual price λ")
    _legend_outside(fig, axes[0])
    return _save(fig, path)


def configs_of(record: dict[str, Any]) -> list[str]:
    """The configurations a round's accepted updates used: `configs` when recorded, else their LoRA ranks."""
    if isinstance(record.get("configs"), list):
        return [str(c) for c in record["configs"]]
    return [f"rank {k}" for k in record.get("ranks", [])]


def plot_configs(records: Sequence[dict[str, Any]], path: Path) -> Path:
    tasks = _tasks(records)
    fig, axes = _panels(len(tasks))
    every = sorted({c for r in records for c in configs_of(r)},
                   key=lambda c: (len(c), c))  # "rank 2" < "rank 16" by length first
    colour = {c: plt.get_cmap("viridis")(i / max(1, len(every) - 1)) for i, c in enumerate(every)}
    for ax, task in zip(axes[0], tasks, strict=False):
        counts: dict[int, Counter[str]] = defaultdict(Counter)
        for r in records:
            if r["task"] == task:
                counts[r["round"]].update(configs_of(r))
        rounds = sorted(counts)
        bottom = [0] * len(rounds)
        for c in every:
            h = [counts[k][c] for k in rounds]
            if any(h):
                ax.bar(rounds, h, bottom=bottom, color=colour[c], label=c, width=0.8)
                bottom = [b + x for b, x in zip(bottom, h, strict=True)]
        ax.set_title(task)
        ax.set_ylabel("updates")
        _integer_rounds(ax)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("configurations chosen by the vehicles per round (all RSUs; accepted updates)")
    _legend_outside(fig, axes[0])
    return _save(fig, path)


def latency_parts(record: dict[str, Any]) -> dict[str, float] | None:
    """download / train / upload / wait seconds of a round when the record carries them (any present subset)."""
    nested = record.get("latency_breakdown_s")
    src = nested if isinstance(nested, dict) else {p: record.get(f"{p}_s") for p in LATENCY_PARTS}
    parts = {p: float(src[p]) for p in LATENCY_PARTS if finite(src.get(p))}
    return parts or None


def plot_latency(records: Sequence[dict[str, Any]], path: Path) -> Path:
    tasks = _tasks(records)
    fig, axes = _panels(len(tasks))
    has_parts = any(latency_parts(r) for r in records)
    for ax, task in zip(axes[0], tasks, strict=False):
        rows = [r for r in records if r["task"] == task]
        if has_parts:
            sums: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for r in rows:
                for p, v in (latency_parts(r) or {}).items():
                    sums[r["round"]][p].append(v)
            rounds = sorted(sums)
            bottom = [0.0] * len(rounds)
            for i, p in enumerate(LATENCY_PARTS):
                h = [sum(sums[k][p]) / len(sums[k][p]) if sums[k][p] else 0.0 for k in rounds]
                if any(h):
                    ax.bar(rounds, h, bottom=bottom, color=f"C{i}", label=p, width=0.8)
                    bottom = [b + x for b, x in zip(bottom, h, strict=True)]
            ax.set_ylabel("s (mean over RSUs)")
        else:
            for i, rsu in enumerate(_rsus(records)):
                xs, ys = _by(rows, task, rsu, "round_latency_s")
                ax.plot(xs, ys, marker="o", ms=3, color=f"C{i}", label=rsu)
            ax.set_ylabel("round latency (s)")
        ax.set_title(task)
        _integer_rounds(ax)
    fig.suptitle("round latency: download / train / upload / wait (modelled)" if has_parts
                 else "round latency (modelled; the records carry no download/train/upload/wait breakdown)")
    _legend_outside(fig, axes[0])
    return _save(fig, path)


def plot_run(records: list[dict[str, Any]], summary: dict[str, Any], out: Path,
             surrogate: bool = False) -> list[Path]:
    """Write the run's plots (`PLOTS`) into `out`; returns their paths. No records: no plots."""
    if not records:
        return []
    return [plot_accuracy(records, summary, out / PLOTS[0].file, surrogate),
            plot_budget(records, out / PLOTS[1].file),
            plot_configs(records, out / PLOTS[2].file),
            plot_latency(records, out / PLOTS[3].file)]


from fleet.plots_compare import plot_compare, plot_scalability  # noqa: E402  (re-exported)

__all__ = ["PLOTS", "PlotInfo", "is_surrogate", "plot_compare", "plot_run", "plot_scalability"]
