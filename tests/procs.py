"""Daemons as real processes (`python -m fedrank ROLE --config ...`) and a wire observer, for the restart and
fault tests: start, kill -9, SIGTERM, restart with the same config and state, and read what went over the broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomli_w

from proto.bus import Delivery
from proto.codec import decode
from proto.errors import WireError
from proto.messages import Message
from proto.topics import Topics

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
T = Topics()


def write_toml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(tomli_w.dumps(doc))
    return path


def wait_for(pred: Callable[[], bool], timeout: float, what: str, logs: tuple[Path, ...] = ()) -> None:
    """Poll `pred` until true; on timeout fail with the tails of `logs`."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    tails = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"{what}: not within {timeout}s\n{tails}")


class Daemon:
    """One `fedrank ROLE` process that can be killed and started again with the same config (and state)."""

    def __init__(self, role: str, config: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.role, self.config, self.log = role, config, log
        self.env = env or ENV
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Daemon:
        self.starts += 1
        out = open(self.log, "a")  # noqa: SIM115 - the child holds it; closed when the child exits
        out.write(f"\n===== start {self.starts} =====\n")
        out.flush()
        self.proc = subprocess.Popen([sys.executable, "-m", "fedrank", self.role, "--config", str(self.config)],
                                     cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        out.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no goodbye, no offline status (the broker sends the will)."""
        if self.alive:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def term(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; the exit status, or None if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Wire:
    """Everything published under the topic root, decoded (headers only), in arrival order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: list[tuple[str, Message, bool]] = []  # (topic, header, retained)

    def __call__(self, d: Delivery) -> None:
        if not d.payload:
            return
        try:
            msg = decode(d.payload).msg
        except WireError:
            return  # a hostile or foreign message: not ours to record
        with self.lock:
            self.seen.append((d.topic, msg, d.retained))

    def of(self, cls: type[Message], pred: Callable[[Any], bool] = lambda m: True,
           live_only: bool = True) -> list[Any]:
        with self.lock:
            return [m for _, m, r in self.seen if isinstance(m, cls) and pred(m) and not (live_only and r)]
