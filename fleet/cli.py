"""`fedrank fleet run|compare|report`: the local mock fleet."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from fleet.config import FleetConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    for name, help_text in (("run", "one experiment with one policy"),
                            ("compare", "UCB-DUAL vs HomoLoRA, HetLoRA, FlexLoRA, ablations, scalability")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--quick", action="store_true", help="tiny random model, few rounds: under a minute")
        p.add_argument("--out", type=Path, default=Path("runs") / name, help="output directory")
        p.add_argument("--config", type=Path, help="a JSON FleetConfig (fields override the preset)")
        p.add_argument("--preset", help="a named setting (paper: 9 vehicles, 3 tasks, 3 RSUs, "
                       "40 rounds, the paper's channel, LoRA on q,k,v,o); --config and flags override it")
        p.add_argument("--seed", type=int)
        p.add_argument("--rounds", type=int)
        p.add_argument("--local-steps", type=int)
        p.add_argument("--threads", type=int)
        p.add_argument("--log-level", help="level of OUT/fleet.log, default INFO (the terminal shows errors only)")
        p.add_argument("--arms", choices=["work", "ranks"],
                       help="the vehicles' decision: work configurations (rank x local work) or ranks only")
        if name == "run":
            p.add_argument("--policy", choices=["ucb-dual", "homolora", "hetlora", "flexlora", "fixed-rank"])
            p.add_argument("--vehicles", type=int)
            p.add_argument("--broker", help="mqtt://HOST:PORT: run each agent as its own process against this broker")
        else:
            p.add_argument("--seeds", default="0,1,2",
                           help="comma-separated seeds; each policy runs once per seed (mean ± 95%% CI)")
            p.add_argument("--policies", help="comma-separated subset of ucb-dual,homolora,hetlora,flexlora")
            p.add_argument("--vehicles", help="comma-separated fleet sizes for the scalability sweep, e.g. 10,30,50")
            p.add_argument("--no-ablations", action="store_true")
            p.add_argument("--channels", help="comma-separated channel presets (paper,dsrc,cv2x,nr5g): one "
                                              "comparison per preset and channels.md, instead of the plain compare")
            p.add_argument("--regret", action="store_true",
                           help="also run every fixed rank and report UCB-DUAL's regret against the best")
            p.add_argument("--jobs", type=_positive, default=1,
                           help="runs at once, each in its own process on one torch thread (same figures as 1); "
                                "about one per free core")
    p = sub.add_parser("report", help="rebuild a run's plots and report.md from its metrics.jsonl")
    p.add_argument("dir", type=Path, help="a `fleet run` output directory")


def _config(args: argparse.Namespace):
    import json

    from fleet.config import FleetConfig, PresetError, preset_overrides

    over: dict = {}
    if getattr(args, "preset", None):
        try:
            over.update(preset_overrides(args.preset))
        except PresetError as e:
            raise SystemExit(str(e)) from None
    over.update(json.loads(args.config.read_text()) if args.config else {})
    for key in ("seed", "rounds", "local_steps", "threads", "arms"):
        if getattr(args, key, None) is not None:
            over[key] = getattr(args, key)
    if args.action == "run":
        for key in ("policy", "vehicles"):
            if getattr(args, key, None) is not None:
                over[key] = getattr(args, key)
    return FleetConfig.quick(**over) if args.quick else FleetConfig(**over)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"--seeds: {text!r} is not a comma-separated list of integers") from None
    if not seeds:
        raise SystemExit("--seeds: give at least one seed")
    return seeds


def run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from rich.console import Console

    from fleet.terminal import log_to_file, quiet_third_party

    console = Console()
    if args.action == "report":
        return report(args.dir, console)
    try:
        cfg = _config(args)
    except (ValidationError, ValueError, OSError) as exc:  # before anything is written
        errors = exc.errors() if isinstance(exc, ValidationError) else None
        reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in errors) if errors else str(exc)
        logging.getLogger(__name__).error("bad fleet configuration: %s", reason)
        console.print(f"[red]fedrank fleet: bad configuration:[/] {reason}", highlight=False)
        return 2
    if args.action == "run" and args.broker:  # the daemons log for themselves; this process only watches
        logging.basicConfig(level=(args.log_level or "WARNING").upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        quiet_third_party()
        log_to_file(args.out / "fleet.log", args.log_level or "INFO")
    from fleet.roads import MobilityError
    from fleet.sim.sumo import SumoError

    try:
        return _act(args, cfg, console)
    except (MobilityError, SumoError) as e:  # bad input: one line naming the field, no traceback
        logging.getLogger("fleet").error("%s", e)
        console.print(f"[red]error:[/] {e}", highlight=False)
        return 2


def _act(args: argparse.Namespace, cfg: FleetConfig, console: Console) -> int:
    if args.action == "run":
        if args.broker:
            from fleet.processes import run_processes

            return run_processes(cfg, args.out, args.broker, console)
        from fleet.run import run_fleet

        console.print(f"[bold]fedrank fleet[/]: {cfg.vehicles} vehicles, {cfg.rsus} RSUs, {cfg.rounds} rounds, "
                      f"policy {cfg.policy}, model {cfg.model_dir or cfg.model}; output in {args.out}")
        run_fleet(cfg, args.out, console)
        console.print(f"wrote {args.out}/metrics.jsonl, summary.json, config.json, plots and fleet.log")
        return 0
    from fleet.compare import compare, regret, scalability

    policies = args.policies.split(",") if args.policies else None
    seeds = [args.seed] if args.seed is not None and args.seeds == "0,1,2" else _seeds(args.seeds)
    if args.channels:
        from fleet.compare import channels

        channels(cfg, args.out, args.channels.split(","), policies, console, seeds=seeds)
        console.print(f"wrote {args.out}/channels.md and one comparison per preset")
        return 0
    compare(cfg, args.out, policies, ablations=not args.no_ablations, console=console, seeds=seeds, jobs=args.jobs)
    if args.regret:
        r = regret(cfg, args.out / "regret", console)
        console.print(f"regret against the best fixed rank ({r['best_fixed_rank']}): {r['regret']:.3f} ({r['note']})")
    if args.vehicles:
        scalability(cfg, args.out / "scalability", [int(v) for v in args.vehicles.split(",")], policies, console)
    console.print(f"wrote {args.out}/compare.json, compare.md and plots")
    return 0


def report(directory: Path, console: Console) -> int:
    from fleet.report import ReportError, write_report

    try:
        path = write_report(directory)
    except ReportError as exc:
        console.print(f"[red]fleet report[/]: {exc}")
        return 2
    console.print(f"wrote {path} and its plots")
    return 0
