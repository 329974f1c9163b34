"""`fedrank fleet compare`: UCB-DUAL beside HomoLoRA, HetLoRA and FlexLoRA on the same data, seeds,
trajectories and energy budget; ablations; a scalability sweep on the learning-curve surrogate."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from fleet.config import POLICIES, FleetConfig
from fleet.plots import is_surrogate, plot_compare, plot_scalability
from fleet.run import run_fleet
from fleet.stats import average_accuracy_se, fmt_ci, mean_ci95, paired_diff_ci95, within_noise
from fleet.terminal import RunProgress

COMPARE_KEYS = ("per_task_accuracy", "avg_accuracy", "mean_round_latency_s", "energy_j", "budget_j", "spend_ratio",
                "lam_max", "violation_j",
                "bytes_on_wire", "majority_baseline", "rank_counts", "ft_decisions", "cumulative_reward", "sources",
                "spend_per_task", "latency_breakdown_s", "tau_ref_s", "bytes_by_kind", "bytes_to_vehicles_by_kind")
ABLATIONS = {
    "ucb-dual-no-trifeedback": {"tri_feedback": False},
    "ucb-dual-no-ft": {"fault_tolerance": False},
}


def compare(base: FleetConfig, out: Path, policies: list[str] | None = None, ablations: bool = True,
            console: Console | None = None, seeds: Sequence[int] | None = None, jobs: int = 1,
            ) -> dict[str, dict[str, Any]]:
    """Run each policy (and the ablations) from the same base config once per seed; write compare.json/.md and
    plots. Each policy's figures are means over the seeds with 95 % CIs (`ci95`); runs go to out/NAME/seed-S.

    `jobs` > 1 runs that many runs at once, each in its own process on one torch thread (`parallel_runs`).
    """
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds) if seeds else [base.seed]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: {seeds} repeats a seed")
    runs: dict[str, FleetConfig] = {p: base.model_copy(update={"policy": p}) for p in (policies or list(POLICIES))}
    if ablations:
        for name, change in ABLATIONS.items():
            runs[name] = base.model_copy(update={"policy": "ucb-dual", **change})
    results: dict[str, dict[str, Any]] = {}
    if jobs > 1:
        done = parallel_runs({(name, seed): cfg.model_copy(update={"seed": seed})
                              for name, cfg in runs.items() for seed in seeds}, out, jobs, console)
        results = {name: over_seeds({seed: done[(name, seed)] for seed in seeds}) for name in runs}
        return _write_compare(results, base, out)
    progress = RunProgress(console)  # one bar per policy: rounds closed / total, elapsed, ETA
    for name, cfg in runs.items():
        per_seed: dict[int, dict[str, Any]] = {}
        for seed in seeds:
            if console is not None:
                console.rule(f"[bold]{name} · seed {seed}")
            summary = run_fleet(cfg.model_copy(update={"seed": seed}), out / name / f"seed-{seed}", console,
                                progress=progress, name=f"{name} · seed {seed}")
            per_seed[seed] = compared_fields(summary)
        results[name] = over_seeds(per_seed)
    progress.stop()
    return _write_compare(results, base, out)


def _write_compare(results: dict[str, dict[str, Any]], base: FleetConfig, out: Path) -> dict[str, dict[str, Any]]:
    (out / "compare.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    (out / "compare.md").write_text(markdown_table(results, base))
    plot_compare(results, out, surrogate=base.learner == "surrogate")
    return results


def parallel_runs(runs: dict[tuple[str, int], FleetConfig], out: Path, jobs: int, console: Console | None
                  ) -> dict[tuple[str, int], dict[str, Any]]:
    """Each (name, seed) run in a process of its own, `jobs` at a time: a comparison's runs are independent, while
    one run's rounds mostly follow each other on the simulated clock (its own pool has little to overlap).

    Each process trains on one torch thread with no pool (`workers` 1, `threads` 1 unless set), which gives the
    same figures as a serial comparison's pooled runs; it logs to its run directory's fleet.log.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no torch threads or locks forked mid-use
    results: dict[tuple[str, int], dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {}
        for (name, seed), cfg in runs.items():
            one = cfg.model_copy(update={"workers": 1, "threads": cfg.threads or 1})
            futures[pool.submit(_run_in_process, one.model_dump_json(), str(out / name / f"seed-{seed}"))] = (
                name, seed)
        for k, fut in enumerate(as_completed(futures), 1):
            name, seed = futures[fut]
            results[(name, seed)] = fut.result()  # a failed run fails the comparison, with its own traceback
            if console is not None:
                acc = results[(name, seed)].get("avg_accuracy")
                console.print(f"[{k}/{len(futures)}] {name} · seed {seed} done: avg accuracy "
                              f"{_f(acc, '.3f')} ({results[(name, seed)]['sources']['accuracy']})", highlight=False)
    return results


def _run_in_process(cfg_json: str, out: str) -> dict[str, Any]:
    from fleet.terminal import log_to_file, quiet_third_party

    quiet_third_party()
    log_to_file(Path(out) / "fleet.log", "INFO")
    return compared_fields(run_fleet(FleetConfig.model_validate_json(cfg_json), Path(out)))


def compared_fields(summary: dict[str, Any]) -> dict[str, Any]:
    """What a comparison keeps of one run's summary."""
    return {k: summary.get(k) for k in (*COMPARE_KEYS, "test_examples")}


def _f(x: float, fmt: str) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def markdown_table(results: dict[str, dict[str, Any]], base: FleetConfig) -> str:
    """Means ± 95 % CI over seeds; accuracy differences against the first policy, marked when within noise."""
    tasks = [t.name for t in base.tasks]
    first = next(iter(results.values()), {})
    surrogate = is_surrogate({}, base.learner) or any(is_surrogate(r) for r in results.values())
    acc_label = "surrogate acc" if surrogate else "acc"
    ref = next(iter(results), "")
    head = ["policy", *[f"{t} {acc_label}" for t in tasks], f"avg {acc_label}", f"Δ avg {acc_label} vs {ref}",
            "mean round latency (s)", "energy (J)", "spend / budget", *[f"{t} spend / budget" for t in tasks],
            "max λ", "budget violation (J)", "MB on wire"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in results.items():
        ci = r.get("ci95", {})
        spend = r.get("spend_per_task") or {}
        row = [name, *[fmt_ci(r["per_task_accuracy"].get(t, math.nan), r.get("per_task_ci95", {}).get(t, math.nan))
                       for t in tasks],
               fmt_ci(r["avg_accuracy"], ci.get("avg_accuracy", math.nan)),
               diff_cell(results[ref], r) if name != ref else "reference",
               fmt_ci(r["mean_round_latency_s"], ci.get("mean_round_latency_s", math.nan), ".2f"),
               fmt_ci(r["energy_j"], ci.get("energy_j", math.nan), ".3g"),
               fmt_ci(r.get("spend_ratio", math.nan), ci.get("spend_ratio", math.nan), ".3f"),
               *[fmt_ci(spend.get(t, {}).get("ratio", math.nan), spend.get(t, {}).get("ratio_ci95", math.nan), ".3f")
                 for t in tasks],
               fmt_ci(r.get("lam_max", math.nan), ci.get("lam_max", math.nan), ".2f"),
               fmt_ci(r["violation_j"], ci.get("violation_j", math.nan), ".3g"),
               fmt_ci(r["bytes_on_wire"] / 1e6, ci.get("bytes_on_wire", math.nan) / 1e6, ".1f")]
        lines.append("| " + " | ".join(row) + " |")
    seeds = first.get("seeds", [])
    lines += ["", f"Seeds {', '.join(map(str, seeds))} (n = {len(seeds)}): every cell is the mean over the seeds "
              "± the half-width of its 95 % confidence interval (Student t; no ± with one seed). "
              "Δ is the paired difference over the same seeds (same data, trajectories and budget); "
              "'within noise' when its 95 % interval contains 0."]
    if surrogate:
        lines.append("Accuracy: SURROGATE learning curve (fleet/surrogate.py), not measured; no model was trained.")
    else:
        lines.append("Accuracy: measured on each task's test split (global adapter of each RSU, averaged over RSUs).")
        lines.append(test_noise_line(results))
    lines.append("Latency and energy: modelled from device profiles and the channel model "
                 "(docs/algorithms.md section 2).")
    return "\n".join(lines) + "\n"


def diff_cell(ref: dict[str, Any], r: dict[str, Any], key: str = "avg_accuracy", fmt: str = "+.3f") -> str:
    seeds = [s for s in ref.get("runs", {}) if s in r.get("runs", {})]
    a = [_num(r["runs"][s][key]) for s in seeds]
    b = [_num(ref["runs"][s][key]) for s in seeds]
    if not seeds:
        return "n/a"
    d, h = paired_diff_ci95(a, b)
    cell = fmt_ci(d, h, fmt)
    return cell + (" (within noise)" if within_noise(a, b) else "")


def test_noise_line(results: dict[str, dict[str, Any]]) -> str:
    ses = [r["test_se"] for r in results.values() if math.isfinite(r.get("test_se", math.nan))]
    if not ses:
        return "Test-split noise: unknown (no test sizes recorded)."
    worst = max(ses)
    verdict = ("<= 1 point: the test splits resolve 1-point differences" if worst <= 0.01 else
               "> 1 point: the test splits are too small to resolve 1-point differences (raise test_size)")
    return (f"One standard error of the average accuracy from the test splits alone (binomial, per-task "
            f"sentences counted as examples): up to {worst:.4f}, {verdict}.")


def _num(x: Any) -> float:
    return float(x) if isinstance(x, (int, float)) and x is not None else math.nan


def over_seeds(per_seed: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """One policy's per-seed summaries -> means (same keys as a single run), `ci95` half-widths, the raw runs
    under `runs` and `test_se`, the test-split standard error of the average accuracy (mean over seeds)."""
    runs = list(per_seed.values())
    out: dict[str, Any] = {"seeds": list(per_seed), "runs": {str(s): r for s, r in per_seed.items()}, "ci95": {}}
    for key in ("avg_accuracy", "mean_round_latency_s", "energy_j", "budget_j", "spend_ratio", "lam_max",
                "violation_j", "bytes_on_wire", "cumulative_reward"):
        out[key], out["ci95"][key] = mean_ci95([_num(r.get(key)) for r in runs])  # NaN where a run lacks it
    tasks = list(runs[0]["per_task_accuracy"])
    pt = {t: mean_ci95([_num(r["per_task_accuracy"].get(t)) for r in runs]) for t in tasks}
    out["per_task_accuracy"] = {t: m for t, (m, _) in pt.items()}
    out["per_task_ci95"] = {t: h for t, (_, h) in pt.items()}
    out["majority_baseline"] = {t: mean_ci95([_num(r["majority_baseline"].get(t)) for r in runs])[0]
                                for t in runs[0]["majority_baseline"]}
    for key in ("rank_counts", "ft_decisions"):  # summed over the seeds
        total: dict[str, int] = {}
        for r in runs:
            for k, v in r[key].items():
                total[k] = total.get(k, 0) + v
        out[key] = total
    out.update(_means_of_breakdowns(runs))
    out["sources"] = runs[0]["sources"]
    surrogate = "surrogate" in str(out["sources"].get("accuracy", ""))
    ses = [average_accuracy_se({t: (_num(r["per_task_accuracy"].get(t)), int(n))
                                for t, n in (r.get("test_examples") or {}).items()}) for r in runs]
    out["test_se"] = math.nan if surrogate else mean_ci95(ses)[0]
    return out


def _means_of_breakdowns(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-task spend/budget (mean ± CI of the ratio), the latency breakdown, tau_ref and bytes by kind: means over
    the seeds of what each run's summary has (older summaries without them give empty dicts / NaN)."""
    out: dict[str, Any] = {"spend_per_task": {}}
    tasks = {t for r in runs for t in (r.get("spend_per_task") or {})}
    for t in sorted(tasks):
        rows = [(r.get("spend_per_task") or {}).get(t, {}) for r in runs]
        ratio, half = mean_ci95([_num(x.get("ratio")) for x in rows])
        out["spend_per_task"][t] = {"ratio": ratio, "ratio_ci95": half,
                                    "energy_j": mean_ci95([_num(x.get("energy_j")) for x in rows])[0],
                                    "budget_j": mean_ci95([_num(x.get("budget_j")) for x in rows])[0]}
    for key in ("latency_breakdown_s", "bytes_by_kind", "bytes_to_vehicles_by_kind"):
        kinds = sorted({k for r in runs for k in (r.get(key) or {})})
        out[key] = {k: mean_ci95([_num((r.get(key) or {}).get(k, 0 if key != "latency_breakdown_s" else None))
                                  for r in runs])[0] for k in kinds}
    out["tau_ref_s"] = mean_ci95([_num(r.get("tau_ref_s")) for r in runs])[0]
    return out


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
    """Regret of UCB-DUAL against the best fixed rank in hindsight (docs/algorithms.md section 7): one run per candidate
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
             console: Console | None = None,
             seeds: Sequence[int] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """`compare` once per channel preset (no ablations, the same seeds), and `channels.md`: one table per preset."""
    results = {}
    for preset in presets:
        if console is not None:
            console.rule(f"[bold]channel {preset}")
        results[preset] = compare(base.model_copy(update={"channel": preset}), out / preset, policies,
                                  ablations=False, console=console, seeds=seeds)
    (out / "channels.md").write_text(channel_tables(results, base))
    return results


def channel_tables(results: dict[str, dict[str, dict[str, Any]]], base: FleetConfig) -> str:
    """Per preset: mean round latency and its breakdown, spend/budget, bytes on the wire (by kind)."""
    surrogate = is_surrogate({}, base.learner) or any(is_surrogate(r) for rs in results.values() for r in rs.values())
    lines: list[str] = []
    for preset, runs in results.items():
        lines += [f"#### channel `{preset}`", "",
                  "| policy | mean round latency (s) | Δ latency vs ucb-dual (s) | download | train | upload | wait "
                  "| aggregate | spend / budget | MB published | global adapter delivered to vehicles (MB) | avg acc"
                  + (" (SURROGATE)" if surrogate else "") + " |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        ref = runs.get("ucb-dual")
        for name, r in runs.items():
            b = r.get("latency_breakdown_s", {})
            kinds = r.get("bytes_to_vehicles_by_kind", {})
            glob = kinds.get("round", 0) + kinds.get("tier", 0)
            ci = r.get("ci95", {})
            ratio = r.get("spend_ratio", r["energy_j"] / r["budget_j"] if r.get("budget_j") else math.nan)
            lines.append("| " + " | ".join([
                name, fmt_ci(r["mean_round_latency_s"], ci.get("mean_round_latency_s", math.nan), ".2f"),
                "reference" if name == "ucb-dual" or ref is None else diff_cell(ref, r, "mean_round_latency_s", "+.2f"),
                *[_f(b.get(k, math.nan), ".2f") for k in ("download", "train", "upload", "wait", "aggregate")],
                fmt_ci(ratio, ci.get("spend_ratio", math.nan), ".2f"), _f(r["bytes_on_wire"] / 1e6, ".1f"),
                _f(glob / 1e6, ".1f"), fmt_ci(r["avg_accuracy"], ci.get("avg_accuracy", math.nan))]) + " |")
        lines.append("")
    lines.append("Latency, energy and bytes: modelled on the simulated clock (device profiles, FLOP model, channel "
                 "preset, shared cell uplink, modelled RSU aggregation). MB published: every message once, as the "
                 "broker receives it; delivered: every copy the broker sent to a vehicle (announcements, rank tiers). "
                 "Means over the seeds (± the 95 % CI half-width where shown); Δ latency is the paired difference to "
                 "UCB-DUAL over the same seeds, 'within noise' when its 95 % interval contains 0. "
                 "Breakdown: the slowest vehicle's download / train / solo upload airtime, the rest of the round "
                 "(cell sharing, deadline waits) and aggregation. "
                 + ("Accuracy: SURROGATE learning curve (fleet/surrogate.py), not measured." if surrogate
                    else "Accuracy: measured on each task's test split."))
    return "\n".join(lines) + "\n"
