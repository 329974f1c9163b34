"""SIGTERM with a hung broker (SIGSTOP: the connection stays open, nothing is acknowledged): the RSU daemon
still exits 0 within a few seconds, instead of waiting `ack_timeout_s` (10 s) for each publish on the way out
(29 s measured before `MqttBus.stopping()`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.mosquitto import Mosquitto, MosquittoUnavailable
from tests.procs import Daemon, wait_for, write_toml

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def test_sigterm_with_a_hung_broker_exits_within_a_few_seconds(tmp_path: Path) -> None:
    try:
        mosq = Mosquitto().start()
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    doc = {"id": "rsu-hung", "state_dir": str(tmp_path / "state"), "status_interval_s": 0.5, "join_wait_s": 0.2,
           "broker": {"port": mosq.port, "reconnect_min_s": 0.05, "ack_timeout_s": 10.0},
           "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 100.0},
           "tasks": [{"name": "t1", "task_type": "sentence", "layers": {"q": [16, 12]}}]}
    rsu = Daemon("rsu", write_toml(tmp_path / "rsu.toml", doc), tmp_path / "rsu.log")
    try:
        rsu.start()
        wait_for(lambda: "running" in rsu.text(), 30, "RSU running", (rsu.log,))
        mosq.pause()
        time.sleep(1.5)  # a status publish is now waiting for a PUBACK that will not come
        asked = time.monotonic()
        code = rsu.term(timeout=40)
        took = time.monotonic() - asked
    finally:
        rsu.kill()
        mosq.resume()
        mosq.cleanup()
    assert code == 0, rsu.text()
    assert took < 6.0, f"took {took:.1f} s to stop\n{rsu.text()[-2000:]}"
