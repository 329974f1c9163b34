"""The `fedrank` command. Subcommands live in their role's package and are imported only when
chosen, so `fedrank --help` and an idle edge daemon never import torch."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fedrank import __version__

# name -> (module with add_arguments(parser) and run(args) -> int, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "edge": ("edge_agent.cli", "run a vehicle agent (daemon)"),
    "rsu": ("rsu_agent.cli", "run a roadside-unit agent (daemon)"),
    "cloud": ("cloud_agent.cli", "run the cloud budget agent (daemon)"),
    "fleet": ("fleet.cli", "run the local mock fleet: experiments, baselines, plots"),
    "energy": ("edge_agent.energy.cli", "show the energy meter this machine has and a live sample"),
    "schema": ("proto.schema_export", "write the JSON Schema of every wire message"),
    "config": ("fedrank.config_cli", "print a commented example configuration for a role"),
    "broker-config": ("fedrank.broker_config", "generate a Mosquitto configuration with per-device ACLs"),
    "install-service": ("fedrank.install_service", "install a role as a systemd service"),
}


def _top_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fedrank",
        description="Energy-aware federated LoRA fine-tuning over MQTT.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {n:<16} {h}" for n, (_, h) in COMMANDS.items()),
    )
    p.add_argument("--version", action="version", version=f"fedrank {__version__}")
    p.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND", help="see the list below")
    p.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def passive_omp() -> None:
    """Let torch's OpenMP workers sleep, not spin, while they wait (unless OMP_WAIT_POLICY is already set).

    libgomp's default spins a waiting worker for a while at every parallel region; on a small or shared machine
    that worker holds a core the other one needs to finish the region. Measured on the 2-core dev box under other
    jobs' load (BENCHMARKS.md, "Fleet overhead"): the same training and evaluation took 2-3.6x the wall time
    spinning, and `make demo` 25 min instead of 9. Results are the same either way.
    It only takes effect before torch is imported, so the CLI sets it before loading any command.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = _top_parser()
    ns = top.parse_args(argv)
    module_name, help_text = COMMANDS[ns.command]
    passive_omp()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            print(f"fedrank {ns.command}: not available in this build ({module_name} missing)", file=sys.stderr)
            return 2
        raise
    sub = argparse.ArgumentParser(prog=f"fedrank {ns.command}", description=help_text)
    module.add_arguments(sub)
    return int(module.run(sub.parse_args(ns.args)) or 0)
