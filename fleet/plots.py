"""PNG plots of a fleet run and of a policy comparison (matplotlib, headless)."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def _series(records: list[dict[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        v = r.get(key)
        if v is not None and not (isinstance(v, float) and math.isnan(v)):
            out[f"{r['task']} @ {r['rsu']}"].append((r["round"], v))
    return out


def _line_plot(series: dict[str, list[tuple[int, float]]], title: str, ylabel: str, path: Path,
               extra: dict[str, list[tuple[int, float]]] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    colour = {name: f"C{i % 10}" for i, name in enumerate(sorted(series))}
    for name, pts in sorted(series.items()):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, label=name, color=colour[name])
    for name, pts in sorted((extra or {}).items()):  # "budget X" is drawn dashed in X's colour
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ls="--", lw=1, label=name,
                color=colour.get(name.removeprefix("budget "), "grey"))
    ax.set_title(title)
    ax.set_xlabel("round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_run(records: list[dict[str, Any]], summary: dict[str, Any], out: Path,
             surrogate: bool = False) -> list[Path]:
    paths = [out / n for n in ("accuracy.png", "lambda.png", "energy.png", "ranks.png", "latency.png")]
    title = ("accuracy per task (SURROGATE learning curve, not measured)" if surrogate
             else "global model accuracy per task (measured on the test split)")
    _line_plot(_series(records, "accuracy"), title, "accuracy", paths[0])
    _line_plot(_series(records, "lam"), "dual price λ per task", "λ", paths[1])
    budget = {f"budget {k}": v for k, v in _series(records, "budget_j").items()}
    _line_plot(_series(records, "energy_j"), "round energy vs budget (modelled)", "J", paths[2], extra=budget)
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in records:
        for k in r["ranks"]:
            ax.scatter(r["sim_time_s"], k, s=8, alpha=0.6, color="C0")
    ax.set_yscale("log", base=2)
    ax.set_title("ranks chosen by the vehicles")
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("LoRA rank")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths[3], dpi=110)
    plt.close(fig)
    _line_plot(_series(records, "round_latency_s"), "round latency (modelled)", "s", paths[4])
    return paths


def plot_compare(results: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """Bars of average accuracy, latency, energy and violation per policy."""
    policies = list(results)
    paths = []
    for key, title, unit in (("avg_accuracy", "average final accuracy (measured)", "accuracy"),
                             ("mean_round_latency_s", "mean round latency (modelled)", "s"),
                             ("energy_j", "total energy (modelled)", "J"),
                             ("violation_j", "budget violation (modelled)", "J")):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        colours = [f"C{i}" for i in range(len(policies))]
        ax.bar(policies, [results[p].get(key, math.nan) for p in policies], color=colours)
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        path = out / f"compare_{key}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def plot_scalability(sweep: dict[str, dict[int, float]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    for policy, pts in sweep.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=policy)
    ax.set_title("cumulative reward vs number of vehicles\n(learning-curve surrogate, not measured)", fontsize=10)
    ax.set_xlabel("vehicles")
    ax.set_ylabel("cumulative reward")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "scalability.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
