"""`fedrank rsu --config FILE`: the RSU daemon. Wiring only (fedrank.daemon does settings, logs, bus, signals)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="TOML settings file (FEDRANK_* env overrides)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (default: the config's)")


def run(args: argparse.Namespace) -> int:
    from fedrank.daemon import load_or_explain, serve
    from rsu_agent.agent import RsuAgent
    from rsu_agent.settings import RsuSettings

    settings = load_or_explain(RsuSettings, args.config, "rsu")
    if settings is None:
        return 2
    return serve("rsu", settings, lambda bus, clock, metrics: RsuAgent(settings, bus, clock, metrics=metrics),
                 args.log_level)
