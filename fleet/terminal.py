"""What a fleet run shows on the terminal: third-party noise silenced, one progress bar, aligned round lines.

Only the fleet commands call `quiet_third_party`: the daemons keep every warning in their logs. The progress
bar is `rich`'s on a terminal and plain prefixed lines otherwise (a pipe, a CI log, a file), so the output of
`fedrank fleet run > log.txt` stays readable.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)


def fmt(x: float | None, digits: int = 3) -> str:
    """A figure with the precision its size needs: 3 significant digits, no exponent between 1e-4 and 1e6.

    `fmt(0.0004)` is "0.0004" (not "0.00"), `fmt(0.005452)` "0.00545", `fmt(12.345)` "12.3", `fmt(52341)` "52,341".
    """
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, float) and math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    if mag >= 6 or mag < -4:
        return f"{x:.{digits - 1}e}"
    if mag >= digits - 1:
        return f"{x:,.0f}"
    text = f"{x:.{digits - 1 - mag}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def duration(seconds: float) -> str:
    """Wall time as m:ss (or h:mm:ss)."""
    s = max(0, round(seconds))
    h, rem = divmod(s, 3600)
    return f"{h}:{rem // 60:02d}:{rem % 60:02d}" if h else f"{rem // 60}:{rem % 60:02d}"


def quiet_third_party() -> None:
    """Silence the libraries' progress bars and deprecation chatter in this (fleet) process only.

    transformers' and huggingface_hub's tqdm bars ("Loading weights", "Writing model shards") are switched
    off through their own switches, and FutureWarning / DeprecationWarning are ignored: they are addressed to
    whoever maintains the code, not to someone running an experiment. Other warnings still show.
    Environment variables are left alone so daemons started from the fleet (`--broker`) keep their warnings.
    """
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass


def log_to_file(path: Path, level: str = "INFO") -> logging.Handler:
    """Send this process's log records to `path` at `level`; the terminal gets errors only.

    Warnings of a run (a round that kept its global, a rejected update) are part of its record, so they go to
    the file beside metrics.jsonl instead of interleaving with the round lines. Returns the file handler.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fh = logging.FileHandler(path, mode="w", encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.setLevel(level.upper())
    term = logging.StreamHandler()
    term.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    term.setLevel(logging.ERROR)
    root.addHandler(fh)
    root.addHandler(term)
    root.setLevel(min(fh.level, logging.ERROR))
    logging.captureWarnings(True)  # warnings that are still shown land in the file, not on the terminal
    return fh


@dataclass
class _Bar:
    name: str
    total: int
    started: float = field(default_factory=time.monotonic)
    done: int = 0
    task: TaskID | None = None


class RunProgress:
    """Rounds closed / total per run (one row per policy in a comparison), elapsed and ETA.

    On a terminal: a `rich` progress bar, with the round lines printed above it. Elsewhere: each round line is
    prefixed with `done/total elapsed ETA`. With no console it does nothing.
    """

    def __init__(self, console: Console | None) -> None:
        self.console = console
        self.live = console is not None and console.is_terminal
        self._bars: dict[str, _Bar] = {}
        self._progress: Progress | None = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def add(self, name: str, total: int) -> None:
        """A run named `name` with `total` rounds to close (every task at every RSU)."""
        bar = _Bar(name, total)
        self._bars[name] = bar
        if self.live and self.console is not None:
            if self._progress is None:
                self._progress = Progress(
                    TextColumn("[bold]{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("rounds"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                    console=self.console, transient=False)
                self._progress.start()
            bar.task = self._progress.add_task(name, total=total)

    def advance(self, name: str, line: str | None = None) -> None:
        """One more round of run `name` closed; `line` describes it."""
        bar = self._bars.get(name)
        if bar is None:
            if line is not None and self.console is not None:
                self.console.print(line, highlight=False, soft_wrap=True)
            return
        bar.done += 1
        if self._progress is not None and bar.task is not None:
            if line is not None:
                self._progress.console.print(line, highlight=False, soft_wrap=True)
            self._progress.update(bar.task, completed=min(bar.done, bar.total))
        elif self.console is not None and line is not None:
            self.console.print(f"{self.prefix(bar)}  {line}", highlight=False, soft_wrap=True)

    @staticmethod
    def prefix(bar: _Bar) -> str:
        elapsed = time.monotonic() - bar.started
        width = len(str(bar.total))
        eta = elapsed / bar.done * max(0, bar.total - bar.done) if bar.done else math.nan
        return (f"[{bar.done:>{width}}/{bar.total}] {duration(elapsed):>5} "
                f"ETA {duration(eta) if not math.isnan(eta) else '?':>5}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def round_line(row: dict[str, Any], widths: dict[str, int]) -> str:
    """One closed round, aligned: RSU, task, round, accuracy, λ, spend/budget ratio and joules, ranks, updates."""
    ratio = row["energy_j"] / row["budget_j"] if row["budget_j"] else math.nan
    acc = row["accuracy"]
    acc_s = "  n/a" if acc is None or math.isnan(acc) else f"{acc:.3f}"
    # the record's accuracy_source says where the figure came from; a row without one claims nothing
    src = str(row.get("accuracy_source", ""))
    acc_label = "surrogate acc" if "surrogate" in src else "measured acc" if src.startswith("measured") else "acc"
    ranks = ",".join(str(k) for k in row["ranks"]) or "-"
    ft = f"  ft {row['ft']}" if row["ft"] else ""
    note = "  (global kept)" if row.get("updates") == 0 else ""
    return (f"{row['rsu']:<{widths['rsu']}} {row['task']:<{widths['task']}} r{row['round']:<{widths['round']}} "
            f"{acc_label} {acc_s}  λ {row['lam']:>5.2f}  spend/budget {ratio:>5.2f} "
            f"({fmt(row['energy_j'])}/{fmt(row['budget_j'])} J modelled)  ranks {ranks:<8} "
            f"upd {row['updates']}/{row['participants']}{ft}{note}")
