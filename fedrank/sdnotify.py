"""systemd's notify protocol (sd_notify(3)) in a few lines, without libsystemd.

A `Type=notify` unit sets NOTIFY_SOCKET to a unix datagram socket (a path, or `@name` for the abstract
namespace); each message is `KEY=value` lines in one datagram. Outside systemd the variable is unset and
every call is a no-op, so agents call the notifier unconditionally.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog deadlines (WATCHDOG_USEC), or None when the watchdog is off.

    WATCHDOG_PID, when set, names the process the watchdog is meant for; another process gets None
    (as sd_watchdog_enabled(3) does), so a child never pings for its parent.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 if value > 0 else None


def _address(raw: str) -> str | bytes | None:
    """The socket address for NOTIFY_SOCKET: a filesystem path, or `@name` -> b'\\0name' (abstract)."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    if raw.startswith("/"):
        return raw
    return None  # vsock and other forms are not used by the service manager for units


class Notifier:
    """Sends READY/STATUS/WATCHDOG/STOPPING to the service manager; silent when not under systemd.

    Args:
        env: where NOTIFY_SOCKET and WATCHDOG_USEC are read (default os.environ).
        monotonic: clock for `tick()`'s rate limit (injectable for tests).
    """

    def __init__(self, env: Mapping[str, str] | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        env = os.environ if env is None else env
        raw = env.get("NOTIFY_SOCKET", "")
        self._addr = _address(raw) if raw else None
        if raw and self._addr is None:
            log.warning("NOTIFY_SOCKET=%r is not a path or @abstract name; notifications are off", raw)
        self.interval = watchdog_interval(env)
        self._monotonic = monotonic
        self._last_ping: float | None = None

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def notify(self, **fields: str | int) -> bool:
        """Send one datagram of `KEY=value` lines; True if sent. Errors are logged, never raised:
        a lost notification must not take the agent down (systemd's watchdog will notice anyway)."""
        if self._addr is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in fields.items()).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self._addr)
                sock.sendall(payload)
        except OSError as exc:
            log.warning("sd_notify %s failed: %s", ",".join(fields), exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is done (the unit becomes active)."""
        return self.notify(READY=1, **({"STATUS": _one_line(status)} if status else {}))

    def status(self, text: str) -> bool:
        """A one-line status shown by `systemctl status`."""
        return self.notify(STATUS=_one_line(text))

    def watchdog(self) -> bool:
        """Ping the watchdog now."""
        self._last_ping = self._monotonic()
        return self.notify(WATCHDOG=1)

    def tick(self) -> bool:
        """Ping if half the watchdog interval has passed since the last ping (call it every loop turn).

        Half, as sd_watchdog_enabled(3) recommends, leaves slack for a slow turn of the loop.
        """
        if self._addr is None or self.interval is None:
            return False
        now = self._monotonic()
        if self._last_ping is not None and now - self._last_ping < self.interval / 2:
            return False
        return self.watchdog()

    def stopping(self, status: str | None = None) -> bool:
        """Tell systemd the agent is shutting down cleanly."""
        return self.notify(STOPPING=1, **({"STATUS": _one_line(status)} if status else {}))


def _one_line(text: str) -> str:
    """STATUS is one line: a newline would start a new KEY=value field."""
    return " ".join(str(text).split())
