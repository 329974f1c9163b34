"""One contract, two buses: every test here runs over MemoryBus and over MqttBus against a private
Mosquitto (`bus_factory`). "Not delivered" is proved without sleeping: a sentinel published after the
message by the same publisher arrives after it (per-client ordering), so once the sentinel is in,
anything that was going to arrive has arrived."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from proto.bus import Bus, BusError, Delivery, Will
from proto.memory_bus import MemoryBroker, MemoryBus
from tests.test_topic_matching import MATCH_CASES

TIMEOUT = 5.0


class Recorder:
    """A handler that records deliveries (thread-safe: MqttBus calls it from paho's thread)."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []
        self._lock = threading.Lock()

    def __call__(self, d: Delivery) -> None:
        with self._lock:
            self.got.append(d)

    def topics(self) -> list[str]:
        with self._lock:
            return [d.topic for d in self.got]

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._lock:
            return [d.payload for d in self.got if topic is None or d.topic == topic]

    def wait_for(self, topic: str, count: int = 1) -> bool:
        return wait_until(lambda: self.topics().count(topic) >= count)


def wait_until(cond: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def settle(pub: Bus, sub: Bus, tag: str) -> None:
    """Publish a sentinel through `pub` and wait until `sub` has it (see the module docstring)."""
    seen = Recorder()
    unsubscribe = sub.subscribe(f"sentinel/{tag}", seen)
    pub.publish(f"sentinel/{tag}", b"s", qos=1)
    assert seen.wait_for(f"sentinel/{tag}"), "sentinel never arrived"
    unsubscribe()


def drop(bus: Bus) -> None:
    """Unclean disconnect: MemoryBus.drop() / MqttBus.drop() (socket shut, no DISCONNECT)."""
    bus.drop()  # type: ignore[attr-defined]


@pytest.fixture
def pair(bus_factory: Callable[..., Bus]) -> tuple[Bus, Bus]:
    pub, sub = bus_factory("pub"), bus_factory("sub")
    pub.connect()
    sub.connect()
    return pub, sub


def test_subscriber_receives_topic_payload_and_qos(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    rec = Recorder()
    sub.subscribe(f"t/{sub.client_id}/x", rec)
    pub.publish(f"t/{sub.client_id}/x", b"\x00hello\xff", qos=1)
    assert rec.wait_for(f"t/{sub.client_id}/x")
    assert rec.got == [Delivery(f"t/{sub.client_id}/x", b"\x00hello\xff", qos=1, retained=False)]


def test_qos_is_the_lower_of_publish_and_subscription(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    rec = Recorder()
    sub.subscribe(f"q/{sub.client_id}", rec, qos=0)
    pub.publish(f"q/{sub.client_id}", b"1", qos=1)
    assert rec.wait_for(f"q/{sub.client_id}")
    assert rec.got[0].qos == 0


@pytest.mark.parametrize(("topic_filter", "topic", "expected"), [c for c in MATCH_CASES if not c[1].startswith("$SYS")])
def test_wildcard_table_over_the_bus(pair: tuple[Bus, Bus], topic_filter: str, topic: str, expected: bool) -> None:
    # $SYS rows are left to test_topic_matching: Mosquitto drops client publishes to $SYS.
    pub, sub = pair
    rec = Recorder()
    sub.subscribe(topic_filter, rec)
    pub.publish(topic, b"case", qos=1)
    settle(pub, sub, sub.client_id)
    assert (topic in rec.topics()) is expected


def test_retained_message_reaches_late_subscribers_and_empty_payload_clears_it(
    bus_factory: Callable[..., Bus],
) -> None:
    pub, live = bus_factory("pub"), bus_factory("live")
    pub.connect()
    live.connect()
    topic = f"ret/{pub.client_id}"
    live_rec = Recorder()
    live.subscribe(topic, live_rec)
    pub.publish(topic, b"v1", retain=True)
    pub.publish(topic, b"v2", retain=True)
    assert live_rec.wait_for(topic, 2)
    assert [d.retained for d in live_rec.got] == [False, False]  # live copies are not flagged retained

    late, late_rec = bus_factory("late"), Recorder()
    late.connect()
    late.subscribe(topic, late_rec)
    assert late_rec.wait_for(topic)
    assert late_rec.got == [Delivery(topic, b"v2", qos=1, retained=True)]  # only the last one is kept

    pub.publish(topic, b"", retain=True)  # clears; current subscribers still get it
    assert live_rec.wait_for(topic, 3)
    later, later_rec = bus_factory("later"), Recorder()
    later.connect()
    later.subscribe(topic, later_rec)
    settle(pub, later, later.client_id)
    assert later_rec.topics() == []


def test_will_is_published_on_unclean_drop(bus_factory: Callable[..., Bus]) -> None:
    watcher, agent = bus_factory("watch"), bus_factory("agent")
    watcher.connect()
    topic = f"status/{agent.client_id}"
    rec = Recorder()
    watcher.subscribe(topic, rec)
    agent.connect(will=Will(topic, b"offline", qos=1, retain=True))
    agent.publish(topic, b"online", retain=True)
    assert rec.wait_for(topic)
    drop(agent)
    assert rec.wait_for(topic, 2)
    assert rec.payloads(topic) == [b"online", b"offline"]


def test_will_is_kept_for_later_connects(bus_factory: Callable[..., Bus]) -> None:
    watcher, agent = bus_factory("watch"), bus_factory("agent")
    watcher.connect()
    topic = f"status/{agent.client_id}"
    rec = Recorder()
    watcher.subscribe(topic, rec)
    agent.connect(will=Will(topic, b"offline", retain=False))
    agent.close()
    agent.connect()  # no will given: the last one still applies
    drop(agent)
    assert rec.wait_for(topic)
    assert rec.payloads(topic) == [b"offline"]


def test_no_will_on_clean_close(bus_factory: Callable[..., Bus]) -> None:
    watcher, agent = bus_factory("watch"), bus_factory("agent")
    watcher.connect()
    topic = f"status/{agent.client_id}"
    rec = Recorder()
    watcher.subscribe(topic, rec)
    agent.connect(will=Will(topic, b"offline"))
    agent.close()
    assert not agent.connected
    other = bus_factory("other")
    other.connect()
    settle(other, watcher, watcher.client_id)
    assert rec.payloads(topic) == []


def test_unsubscribe_stops_delivery_to_that_handler_only(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    a, b = Recorder(), Recorder()
    topic = f"u/{sub.client_id}"
    unsub_a = sub.subscribe(topic, a)
    sub.subscribe(f"u/{sub.client_id}/#", b)
    pub.publish(topic, b"1")
    assert a.wait_for(topic) and b.wait_for(topic)
    unsub_a()
    unsub_a()  # twice is harmless
    pub.publish(topic, b"2")
    assert b.wait_for(topic, 2)
    settle(pub, sub, sub.client_id)
    assert a.payloads() == [b"1"]


def test_qos1_waits_for_an_offline_persistent_session_qos0_does_not(bus_factory: Callable[..., Bus]) -> None:
    pub, sub = bus_factory("pub"), bus_factory("sub", clean_start=True)
    topic = f"p/{sub.client_id}"
    rec = Recorder()
    sub.subscribe(topic, rec)
    pub.connect()
    sub.connect()
    sub.close()
    for i in range(3):
        pub.publish(topic, f"q1-{i}".encode(), qos=1)
    pub.publish(topic, b"q0", qos=0)
    pub.publish(topic, b"q1-3", qos=1)
    sub.connect()
    assert rec.wait_for(topic, 4)
    settle(pub, sub, sub.client_id)
    assert rec.payloads(topic) == [b"q1-0", b"q1-1", b"q1-2", b"q1-3"]  # in order, QoS 0 lost


def test_restarted_process_resumes_its_session_and_gets_queued_and_retained(bus_factory: Callable[..., Bus]) -> None:
    pub, first = bus_factory("pub"), bus_factory("agent")
    topic, state = f"r/{first.client_id}/msg", f"r/{first.client_id}/state"
    first.subscribe(f"r/{first.client_id}/#", Recorder())
    first.connect()
    first.close()
    pub.connect()
    pub.publish(state, b"round-7", retain=True)
    pub.publish(topic, b"queued")
    second, rec = bus_factory("agent"), Recorder()  # same client id, new object: handlers before connect
    second.subscribe(f"r/{first.client_id}/#", rec)
    second.connect()
    # The state twice: the live copy queued while offline, and the retained copy the new subscription
    # asks for (their order differs between brokers; the application de-duplicates by id).
    assert rec.wait_for(topic) and rec.wait_for(state, 2)
    assert rec.payloads(topic) == [b"queued"]
    assert sorted(d.retained for d in rec.got if d.topic == state) == [False, True]
    assert rec.payloads(state) == [b"round-7", b"round-7"]


def test_handler_that_raises_does_not_stop_delivery(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    topic = f"h/{sub.client_id}"
    calls: list[bytes] = []

    def bad(d: Delivery) -> None:
        calls.append(d.payload)
        raise RuntimeError("handler bug")

    rec = Recorder()
    sub.subscribe(topic, bad)
    sub.subscribe(topic, rec)
    pub.publish(topic, b"1")
    pub.publish(topic, b"2")
    assert rec.wait_for(topic, 2)
    assert rec.payloads(topic) == [b"1", b"2"]
    assert wait_until(lambda: calls == [b"1", b"2"])


def test_overlapping_subscriptions_call_each_handler_once(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    wide, narrow = Recorder(), Recorder()
    sub.subscribe(f"o/{sub.client_id}/#", wide)
    sub.subscribe(f"o/{sub.client_id}/+", narrow)
    pub.publish(f"o/{sub.client_id}/x", b"1")
    settle(pub, sub, sub.client_id)
    assert wide.payloads() == [b"1"]
    assert narrow.payloads() == [b"1"]


def test_handler_may_publish(pair: tuple[Bus, Bus]) -> None:
    pub, sub = pair
    ping, pong = f"ping/{sub.client_id}", f"pong/{sub.client_id}"
    sub.subscribe(ping, lambda d: sub.publish(pong, d.payload + b"!"))
    rec = Recorder()
    pub.subscribe(pong, rec)
    pub.publish(ping, b"hi")
    assert rec.wait_for(pong)
    assert rec.payloads() == [b"hi!"]


def test_bad_input_raises_bus_error(pair: tuple[Bus, Bus], bus_factory: Callable[..., Bus]) -> None:
    pub, _ = pair
    for bad_filter in ("a/#/b", "a+", ""):
        with pytest.raises(BusError):
            pub.subscribe(bad_filter, Recorder())
    for bad_topic in ("a/+", "a/#", ""):
        with pytest.raises(BusError):
            pub.publish(bad_topic, b"x")
    with pytest.raises(BusError):
        pub.publish("big", b"\0" * (16 * 1024 * 1024 + 1))
    offline = bus_factory("offline")
    with pytest.raises(BusError):
        offline.publish("x", b"lost", qos=0)


# -- MemoryBroker only: fault injection, expiry, limits (what the fleet's drills rely on) ------------

def memory_pair(broker: MemoryBroker) -> tuple[MemoryBus, MemoryBus, Recorder]:
    pub, sub, rec = MemoryBus(broker, "pub"), MemoryBus(broker, "sub"), Recorder()
    pub.connect()
    sub.connect()
    sub.subscribe("f/#", rec)
    return pub, sub, rec


def test_fault_drop_loses_only_the_next_matching_message() -> None:
    broker = MemoryBroker()
    pub, _, rec = memory_pair(broker)
    broker.drop("f/a", count=1)
    for t, p in [("f/b", b"1"), ("f/a", b"2"), ("f/a", b"3")]:
        pub.publish(t, p)
    assert rec.payloads() == [b"1", b"3"]


def test_fault_duplicate_delivers_a_second_copy_flagged_duplicate() -> None:
    broker = MemoryBroker()
    pub, _, rec = memory_pair(broker)
    broker.duplicate("f/#", count=1)
    pub.publish("f/a", b"1")
    pub.publish("f/a", b"2")
    assert [(d.payload, d.duplicate) for d in rec.got] == [(b"1", False), (b"1", True), (b"2", False)]


def test_fault_delay_holds_until_release_and_reorder_reverses() -> None:
    broker = MemoryBroker()
    pub, _, rec = memory_pair(broker)
    broker.delay("f/#")
    for p in (b"1", b"2", b"3"):
        pub.publish("f/a", p)
    assert rec.payloads() == []
    assert broker.release(reorder=True) == 3
    assert rec.payloads() == [b"3", b"2", b"1"]
    pub.publish("f/a", b"4")  # release also ends the hold
    assert rec.payloads()[-1] == b"4"


def test_broker_disconnect_publishes_the_will_and_queues_qos1_until_reconnect() -> None:
    broker = MemoryBroker()
    pub, _, rec = memory_pair(broker)
    agent = MemoryBus(broker, "agent")
    agent.connect(will=Will("f/status/agent", b"offline"))
    agent_rec = Recorder()
    agent.subscribe("cmd/agent", agent_rec)
    assert broker.disconnect_client("agent") and not agent.connected
    assert rec.payloads("f/status/agent") == [b"offline"]
    pub.publish("cmd/agent", b"go", qos=1)
    pub.publish("cmd/agent", b"lost", qos=0)
    assert broker.queued("agent") == 1
    agent.connect()
    assert agent_rec.payloads() == [b"go"]
    assert not broker.disconnect_client("nobody")


def test_session_expires_after_its_interval_on_the_broker_clock() -> None:
    now = [0.0]
    broker = MemoryBroker(clock=lambda: now[0])
    pub = MemoryBus(broker, "pub")
    pub.connect()
    sub, rec = MemoryBus(broker, "sub", session_expiry_s=10.0), Recorder()
    sub.subscribe("x", rec)
    sub.connect()
    sub.close()
    now[0] = 9.0
    pub.publish("x", b"kept")
    assert broker.queued("sub") == 1
    now[0] = 19.5  # 10 s after the disconnect at t=0... and more
    pub.publish("x", b"expired")
    assert broker.queued("sub") == 0
    fresh = MemoryBus(broker, "sub")  # the session is gone: nothing queued, no subscription left
    fresh.connect()
    pub.publish("x", b"after")
    assert rec.payloads() == []


def test_offline_queue_is_bounded_and_keeps_the_oldest() -> None:
    broker = MemoryBroker(max_queued_messages=2)
    pub, sub = MemoryBus(broker, "pub"), MemoryBus(broker, "sub")
    rec = Recorder()
    sub.subscribe("x", rec)
    pub.connect()
    sub.connect()
    sub.close()
    for p in (b"1", b"2", b"3"):
        pub.publish("x", p)
    sub.connect()
    assert rec.payloads() == [b"1", b"2"]


def test_broker_refuses_payloads_above_its_limit() -> None:
    broker = MemoryBroker(max_payload_bytes=1024)
    pub, _, rec = memory_pair(broker)
    pub.publish("f/a", b"\0" * 1024)
    with pytest.raises(BusError):
        pub.publish("f/a", b"\0" * 1025)
    assert len(rec.got) == 1


def test_session_takeover_publishes_the_old_connections_will() -> None:
    broker = MemoryBroker()
    _, _, rec = memory_pair(broker)
    old, new = MemoryBus(broker, "agent"), MemoryBus(broker, "agent")
    old.connect(will=Will("f/status/agent", b"offline"))
    new.connect()
    assert not old.connected and new.connected
    assert rec.payloads() == [b"offline"]


def test_publish_from_a_handler_is_delivered_after_the_current_message() -> None:
    # FIFO per thread: every subscriber sees `a` before the `b` a handler published while handling `a`.
    broker = MemoryBroker()
    first, second = MemoryBus(broker, "first"), MemoryBus(broker, "second")
    first.connect()
    second.connect()
    first.subscribe("a", lambda d: first.publish("b", b"from-handler"))
    rec = Recorder()
    second.subscribe("#", rec)
    first.publish("a", b"x")
    assert rec.topics() == ["a", "b"]


def test_offline_qos1_publish_is_sent_on_reconnect() -> None:
    broker = MemoryBroker()
    pub, _, rec = memory_pair(broker)
    pub.close()
    pub.publish("f/a", b"later", qos=1)
    assert rec.payloads() == []
    pub.connect()
    assert rec.payloads() == [b"later"]
