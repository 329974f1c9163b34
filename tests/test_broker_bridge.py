"""Per-RSU brokers bridged to a cloud broker, both started from `fedrank broker-config` output unmodified:
the RSU's stats reach the cloud, the cloud's budgets reach the RSU, and vehicle traffic stays local."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from proto.bus import Delivery
from proto.mqtt_bus import MqttBus
from proto.topics import Role
from tests.faults_rig import GeneratedBroker
from tests.mosquitto import MosquittoUnavailable
from tests.procs import T, wait_for

pytestmark = pytest.mark.mosquitto


class Inbox:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def __call__(self, d: Delivery) -> None:
        with self.lock:
            self.got.append((d.topic, d.payload))

    def topics(self) -> set[str]:
        with self.lock:
            return {t for t, _ in self.got}


def test_an_rsu_broker_bridges_stats_up_and_budgets_down(tmp_path: Path) -> None:
    rid, cid = "rsu-b", "cloud-b"
    try:
        cloud_broker = GeneratedBroker([rid, cid, "veh-b"], [rid], [cid]).start()
        rsu_broker = GeneratedBroker([rid, cid, "veh-b"], [rid], [cid], extra=(
            "--bridge-to", f"127.0.0.1:{cloud_broker.port}", "--bridge-password", f"pw-{rid}")).start()
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    conf = rsu_broker.conf.read_text()
    assert f"connection fedrank-{rid}" in conf and rsu_broker.conf.stat().st_mode & 0o777 == 0o640
    cloud, rsu, veh = (MqttBus(b.options(i), i, clean_start=True) for b, i in
                       ((cloud_broker, cid), (rsu_broker, rid), (rsu_broker, "veh-b")))
    at_cloud, at_rsu = Inbox(), Inbox()
    try:
        cloud.subscribe(T.all_stats(), at_cloud)
        cloud.subscribe(T.all_status(), at_cloud)
        rsu.subscribe(T.all_budgets(), at_rsu)
        rsu.subscribe(T.updates_for(rid), at_rsu)
        for b in (cloud, rsu, veh):
            b.connect()
        wait_for(lambda: "New bridge connected from 127.0.0.1" in cloud_broker.log.read_text(), 20, "bridge up",
                 (rsu_broker.log, cloud_broker.log))
        time.sleep(1.0)  # the bridge's upstream subscriptions
        cloud.publish(T.budget(cid, "t1"), b"budget", retain=True)
        rsu.publish(T.stats(rid, "t1"), b"stats")
        rsu.publish(T.status(Role.RSU, rid), b"online", retain=True)
        veh.publish(T.update("veh-b", rid, "t1"), b"update")
        wait_for(lambda: T.budget(cid, "t1") in at_rsu.topics(), 20, "budget down the bridge", (rsu_broker.log,))
        wait_for(lambda: {T.stats(rid, "t1"), T.status(Role.RSU, rid)} <= at_cloud.topics(), 20,
                 "stats and status up the bridge", (rsu_broker.log, cloud_broker.log))
        wait_for(lambda: T.update("veh-b", rid, "t1") in at_rsu.topics(), 10, "local traffic served locally ...",
                 (rsu_broker.log,))
        time.sleep(0.5)
        assert not any("/vehicle/" in t for t in at_cloud.topics())  # ... and never crosses the bridge
    finally:
        for b in (cloud, rsu, veh):
            b.close()
        rsu_broker.cleanup()
        cloud_broker.cleanup()
