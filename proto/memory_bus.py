"""The in-process mock broker (`MemoryBroker`) and its client (`MemoryBus`), with MQTT 5 semantics.

Used by the tests and the in-process fleet. What it models, as Mosquitto does:
- `+`/`#` wildcards (`a/#` matches `a`; a leading wildcard never matches a `$`-topic);
- retained messages, delivered on subscribe with `retained=True`; an empty retained payload clears;
  live deliveries carry `retained=False` (MQTT 5 "retain as published" off);
- sessions: `clean_start=False` keeps subscriptions and queues QoS 1 messages for an offline client
  (up to `max_queued_messages`, newer ones dropped and logged) until `session_expiry_s` after the
  disconnect; QoS 0 messages for an offline client are dropped;
- the will is published on an unclean disconnect (`MemoryBus.drop()`, `MemoryBroker.disconnect_client()`,
  a session take-over), never on `close()`;
- overlapping subscriptions of one client: one copy per matching subscription (what Mosquitto 2 does),
  so each handler runs once per message; a second handler on the same filter re-subscribes, so the
  retained message of that filter reaches every handler of the filter again (applications de-duplicate).

Delivery is synchronous on the publisher's thread: the broker's lock is held only to route, never
while handlers run, and a publish made by a handler is queued behind the delivery in progress on that
thread (first in, first out), so runs are deterministic under the fleet's simulated clock.
`MemoryBus` has no network to lose, so it never reconnects by itself: call `connect()` again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from proto.bus import Bus, BusError, Delivery, Handler, Unsubscribe, Will
from proto.subscriptions import SubscriptionTable, check_topic
from proto.topics import topic_matches, valid_filter

log = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 16 * 1024 * 1024

@dataclass
class _Session:
    client_id: str
    expiry_s: float
    subs: dict[str, int] = field(default_factory=dict)  # filter -> granted qos
    queue: deque[tuple[str, Delivery]] = field(default_factory=deque)
    bus: MemoryBus | None = None
    will: Will | None = None
    gone_at: float | None = None


@dataclass
class _Fault:
    kind: str  # "drop" | "duplicate"
    topic_filter: str
    remaining: int | None  # None: until clear_faults()


class MemoryBroker:
    """An in-process MQTT broker with fault injection.

    Args:
        max_payload_bytes: larger publishes are refused with BusError (Mosquitto: message_size_limit).
        max_queued_messages: QoS 1 messages kept per offline session; newer ones are dropped and logged.
        clock: seconds, for session expiry (the fleet passes its simulated clock's `now`).
    """

    def __init__(
        self,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD,
        max_queued_messages: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_payload_bytes = max_payload_bytes
        self.max_queued_messages = max_queued_messages
        self._clock = clock
        self._lock = threading.RLock()
        self._sessions: dict[str, _Session] = {}
        self._retained: dict[str, tuple[bytes, int]] = {}
        self._faults: list[_Fault] = []
        self._hold_filters: list[str] = []
        self._held: list[tuple[str, bytes, int, bool]] = []
        self._tl = threading.local()

    # -- fault injection ----------------------------------------------------------------------
    def drop(self, topic_filter: str = "#", count: int | None = 1) -> None:
        """Lose the next `count` messages published on topics matching the filter (None: all)."""
        with self._lock:
            self._faults.append(_Fault("drop", topic_filter, count))

    def duplicate(self, topic_filter: str = "#", count: int | None = 1) -> None:
        """Deliver the next `count` matching messages twice, the second copy flagged `duplicate`."""
        with self._lock:
            self._faults.append(_Fault("duplicate", topic_filter, count))

    def delay(self, topic_filter: str = "#") -> None:
        """Hold matching messages until `release()`."""
        with self._lock:
            self._hold_filters.append(topic_filter)

    def release(self, reorder: bool = False) -> int:
        """Stop holding and route the held messages, in publish order or reversed; returns how many."""
        with self._lock:
            held, self._held, self._hold_filters = self._held, [], []
        for topic, payload, qos, retain in reversed(held) if reorder else held:
            self._route(topic, payload, qos, retain)
        return len(held)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def disconnect_client(self, client_id: str) -> bool:
        """Cut a client off uncleanly (its will is published); False if it was not connected."""
        with self._lock:
            s = self._sessions.get(client_id)
            bus = s.bus if s else None
        if bus is None:
            return False
        self._detach(bus, unclean=True)
        return True

    # -- introspection ------------------------------------------------------------------------
    def retained(self, topic: str) -> bytes | None:
        with self._lock:
            entry = self._retained.get(topic)
            return entry[0] if entry else None

    def queued(self, client_id: str) -> int:
        """QoS 1 messages waiting for an offline session."""
        with self._lock:
            s = self._sessions.get(client_id)
            return len(s.queue) if s else 0

    def connected_clients(self) -> set[str]:
        with self._lock:
            return {cid for cid, s in self._sessions.items() if s.bus is not None}

    # -- what MemoryBus calls -----------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Accept one message from a client (faults apply here) and deliver it."""
        check_topic(topic)
        if len(payload) > self.max_payload_bytes:
            raise BusError(f"payload of {len(payload)} bytes on {topic} exceeds {self.max_payload_bytes}")
        if topic.startswith("$SYS/") or topic == "$SYS":
            log.warning("client publish to %s dropped: $SYS is the broker's", topic)  # as Mosquitto
            return
        copies = 1
        with self._lock:
            for fault in self._faults:
                if topic_matches(fault.topic_filter, topic) and fault.remaining != 0:
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    if fault.kind == "drop":
                        log.info("fault injection: dropped message on %s", topic)
                        return
                    copies = 2
            self._faults = [f for f in self._faults if f.remaining != 0]
            if any(topic_matches(f, topic) for f in self._hold_filters):
                self._held.append((topic, bytes(payload), qos, retain))
                return
        self._route(topic, bytes(payload), qos, retain, copies)

    def _route(self, topic: str, payload: bytes, qos: int, retain: bool, copies: int = 1) -> None:
        out: list[tuple[MemoryBus, str, Delivery]] = []
        with self._lock:
            if retain:
                if payload:
                    self._retained[topic] = (payload, qos)
                else:
                    self._retained.pop(topic, None)
            self._expire()
            for s in self._sessions.values():
                for f, sub_qos in s.subs.items():
                    if not topic_matches(f, topic):
                        continue
                    for n in range(copies):
                        d = Delivery(topic, payload, min(qos, sub_qos), False, duplicate=n > 0)
                        if s.bus is not None:
                            out.append((s.bus, f, d))
                        else:
                            self._enqueue(s, f, d)
        self._deliver(out)

    def _enqueue(self, s: _Session, topic_filter: str, d: Delivery) -> None:
        if d.qos == 0:
            return  # QoS 0 is not kept for an offline client
        if len(s.queue) >= self.max_queued_messages:
            log.warning("queue of offline %s full (%d): dropped message on %s", s.client_id, len(s.queue), d.topic)
            return
        s.queue.append((topic_filter, d))

    def _deliver(self, items: list[tuple[MemoryBus, str, Delivery]]) -> None:
        """Run handlers outside the lock; publishes made by handlers queue behind (FIFO)."""
        pending: deque[tuple[MemoryBus, str, Delivery]] | None = getattr(self._tl, "pending", None)
        if pending is not None:
            pending.extend(items)
            return
        self._tl.pending = pending = deque(items)
        try:
            while pending:
                bus, f, d = pending.popleft()
                if bus.connected:
                    bus._receive(f, d)
                else:  # cut off after routing: a persistent session still gets QoS 1 later
                    with self._lock:
                        s = self._sessions.get(bus.client_id)
                        if s is not None and s.bus is None:
                            self._enqueue(s, f, d)
        finally:
            self._tl.pending = None

    def _expire(self) -> None:
        now = self._clock()
        for cid in [c for c, s in self._sessions.items() if s.gone_at is not None and now - s.gone_at >= s.expiry_s]:
            del self._sessions[cid]

    def _attach(self, bus: MemoryBus, will: Will | None, clean_start: bool, expiry_s: float) -> bool:
        """Open a session for `bus` (taking over a connected one); returns 'session present'."""
        with self._lock:
            self._expire()
            old = self._sessions.get(bus.client_id)
            taken = old.bus if old is not None and old.bus is not bus else None
        if taken is not None:
            self._detach(taken, unclean=True)  # session take-over: the old connection's will goes out
        with self._lock:
            s = self._sessions.get(bus.client_id)
            present = s is not None and not clean_start
            if not present:
                s = self._sessions[bus.client_id] = _Session(bus.client_id, expiry_s)
            assert s is not None
            s.bus, s.will, s.gone_at, s.expiry_s = bus, will, None, expiry_s
            bus._connected = True
            return present

    def _detach(self, bus: MemoryBus, unclean: bool) -> None:
        with self._lock:
            s = self._sessions.get(bus.client_id)
            if s is None or s.bus is not bus:
                return
            bus._connected = False
            will, s.bus, s.will, s.gone_at = s.will, None, None, self._clock()
            if s.expiry_s <= 0:
                del self._sessions[bus.client_id]
        if unclean and will is not None:
            log.info("%s dropped: publishing its will on %s", bus.client_id, will.topic)
            self.publish(will.topic, will.payload, will.qos, will.retain)

    def _subscribe(self, bus: MemoryBus, topic_filter: str, qos: int, only_if_new: bool) -> None:
        """Add a subscription; send matching retained messages (MQTT 5 retain handling 0 or 1)."""
        out: list[tuple[MemoryBus, str, Delivery]] = []
        with self._lock:
            s = self._sessions.get(bus.client_id)
            if s is None or s.bus is not bus:
                return
            new = topic_filter not in s.subs
            s.subs[topic_filter] = qos
            if new or not only_if_new:
                for topic, (payload, rqos) in self._retained.items():
                    if topic_matches(topic_filter, topic):
                        out.append((bus, topic_filter, Delivery(topic, payload, min(qos, rqos), True)))
        self._deliver(out)

    def _unsubscribe(self, bus: MemoryBus, topic_filter: str) -> None:
        with self._lock:
            s = self._sessions.get(bus.client_id)
            if s is not None and s.bus is bus:
                s.subs.pop(topic_filter, None)

    def _drain(self, bus: MemoryBus) -> None:
        """Deliver what was queued for the session while it was offline."""
        with self._lock:
            s = self._sessions.get(bus.client_id)
            if s is None or s.bus is not bus:
                return
            items = [(bus, f, d) for f, d in s.queue]
            s.queue.clear()
        self._deliver(items)


class MemoryBus(Bus):
    """A client of a `MemoryBroker`.

    Args:
        broker: the broker shared by every in-process agent.
        client_id: the MQTT client id (one session per id).
        clean_start: discard an old session on the first `connect()` of this object (as paho's
            "clean start first only"); later connects resume.
        session_expiry_s: how long the broker keeps the session after a disconnect (0: not at all).
    """

    def __init__(self, broker: MemoryBroker, client_id: str, clean_start: bool = False,
                 session_expiry_s: float = 3600.0) -> None:
        self.broker = broker
        self.client_id = client_id
        self._clean_first = clean_start
        self._expiry_s = session_expiry_s
        self._table = SubscriptionTable()
        self._outbox: deque[tuple[str, bytes, int, bool]] = deque()
        self._sent: set[str] = set()  # filters this object has subscribed at the broker
        self._stale: set[str] = set()  # unsubscribed while offline: removed at the next connect
        self._lock = threading.Lock()
        self._connected = False
        self._will: Will | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self, will: Will | None = None, timeout: float = 10.0) -> None:
        """Connect; the will given last is kept for later connects (as MqttBus's reconnects keep it)."""
        if will is not None:
            self._will = will
        if self._connected:
            return
        self.broker._attach(self, self._will, self._clean_first, self._expiry_s)
        self._clean_first = False
        with self._lock:
            stale, self._stale = self._stale, set()
        for f in stale:
            self.broker._unsubscribe(self, f)
        # Renewal: retained messages again only where the broker lost the subscription (MQTT 5 retain
        # handling 1); a filter this object never subscribed gets them (a restarted agent needs the state).
        for f, qos, _ in self._table.active():
            self.broker._subscribe(self, f, qos, only_if_new=f in self._sent)
            self._sent.add(f)
        self.broker._drain(self)
        with self._lock:
            outbox, self._outbox = list(self._outbox), deque()
        for item in outbox:
            self.broker.publish(*item)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Deliver now; offline, QoS 1 is kept and sent on the next connect, QoS 0 raises BusError."""
        check_topic(topic)
        if qos not in (0, 1):
            raise BusError(f"unsupported QoS {qos}")
        if not self._connected:
            if qos == 0:
                raise BusError(f"{self.client_id} is not connected: QoS 0 message on {topic} not sent")
            with self._lock:
                self._outbox.append((topic, bytes(payload), qos, retain))
            return
        self.broker.publish(topic, payload, qos, retain)

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> Unsubscribe:
        if not valid_filter(topic_filter):
            raise BusError(f"invalid topic filter {topic_filter!r}")
        token, _ = self._table.add(topic_filter, handler, qos)
        if self._connected:
            self.broker._subscribe(self, topic_filter, qos, only_if_new=False)
            self._sent.add(topic_filter)

        def unsubscribe() -> None:
            if not self._table.remove(topic_filter, token):
                return
            self._sent.discard(topic_filter)
            if self._connected:
                self.broker._unsubscribe(self, topic_filter)
            else:
                with self._lock:
                    self._stale.add(topic_filter)

        return unsubscribe

    def close(self) -> None:
        """Disconnect cleanly: no will; a persistent session keeps queueing QoS 1 messages."""
        self.broker._detach(self, unclean=False)
        self._connected = False

    def drop(self) -> None:
        """Lose the connection uncleanly (the broker publishes the will)."""
        self.broker._detach(self, unclean=True)
        self._connected = False

    def _receive(self, topic_filter: str, d: Delivery) -> None:
        self._table.dispatch(self._table.resolve(d.topic, filters=(topic_filter,)), d)
