"""Client-side subscription bookkeeping shared by both transports (`MemoryBus`, `MqttBus`): which handlers a
delivery goes to, by topic filter and MQTT 5 subscription identifier, and the publish-topic check."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from proto.bus import BusError, Delivery, Handler
from proto.topics import topic_matches

log = logging.getLogger(__name__)


def check_topic(topic: str) -> None:
    """Raise BusError unless `topic` is a valid topic to publish on."""
    if not isinstance(topic, str) or not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise BusError(f"invalid publish topic {topic!r}")


class SubscriptionTable:
    """A client's handlers per topic filter, shared by `MemoryBus` and `MqttBus`.

    Each filter gets a subscription identifier the first time it is used and keeps it, so that the
    same subscriptions made in the same order by a restarted process get the same identifiers.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._handlers: dict[str, list[tuple[object, Handler]]] = {}
        self._qos: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, str] = {}

    def add(self, topic_filter: str, handler: Handler, qos: int) -> tuple[object, int]:
        """Register a handler; returns (token for `remove`, subscription identifier)."""
        token = object()
        with self._lock:
            self._handlers.setdefault(topic_filter, []).append((token, handler))
            self._qos[topic_filter] = max(qos, self._qos.get(topic_filter, 0))
            if topic_filter not in self._ids:
                sid = len(self._ids) + 1
                self._ids[topic_filter] = sid
                self._by_id[sid] = topic_filter
            return token, self._ids[topic_filter]

    def remove(self, topic_filter: str, token: object) -> bool:
        """Drop one handler; True when it was the filter's last (the broker subscription can go)."""
        with self._lock:
            entries = self._handlers.get(topic_filter, [])
            kept = [e for e in entries if e[0] is not token]
            if len(kept) == len(entries):
                return False  # already removed: unsubscribing twice is harmless
            if kept:
                self._handlers[topic_filter] = kept
                return False
            del self._handlers[topic_filter]
            del self._qos[topic_filter]
            return True

    def active(self) -> list[tuple[str, int, int]]:
        """(filter, qos, subscription id) of every filter that has a handler."""
        with self._lock:
            return [(f, self._qos[f], self._ids[f]) for f in self._handlers]

    def has(self, topic_filter: str) -> bool:
        with self._lock:
            return topic_filter in self._handlers

    def resolve(self, topic: str, filters: Iterable[str] = (), sub_ids: Iterable[int] = ()) -> list[str]:
        """Which filters a delivery is for: those named by the broker (filter or subscription id)
        that still match; if none, every active filter matching the topic (e.g. a session resumed by
        a new process whose identifiers differ)."""
        with self._lock:
            named = list(filters) + [self._by_id[i] for i in sub_ids if i in self._by_id]
            chosen = [f for f in dict.fromkeys(named) if f in self._handlers and topic_matches(f, topic)]
            if not chosen:
                chosen = [f for f in self._handlers if topic_matches(f, topic)]
            return chosen

    def dispatch(self, topic_filters: Iterable[str], delivery: Delivery) -> int:
        """Call each handler of each filter; a handler that raises is logged and the rest still run."""
        calls = 0
        for f in topic_filters:
            with self._lock:
                handlers = [h for _, h in self._handlers.get(f, [])]
            for h in handlers:
                calls += 1
                try:
                    h(delivery)
                except Exception:  # a handler never stops delivery to the others
                    log.exception("handler for %s failed on topic %s", f, delivery.topic)
        if calls == 0:
            log.warning("no handler for message on %s (dropped)", delivery.topic)
        return calls
