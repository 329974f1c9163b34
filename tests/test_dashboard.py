"""The Grafana dashboard shipped beside the units queries only metrics the daemons export, by the scrape jobs
the shipped Prometheus config defines."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from fedrank.metrics import AgentMetrics, NullMetrics

SYSTEMD = Path(__file__).resolve().parents[1] / "systemd"
PROMQL_WORDS = {  # functions, aggregations and keywords the dashboard may use; anything else is a metric name
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "by", "without", "on", "ignoring",
    "group_left", "group_right", "and", "or", "unless", "topk", "bottomk", "delta", "deriv", "clamp_min",
}


def exported_names() -> set[str]:
    """Every sample name an agent's registry exports once each of its calls has been made."""
    m = AgentMetrics("rsu", "r1")
    for name in dir(NullMetrics):
        if name.startswith("_") or name == "close":
            continue
        args = {"round_done": ("t",), "update_accepted": ("t",), "update_rejected": ("t", "late"),
                "message_rejected": ("bad",), "set_lambda": ("t", 0.1), "set_energy": ("t", 1.0, 2.0),
                "rank_chosen": ("t", 8), "broker_reconnect": (), "energy_spent": ("t", 1.0, "nvml"),
                "set_degraded": ("storage", True), "dropped": ("inbox_full",), "received": (),
                "watch_inbox": (lambda: 0.0,), "job_failed": ("status",)}[name]
        getattr(m, name)(*args)
    return {s.name for fam in m.registry.collect() for s in fam.samples}


def queries() -> list[str]:
    dash = json.loads((SYSTEMD / "grafana-fedrank.json").read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    bare = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    bare = re.sub(r"\[[^\]]*\]", "", bare)  # range selectors
    bare = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", bare)  # label lists
    return {w for w in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare) if w not in PROMQL_WORDS}


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    exprs = queries()
    assert len(exprs) >= 9
    exported = exported_names()
    used = set().union(*(metric_names(e) for e in exprs))
    assert used and used <= exported, f"not exported by fedrank/metrics.py: {sorted(used - exported)}"


def test_the_dashboard_covers_what_an_operator_asked_for() -> None:
    used = set().union(*(metric_names(e) for e in queries()))
    for name in ("fedrank_rounds_total", "fedrank_updates_accepted_total", "fedrank_updates_rejected_total",
                 "fedrank_lambda", "fedrank_energy_used_joules", "fedrank_energy_budget_joules",
                 "fedrank_rank_chosen_total", "fedrank_broker_reconnects_total", "fedrank_device_energy_joules_total"):
        assert name in used, name


def test_the_scrape_config_defines_the_jobs_the_dashboard_selects() -> None:
    scrape = yaml.safe_load((SYSTEMD / "prometheus-fedrank.yml").read_text())
    jobs = {j["job_name"] for j in scrape["scrape_configs"]}
    selected = set(re.findall(r'job="([^"]+)"', " ".join(queries())))
    assert selected and selected <= jobs
    assert all(t.rsplit(":", 1)[1].isdigit() for j in scrape["scrape_configs"] for c in j["static_configs"]
               for t in c["targets"])


def test_metric_names_sees_through_promql() -> None:
    assert metric_names('sum by (task, rank) (increase(fedrank_x_total{job="a"}[5m])) / on(task) y') == {
        "fedrank_x_total", "y"}
