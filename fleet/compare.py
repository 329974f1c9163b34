"""`fedrank fleet compare`: UCB-DUAL beside HomoLoRA, HetLoRA and FlexLoRA on the same data, seeds,
trajectories and energy budget; ablations; a scalability sweep on the learning-curve surrogate."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console

from fleet.config import POLICIES, FleetConfig
from fleet.plots import plot_compare, plot_scalability
from fleet.run import run_fleet

COMPARE_KEYS = ("per_task_accuracy", "avg_accuracy", "mean_round_latency_s", "energy_j", "budget_j", "violation_j",
                "bytes_on_wire", "majority_baseline", "rank_counts", "ft_decisions", "cumulative_reward", "sources",
                "spend_per_task", "latency_breakdown_s", "tau_ref_s", "bytes_by_kind", "bytes_to_vehicles_by_kind")
ABLATIONS = {
    "ucb-dual-no-trifeedback": {"tri_feedback": False},
    "ucb-dual-no-ft": {"fault_tolerance": False},
}


def compare(base: FleetConfig, out: Path, policies: list[str] | None = None, ablations: bool = True,
            console: Console | None = None) -> dict[str, dict[str, Any]]:
    """Run each policy (and the ablations) from the same base config; write compare.json/.md and plots."""
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, FleetConfig] = {p: base.model_copy(update={"policy": p}) for p in (policies or list(POLICIES))}
    if ablations:
        for name, change in ABLATIONS.items():
            runs[name] = base.model_copy(update={"policy": "ucb-dual", **change})
    results: dict[str, dict[str, Any]] = {}
    for name, cfg in runs.items():
        if console is not None:
            console.rule(f"[bold]{name}")
        summary = run_fleet(cfg, out / name, console)
        results[name] = {k: summary[k] for k in COMPARE_KEYS}
    (out / "compare.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out / "compare.md").write_text(markdown_table(results, base))
    plot_compare(results, out)
    return results


def _f(x: float, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown_table(results: dict[str, dict[str, Any]], base: FleetConfig) -> str:
    tasks = [t.name for t in base.tasks]
    head = ["policy", *[f"{t} acc" for t in tasks], "avg acc", "mean round latency (s)", "energy (J)",
            "budget violation (J)", *[f"{t} spend/budget" for t in tasks], "bytes on wire"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        spend = r.get("spend_per_task", {})
        row = [name, *[_f(r["per_task_accuracy"].get(t, math.nan), ".3f") for t in tasks],
               _f(r["avg_accuracy"], ".3f"), _f(r["mean_round_latency_s"], ".2f"), _f(r["energy_j"], ".0f"),
               _f(r["violation_j"], ".0f"), *[_f(spend.get(t, {}).get("ratio", math.nan), ".2f") for t in tasks],
               f"{r['bytes_on_wire']:,}"]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    acc = ("Accuracy: SURROGATE learning curve (fleet/surrogate.py), not measured. " if base.learner == "surrogate"
           else "Accuracy: measured on each task's test split (global adapter of each RSU, averaged over RSUs). ")
    lines.append(acc + "Latency and energy: modelled from device profiles and the channel model (PAPER.md section 2).")
    return "\n".join(lines) + "\n"


def scalability(base: FleetConfig, out: Path, vehicles: list[int], policies: list[str] | None = None,
                console: Console | None = None) -> dict[str, dict[int, float]]:
    """Cumulative reward per policy vs fleet size, training replaced by the labelled surrogate."""
    sweep: dict[str, dict[int, float]] = {}
    for p in policies or list(POLICIES):
        sweep[p] = {}
        for n in vehicles:
            cfg = base.model_copy(update={"policy": p, "vehicles": n, "learner": "surrogate"})
            if console is not None:
                console.rule(f"[bold]scalability {p} x {n} vehicles (surrogate learner)")
            sweep[p][n] = run_fleet(cfg, out / f"{p}-{n}", None)["cumulative_reward"]
    (out / "scalability.json").write_text(json.dumps(
        {"note": "training replaced by a learning-curve surrogate (fleet/surrogate.py); not measured accuracy",
         "cumulative_reward": sweep}, indent=2, sort_keys=True))
    plot_scalability(sweep, out)
    return sweep


def regret(base: FleetConfig, out: Path, console: Console | None = None) -> dict[str, Any]:
    """Regret of UCB-DUAL against the best fixed rank in hindsight (PAPER.md section 7): one run per candidate
    rank with everyone at that rank (exact aggregation), same data, seeds, trajectories and budget."""
    rewards: dict[str, float] = {}
    for rank in base.ranks:
        cfg = base.model_copy(update={"policy": "fixed-rank", "homo_rank": rank})
        if console is not None:
            console.rule(f"[bold]fixed rank {rank}")
        rewards[str(rank)] = run_fleet(cfg, out / f"fixed-{rank}", None)["cumulative_reward"]
    ours = run_fleet(base.model_copy(update={"policy": "ucb-dual"}), out / "ucb-dual", None)["cumulative_reward"]
    best = max(rewards, key=lambda k: rewards[k])
    result = {"fixed_rank_reward": rewards, "ucb_dual_reward": ours, "best_fixed_rank": int(best),
              "regret": rewards[best] - ours, "learner": base.learner,
              "note": "cumulative reward sum_t sum_m (acc - w_tau * tau_round / tau_ref); accuracy "
                      + ("from the labelled surrogate, not measured" if base.learner == "surrogate" else "measured")}
    (out / "regret.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return result


def channels(base: FleetConfig, out: Path, presets: list[str], policies: list[str] | None = None,
             console: Console | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """`compare` once per channel preset (no ablations), and `channels.md`: one table per preset."""
    results = {}
    for preset in presets:
        if console is not None:
            console.rule(f"[bold]channel {preset}")
        results[preset] = compare(base.model_copy(update={"channel": preset}), out / preset, policies,
                                  ablations=False, console=console)
    (out / "channels.md").write_text(channel_tables(results, base))
    return results


def channel_tables(results: dict[str, dict[str, dict[str, Any]]], base: FleetConfig) -> str:
    """Per preset: mean round latency and its breakdown, spend/budget, bytes on the wire (by kind)."""
    surrogate = base.learner == "surrogate"
    lines: list[str] = []
    for preset, runs in results.items():
        lines += [f"#### channel `{preset}`", "",
                  "| policy | mean round latency (s) | download | train | upload | wait | aggregate | spend / budget "
                  "| MB published | global adapter delivered to vehicles (MB) | avg acc"
                  + (" (SURROGATE)" if surrogate else "") + " |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in runs.items():
            b = r.get("latency_breakdown_s", {})
            kinds = r.get("bytes_to_vehicles_by_kind", {})
            glob = kinds.get("round", 0) + kinds.get("tier", 0)
            ratio = r["energy_j"] / r["budget_j"] if r.get("budget_j") else math.nan
            lines.append("| " + " | ".join([
                name, _f(r["mean_round_latency_s"], ".2f"),
                *[_f(b.get(k, math.nan), ".2f") for k in ("download", "train", "upload", "wait", "aggregate")],
                _f(ratio, ".2f"), _f(r["bytes_on_wire"] / 1e6, ".1f"), _f(glob / 1e6, ".1f"),
                _f(r["avg_accuracy"], ".3f")]) + " |")
        lines.append("")
    lines.append("Latency, energy and bytes: modelled on the simulated clock (device profiles, FLOP model, channel "
                 "preset, shared cell uplink, modelled RSU aggregation). MB published: every message once, as the "
                 "broker receives it; delivered: every copy the broker sent to a vehicle (announcements, rank tiers). "
                 "Breakdown: the slowest vehicle's download / "
                 "train / solo upload airtime, the rest of the round (cell sharing, deadline waits) and aggregation. "
                 + ("Accuracy: SURROGATE learning curve (fleet/surrogate.py), not measured." if surrogate
                    else "Accuracy: measured on each task's test split."))
    return "\n".join(lines) + "\n"
