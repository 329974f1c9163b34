"""The notify protocol against a unix datagram socket the test opens, as systemd would."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedrank.sdnotify import Notifier, watchdog_interval


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2.0)
    yield sock, str(path)
    sock.close()


def _recv(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(4096).decode()
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_ready_status_watchdog_stopping_arrive_as_key_value_datagrams(notify_socket) -> None:
    sock, path = notify_socket
    n = Notifier(env={"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("connected to broker")
    assert _recv(sock) == {"READY": "1", "STATUS": "connected to broker"}
    assert n.status("round 3 of task sst2")
    assert _recv(sock) == {"STATUS": "round 3 of task sst2"}
    assert n.watchdog()
    assert _recv(sock) == {"WATCHDOG": "1"}
    assert n.stopping()
    assert _recv(sock) == {"STOPPING": "1"}


def test_status_with_newlines_stays_one_field(notify_socket) -> None:
    sock, path = notify_socket
    Notifier(env={"NOTIFY_SOCKET": path}).status("line one\nREADY=1")
    assert _recv(sock) == {"STATUS": "line one READY=1"}


def test_abstract_namespace_socket_is_reached_through_at_sign() -> None:
    name = f"fedrank-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        assert Notifier(env={"NOTIFY_SOCKET": "@" + name}).ready()
        assert _recv(sock) == {"READY": "1"}


def test_without_notify_socket_every_call_is_a_noop() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert n.ready() is False and n.watchdog() is False and n.tick() is False and n.stopping() is False


def test_unreachable_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(env={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    assert n.ready() is False
    assert "sd_notify READY" in caplog.text


def test_watchdog_interval_reads_usec_and_respects_pid() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None


def test_tick_pings_at_most_every_half_interval(notify_socket) -> None:
    sock, path = notify_socket
    t = [100.0]
    n = Notifier(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"}, monotonic=lambda: t[0])
    assert n.interval == 10.0
    assert n.tick()  # first turn always pings
    t[0] = 104.9  # < 10 / 2 since the last ping
    assert not n.tick()
    t[0] = 105.0
    assert n.tick()
    assert _recv(sock) == {"WATCHDOG": "1"}
    assert _recv(sock) == {"WATCHDOG": "1"}
    sock.settimeout(0.05)
    with pytest.raises(TimeoutError):
        sock.recv(4096)


def test_tick_is_silent_without_watchdog(notify_socket) -> None:
    _, path = notify_socket
    assert Notifier(env={"NOTIFY_SOCKET": path}).tick() is False
