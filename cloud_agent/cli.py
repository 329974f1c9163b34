"""`fedrank cloud --config FILE`: the cloud daemon. Wiring only (fedrank.daemon does settings, logs, bus, signals)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="TOML settings file (FEDRANK_* env overrides)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (default: the config's)")


def run(args: argparse.Namespace) -> int:
    from cloud_agent.agent import CloudAgent
    from cloud_agent.settings import CloudSettings
    from fedrank.daemon import load_or_explain, serve

    settings = load_or_explain(CloudSettings, args.config, "cloud")
    if settings is None:
        return 2
    return serve("cloud", settings, lambda bus, clock, metrics: CloudAgent(settings, bus, clock, metrics=metrics),
                 args.log_level)
