"""`fedrank rsu --config FILE`: the RSU daemon. Wiring only: settings -> bus (with will) -> agent -> signals."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

log = logging.getLogger("rsu_agent")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, required=True, help="TOML settings file (FEDRANK_* env overrides)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (default: the config's)")


def run(args: argparse.Namespace) -> int:
    from fedrank.runtime import WallClock, run_forever
    from fedrank.settings import ConfigError, load_settings
    from proto.bus import AuthRejected, BusError
    from proto.mqtt_bus import MqttBus
    from rsu_agent.agent import RsuAgent
    from rsu_agent.settings import RsuSettings

    try:
        settings = load_settings(RsuSettings, args.config)
    except ConfigError as exc:
        print(f"fedrank rsu: {exc}", file=sys.stderr)
        return 2
    level = (args.log_level or settings.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    bus = MqttBus(settings.broker, settings.broker.client_id or settings.id)
    agent = RsuAgent(settings, bus, WallClock())
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop.set())
    try:
        bus.connect(will=agent.will())
    except AuthRejected as exc:
        log.error("broker %s:%s refused our credentials: %s", settings.broker.host, settings.broker.port, exc)
        return 1
    except BusError as exc:  # the bus keeps retrying in the background; rounds start once it is up
        log.warning("broker not reachable yet: %s", exc)
    log.info("rsu %s serving %s", settings.id, [t.name for t in settings.tasks])
    try:
        run_forever(agent, stop)
    finally:
        bus.close()
    return 0
