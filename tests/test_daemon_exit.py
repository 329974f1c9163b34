"""Daemon exit codes as a service manager sees them, on the light cloud daemon: 1 when the broker refuses our
credentials (systemd must not restart in a loop with the same credentials), 2 when the metrics port is in use
(a config problem), 0 on SIGTERM after READY. Readiness is the daemon's own sd_notify READY."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest

from tests.daemon_proc import NotifySocket, start, wait_for_line
from tests.mosquitto import Mosquitto, MosquittoUnavailable, free_port

START_S = 60.0  # only a daemon that never gets there waits this long


def config(tmp_path: Path, port: int, **extra: object) -> Path:
    lines = ['id = "cloud-x"', f'state_dir = "{tmp_path / "state"}"', 'tasks = ["a", "b"]', "e_total_j = 900.0"]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    lines += ["[broker]", f"port = {port}", "reconnect_min_s = 0.05", "reconnect_max_s = 0.5"]
    p = tmp_path / "cloud.toml"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.fixture
def notify(tmp_path: Path):
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


@pytest.mark.mosquitto
def test_refused_credentials_exit_1_without_ready(tmp_path: Path, notify: NotifySocket) -> None:
    try:
        broker = Mosquitto(anonymous=False)  # no password file: every client is refused (CONNACK 135)
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    broker.start()
    log = tmp_path / "cloud.log"
    try:
        proc = start("cloud", config(tmp_path, broker.port), log, notify)
        code = proc.wait(timeout=START_S)
    finally:
        broker.cleanup()
    text = log.read_text()
    assert code == 1, text
    assert "refused our credentials" in text
    assert not any("READY" in m for m in notify.seen)


def test_metrics_port_in_use_exits_2(tmp_path: Path, notify: NotifySocket) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        log = tmp_path / "cloud.log"
        proc = start("cloud", config(tmp_path, free_port(), metrics_port=port), log, notify)
        code = proc.wait(timeout=START_S)
    text = log.read_text()
    assert code == 2, text
    assert f"cannot serve metrics on port {port}" in text


@pytest.mark.mosquitto
def test_sigterm_after_ready_stops_at_once_with_exit_0(tmp_path: Path, mosquitto, notify: NotifySocket) -> None:
    log = tmp_path / "cloud.log"
    proc = start("cloud", config(tmp_path, mosquitto.port), log, notify)
    try:
        ready = notify.wait("READY", START_S, proc)
        assert ready["STATUS"] == "cloud cloud-x connected=True"
        asked = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
        took = time.monotonic() - asked
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log.read_text()
    assert took < 5.0, f"SIGTERM after READY took {took:.1f}s"
    assert "STOPPING" in notify.wait("STOPPING", 5.0)
    wait_for_line(log, "cloud cloud-x stopped", 5.0)
