"""`fedrank edge --config FILE`: the vehicle daemon. Wiring only; torch loads at the first round."""

from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

from edge_agent.settings import EdgeSettings, PositionConfig
from fedrank.daemon import add_arguments

__all__ = ["add_arguments", "build_agent", "position_source", "run"]

log = logging.getLogger("edge_agent")


def position_source(cfg: PositionConfig):  # -> PositionSource | None
    """A fixed position, or a replay of 't,x,y' fixes with the velocity between neighbouring fixes."""
    from edge_agent.agent import Fix

    if cfg.kind == "none":
        return None
    if cfg.kind == "fixed":
        fix = Fix(cfg.x, cfg.y)
        return lambda now: fix
    assert cfg.file is not None
    with open(cfg.file, newline="") as f:
        rows = [(float(r[0]), float(r[1]), float(r[2])) for r in csv.reader(f) if r and not r[0].startswith("#")]
    if not rows:
        raise ValueError(f"position file {cfg.file} has no fixes")
    t0 = None

    def at(now: float) -> Fix:
        nonlocal t0
        t0 = now if t0 is None else t0
        t = now - t0
        prev = rows[0]
        for row in rows[1:]:
            if row[0] > t:
                dt = row[0] - prev[0] or 1.0
                return Fix(prev[1], prev[2], (row[1] - prev[1]) / dt, (row[2] - prev[2]) / dt)
            prev = row
        return Fix(prev[1], prev[2])

    return at


def build_agent(settings: EdgeSettings, bus, clock, metrics=None):
    from edge_agent.agent import VehicleAgent
    from edge_agent.energy.detect import detect_meter
    from edge_agent.policies import make_policy

    if settings.position.kind == "none" and settings.rsu is None:
        log.warning("no position source and no `rsu` configured: no RSU will count this vehicle as in coverage")
    meter = detect_meter(settings.energy)
    meter.open()
    log.info("energy meter: %s (measured=%s)%s", meter.source, meter.measured,
             "".join(f"; {t['backend']} not used: {t['reason']}" for t in meter.tried))
    learners: dict = {}
    trainer_box: list = []

    def learner_for(task: str):
        if task not in learners:
            from edge_agent.learner import build_learner, make_trainer

            if not trainer_box:
                trainer_box.append(make_trainer(settings))
            cfg = next(t for t in settings.tasks if t.name == task)
            learners[task] = build_learner(settings, cfg, trainer_box[0])
        return learners[task]

    def policy_for(task: str):
        return make_policy(
            {"ucb-dual": "ucb-dual", "fixed": "fixed", "capacity": "capacity"}[settings.rank_policy],
            rank=settings.fixed_rank if settings.rank_policy == "fixed" else None,
            device=settings.device_memory_gb, beta=settings.beta, seed=settings.seed, stream=f"{settings.id}/{task}",
            state_path=Path(settings.state_dir) / f"bandit-{task}.json",
            fits=lambda r: settings.max_rank is None or r <= settings.max_rank,
        )

    from edge_agent.learner import SpanMeter

    return VehicleAgent(settings, bus, clock, learner_for=learner_for, policy_for=policy_for,
                        meter=SpanMeter(meter), position=position_source(settings.position), metrics=metrics)


def run(args: argparse.Namespace) -> int:
    from fedrank.daemon import run_daemon

    return run_daemon(args, "edge", EdgeSettings, build_agent)
