"""`fedrank fleet run`: one experiment on the in-process fleet; metrics.jsonl, summary.json, plots.

Every figure is labelled: accuracy is measured (the global adapter evaluated on the task's test split);
latency and energy are modelled from device profiles and the channel model (docs/algorithms.md section 2).
"""

from __future__ import annotations

import json
import logging
import math
from collections import deque
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edge_agent.settings import EdgeSettings
from fleet.config import FleetConfig
from fleet.terminal import RunProgress, fmt, round_line
from fleet.world import World, build_world, majority_baseline

log = logging.getLogger(__name__)
ENERGY_SOURCE = "modelled (fleet.sim device profiles + channel model)"
LATENCY_SOURCE = "modelled (simulated clock)"
ACCURACY_SOURCE = "measured (global adapter on the task's test split)"
SURROGATE_SOURCE = "surrogate learning curve (not measured; mean vehicle figure)"


class Recorder:
    """Turns each round an RSU closes into one metrics record (evaluating the new global adapter)."""

    def __init__(self, world: World, out: Path, progress: RunProgress | None = None, name: str = "") -> None:
        self.w = world
        self.progress = progress
        self.name = name or world.cfg.policy
        self.widths = {"rsu": max(len(r.id) for r in world.rsus), "task": max(len(t.name) for t in world.cfg.tasks),
                       "round": len(str(max(0, world.cfg.rounds - 1)))}
        self.records: list[dict[str, Any]] = []
        self._seen: dict[str, int] = {r.id: 0 for r in world.rsus}
        # (rsu, task) -> (global layers, head, test size, metrics or their future) last evaluated; the objects are
        # kept, so an identity check tells a kept global from a new aggregate
        self._evaluated: dict[tuple[str, str], tuple[Any, Any, int, Any]] = {}
        self._file = open(out / "metrics.jsonl", "w")  # noqa: SIM115 - closed in close()
        # rows waiting for their score: (row, metrics or their future, test examples behind them)
        self._queue: deque[tuple[dict[str, Any], Any, int | None]] = deque()

    def close(self) -> None:
        self._file.close()

    def poll(self) -> None:
        for rsu in self.w.rsus:
            hist = rsu.history
            new, self._seen[rsu.id] = hist[self._seen[rsu.id]:], len(hist)
            for i, rec in enumerate(new):
                latest = i == len(new) - 1 or all(r.task != rec.task for r in new[i + 1:])
                self._record(rsu, rec, evaluate=latest)
        self._flush(wait=False)

    def finish(self) -> None:
        """Wait for the evaluations still running and write their rows."""
        self._flush(wait=True)

    def _record(self, rsu: Any, rec: Any, evaluate: bool) -> None:
        spec = self.w.specs[rec.task]
        metrics: dict[str, float] | Future[dict[str, float]] = {}
        n_test: int | None = None
        surrogate = self.w.cfg.learner == "surrogate"
        if surrogate:  # nothing was learned for real: report the surrogate's curve, labelled as such
            metrics = {"accuracy": rec.accuracy}
        elif evaluate:
            tr = rsu.tasks[rec.task]
            test = self.w.tests[rec.task]
            if rec.round < self.w.cfg.rounds - 1:  # the curve on a subset; the final round on the whole split
                test = test[: self.w.cfg.curve_test_size]
            key, held = (rsu.id, rec.task), self._evaluated.get((rsu.id, rec.task))
            if held is not None and held[0] is tr.layers and held[1] is tr.head and held[2] == len(test):
                metrics = held[3]  # the global was kept (no aggregation): same model, same score
                n_test = len(test)
            else:
                metrics = self._evaluate(spec, test, tr.layers or None, tr.head or None)
                self._evaluated[key] = (tr.layers, tr.head, len(test), metrics)
                n_test = len(test)
        row = {
            "policy": self.w.cfg.policy, "rsu": rsu.id, "task": rec.task, "round": rec.round,
            "sim_time_s": round(self.w.clock.now(), 6),
            "mean_vehicle_accuracy": rec.accuracy,
            "lam": rec.lam, "lam_announced": rec.lam_announced, "energy_j": rec.energy_j, "budget_j": rec.budget_j,
            "violation_j": rec.violation_j, "ranks": list(rec.ranks), "updates": rec.updates,
            "participants": len(rec.participants), "accepted": list(rec.accepted), "ft": dict(rec.ft),
            "round_latency_s": rec.round_latency_s, "closed_by": rec.closed_by, "note": rec.note,
            "bytes_on_wire": self.w.tap.total, "energy_measured": rec.energy_measured,
            "energy_source": ENERGY_SOURCE, "latency_source": LATENCY_SOURCE,
            "accuracy_source": SURROGATE_SOURCE if surrogate else ACCURACY_SOURCE,
        }
        self._queue.append((row, metrics, n_test))

    def _evaluate(self, spec: Any, test: list, layers: Any, head: Any) -> Future[dict[str, float]]:
        """On the pool when there is one (the clock runs on meanwhile), else here; rows wait for it in order."""
        if self.w.pool is not None:
            return self.w.pool.evaluate(spec, test, layers=layers, head=head, alpha=self.w.cfg.lora_alpha)
        done: Future[dict[str, float]] = Future()
        done.set_result(self.w.trainer.evaluate(spec, test, layers=layers, head=head, alpha=self.w.cfg.lora_alpha))
        return done

    def _flush(self, wait: bool) -> None:
        """Write the queued rows, in the order their rounds closed, as far as their scores are ready."""
        while self._queue:
            row, metrics, n_test = self._queue[0]
            if isinstance(metrics, Future):
                if not (wait or metrics.done()):
                    return
                metrics = metrics.result()
            self._queue.popleft()
            row.update({"accuracy": metrics.get("accuracy", math.nan), "entity_f1": metrics.get("entity_f1"),
                        "test_loss": metrics.get("loss"), "test_examples": n_test})
            self.records.append(row)
            self._file.write(json.dumps(row, sort_keys=True) + "\n")
            self._file.flush()
            if self.progress is not None:
                self.progress.advance(self.name, round_line(row, self.widths))


def fresh_state(out: Path) -> None:
    """Each run starts its agents from nothing: a previous run's state in the same directory would resume it."""
    import shutil

    shutil.rmtree(out / "state", ignore_errors=True)


def total_rounds(cfg: FleetConfig) -> int:
    """Rounds a run closes: every task at every RSU, `rounds` times."""
    return cfg.rounds * cfg.rsus * len(cfg.tasks)


def done(world: World) -> bool:
    n = world.cfg.rounds
    return all(sum(1 for r in rsu.history if r.task == t.name) >= n for rsu in world.rsus for t in world.cfg.tasks)


def run_fleet(cfg: FleetConfig, out: Path, console: Console | None = None, progress: RunProgress | None = None,
              name: str | None = None) -> dict[str, Any]:
    """Run one experiment; returns the summary (also written to `out/summary.json`).

    With a console, each closed round is shown on it (and counted on `progress`, a bar of its own when not
    given); `name` labels this run's bar (default: the policy).
    """
    out.mkdir(parents=True, exist_ok=True)
    fresh_state(out)
    world = build_world(cfg, out)  # bad mobility input fails here, before anything of the run is written
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    if console is None:
        progress = None
    own = progress is None and console is not None
    if own:
        progress = RunProgress(console)
    name = name or cfg.policy
    if progress is not None:
        progress.add(name, total_rounds(cfg))
    rec = Recorder(world, out, progress, name)
    max_time = cfg.rounds * (cfg.round_timeout_s + cfg.round_gap_s) * 3 + 600
    try:
        world.driver.start()
        finished = world.driver.run_until(lambda: done(world), max_time, on_step=rec.poll)
        rec.poll()
        rec.finish()
    finally:
        rec.close()
        world.close()
        if own and progress is not None:
            progress.stop()
    summary = summarise(world, rec.records, finished)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    from fleet.report import write_report

    write_report(out)  # the plots and report.md, from the files just written (as `fleet report` rebuilds them)
    if console is not None:
        console.print(summary_table(summary))
    return summary


def summarise(world: World, records: list[dict[str, Any]], finished: bool) -> dict[str, Any]:
    cfg = world.cfg
    per_task: dict[str, float] = {}
    per_task_f1: dict[str, float] = {}
    for t in cfg.tasks:
        finals = []
        for rsu in world.rsus:
            rows = [r for r in records if r["task"] == t.name and r["rsu"] == rsu.id and not math.isnan(r["accuracy"])]
            if rows:
                finals.append(rows[-1])
        per_task[t.name] = sum(r["accuracy"] for r in finals) / len(finals) if finals else math.nan
        if t.task_type == "token" and finals:
            per_task_f1[t.name] = sum(r["entity_f1"] or 0.0 for r in finals) / len(finals)
    spend = {t.name: {"energy_j": sum(r["energy_j"] for r in records if r["task"] == t.name),
                      "budget_j": sum(r["budget_j"] for r in records if r["task"] == t.name)} for t in cfg.tasks}
    for s in spend.values():
        s["ratio"] = s["energy_j"] / s["budget_j"] if s["budget_j"] > 0 else math.nan
    accs = [a for a in per_task.values() if not math.isnan(a)]
    lat = [r["round_latency_s"] for r in records]
    last = {}
    for r in records:
        last[(r["rsu"], r["task"])] = r
    ranks = [k for r in records for k in r["ranks"]]
    # the vehicles' own reward weighting (EdgeSettings.w_tau) and latency reference
    w_tau, tau_ref = EdgeSettings.model_fields["w_tau"].default, world.tau_ref_s
    reward = sum((r["accuracy"] if not math.isnan(r["accuracy"]) else 0.0) - w_tau * r["round_latency_s"] / tau_ref
                 for r in records)
    ft_counts: dict[str, int] = {}
    for r in records:
        for action in r["ft"].values():
            key = action.split(":")[0]
            ft_counts[key] = ft_counts.get(key, 0) + 1
    return {
        "policy": cfg.policy, "finished": finished, "sim_time_s": world.clock.now(),
        "data": {t: ds.source for t, ds in world.datasets.items()},
        "per_task_accuracy": per_task, "entity_f1": per_task_f1,
        "avg_accuracy": sum(accs) / len(accs) if accs else math.nan,
        "majority_baseline": {t: majority_baseline(world.specs[t], world.tests[t]) for t in world.specs},
        "test_examples": final_test_examples(world, records),  # n behind each task's final accuracy
        "mean_round_latency_s": sum(lat) / len(lat) if lat else math.nan,
        "energy_j": sum(r["energy_j"] for r in records), "budget_j": sum(r["budget_j"] for r in records),
        "spend_ratio": _ratio(sum(r["energy_j"] for r in records), sum(r["budget_j"] for r in records)),
        "lam_max": max((r["lam"] for r in records), default=0.0),
        "rounds_lam_at_cap": sum(1 for r in records if r["lam"] >= world.rsus[0].tasks[r["task"]].cfg.lam_max),
        "homo_rank": world.homo_rank,
        "violation_j": sum(r["violation_j"] for r in last.values()), "spend_per_task": spend,
        "latency_breakdown_s": latency_breakdown(world), "tau_ref_s": world.tau_ref_s,
        "bytes_on_wire": world.tap.total, "bytes_by_kind": dict(world.tap.bytes_by_kind),
        "bytes_to_vehicles_by_kind": dict(world.tap.down_by_kind),
        "rank_counts": {str(k): ranks.count(k) for k in sorted(set(ranks))},
        "work_counts": _work_counts(world),
        "ft_decisions": ft_counts, "cumulative_reward": reward, "rounds_recorded": len(records),
        "sources": {"accuracy": SURROGATE_SOURCE if cfg.learner == "surrogate" else ACCURACY_SOURCE,
                    "energy": ENERGY_SOURCE, "latency": LATENCY_SOURCE},
    }


def _work_counts(world: World) -> dict[str, int]:
    """How often each local-work fraction was played (the vehicles' published updates)."""
    works = [str(h.get("work", 1.0)) for v in world.vehicles for h in v.history]
    return {w: works.count(w) for w in sorted(set(works))}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def final_test_examples(world: World, records: list[dict[str, Any]]) -> dict[str, int]:
    """Per task, the fewest test examples behind any RSU's final accuracy (the whole split once finished)."""
    out: dict[str, int] = {}
    for t in world.specs:
        last: dict[str, int] = {}
        for r in records:
            if r["task"] == t and r.get("test_examples"):
                last[r["rsu"]] = r["test_examples"]
        out[t] = min(last.values(), default=len(world.tests[t]))
    return out


def latency_breakdown(world: World) -> dict[str, float]:
    """Mean per-round latency split (modelled): the straggler's download / train / upload, the rest of the wait
    (other uploads sharing the cell, leavers, the deadline) and the RSU's aggregation."""
    parts = {"download": [], "train": [], "upload": [], "wait": [], "aggregate": [], "round": []}
    by_round: dict[tuple[str, str, int], list[dict]] = {}
    for v in world.vehicles:
        for h in v.history:
            by_round.setdefault((h.get("rsu", ""), h["task"], h["round"]), []).append(h)
    for rsu in world.rsus:
        for rec in rsu.history:
            hs = by_round.get((rsu.id, rec.task, rec.round), [])
            slow = max(hs, key=lambda h: h["wall_s"], default=None)
            down, train, up = ((slow["down_s"], slow["train_s"], slow["up_s"]) if slow else (0.0, 0.0, 0.0))
            parts["download"].append(down)
            parts["train"].append(train)
            parts["upload"].append(up)
            parts["aggregate"].append(rec.aggregate_s)
            parts["wait"].append(max(0.0, rec.round_latency_s - rec.aggregate_s - down - train - up))
            parts["round"].append(rec.round_latency_s)
    return {k: (sum(v) / len(v) if v else math.nan) for k, v in parts.items()}


def summary_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"fleet summary: {summary['policy']}")
    table.add_column("task")
    surrogate = "surrogate" in summary["sources"]["accuracy"]
    table.add_column("final accuracy (surrogate, not measured)" if surrogate else "final accuracy (measured)",
                     justify="right")
    table.add_column("majority baseline", justify="right")
    table.add_column("spend / budget (modelled)", justify="right")
    spend = summary.get("spend_per_task", {})
    for task, acc in summary["per_task_accuracy"].items():
        s = spend.get(task)
        table.add_row(task, f"{acc:.3f}", f"{summary['majority_baseline'][task]:.3f}",
                      f"{fmt(s['energy_j'])} / {fmt(s['budget_j'])} J ({fmt(s['ratio'], 3)})" if s else "")
    table.add_row("average", f"{summary['avg_accuracy']:.3f}", "", "")
    b = summary.get("latency_breakdown_s", {})
    split = " / ".join(f"{k} {fmt(b[k])}" for k in ("download", "train", "upload", "wait", "aggregate") if k in b)
    table.caption = (f"mean round latency {fmt(summary['mean_round_latency_s'])} s (modelled; straggler's {split} s; "
                     f"tau_ref {fmt(summary.get('tau_ref_s', math.nan))} s) · energy "
                     f"{fmt(summary['energy_j'])} J vs budget {fmt(summary['budget_j'])} J, spend/budget "
                     f"{fmt(summary['spend_ratio'], 3)}, max λ {fmt(summary['lam_max'], 3)} (modelled) · violation "
                     f"{fmt(summary['violation_j'])} J · "
                     f"{fmt(summary['bytes_on_wire'] / 1e6)} MB on the wire · fault tolerance "
                     f"{summary['ft_decisions'] or 'none'}")
    return table
