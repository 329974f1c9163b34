"""`fedrank rsu --config FILE`: the RSU daemon. Wiring only (fedrank.daemon does settings, logs, bus, signals)."""

from __future__ import annotations

import argparse

from fedrank.daemon import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from fedrank.daemon import run_daemon
    from rsu_agent.agent import RsuAgent
    from rsu_agent.settings import RsuSettings

    return run_daemon(args, "rsu", RsuSettings,
                      lambda settings, bus, clock, metrics: RsuAgent(settings, bus, clock, metrics=metrics))
