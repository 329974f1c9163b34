"""The fault suite's rig (tests/test_faults.py): the broker `fedrank broker-config` generates (password
authentication, started unmodified, privilege drop when root), the RSU and cloud daemons as processes, a scripted
fleet of vehicles (MQTT clients in this process: they answer every announcement that lists them with a synthetic
update, so that the suite measures the runtime, not training), and an account of every update from the RSU's log.

Figures: `Ledger.figures()`; with FEDRANK_FAULTS_REPORT=path each scenario appends them there as one JSON line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedrank import broker_config
from proto.bus import BusError, Delivery
from proto.codec import decode
from proto.errors import WireError
from proto.messages import AgentStatus, Position, RoundAnnouncement, TaskStats
from proto.mqtt_bus import MqttBus
from proto.mqtt_options import MqttOptions
from proto.topics import Role
from tests.helpers_rsu import LAYERS, make_update
from tests.mosquitto import Mosquitto, broker_dir, free_port, give_to_broker, share_with_broker
from tests.procs import Daemon, T, write_toml

TASK = "t1"
MONITOR = "mon-f"
FAST = {"reconnect_min_s": 0.05, "reconnect_max_s": 0.5, "ack_timeout_s": 5.0}


class GeneratedBroker(Mosquitto):
    """Mosquitto on `fedrank broker-config --password` output, unmodified; every identity's password is `pw-ID`."""

    def __init__(self, identities: list[str], rsus: list[str], clouds: list[str], extra: tuple[str, ...] = ()) -> None:
        d = broker_dir("fedrank-faults-")
        port = free_port()
        (d / "data").mkdir()
        give_to_broker(d / "data")
        parser = argparse.ArgumentParser()
        broker_config.add_arguments(parser)
        args = parser.parse_args(["--out", str(d / "conf"), "--password", "--port", str(port), "--bind", "127.0.0.1",
                                  "--install-dir", str(d / "conf"), "--data-dir", str(d / "data"), "--rsus",
                                  ",".join(rsus), "--cloud", ",".join(clouds), "--monitor", MONITOR, *extra])
        assert broker_config.run(args) == 0
        passwd = d / "conf" / "passwd"
        passwd.write_text("".join(f"{i}:pw-{i}\n" for i in [*identities, MONITOR]))
        tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
        subprocess.run([tool, "-U", str(passwd)], check=True, capture_output=True)  # hash in place
        share_with_broker(passwd)
        super().__init__(workdir=d, port=port, conf=d / "conf" / "mosquitto.conf")
        self._own_dir = True
        self.log = self._stderr_log or self.log  # the generated config logs to stderr

    def options(self, ident: str) -> MqttOptions:
        return MqttOptions(port=self.port, username=ident, password=f"pw-{ident}", **FAST)

    def broker_doc(self, ident: str) -> dict[str, Any]:
        return {"port": self.port, "username": ident, "password": f"pw-{ident}", **FAST}


def rsu_doc(rid: str, state: Path, broker: GeneratedBroker, rounds: int, timeout_s: float = 20.0) -> dict[str, Any]:
    return {"id": rid, "state_dir": str(state), "broker": broker.broker_doc(rid), "join_wait_s": 1.0,
            "status_interval_s": 5.0, "cold_start_s": 0.0, "log_json": True,
            "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 1000.0},
            "tasks": [{"name": TASK, "task_type": "sentence", "layers": {k: list(v) for k, v in LAYERS.items()},
                       "round_timeout_s": timeout_s, "round_gap_s": 0.3, "participant_retry_s": 0.3,
                       "min_participants": 1, "max_rounds": rounds, "default_round_budget_j": 1000.0}]}


def cloud_doc(cid: str, state: Path, broker: GeneratedBroker) -> dict[str, Any]:
    return {"id": cid, "state_dir": str(state), "broker": broker.broker_doc(cid), "tasks": [TASK],
            "e_total_j": 1e6, "feedback": {"window_rounds": 2}, "log_json": True}


class Vehicle:
    """One scripted vehicle: online status (retained, will = offline), answers announcements that list it."""

    def __init__(self, vid: str, rsu: str, broker: GeneratedBroker, fleet: Fleet, delay_s: float) -> None:
        self.id, self.rsu, self.broker, self.fleet, self.delay_s = vid, rsu, broker, fleet, delay_s
        self.bus: MqttBus | None = None
        self.answered: set[int] = set()
        self.online = False
        self._lock = threading.Lock()  # leaving waits for an update being sent (it is acknowledged first)

    def _status(self, state: str) -> tuple[str, bytes]:
        msg = AgentStatus(sender=self.id, sent_at=time.time(), role="vehicle", state=state, tasks=[TASK],
                          position=Position(x=1.0, y=1.0))
        return T.status(Role.VEHICLE, self.id), msg.model_dump_json().encode()

    def start(self) -> None:
        from proto.bus import Will

        bus = MqttBus(self.broker.options(self.id), self.id)
        bus.subscribe(T.rounds_for_task(TASK), self._on_round)
        topic, offline = self._status("offline")
        with contextlib.suppress(BusError):  # not up yet: it keeps retrying in the background
            bus.connect(will=Will(topic, offline), timeout=10.0)
        self.bus, self.online = bus, True
        bus.publish(*self._status("online"), retain=True)

    def stop(self) -> None:
        """Leave: an offline status, then a clean disconnect (the session stays with the broker)."""
        with self._lock:
            self._leave()

    def _leave(self) -> None:
        if self.bus is not None:
            self.online = False
            with contextlib.suppress(BusError):  # the will says it if this cannot
                self.bus.publish(*self._status("offline"), retain=True)
            self.bus.close()
            self.bus = None

    def _on_round(self, d: Delivery) -> None:
        if not d.payload or not self.online:
            return
        try:
            ann = decode(d.payload, RoundAnnouncement).msg
        except WireError:
            return
        assert isinstance(ann, RoundAnnouncement)
        if self.id not in ann.participants or ann.round in self.answered or ann.sender != self.rsu:
            return
        self.answered.add(ann.round)
        threading.Timer(self.delay_s, self._send, args=(ann.round,)).start()

    def _send(self, round_: int) -> None:
        with self._lock:
            self._send_locked(round_)

    def _send_locked(self, round_: int) -> None:
        bus = self.bus
        if bus is None or not self.online:
            self.fleet.note("withheld", self.id, round_)  # left before finishing: never sent
            return
        u = make_update(self.id, round_, rsu=self.rsu, task=TASK, seed=round_)
        try:
            bus.publish(u.topic, u.payload)
        except BusError as exc:
            if "no PUBACK" not in str(exc):  # not acknowledged yet: paho keeps it and resends
                self.fleet.note("send_failed", self.id, round_)
                return
        self.fleet.note("sent", self.id, round_)


@dataclass
class Fleet:
    broker: GeneratedBroker
    rsu: str
    size: int
    delay_s: float = 0.3
    events: list[tuple[float, str, str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.vehicles = [Vehicle(f"veh-f{i}", self.rsu, self.broker, self, self.delay_s) for i in range(self.size)]

    def note(self, what: str, vid: str, round_: int) -> None:
        with self.lock:
            self.events.append((time.time(), what, vid, round_))

    def sent(self) -> set[tuple[str, int]]:
        with self.lock:
            return {(v, r) for _, w, v, r in self.events if w == "sent"}

    def start(self) -> None:
        for v in self.vehicles:
            v.start()

    def stop(self) -> None:
        for v in self.vehicles:
            v.stop()


class Observer:
    """The monitoring identity: every announcement and stats message, redeliveries counted, not repeated."""

    def __init__(self, broker: GeneratedBroker) -> None:
        self.lock = threading.Lock()
        self.announced: dict[int, RoundAnnouncement] = {}
        self.stats: dict[int, TaskStats] = {}
        self.stats_at: dict[int, float] = {}
        self.redelivered = 0
        # a persistent session, as the cloud has: stats published while the monitor reconnects after a broker
        # kill are queued for it, not missed (a clean session made "all rounds closed" flaky at low load)
        self.bus = MqttBus(broker.options(MONITOR), MONITOR, clean_start=False)
        self.bus.subscribe(T.rounds_for_task(TASK), self._on)
        self.bus.subscribe(T.all_stats(), self._on)
        self.bus.connect()

    def _on(self, d: Delivery) -> None:
        if not d.payload:
            return
        try:
            msg = decode(d.payload).msg
        except WireError:
            return
        with self.lock:
            if isinstance(msg, RoundAnnouncement):
                self.announced.setdefault(msg.round, msg)
            elif isinstance(msg, TaskStats):
                if msg.round in self.stats:
                    self.redelivered += 1
                else:
                    self.stats[msg.round] = msg
                    self.stats_at[msg.round] = time.time()

    def rounds_closed(self) -> int:
        with self.lock:
            return len(self.stats)

    def close(self) -> None:
        self.bus.close()


_ACCEPTED = re.compile(r"task \S+ round (\d+): accepted (\S+) ")
_CLOSED = re.compile(r"task \S+ round (\d+) closed \((\w+)\): (\d+) updates")
_STORAGE = re.compile(r"storage: task \S+ round (\d+): saving (\S+)'s update failed")
_LATE = re.compile(r"ignored late update on \S+/vehicle/([^/]+)/update/\S+: round (\d+) has closed")


@dataclass
class Ledger:
    """Every update's fate, from the vehicles' side (sent) and the RSU's log (accepted, closed, rejected)."""

    sent: set[tuple[str, int]]
    rsu_log: str
    observer: Observer

    def parse(self) -> dict[str, Any]:
        accepted: dict[tuple[str, int], int] = {}
        closed: dict[int, tuple[str, int]] = {}
        storage: set[tuple[str, int]] = set()
        late: set[tuple[str, int]] = set()
        for line in self.rsu_log.splitlines():
            try:
                msg = json.loads(line)["msg"]
            except (ValueError, KeyError, TypeError):
                continue
            if m := _ACCEPTED.search(msg):
                key = (m.group(2), int(m.group(1)))
                accepted[key] = accepted.get(key, 0) + 1
            elif m := _CLOSED.search(msg):
                closed[int(m.group(1))] = (m.group(2), int(m.group(3)))
            elif m := _STORAGE.search(msg):
                storage.add((m.group(2), int(m.group(1))))
            elif m := _LATE.search(msg):
                late.add((m.group(1), int(m.group(2))))
        return {"accepted": accepted, "closed": closed, "storage": storage, "late": late}

    def figures(self, scenario: str, **extra: Any) -> dict[str, Any]:
        p = self.parse()
        acc: dict[tuple[str, int], int] = p["accepted"]
        closed: dict[int, tuple[str, int]] = p["closed"]
        stats = dict(self.observer.stats)
        return {
            "scenario": scenario,
            "updates_sent": len(self.sent),
            "updates_accepted": len(acc),
            "updates_rejected_storage": len(p["storage"] - set(acc)),
            # for a round already closed (counted as late, not aggregated); redeliveries of accepted ones excluded
            "updates_late": len(p["late"] - set(acc)),
            # neither aggregated nor refused with a counted reason (storage, late): lost silently
            "updates_lost": len(self.sent - set(acc) - p["storage"] - p["late"]),
            "double_counted": sum(n - 1 for n in acc.values() if n > 1)
            + sum(1 for r, s in stats.items() if s.updates > len({v for v, rr in acc if rr == r})),
            "rounds_closed": len(closed),
            "rounds_closed_early": sum(1 for how, _ in closed.values() if how == "all_arrived"),
            "rounds_closed_at_deadline": sum(1 for how, _ in closed.values() if how == "deadline"),
            "stats_redelivered_to_observer": self.observer.redelivered,
            **extra,
        }


def report(fig: dict[str, Any]) -> None:
    """Append a scenario's figures to $FEDRANK_FAULTS_REPORT (a JSON line), when set."""
    path = os.environ.get("FEDRANK_FAULTS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(fig, sort_keys=True) + "\n")


def rsu_daemon(tmp: Path, rid: str, broker: GeneratedBroker, rounds: int, state: Path | None = None,
               timeout_s: float = 20.0, env: dict[str, str] | None = None) -> Daemon:
    cfg = write_toml(tmp / f"{rid}.toml", rsu_doc(rid, state or tmp / "rsu-state", broker, rounds, timeout_s))
    return Daemon("rsu", cfg, tmp / f"{rid}.log", env=env)


def cloud_daemon(tmp: Path, cid: str, broker: GeneratedBroker) -> Daemon:
    return Daemon("cloud", write_toml(tmp / f"{cid}.toml", cloud_doc(cid, tmp / "cloud-state", broker)),
                  tmp / f"{cid}.log")
