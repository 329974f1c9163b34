"""A bus that refuses publishes (MemoryBus fault injection) and handlers that raise: every agent logs, keeps its
state on disk and carries on; the runtime's guard keeps one bad event from taking an agent down."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from cloud_agent.agent import CloudAgent
from cloud_agent.settings import CloudSettings
from cloud_agent.tri_feedback import TriFeedbackConfig
from fedrank.runtime import Agent, SimClock, run_forever
from proto.bus import BusError, Delivery
from proto.codec import decode, encode
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.messages import TaskBudget, TaskStats
from proto.topics import Channel, Topics
from rsu_agent.agent import RsuAgent
from tests.helpers_rsu import RSU, Rig, make_update, rsu_settings

T = Topics()


class RefusingBus(MemoryBus):
    """Publishes on a topic containing one of `refuse` raise BusError, as a broker's refusal or a missing PUBACK."""

    def __init__(self, broker: MemoryBroker, client_id: str) -> None:
        super().__init__(broker, client_id)
        self.refuse: set[str] = set()
        self.refused = 0

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        if any(part in topic for part in self.refuse):
            self.refused += 1
            raise BusError(f"no PUBACK for {topic} within 0.1s (injected)")
        super().publish(topic, payload, qos, retain)


def test_rsu_whose_stats_publish_fails_still_closes_the_round_and_moves_on(tmp_path: Path, caplog) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    bus = RefusingBus(rig.broker, RSU)
    rig.agent = RsuAgent(rig.settings, bus, rig.clock)
    bus.connect(will=rig.agent.will())
    rig.agent.start()
    rig.agent.pump()
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    bus.refuse = {"/stats/"}
    with caplog.at_level(logging.ERROR, logger="rsu_agent.agent"):
        rig.upload(make_update("v1", 0, seed=1))
    assert bus.refused == 1 and "publish on" in caplog.text and "failed" in caplog.text
    assert [r.round for r in rig.agent.history] == [0]
    assert rig.agent.tasks["t1"].meta.next_round == 1 and rig.agent.tasks["t1"].meta.global_file
    assert rig.messages(Channel.STATS, TaskStats) == []
    bus.refuse = set()
    rig.advance(10.0)  # the next round opens and closes as usual
    rig.upload(make_update("v1", 1, seed=2))
    assert [d.msg.round for d in rig.messages(Channel.STATS, TaskStats)] == [1]


def test_cloud_whose_budget_publish_fails_keeps_its_state_and_retries_with_the_next_window(tmp_path: Path,
                                                                                           caplog) -> None:
    s = CloudSettings(id="cloud", state_dir=tmp_path, tasks=["a", "b"], e_total_j=1000.0,
                      feedback=TriFeedbackConfig(window_rounds=1), status_interval_s=1000.0)
    broker = MemoryBroker()
    bus = RefusingBus(broker, "cloud")
    bus.refuse = {"/budget/"}
    agent = CloudAgent(s, bus, SimClock(0.0))
    bus.connect(will=agent.will())
    with caplog.at_level(logging.ERROR, logger="cloud_agent.agent"):
        agent.start()
    assert bus.refused == 2 and broker.retained(T.budget("cloud", "a")) is None
    assert (tmp_path / "cloud.json").is_file()
    bus.refuse = set()
    pub = MemoryBus(broker, "rsu1")
    pub.connect()
    for task in ("a", "b"):
        st = TaskStats(sender="rsu1", task=task, round=0, energy_j=400.0, budget_j=500.0, lam=0.0, violation_j=0.0,
                       accuracy=0.6, loss=0.5, participants=1, updates=1)
        pub.publish(T.stats("rsu1", task), encode(st))
    agent.pump()
    assert agent.counters["stats"] == 2 and agent.state.window == 1
    got = decode(broker.retained(T.budget("cloud", "a")), TaskBudget).msg
    assert got.round == 1


class Flaky(Agent):
    """Raises on deliveries whose payload is b'bad' and in a timer; counts what it handled."""

    def __init__(self) -> None:
        super().__init__(SimClock(0.0))
        self.handled: list[bytes] = []
        self.ticks = 0
        self.stopped = False

    def start(self) -> None:
        self.timers.schedule(0.0, self._boom)
        self.timers.schedule(0.0, self._count_tick)

    def _boom(self) -> None:
        raise RuntimeError("a timer that fails")

    def _count_tick(self) -> None:
        self.ticks += 1

    def on_delivery(self, d: Delivery) -> None:
        if d.payload == b"bad":
            raise ValueError("a handler that fails")
        self.handled.append(d.payload)

    def stop(self) -> None:
        self.stopped = True
        raise RuntimeError("stop fails too")


def test_one_bad_event_never_takes_the_agent_down(caplog) -> None:
    agent = Flaky()
    for p in (b"1", b"bad", b"2"):
        agent.inbox.put(Delivery("x/y", p, 1, False, False))
    with caplog.at_level(logging.ERROR, logger="fedrank.runtime"):
        assert agent.pump() == 3
        agent.start()
        agent.on_tick()
    assert agent.handled == [b"1", b"2"] and agent.ticks == 1
    assert caplog.text.count("Flaky: handler") == 2


def test_run_forever_survives_failing_handlers_and_a_failing_stop() -> None:
    agent = Flaky()
    stop = threading.Event()
    for p in (b"bad", b"ok"):
        agent.inbox.put(Delivery("x/y", p, 1, False, False))

    def idle() -> None:
        if agent.handled == [b"ok"]:
            stop.set()

    t = threading.Thread(target=run_forever, args=(agent, stop), kwargs={"tick_s": 0.01, "on_idle": idle})
    t.start()
    t.join(30.0)
    assert not t.is_alive() and agent.handled == [b"ok"] and agent.ticks == 1 and agent.stopped
