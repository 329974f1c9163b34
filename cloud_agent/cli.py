"""`fedrank cloud --config FILE`: the cloud daemon. Wiring only (fedrank.daemon does settings, logs, bus, signals)."""

from __future__ import annotations

import argparse

from fedrank.daemon import add_arguments

__all__ = ["add_arguments", "run"]


def run(args: argparse.Namespace) -> int:
    from cloud_agent.agent import CloudAgent
    from cloud_agent.settings import CloudSettings
    from fedrank.daemon import run_daemon

    return run_daemon(args, "cloud", CloudSettings,
                      lambda settings, bus, clock, metrics: CloudAgent(settings, bus, clock, metrics=metrics))
