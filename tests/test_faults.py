"""The fault suite: real Mosquitto on the generated config, the RSU and cloud daemons as processes, a scripted
fleet (tests/faults_rig.py). Every update sent is accounted for from the RSU's own log: aggregated, refused with a
counted reason (storage, late), or lost; nothing may be lost and nothing counted twice. Figures go to
RELIABILITY.md (run with FEDRANK_FAULTS_REPORT=path to collect them)."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from fedrank.state import read_json
from tests.faults_rig import TASK, Fleet, GeneratedBroker, Ledger, Observer, cloud_daemon, report, rsu_daemon
from tests.mosquitto import MosquittoUnavailable
from tests.procs import ENV, wait_for

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


class SmallDisk:
    """A 4 MiB tmpfs for the RSU's state (root only): `fill()` until ENOSPC, `read_only()`, `back()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        if os.geteuid() != 0:
            pytest.skip("needs root to mount a tmpfs")
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(path)], capture_output=True)
        if res.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {res.stderr.decode().strip()}")
        self.ballast = path / "ballast"
        self.mode = "ok"

    def fill(self) -> None:
        fd = os.open(self.ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 16, 1 << 12, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * chunk)
                except OSError:
                    continue
        finally:
            os.close(fd)
        self.mode = "full"

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)
        self.mode = "ro"

    def back(self) -> None:
        if self.mode == "ro":
            subprocess.run(["mount", "-o", "remount,rw", str(self.path)], check=True)
        self.ballast.unlink(missing_ok=True)
        self.mode = "ok"

    def set(self, fault: str) -> None:
        self.fill() if fault == "full" else self.read_only()

    def remove(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


class WatchdogSocket:
    """A NOTIFY_SOCKET that records when each WATCHDOG=1 arrives."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.path = path
        self.pings: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except OSError:
                continue
            if b"WATCHDOG=1" in data:
                self.pings.append(time.time())

    def between(self, a: float, b: float) -> int:
        return sum(1 for t in self.pings if a <= t <= b)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def log_time(text: str, needle: str, after: float = 0.0) -> float:
    """Wall time of the first JSON log line after `after` whose msg contains `needle`."""
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if needle in rec.get("msg", ""):
            t = datetime.fromisoformat(rec["ts"].replace("Z", "+00:00")).timestamp()
            if t >= after:
                return t
    raise AssertionError(f"no log line with {needle!r} after {after}")


@pytest.mark.parametrize(("at_start", "mid_round"), [("full", "ro"), ("ro", "full")])
def test_a_full_or_read_only_disk_at_start_and_mid_round_loses_nothing_silently_and_recovers_without_restart(
        tmp_path: Path, at_start: str, mid_round: str) -> None:
    rid, n, rounds = f"rsu-fd{at_start}", 3, 4
    disk = SmallDisk(tmp_path / "state")
    broker = broker_for(rid, n).start()
    dog = WatchdogSocket(tmp_path / "notify.sock")
    env = {**ENV, "NOTIFY_SOCKET": str(dog.path), "WATCHDOG_USEC": "1000000"}
    rsu = rsu_daemon(tmp_path, rid, broker, rounds, state=disk.path, timeout_s=8.0, env=env)
    fleet = Fleet(broker, rid, n, delay_s=0.5)
    obs = Observer(broker)
    logs = (rsu.log,)
    recovery: dict[str, float] = {}
    try:
        fleet.start()
        disk.set(at_start)
        rsu.start()
        wait_for(lambda: "no longer feeding the systemd watchdog" in rsu.text(), 60, "stalled at start", logs)
        time.sleep(4.0)
        back = time.time()
        disk.back()
        wait_for(lambda: "round 0 open" in rsu.text(), 60, "round 0 opened after the disk came back", logs)
        recovery[f"{at_start}_at_start"] = round(log_time(rsu.text(), "round 0 open") - back, 2)
        stall_start = (log_time(rsu.text(), "no longer feeding"), back)
        when_announced(obs, 1, 60, logs)
        disk.set(mid_round)  # the uploads (0.5 s later) cannot be written; then the close cannot either
        wait_for(lambda: "closing round 1 failed" in rsu.text(), 60, "close of round 1 failing", logs)
        time.sleep(3.0)
        back = time.time()
        disk.back()
        wait_for(lambda: 1 in obs.stats, 60, "round 1 closed after the disk came back", logs)
        recovery[f"{mid_round}_mid_round"] = round(obs.stats_at[1] - back, 2)
        wait_for(lambda: obs.rounds_closed() == rounds, 120, "all rounds closed", logs)
        time.sleep(1.5)
    finally:
        alive = rsu.alive
        rsu.term()
        fleet.stop()
        obs.close()
        broker.cleanup()
        dog.close()
        disk.remove()
    text = rsu.text()
    fig = Ledger(fleet.sent(), text, obs).figures(
        f"disk {at_start} at start, {mid_round} mid-round 1 (tmpfs); {rounds} rounds, {n} vehicles",
        recovery_s=recovery, restarts=rsu.starts - 1)
    report(fig)
    assert alive and rsu.starts == 1  # recovered by itself, no restart
    assert fig["updates_lost"] == 0 and fig["double_counted"] == 0, fig
    assert fig["updates_rejected_storage"] == n, fig  # round 1's uploads: refused and counted, not swallowed
    assert fig["rounds_closed"] == rounds, fig
    # no watchdog ping while a round could not open (after the first second of it), pings again afterwards
    assert dog.between(stall_start[0] + 1.0, stall_start[1]) == 0, (stall_start, dog.pings)
    assert dog.between(stall_start[1] + 2.0, time.time()) > 0
    assert "degraded" in text
