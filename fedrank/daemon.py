"""What every role's daemon does around its agent: settings, logs, metrics, bus with will, systemd
notify and watchdog, signals. Each role's `cli.py` only says how to build its agent."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fedrank.settings import AgentSettings, ConfigError, load_settings

log = logging.getLogger(__name__)
S = TypeVar("S", bound=AgentSettings)
CONNECT_WAIT_S = 10.0  # how long start-up waits for the broker before running disconnected (it keeps retrying)
CONNECT_SLICE_S = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every daemon takes."""
    parser.add_argument("--config", type=Path, required=True, help="TOML settings file (FEDRANK_* env overrides)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING, ... (default: the config's)")


def run_daemon(args: argparse.Namespace, role: str, settings_cls: type[S],
               build: Callable[[S, Any, Any, Any], Any]) -> int:
    """Load settings (exit 2 on a bad config) and serve the agent `build(settings, bus, clock, metrics)` makes."""
    settings = load_or_explain(settings_cls, args.config, role)
    if settings is None:
        return 2
    return serve(role, settings, lambda bus, clock, metrics: build(settings, bus, clock, metrics), args.log_level)


def load_or_explain(cls: type[S], path: Path, role: str) -> S | None:
    """Settings, or None after one clear line on stderr naming the field and the reason."""
    try:
        return load_settings(cls, path)
    except ConfigError as exc:
        print(f"fedrank {role}: {exc}", file=sys.stderr)
        return None


def serve(role: str, settings: AgentSettings, make_agent: Callable[[Any, Any, Any], Any],
          log_level: str | None = None) -> int:
    """Run one agent until SIGTERM/SIGINT; exit status 0 on a clean stop, 1 when the broker refuses us.

    Args:
        make_agent: (bus, clock, metrics) -> Agent.
    """
    from fedrank.logs import setup_logging
    from fedrank.metrics import start_metrics
    from fedrank.runtime import WallClock, run_forever
    from fedrank.sdnotify import Notifier
    from proto.bus import AuthRejected, BusError
    from proto.mqtt_bus import MqttBus

    setup_logging(role, settings.id, log_level or settings.log_level, settings.log_json)
    try:
        metrics = start_metrics(settings.metrics_port, role, settings.id)
    except OSError as exc:  # exit 2: a config problem, which systemd must not restart in a loop
        log.error("cannot serve metrics on port %s: %s", settings.metrics_port, exc)
        return 2
    bus = MqttBus(settings.broker, settings.broker.client_id or settings.id)
    agent = make_agent(bus, WallClock(), metrics)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        bus.stopping()  # from now on no publish waits long for a broker that may be hung
        agent.interrupt_work()  # long work (training) stops at its next safe point

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    notifier = Notifier()
    agent.heartbeat = notifier.tick  # long work (training) keeps the systemd watchdog fed
    # Handlers first: the broker hands over what it queued for our persistent session right after CONNACK, and a
    # message with no handler would be acknowledged and lost. They only enqueue; the agent starts below.
    agent.subscribe()
    # Wait for the broker in short slices so that a SIGTERM during the wait is honoured at once.
    will, give_up = agent.will(), time.monotonic() + CONNECT_WAIT_S
    while True:
        try:
            bus.connect(will=will, timeout=CONNECT_SLICE_S)
            break
        except AuthRejected as exc:
            log.error("broker %s:%s refused our credentials: %s", settings.broker.host, settings.broker.port, exc)
            return 1
        except BusError as exc:  # the bus keeps retrying in the background; work starts once it is up
            will = None  # already set on the client
            if stop.is_set() or time.monotonic() >= give_up:
                log.warning("broker not reachable yet: %s", exc)
                break
    notifier.ready(f"{role} {settings.id} connected={bus.connected}")
    log.info("%s %s running", role, settings.id)
    attempts = [getattr(bus, "attempts", 0)]

    fed = [True]

    def on_idle() -> None:
        healthy = agent.healthy()
        if healthy:
            notifier.tick()
        if healthy != fed[0]:
            fed[0] = healthy
            log.log(logging.INFO if healthy else logging.ERROR, "%s the systemd watchdog (agent %s)",
                    "feeding" if healthy else "no longer feeding", "healthy again" if healthy else "cannot progress")
        now = getattr(bus, "attempts", 0)
        for _ in range(now - attempts[0]):  # each connection attempt after the first is a reconnect
            metrics.broker_reconnect()
        attempts[0] = now

    try:
        run_forever(agent, stop, on_idle=on_idle)
    finally:
        notifier.stopping(f"{role} {settings.id} stopping")
        bus.close()
        metrics.close()
    log.info("%s %s stopped", role, settings.id)
    return 0
