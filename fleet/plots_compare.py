"""PNG plots of a policy comparison: each metric per policy with its 95 % confidence interval over seeds,
accuracy against energy (one point per policy and seed), and the surrogate scalability sweep.

A policy's seeds are the summaries passed in (a list per policy), or, when one summary is passed, the
`summary.json` files one directory below `out/<policy>/` (one per seed) if there are any.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from fleet.plots import DPI, PlotInfo, finite, is_surrogate
from fleet.stats import mean_ci95


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    source: str
    scale: float = 1.0


METRICS = (
    Metric("avg_accuracy", "average final accuracy", "measured, or surrogate (set per comparison)"),
    Metric("mean_round_latency_s", "mean round latency (s)", "modelled"),
    Metric("energy_j", "energy (J)", "modelled"),
    Metric("violation_j", "budget violation (J)", "modelled"),
    Metric("bytes_on_wire", "on the wire (MB)", "counted", 1e-6),
)
COMPARE_PLOTS = (
    PlotInfo("compare_metrics.png", "each metric per policy: mean over seeds with its 95 % CI, seeds as dots",
             "accuracy measured on the test split (or surrogate, as titled); latency and energy modelled"),
    PlotInfo("accuracy_vs_energy.png", "average final accuracy against total energy, one point per policy and seed",
             "accuracy measured (or surrogate, as titled); energy modelled"),
)


def seeds_of(out: Path, name: str, given: dict[str, Any] | Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-seed summaries of one policy (see the module docstring)."""
    if not isinstance(given, Mapping):
        return list(given)
    found = [json.loads(p.read_text()) for p in sorted((out / name).glob("*/summary.json"))]
    return found or [dict(given)]


def plot_compare(results: Mapping[str, dict[str, Any] | Sequence[dict[str, Any]]], out: Path,
                 surrogate: bool = False) -> list[Path]:
    """compare_metrics.png and accuracy_vs_energy.png for the policies in `results`; returns their paths.
    The accuracy is labelled surrogate when `surrogate` (the comparison's learner) or any summary's source says so."""
    runs = {name: seeds_of(out, name, r) for name, r in results.items()}
    policies = list(runs)
    colour = {p: f"C{i % 10}" for i, p in enumerate(policies)}
    n_seeds = sorted({len(v) for v in runs.values()})
    seeds_txt = f"{n_seeds[0]} seed{'s' if n_seeds[0] != 1 else ''}" if len(n_seeds) == 1 else \
        f"{n_seeds[0]}-{n_seeds[-1]} seeds"
    surrogate = surrogate or any(is_surrogate(s) for ss in runs.values() for s in ss)
    acc_src = "SURROGATE, not measured" if surrogate else "measured"

    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.2 * len(METRICS), 0.45 * len(policies) + 1.8),
                             layout="constrained", sharey=True)
    ys = list(range(len(policies)))
    for ax, m in zip(axes, METRICS, strict=True):
        for y, p in zip(ys, policies, strict=True):
            vals = [float(s[m.key]) * m.scale for s in runs[p] if finite(s.get(m.key))]
            mean, half = mean_ci95(vals)
            if finite(mean):
                ax.barh(y, mean, color=colour[p], alpha=0.35, height=0.6)
                if finite(half):
                    ax.errorbar(mean, y, xerr=half, fmt="none", ecolor="black", capsize=3, lw=1)
                ax.plot(vals, [y] * len(vals), "o", ms=3, color=colour[p])
        src = acc_src if m.key == "avg_accuracy" else m.source
        ax.set_title(f"{m.label}\n({src})", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys, policies)
    axes[0].invert_yaxis()
    fig.suptitle(f"policies side by side: mean over {seeds_txt}, 95 % CI (Student t) where there are ≥ 2 seeds")
    paths = [out / COMPARE_PLOTS[0].file]
    fig.savefig(paths[0], dpi=DPI)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for p in policies:
        pts = [(s["energy_j"], s["avg_accuracy"]) for s in runs[p]
               if finite(s.get("energy_j")) and finite(s.get("avg_accuracy"))]
        ax.scatter([e for e, _ in pts], [a for _, a in pts], color=colour[p], label=p, s=28, alpha=0.8)
    ax.set_xlabel("total energy (J, modelled)")
    ax.set_ylabel(f"average final accuracy ({acc_src})")
    ax.set_title(f"accuracy ({'SURROGATE' if surrogate else 'measured'}) vs energy (modelled), one point per "
                 f"policy and seed ({seeds_txt})", fontsize=10)
    ax.grid(alpha=0.3)
    if policies:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    paths.append(out / COMPARE_PLOTS[1].file)
    fig.savefig(paths[1], dpi=DPI)
    plt.close(fig)
    return paths


def plot_scalability(sweep: dict[str, dict[int, float]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 4), layout="constrained")
    for policy, pts in sweep.items():
        xs = sorted(pts)
        ax.plot(xs, [pts[x] for x in xs], marker="o", label=policy)
    ax.set_title("cumulative reward vs number of vehicles\n(learning-curve surrogate, not measured)", fontsize=10)
    ax.set_xlabel("vehicles")
    ax.set_ylabel("cumulative reward")
    ax.grid(alpha=0.3)
    if sweep:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    path = out / "scalability.png"
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
