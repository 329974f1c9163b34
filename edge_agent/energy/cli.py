"""`fedrank energy`: which meter this machine has, why not the better ones, and a short live sample."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.detect import ORDER, detect_meter
from edge_agent.energy.meter import EnergyMeter, Measurement, MeterUnavailable

log = logging.getLogger(__name__)


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from exc
    if not 0 < v <= 3600:
        raise argparse.ArgumentTypeError(f"must be in (0, 3600], got {v}")
    return v


def _gpus(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated GPU indices, got {text!r}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=_positive, default=2.0, help="length of the live sample (default 2)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--backend", choices=("auto", *ORDER), default="auto", help="force one backend")
    parser.add_argument("--gpus", type=_gpus, default=None, help="NVML GPU indices, e.g. 0,1 (default: all)")
    parser.add_argument("--interval", type=_positive, default=None, help="sampling period of power meters (s)")
    parser.add_argument("--watts-per-core", type=_positive, default=None, help="estimate only: W per busy core")
    parser.add_argument("--idle-watts", type=float, default=None, help="estimate only: constant baseline (W)")


def _config(args: argparse.Namespace) -> EnergyConfig:
    fields: dict[str, Any] = {"backend": args.backend}
    for name, value in (("gpus", args.gpus), ("sample_interval_s", args.interval),
                        ("watts_per_core", args.watts_per_core), ("idle_watts", args.idle_watts)):
        if value is not None:
            fields[name] = value
    return EnergyConfig(**fields)


def provenance(m: Measurement) -> str:
    """How a figure was obtained, in words printed beside it."""
    if not m.measured:
        return f"estimated ({m.source}): CPU time x configured watts per core, not measured"
    bound = " (lower bound: no board input rail, sum of monitored rails)" if m.lower_bound else ""
    return f"measured by {m.source}{bound}"


def sample(meter: EnergyMeter, seconds: float) -> Measurement:
    """Measure `seconds` of this machine at rest (apart from this process)."""
    with meter:
        span = meter.start()
        time.sleep(seconds)  # the meter's own thread samples meanwhile
        return span.stop()


def report(meter: EnergyMeter, m: Measurement) -> dict[str, Any]:
    out = m.to_dict()
    out["tried"] = list(meter.tried)
    out["provenance"] = provenance(m)
    out["meter"] = meter.describe()
    return out


def run(args: argparse.Namespace) -> int:
    try:
        cfg = _config(args)
        meter = detect_meter(cfg)
    except (MeterUnavailable, ValueError) as exc:
        log.error("energy: %s", exc)
        if args.json:
            tried = [{"backend": exc.backend, "reason": exc.reason}] if isinstance(exc, MeterUnavailable) else []
            print(json.dumps({"error": str(exc), "tried": tried}))
        else:
            print(f"fedrank energy: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report(meter, sample(meter, args.seconds)), sort_keys=True))
        return 0
    return _print_rich(meter, args.seconds)


def _print_rich(meter: EnergyMeter, seconds: float) -> int:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for t in meter.tried:
        console.print(f"[yellow]not used[/] {t['backend']}: {t['reason']}")
    with console.status(f"sampling {seconds:g} s ..."):
        m = sample(meter, seconds)
    label = "[green]measured[/]" if m.measured else "[red]estimated, not measured[/]"
    console.print(f"[bold]energy meter:[/] {m.source} ({label}); domains: {', '.join(m.domains)}")
    console.print(f"{m.seconds:.2f} s sample, {provenance(m)}")
    table = Table()
    for col in ("domain", "joules", "watts"):
        table.add_column(col, justify="right" if col != "domain" else "left")
    for name, j in m.domain_joules.items():
        table.add_row(name, f"{j:.3f}", f"{j / m.seconds if m.seconds else 0.0:.2f}")
    for name, j in m.sub_joules.items():
        table.add_row(f"  (inside) {name}", f"{j:.3f}", f"{j / m.seconds if m.seconds else 0.0:.2f}")
    table.add_row("[bold]total[/]", f"{m.joules:.3f}", f"{m.watts:.2f}")
    console.print(table)
    if not m.measured:
        console.print("[dim]the estimate covers this process only; while it sleeps here it is near 0 W[/]")
    return 0
