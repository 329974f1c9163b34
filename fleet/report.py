"""`report.md` beside a run's plots: the config in brief, the summary table, the plots, where each figure came from.

`write_report(out)` rebuilds plots and report from the run's own files (`metrics.jsonl`, plus `config.json` and
`summary.json` when present), so `fedrank fleet report DIR` gives the same report as the run wrote. The report
holds no timestamps or absolute paths: the same run gives the same bytes.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from fleet.plots import PLOTS, finite, is_surrogate, plot_run
from fleet.terminal import fmt

log = logging.getLogger(__name__)
REPORT = "report.md"
SURROGATE_NOTE = "surrogate learning curve (not measured; learner=surrogate in config.json)"


class ReportError(ValueError):
    """A run directory the report cannot be built from."""


def read_records(out: Path) -> list[dict[str, Any]]:
    """The run's metrics records; a malformed line is skipped with one log line naming it."""
    path = out / "metrics.jsonl"
    if not path.is_file():
        raise ReportError(f"{out}: no metrics.jsonl (not a fleet run directory?)")
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            log.warning("report: %s line %d skipped (%s)", path, lineno, exc)
            continue
        if isinstance(row, dict) and {"task", "rsu", "round"} <= set(row):
            rows.append(row)
        else:
            log.warning("report: %s line %d skipped (not a round record)", path, lineno)
    return rows


def summary_from_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """What a summary says that the records alone can tell (used when summary.json is missing)."""
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        if finite(r.get("accuracy")):
            last[(r["rsu"], r["task"])] = r
    tasks = list(dict.fromkeys(r["task"] for r in records))
    per_task = {}
    for t in tasks:
        finals = [r["accuracy"] for (_, task), r in last.items() if task == t]
        per_task[t] = sum(finals) / len(finals) if finals else math.nan
    accs = [a for a in per_task.values() if finite(a)]
    lat = [r["round_latency_s"] for r in records if finite(r.get("round_latency_s"))]
    return {"policy": records[0].get("policy", "?") if records else "?", "per_task_accuracy": per_task,
            "avg_accuracy": sum(accs) / len(accs) if accs else math.nan, "majority_baseline": {}, "entity_f1": {},
            "mean_round_latency_s": sum(lat) / len(lat) if lat else math.nan,
            "energy_j": sum(r.get("energy_j") or 0.0 for r in records),
            "budget_j": sum(r.get("budget_j") or 0.0 for r in records), "rounds_recorded": len(records),
            "sources": {k: records[0].get(f"{k}_source", "?") if records else "?"
                        for k in ("accuracy", "energy", "latency")}}


def _config_brief(cfg: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    if not cfg:
        return ["- (no config.json in this directory)"]
    data = summary.get("data", {})
    tasks = ", ".join(f"{t['name']} ({t['task_type']}, data {data.get(t['name'], t.get('data', 'default'))})"
                      for t in cfg.get("tasks", []))
    model = cfg.get("model_dir") or cfg.get("model")
    return [
        f"- policy **{cfg.get('policy')}**, learner {cfg.get('learner')}, seed {cfg.get('seed')}",
        f"- {cfg.get('vehicles')} vehicles, {cfg.get('rsus')} RSUs, {cfg.get('rounds')} rounds per task and RSU",
        f"- model {model}; candidate ranks {cfg.get('ranks')}; {cfg.get('local_steps')} local steps of batch "
        f"{cfg.get('batch_size')}",
        f"- tasks: {tasks}",
        f"- energy budget scale {cfg.get('energy_budget_scale')}, tri-feedback {cfg.get('tri_feedback')}, "
        f"fault tolerance {cfg.get('fault_tolerance')}",
        "- the full resolved configuration is `config.json`",
    ]


def _acc(x: Any) -> str:
    return f"{x:.3f}" if finite(x) else "n/a"


def _summary_table(summary: dict[str, Any], records: list[dict[str, Any]], order: list[str],
                   surrogate: bool) -> list[str]:
    acc_head = "final accuracy (surrogate, not measured)" if surrogate else "final accuracy (measured)"
    lines = [f"| task | {acc_head} | entity F1 | majority baseline | spend / budget (modelled) |",
             "|---|---:|---:|---:|---:|"]
    per_task = summary.get("per_task_accuracy", {})
    for task in sorted(per_task, key=lambda t: order.index(t) if t in order else len(order)):
        acc = per_task[task]
        rows = [r for r in records if r["task"] == task]
        spent = sum(r.get("energy_j") or 0.0 for r in rows)
        budget = sum(r.get("budget_j") or 0.0 for r in rows)
        f1 = summary.get("entity_f1", {}).get(task)
        base = summary.get("majority_baseline", {}).get(task)
        lines.append(f"| {task} | {_acc(acc)} | {_acc(f1) if f1 is not None else '-'} | {_acc(base)} | "
                     f"{f'{spent / budget:.2f}' if budget else 'n/a'} |")
    lines.append(f"| **average** | {_acc(summary.get('avg_accuracy'))} | | | |")
    lines.append("")
    extra = [f"mean round latency {fmt(summary.get('mean_round_latency_s'))} s (modelled)",
             f"energy {fmt(summary.get('energy_j'))} J against budget {fmt(summary.get('budget_j'))} J (modelled)"]
    if "violation_j" in summary:
        extra.append(f"budget violation {fmt(summary['violation_j'])} J")
    if "bytes_on_wire" in summary:
        extra.append(f"{fmt(summary['bytes_on_wire'] / 1e6)} MB on the wire")
    if summary.get("ft_decisions"):
        extra.append(f"fault-tolerance decisions {summary['ft_decisions']}")
    if summary.get("rank_counts"):
        extra.append(f"ranks chosen {summary['rank_counts']}")
    if "finished" in summary and not summary["finished"]:
        extra.append("**the run did not finish every round**")
    lines.append("; ".join(extra) + ".")
    return lines


def render(cfg: dict[str, Any], summary: dict[str, Any], records: list[dict[str, Any]],
           plots: list[Path]) -> str:
    drawn = {p.name for p in plots}
    surrogate = is_surrogate(summary, cfg.get("learner"))
    sources = dict(summary.get("sources", {}))
    if surrogate and "surrogate" not in str(sources.get("accuracy", "")):
        sources["accuracy"] = SURROGATE_NOTE  # the config says surrogate; the summary did not record it
    out = [f"# Fleet run: {summary.get('policy', cfg.get('policy', '?'))}", "",
           f"Built from `metrics.jsonl` ({len(records)} round records: one per task, round and RSU) and "
           "`summary.json`; `fedrank fleet report DIR` rebuilds it.", "",
           "## Configuration", "", *_config_brief(cfg, summary), "",
           "## Summary", "",
           *_summary_table(summary, records, [t["name"] for t in cfg.get("tasks", [])], surrogate), "",
           "## Figures", ""]
    for info in PLOTS:
        if info.file not in drawn:
            continue
        source = info.source
        if info.file == "accuracy.png" and sources.get("accuracy"):
            source = sources["accuracy"]
        out += [f"### {info.file}", "", f"![{info.shows}]({info.file})", "",
                f"*Shows:* {info.shows}. *Source:* {source}; drawn from `metrics.jsonl`.", ""]
    out += ["## Where the numbers come from", ""]
    out += [f"- {k}: {v}" for k, v in sorted(sources.items())]
    return "\n".join(out) + "\n"


def write_report(out: Path, records: list[dict[str, Any]] | None = None,
                 summary: dict[str, Any] | None = None) -> Path:
    """(Re)draw the run's plots and write `out/report.md`; returns its path.

    Raises:
        ReportError: `out` holds no metrics.jsonl (when `records` is not given).
    """
    records = read_records(out) if records is None else records
    cfg_path, sum_path = out / "config.json", out / "summary.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    if summary is None:
        summary = json.loads(sum_path.read_text()) if sum_path.is_file() else summary_from_records(records)
    plots = plot_run(records, summary, out, surrogate=is_surrogate(summary, cfg.get("learner")))
    path = out / REPORT
    path.write_text(render(cfg, summary, records, plots), encoding="utf-8")
    return path
