"""The transport interface. Two implementations: `MqttBus` (paho-mqtt) and `MemoryBus` (in-process
mock broker); one contract test suite runs against both.

Handlers run on the transport's thread (paho's network thread, or the publisher's thread for
MemoryBus). Agents' handlers only enqueue; a handler that raises is logged with its topic and
never stops delivery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Delivery:
    """One message handed to a subscriber."""

    topic: str
    payload: bytes
    qos: int = 0
    retained: bool = False
    duplicate: bool = False  # the transport's DUP flag; the application still de-duplicates by id


Handler = Callable[[Delivery], None]
Unsubscribe = Callable[[], None]


@dataclass(frozen=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class BusError(Exception):
    """A transport failure the caller can act on (not connected, refused credentials, ...)."""


class AuthRejected(BusError):
    """The broker refused our credentials: retrying will not help."""


class Bus(ABC):
    """Publish/subscribe with MQTT semantics."""

    client_id: str

    @abstractmethod
    def connect(self, will: Will | None = None, timeout: float = 10.0) -> None:
        """Connect (or reconnect) and renew subscriptions; the will is sent on an unclean drop."""

    @abstractmethod
    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish; for QoS 1 waits (bounded) for the broker's acknowledgement when connected."""

    @abstractmethod
    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> Unsubscribe:
        """Subscribe; the subscription survives reconnects. Returns a function that unsubscribes."""

    @abstractmethod
    def close(self) -> None:
        """Disconnect cleanly (no will)."""

    @property
    @abstractmethod
    def connected(self) -> bool: ...
