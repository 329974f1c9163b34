"""`fedrank fleet run --broker mqtt://HOST:PORT`: every agent as its own daemon process against a real broker.

This is the deployable code path end to end (TOML configs, `fedrank edge|rsu|cloud`, MqttBus, wall clock,
real energy meters). Vehicles sit at fixed positions inside their RSU's coverage here; mobility, device profiles
and the channel model belong to the in-process fleet. Energy figures are whatever each vehicle's meter measured
(or estimated: the reports say which).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import tomli_w
from rich.console import Console

from fleet.config import FleetConfig
from fleet.run import fresh_state
from fleet.world import POLICY_WIRING, resolve_model_dir, rsu_layout

ROUND_TIMEOUT_S = 120.0


class StatsRows:
    """metrics.jsonl rows from the RSUs' stats, one per (rsu, task, round): QoS 1 delivers at least once, and a
    broker restart or a reconnect redelivers what was not yet acknowledged."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._seen: set[tuple[str, str, int]] = set()

    def add(self, msg: Any) -> bool:
        """Record a TaskStats; False (and nothing recorded) for one already recorded."""
        key = (msg.sender, msg.task, msg.round)
        if key in self._seen:
            return False
        self._seen.add(key)
        self.rows.append({"rsu": msg.sender, **msg.model_dump(exclude={"v", "kind", "sender", "seq", "sent_at"}),
                          "accuracy_source": "mean local accuracy reported by the vehicles",
                          "energy_source": "reported by the vehicles' meters (energy_measured says if measured)"})
        return True


def parse_broker(url: str) -> tuple[str, int]:
    u = urlparse(url)
    if u.scheme != "mqtt" or not u.hostname:
        raise ValueError(f"broker must look like mqtt://HOST:PORT, got {url!r}")
    return u.hostname, u.port or 1883


def write_configs(cfg: FleetConfig, out: Path, host: str, port: int) -> dict[str, Path]:
    """One TOML per agent, as an operator would write them; returns id -> path."""
    from edge_agent.model import layer_shapes
    from fleet.sim.mobility import RoadGrid

    model_dir = resolve_model_dir(cfg, out / "cache")
    if cfg.model == "bert-base-shape":
        raise ValueError("model: 'bert-base-shape' has no weights; daemons need a real model")
    layers = layer_shapes(model_dir, cfg.targets)
    rank_policy, aggregator = POLICY_WIRING[cfg.policy]
    grid = RoadGrid(nx=cfg.grid_blocks + 1, ny=cfg.grid_blocks + 1, block_m=cfg.block_m)
    sites = rsu_layout(cfg, grid)
    broker = {"host": host, "port": port}
    tasks = [t.name for t in cfg.tasks]
    paths: dict[str, Path] = {}
    (out / "config").mkdir(parents=True, exist_ok=True)

    def dump(agent_id: str, doc: dict[str, Any]) -> None:
        path = out / "config" / f"{agent_id}.toml"
        path.write_text(tomli_w.dumps(doc))
        paths[agent_id] = path

    dump("cloud", {"id": "cloud", "state_dir": str(out / "state" / "cloud"), "broker": broker, "tasks": tasks,
                   "e_total_j": 1e6, "tri_feedback": cfg.tri_feedback, "status_interval_s": 5.0,
                   "feedback": {"window_rounds": cfg.window_rounds, "e_min_j": 1e5 / len(tasks)}})
    for rid, (x, y, r) in sites.items():
        dump(rid, {"id": rid, "state_dir": str(out / "state" / rid), "broker": broker, "join_wait_s": 3.0,
                   "status_interval_s": 5.0, "fault_tolerance": cfg.fault_tolerance, "wire_dtype": cfg.wire_dtype,
                   "coverage": {"shape": "circle", "cx": x, "cy": y, "radius": r},
                   "tasks": [{"name": t.name, "task_type": t.task_type, "ranks": cfg.ranks,
                              "work": list(cfg.work) if cfg.arms == "work" else [1.0],
                              "lora_alpha": cfg.lora_alpha,
                              "layers": {k: list(v) for k, v in layers.items()}, "aggregator": aggregator,
                              "round_timeout_s": ROUND_TIMEOUT_S, "round_gap_s": 1.0, "max_rounds": cfg.rounds,
                              "default_round_budget_j": 1e4} for t in cfg.tasks]})
    site_list = list(sites.values())
    per_task: dict[str, int] = {}
    for i in range(cfg.vehicles):
        vid = f"veh{i:02d}"
        t = cfg.tasks[i % len(cfg.tasks)]
        k = per_task.get(t.name, 0)
        per_task[t.name] = k + 1
        x, y, _ = site_list[i % len(site_list)]
        doc: dict[str, Any] = {
            "id": vid, "state_dir": str(out / "state" / vid), "broker": broker, "status_interval_s": 2.0,
            "tasks": [{"name": t.name, "task_type": t.task_type, "data": t.data, "partition": k,
                       "num_partitions": sum(1 for j in range(cfg.vehicles) if cfg.tasks[j % len(cfg.tasks)] == t)}],
            "rank_policy": rank_policy, "local_steps": cfg.local_steps,
            "batch_size": cfg.batch_size, "lr": cfg.lr, "max_length": cfg.max_length, "threads": 1,
            "seed": cfg.seed, "wire_dtype": cfg.wire_dtype, "device_memory_gb": 8.0, "targets": list(cfg.targets),
            "position": {"kind": "fixed", "x": x + 10.0 * (i % 5), "y": y},
        }
        if cfg.homo_rank is not None:  # unset: EdgeSettings' fixed_rank (no modelled budget to size it from here)
            doc["fixed_rank"] = cfg.homo_rank
        if model_dir is not None:
            doc["model_dir"] = str(model_dir)
        dump(vid, doc)
    return paths


def run_processes(cfg: FleetConfig, out: Path, broker_url: str, console: Console) -> int:
    from proto.codec import decode
    from proto.messages import TaskStats
    from proto.mqtt_bus import MqttBus
    from proto.mqtt_options import MqttOptions
    from proto.topics import Topics

    host, port = parse_broker(broker_url)
    out.mkdir(parents=True, exist_ok=True)
    fresh_state(out)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    paths = write_configs(cfg, out, host, port)
    observer = MqttBus(MqttOptions(host=host, port=port), f"fleet-observer-{os.getpid()}", clean_start=True)
    topics = Topics()

    rows = StatsRows()

    def on_stats(d: Any) -> None:
        msg = decode(d.payload, TaskStats).msg
        if not rows.add(msg):
            return
        acc = "-" if msg.accuracy is None else f"{msg.accuracy:.3f}"
        console.print(f"{msg.sender} {msg.task} round {msg.round}: mean local acc {acc} (vehicles' own) "
                      f"λ {msg.lam:.2f} E {msg.energy_j:.3g}/{msg.budget_j:.3g} J (measured={msg.energy_measured})",
                      highlight=False)

    stats = rows.rows
    observer.subscribe(topics.all_stats(), on_stats)
    observer.connect()
    (out / "logs").mkdir(exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    procs: dict[str, subprocess.Popen] = {}
    for agent_id, path in paths.items():
        role = "cloud" if agent_id == "cloud" else "rsu" if agent_id.startswith("rsu") else "edge"
        log = open(out / "logs" / f"{agent_id}.log", "w")  # noqa: SIM115 - owned by the child
        procs[agent_id] = subprocess.Popen([sys.executable, "-m", "fedrank", role, "--config", str(path)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
    console.print(f"started {len(procs)} daemons against {host}:{port}; logs in {out / 'logs'}")
    want = {(rid, t.name) for rid in paths if rid.startswith("rsu") for t in cfg.tasks}
    deadline = time.monotonic() + cfg.rounds * ROUND_TIMEOUT_S * 2 + 120
    try:
        while time.monotonic() < deadline:
            done = {(s["rsu"], s["task"]) for s in stats if s["round"] >= cfg.rounds - 1}
            if want <= done or any(p.poll() is not None for p in procs.values()):
                break
            time.sleep(0.5)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = {}
        for aid, p in procs.items():
            try:
                codes[aid] = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                codes[aid] = p.wait()
        observer.close()
    with open(out / "metrics.jsonl", "w") as f:
        for s in stats:
            f.write(json.dumps(s, sort_keys=True) + "\n")
    finished = want <= {(s["rsu"], s["task"]) for s in stats if s["round"] >= cfg.rounds - 1}
    summary = {"mode": "processes", "broker": f"{host}:{port}", "finished": finished, "exit_codes": codes,
               "rounds_recorded": len(stats)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True))
    bad = {k: v for k, v in codes.items() if v != 0}
    console.print(f"{'finished' if finished else 'NOT finished'}; exit codes {bad or 'all 0'}")
    return 0 if finished and not bad else 1
