"""Start a daemon as a process and wait for the signals it gives: sd_notify READY on a socket the test binds,
as systemd's NOTIFY_SOCKET, or a line in its log. Never a fixed sleep."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


class NotifySocket:
    """A unix datagram socket the daemon's Notifier writes to; `wait(key)` returns the first datagram with it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.seen: list[dict[str, str]] = []

    def wait(self, key: str, timeout: float, proc: subprocess.Popen | None = None) -> dict[str, str]:
        end = time.monotonic() + timeout
        for msg in self.seen:
            if key in msg:
                return msg
        while time.monotonic() < end:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode} before {key}")
            self.sock.settimeout(min(0.5, max(0.01, end - time.monotonic())))
            try:
                data = self.sock.recv(65536).decode()
            except TimeoutError:
                continue
            msg = dict(line.split("=", 1) for line in data.split("\n") if "=" in line)
            self.seen.append(msg)
            if key in msg:
                return msg
        raise AssertionError(f"no {key} from the daemon within {timeout}s (got {self.seen})")

    def close(self) -> None:
        self.sock.close()


def start(role: str, config: Path, log: Path, notify: NotifySocket | None = None) -> subprocess.Popen:
    env = dict(ENV)
    if notify is not None:
        env["NOTIFY_SOCKET"] = str(notify.path)
    out = open(log, "w")  # noqa: SIM115 - closed with the process by the OS; the test reads the file
    return subprocess.Popen([sys.executable, "-m", "fedrank", role, "--config", str(config)], cwd=REPO, env=env,
                            stdout=out, stderr=subprocess.STDOUT)


def wait_for_line(log: Path, text: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    """Until `text` appears in the log (or the process exits, or the time is up: AssertionError with the log)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if log.exists() and text in log.read_text():
            return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {log.name} within {timeout}s\n{log.read_text()[-3000:]}")
