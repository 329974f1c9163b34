"""The fault suite: real Mosquitto on the generated config, the RSU and cloud daemons as processes, a scripted
fleet (tests/faults_rig.py). Every update sent is accounted for from the RSU's own log: aggregated, refused with a
counted reason (storage, late), or lost; nothing may be lost and nothing counted twice. Figures go to
RELIABILITY.md (run with FEDRANK_FAULTS_REPORT=path to collect them)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest

from fedrank.state import read_json
from tests.faults_rig import TASK, Fleet, GeneratedBroker, Ledger, Observer, cloud_daemon, report, rsu_daemon
from tests.mosquitto import MosquittoUnavailable
from tests.procs import wait_for

pytestmark = [pytest.mark.mosquitto, pytest.mark.slow]


def broker_for(rid: str, fleet_size: int, cloud: str | None = None) -> GeneratedBroker:
    vehicles = [f"veh-f{i}" for i in range(fleet_size)]
    try:
        return GeneratedBroker([rid, *([cloud] if cloud else []), *vehicles], [rid], [cloud or "cloud-none"])
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))


def when_announced(obs: Observer, round_: int, timeout: float, logs: tuple[Path, ...]) -> None:
    wait_for(lambda: round_ in obs.announced, timeout, f"round {round_} announced", logs)


def test_broker_killed_five_times_in_twenty_rounds_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rid, cid, n, rounds = "rsu-fa", "cloud-fa", 5, 20
    broker = broker_for(rid, n, cid).start()
    rsu = rsu_daemon(tmp_path, rid, broker, rounds)
    cloud = cloud_daemon(tmp_path, cid, broker)
    fleet = Fleet(broker, rid, n, delay_s=0.3)
    obs = Observer(broker)
    rng = random.Random(13)
    outages: list[float] = []
    logs = (rsu.log, cloud.log)
    try:
        fleet.start()
        cloud.start()
        rsu.start()
        for k in (2, 6, 10, 14, 17):
            when_announced(obs, k, 120, logs)
            time.sleep(rng.uniform(0.0, 0.6))  # somewhere in the round: before, during or after the uploads
            down = time.monotonic()
            broker.kill()
            time.sleep(1.0)
            broker.start()
            outages.append(time.monotonic() - down)
        wait_for(lambda: obs.rounds_closed() == rounds, 180, "all rounds closed", logs)
    finally:
        rsu.term()
        cloud.term()
        fleet.stop()
        obs.close()
        broker.cleanup()
    fig = Ledger(fleet.sent(), rsu.text(), obs).figures(
        "broker kill -9 x5, 20 rounds, 5 vehicles", broker_outage_s=round(max(outages), 2))
    report(fig)
    assert fig["updates_lost"] == 0 and fig["double_counted"] == 0, fig
    assert fig["updates_sent"] == n * rounds and fig["updates_accepted"] == n * rounds, fig
    assert all(s.updates == n for s in obs.stats.values()), fig
    counted = read_json(tmp_path / "cloud-state" / "cloud.json")["last_round"]
    assert counted == {f"{rid}/{TASK}": rounds - 1}


def test_rsu_killed_and_stopped_mid_round_and_cloud_killed_lose_nothing(tmp_path: Path) -> None:
    rid, cid, n, rounds = "rsu-fb", "cloud-fb", 4, 6
    broker = broker_for(rid, n, cid).start()
    rsu = rsu_daemon(tmp_path, rid, broker, rounds)
    cloud = cloud_daemon(tmp_path, cid, broker)
    fleet = Fleet(broker, rid, n, delay_s=1.5)  # uploads land while the RSU is down
    obs = Observer(broker)
    logs = (rsu.log, cloud.log)
    recovery: dict[str, float] = {}
    try:
        fleet.start()
        cloud.start()
        rsu.start()
        for r, how in ((1, "kill"), (3, "term")):
            when_announced(obs, r, 120, logs)
            if how == "kill":
                rsu.kill()
            else:
                assert rsu.term() == 0, rsu.text()
            time.sleep(3.0)
            back = time.time()
            rsu.start()
            wait_for(lambda r=r: r in obs.stats, 60, f"round {r} closed after the restart", logs)
            recovery[f"rsu_{how}"] = round(obs.stats_at[r] - back, 2)
        when_announced(obs, 4, 60, logs)
        cloud.kill()  # the stats of round 4 (and 5) reach it only through its persistent session
        wait_for(lambda: 4 in obs.stats, 60, "round 4 closed", logs)
        time.sleep(1.0)
        cloud.start()
        wait_for(lambda: obs.rounds_closed() == rounds, 120, "all rounds closed", logs)
        wait_for(lambda: (read_json(tmp_path / "cloud-state" / "cloud.json") or {}).get("last_round", {})
                 .get(f"{rid}/{TASK}") == rounds - 1, 60, "the cloud counted every round", logs)
    finally:
        rsu.term()
        cloud.term()
        fleet.stop()
        obs.close()
        broker.cleanup()
    cloud_counted = [line for line in cloud.text().splitlines() if f"stats {rid}/{TASK} round" in line
                     and "already counted" not in line]
    fig = Ledger(fleet.sent(), rsu.text(), obs).figures(
        "RSU kill -9 (round 1) and SIGTERM (round 3) mid-round, cloud kill -9 (round 4); 6 rounds, 4 vehicles",
        recovery_s=recovery, cloud_rounds_counted=len(cloud_counted))
    report(fig)
    assert fig["updates_lost"] == 0 and fig["double_counted"] == 0, fig
    assert fig["updates_accepted"] == n * rounds and fig["rounds_closed_at_deadline"] == 0, fig
    assert len(cloud_counted) == rounds, cloud_counted


def test_thirty_percent_vehicle_churn_per_round_loses_nothing(tmp_path: Path) -> None:
    rid, n, rounds, churn = "rsu-fc", 10, 8, 3
    broker = broker_for(rid, n).start()
    rsu = rsu_daemon(tmp_path, rid, broker, rounds)
    fleet = Fleet(broker, rid, n, delay_s=1.0)
    obs = Observer(broker)
    rng = random.Random(30)
    timers: list[threading.Timer] = []
    left_total = 0
    try:
        fleet.start()
        rsu.start()
        away: list = []
        for r in range(1, rounds):
            when_announced(obs, r, 120, (rsu.log,))
            for t in timers:  # last round's leavers have left ...
                t.join()
            for v in away:  # ... and come back (their sessions resume)
                v.start()
            online = [v for v in fleet.vehicles if v.online and v not in away]
            away = rng.sample(online, churn)  # 30 % of the fleet leaves during this round
            left_total += len(away)
            for v in away:
                t = threading.Timer(rng.uniform(0.0, 2.0), v.stop)  # before or after its upload
                t.start()
                timers.append(t)
        wait_for(lambda: obs.rounds_closed() == rounds, 120, "all rounds closed", (rsu.log,))
    finally:
        for t in timers:
            t.join()
        rsu.term()
        fleet.stop()
        obs.close()
        broker.cleanup()
    withheld = sum(1 for _, w, _, _ in fleet.events if w == "withheld")
    fig = Ledger(fleet.sent(), rsu.text(), obs).figures(
        f"30 % vehicle churn per round ({churn} of {n} leave mid-round, return next round); {rounds} rounds",
        vehicles_left=left_total, updates_withheld_by_leavers=withheld)
    report(fig)
    assert fig["updates_lost"] == 0 and fig["double_counted"] == 0, fig
    assert fig["rounds_closed"] == rounds and fig["rounds_closed_at_deadline"] == 0, fig
