"""MqttBus error paths against a real Mosquitto where the broker can produce them (an ACL refusal, a broker
stopped with SIGSTOP so that no acknowledgement comes), and at paho's callback boundary where it cannot (a
refused SUBACK, a non-UTF-8 topic, a re-subscription whose SUBACK never comes)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.reasoncodes import ReasonCode

import proto.mqtt_bus as mqtt_bus
from proto.bus import BusError, Delivery
from proto.mqtt_bus import MqttBus
from proto.mqtt_options import MqttOptions
from tests.mosquitto import Mosquitto, MosquittoUnavailable, broker_dir, share_with_broker

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(120)]
WAIT_S = 10.0


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    """Anonymous clients may write `ok/#` and only read `ro/#`."""
    acl = broker_dir("fedrank-acl-") / "acl"  # Mosquitto drops privileges: pytest's 0700 tmp dirs are closed to it
    acl.write_text("topic readwrite ok/#\ntopic read ro/#\n")
    share_with_broker(acl)
    try:
        m = Mosquitto(extra_conf=f"acl_file {acl}\n")
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    m.start()
    yield m
    m.cleanup()


@pytest.fixture
def make(broker: Mosquitto, request: pytest.FixtureRequest) -> Iterator:
    made: list[MqttBus] = []

    def new(name: str, clean_start: bool = True, ack_timeout_s: float = 0.5) -> MqttBus:
        opts = MqttOptions(port=broker.port, ack_timeout_s=ack_timeout_s, reconnect_min_s=0.05, reconnect_max_s=0.5)
        made.append(MqttBus(opts, f"{name}-{request.node.name}"[:60], clean_start=clean_start))
        return made[-1]

    yield new
    for b in made:
        b.close()


@contextmanager
def paused(broker: Mosquitto) -> Iterator[None]:
    """The broker process stopped: TCP still accepts what we send, nothing is answered."""
    assert broker._proc is not None
    os.kill(broker._proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker._proc.pid, signal.SIGCONT)


class Seen:
    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.cond = threading.Condition()

    def __call__(self, d: Delivery) -> None:
        with self.cond:
            self.items.append(d)
            self.cond.notify_all()

    def wait(self, n: int) -> list[bytes]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.items) >= n, WAIT_S), [d.payload for d in self.items]
            return [d.payload for d in self.items]


def test_a_publish_refused_by_the_acl_raises_and_the_bus_stays_usable(make) -> None:
    bus = make("pub")
    bus.connect()
    with pytest.raises(BusError, match="broker refused publish on ro/x: reason code 135"):
        bus.publish("ro/x", b"no")
    seen = Seen()
    bus.subscribe("ok/#", seen)
    bus.publish("ok/x", b"yes")
    assert seen.wait(1) == [b"yes"]


def test_no_puback_within_the_timeout_raises_and_the_message_still_goes_out(broker, make) -> None:
    bus, sub = make("slow"), make("watch")
    sub.connect()
    seen = Seen()
    sub.subscribe("ok/slow", seen)
    bus.connect()
    with paused(broker), pytest.raises(BusError, match=r"no PUBACK for ok/slow within 0\.5s"):
        bus.publish("ok/slow", b"late")
    assert seen.wait(1) == [b"late"]  # kept queued in paho: delivered once the broker runs again


def test_a_subscription_not_acknowledged_raises_and_is_forgotten(broker, make) -> None:
    bus = make("suback")
    bus.connect()
    with paused(broker), pytest.raises(BusError, match="refused or not acknowledged: None"):
        bus.subscribe("ok/never", Seen())
    assert not bus._table.has("ok/never")


def test_a_refused_subscription_raises_and_is_forgotten(make) -> None:
    bus = make("refused")
    bus.connect()
    real = bus._client.on_subscribe

    def refuse(client, userdata, mid, codes, properties) -> None:  # Mosquitto 2.0 grants every filter
        real(client, userdata, mid, [ReasonCode(mqtt.PacketTypes.SUBACK, identifier=0x87)], properties)

    bus._client.on_subscribe = refuse
    with pytest.raises(BusError, match=r"refused or not acknowledged: \[135\]"):
        bus.subscribe("ok/denied", Seen())
    assert not bus._table.has("ok/denied")


def test_a_resubscription_not_acknowledged_fails_connect(make) -> None:
    bus = make("renew")
    bus.subscribe("ok/renew", Seen())  # offline: renewed by on_connect
    sent: list[str] = []

    def swallow(topic, options=None, properties=None):  # the SUBSCRIBE is lost: no SUBACK will come
        sent.append(topic)
        return mqtt.MQTT_ERR_SUCCESS, 4242

    bus._client.subscribe = swallow
    with pytest.raises(BusError, match=r"subscriptions not acknowledged within 1\.0s"):
        bus.connect(timeout=1.0)
    assert sent == ["ok/renew"] and bus.connected


def test_a_full_outgoing_queue_raises_and_the_queued_messages_go_out_in_order(make, monkeypatch) -> None:
    monkeypatch.setattr(mqtt_bus, "MAX_QUEUED", 3)
    bus, sub = make("queue"), make("qwatch")
    sub.connect()
    seen = Seen()
    sub.subscribe("ok/q", seen)
    for i in range(3):
        bus.publish("ok/q", b"%d" % i)  # offline: queued
    with pytest.raises(BusError, match=r"outgoing queue full \(3\)"):
        bus.publish("ok/q", b"3")
    bus.connect()
    assert seen.wait(3) == [b"0", b"1", b"2"]


def test_unsubscribe_while_offline_reaches_the_broker_at_the_next_connect(make) -> None:
    name = "unsub"
    bus = make(name, clean_start=True)
    bus.connect()
    unsub = bus.subscribe("ok/u", Seen())
    bus.close()
    unsub()  # offline: remembered, sent after the reconnect
    bus.connect()
    bus.close()
    pub = make("upub")
    pub.connect()
    pub.publish("ok/u", b"queued?")  # would wait in bus's persistent session if it still subscribed ok/u
    later = MqttBus(bus.options, bus.client_id, clean_start=False)
    try:
        seen = Seen()
        later.subscribe("ok/#", seen)
        later.connect()
        pub.publish("ok/end", b"end")
        assert seen.wait(1) == [b"end"]
    finally:
        later.close()


def test_a_message_with_a_non_utf8_topic_is_dropped_and_counted(make) -> None:
    bus = make("utf8")
    seen = Seen()
    bus.subscribe("#", seen)
    bus._on_message(bus._client, None, mqtt.MQTTMessage(mid=1, topic=b"ok/\xff\xfe"))
    assert bus.rejected == 1 and seen.items == []


def test_an_oversized_message_is_dropped_on_receipt(make) -> None:
    bus = make("big")
    seen = Seen()
    bus.subscribe("#", seen)
    msg = mqtt.MQTTMessage(mid=1, topic=b"ok/big")
    msg.payload = b"x" * (bus.options.max_payload_bytes + 1)
    bus._on_message(bus._client, None, msg)
    assert bus.rejected == 1 and seen.items == []


