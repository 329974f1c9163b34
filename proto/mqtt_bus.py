"""`MqttBus`: the `Bus` over paho-mqtt 2.x, MQTT 5.

Choices (the interface leaves them open):
- One network thread per bus, ours, calling `client.loop()`; it owns reconnection: capped exponential
  backoff with jitter (`backoff_delay`), waiting through the injectable `wait`, and it stops for good
  when the broker refuses our credentials (CONNACK 134/135 → `AuthRejected`).
- Persistent sessions: `clean_start=False` plus the session expiry interval from `MqttOptions`;
  `clean_start=True` means "clean on the first connect of this object only" (paho's FIRST_ONLY).
- Subscriptions live in a `SubscriptionTable` and are renewed in `on_connect`: a filter this object has
  already had acknowledged is renewed with retain handling 1 (retained messages again only if the broker
  lost the subscription), a filter never acknowledged with 0 (a restarted agent gets the retained state).
  Every SUBSCRIBE carries a subscription identifier, so a message is handed to exactly the handlers
  of the subscriptions it matched (Mosquitto sends one copy per matching subscription).
- QoS 1 publish while connected waits up to `ack_timeout_s` for the PUBACK (raising BusError on timeout
  or a refusal code); while offline it is queued in paho (up to `MAX_QUEUED`) and sent, in order, after
  the reconnect. QoS 0 while offline raises BusError. Publishing from a handler (the network thread)
  never waits, as waiting there would block the very thread that reads the PUBACK.
- Payloads above `max_payload_bytes` are refused on publish (BusError) and dropped and logged on receipt.
"""

from __future__ import annotations

import logging
import random
import socket
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from proto.bus import AuthRejected, Bus, BusError, Delivery, Handler, Unsubscribe, Will
from proto.mqtt_options import MqttOptions
from proto.subscriptions import SubscriptionTable, check_topic
from proto.topics import valid_filter

log = logging.getLogger(__name__)

AUTH_REFUSED = (134, 135)  # MQTT 5 CONNACK: bad user name or password, not authorized
MAX_QUEUED = 1000  # QoS 1 messages paho keeps while offline
SHUTDOWN_ACK_S = 1.0  # once stopping, how long a QoS 1 publish waits for its PUBACK (a hung broker cannot hold us)


def backoff_delay(attempt: int, min_s: float, max_s: float, u: float) -> float:
    """Delay before reconnect attempt `attempt` (1, 2, ...): the cap `min(max_s, min_s·2^(attempt-1))`,
    half of it fixed and half scaled by `u` in [0, 1) ("equal jitter", so a fleet does not reconnect in step)."""
    cap = min(max_s, min_s * 2.0 ** max(0, attempt - 1))
    return cap / 2.0 + u * cap / 2.0


class MqttBus(Bus):
    """A paho-mqtt client with MQTT 5 sessions, will, TLS and owned reconnection.

    Args:
        options: broker address, credentials, TLS, keepalive, session expiry, limits, backoff.
        client_id: the MQTT client id (the caller resolves `options.client_id` or the agent id).
        clean_start: discard the broker's old session on the first connect.
        wait: sleeps between reconnect attempts (`time.sleep` is replaced by an interruptible wait).
        rng: uniform [0, 1) for the backoff jitter.
    """

    def __init__(self, options: MqttOptions, client_id: str, clean_start: bool = False,
                 wait: Callable[[float], object] = time.sleep, rng: Callable[[], float] = random.random) -> None:
        self.options = options
        self.client_id = client_id
        self._clean_start = clean_start
        self._wait = wait
        self._rng = rng
        self._table = SubscriptionTable()
        self._acked: set[str] = set()  # filters the broker has acknowledged for this object
        self._stale: set[str] = set()  # unsubscribed while offline: sent at the next connect
        self._lock = threading.Lock()
        self._acks: dict[int, threading.Event] = {}
        self._ack_codes: dict[int, list[int]] = {}
        self._pub_refused: dict[int, int] = {}
        self._sub_mids: dict[int, str] = {}  # SUBSCRIBE mid -> filter, to mark it acknowledged
        self._renewals: list[tuple[threading.Event, int]] = []
        self._up = threading.Event()
        self._settled = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._auth_error: AuthRejected | None = None
        self.attempts = 0  # connection attempts made (tests and metrics)
        self.rejected = 0  # received messages dropped for size or topic
        self._ack_cap = float("inf")  # lowered by `stopping()`
        self.oversize = 0  # of which: over max_payload_bytes
        self._client = self._make_client()

    # -- setup ------------------------------------------------------------------------------
    def _make_client(self) -> mqtt.Client:
        o = self.options
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5)
        if o.username is not None:
            c.username_pw_set(o.username, o.password)
        if o.tls is not None:
            c.tls_set(ca_certs=str(o.tls.ca_file), certfile=str(o.tls.cert_file) if o.tls.cert_file else None,
                      keyfile=str(o.tls.key_file) if o.tls.key_file else None)
            c.tls_insecure_set(o.tls.insecure_skip_hostname)
        c.max_queued_messages_set(MAX_QUEUED)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_subscribe = self._on_ack
        c.on_unsubscribe = self._on_ack
        c.on_publish = self._on_publish
        # Only our thread writes to the socket: callers' packets wake its select() instead of being
        # written from their own thread (two writers could interleave a large packet).
        c.on_socket_register_write = lambda client, userdata, sock: None
        return c

    @property
    def connected(self) -> bool:
        return self._up.is_set() and self._client.is_connected()

    def connect(self, will: Will | None = None, timeout: float = 10.0) -> None:
        """Connect, renew subscriptions and wait for their acks; on timeout raise BusError (the bus
        keeps retrying in the background until `close()`); raise AuthRejected on refused credentials."""
        if self._auth_error is not None:
            raise self._auth_error
        if will is not None:
            self._client.will_set(will.topic, will.payload, will.qos, will.retain)
        if self.connected:
            return
        deadline = time.monotonic() + timeout
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"mqtt-{self.client_id}", daemon=True)
            self._thread.start()
        self._settled.wait(timeout)
        if self._auth_error is not None:
            raise self._auth_error
        if not self.connected:
            o = self.options
            raise BusError(f"no connection to {o.host}:{o.port} within {timeout:.1f}s (still retrying)")
        with self._lock:
            renewals = list(self._renewals)
        for ev, _ in renewals:
            if not ev.wait(max(0.0, deadline - time.monotonic())):
                raise BusError(f"subscriptions not acknowledged within {timeout:.1f}s")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        check_topic(topic)
        if qos not in (0, 1):
            raise BusError(f"unsupported QoS {qos}")
        if len(payload) > self.options.max_payload_bytes:
            raise BusError(f"payload of {len(payload)} bytes on {topic} exceeds {self.options.max_payload_bytes}")
        online = self.connected
        if qos == 0 and not online:
            raise BusError(f"{self.client_id} is not connected: QoS 0 message on {topic} not sent")
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise BusError(f"outgoing queue full ({MAX_QUEUED}): message on {topic} not sent")
        if qos == 0 or not online or self._on_network_thread():
            return  # offline QoS 1 stays queued in paho and goes out after the reconnect
        if not self._wait_published(info, self.options.ack_timeout_s):
            raise BusError(f"no PUBACK for {topic} within {self.options.ack_timeout_s}s (kept queued, will retry)")
        with self._lock:
            refused = self._pub_refused.pop(info.mid, None)
        if refused is not None:
            raise BusError(f"broker refused publish on {topic}: reason code {refused}")

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> Unsubscribe:
        if not valid_filter(topic_filter):
            raise BusError(f"invalid topic filter {topic_filter!r}")
        token, sid = self._table.add(topic_filter, handler, qos)
        with self._lock:
            self._stale.discard(topic_filter)
        if self.connected:
            ev, mid = self._send_subscribe(topic_filter, qos, sid, retain_handling=0)
            if not self._on_network_thread():
                codes = self._await_ack(ev, mid)
                if codes is None or any(c >= 0x80 for c in codes):
                    self._table.remove(topic_filter, token)
                    raise BusError(f"subscription to {topic_filter} refused or not acknowledged: {codes}")

        def unsubscribe() -> None:
            if not self._table.remove(topic_filter, token):
                return
            with self._lock:
                self._acked.discard(topic_filter)
                if not self.connected:
                    self._stale.add(topic_filter)
                    return
            _, mid = self._client.unsubscribe(topic_filter)
            ev = self._register_ack(mid)
            if not self._on_network_thread():
                self._await_ack(ev, mid)

        return unsubscribe

    def stopping(self, wait_s: float = SHUTDOWN_ACK_S) -> None:
        """The owner is shutting down: from now on (waits in progress included) a QoS 1 publish waits at most
        `wait_s` for its PUBACK, so that a hung broker (SIGSTOP, a dead link without RST) cannot delay the exit
        by `ack_timeout_s` per message. Safe to call from a signal handler."""
        self._ack_cap = wait_s

    def close(self) -> None:
        """Disconnect cleanly (reason 0: the broker discards the will); the session persists."""
        self._stop.set()
        if self._client.socket() is not None:
            self._client.disconnect()  # queued; wakes our thread, which writes it and closes the socket
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        deadline = time.monotonic() + 2.0  # no thread (or it is stuck in an injected wait): flush here
        while self._client.socket() is not None and time.monotonic() < deadline:
            self._client.loop(timeout=0.05)
        self._up.clear()
        self._settled.clear()

    def drop(self) -> None:
        """Lose the connection without a DISCONNECT (fault drills): the broker publishes the will and
        the bus reconnects as after any network failure."""
        sock = self._client.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.warning("%s: drop: %s", self.client_id, exc)

    # -- network thread ---------------------------------------------------------------------
    def _run(self) -> None:
        o = self.options
        self._thread_ident = threading.get_ident()
        attempt = 0
        flush_until: float | None = None
        while True:
            if self._stop.is_set():  # closing: only flush the DISCONNECT, for at most 2 s
                flush_until = flush_until or time.monotonic() + 2.0
                if self._client.socket() is None or time.monotonic() > flush_until:
                    return
            elif self._client.socket() is None:
                if self._auth_error is not None:
                    return  # retrying with refused credentials cannot help
                if attempt > 0:
                    delay = backoff_delay(attempt, o.reconnect_min_s, o.reconnect_max_s, self._rng())
                    log.info("%s: reconnecting to %s:%d in %.2fs (attempt %d)", self.client_id, o.host, o.port,
                             delay, attempt + 1)
                    self._sleep(delay)
                    if self._stop.is_set():
                        return
                attempt += 1
                self.attempts += 1
                try:
                    if self.attempts == 1:
                        props = Properties(PacketTypes.CONNECT)
                        props.SessionExpiryInterval = o.session_expiry_s
                        clean = mqtt.MQTT_CLEAN_START_FIRST_ONLY if self._clean_start else False
                        self._client.connect(o.host, o.port, o.keepalive_s, clean_start=clean, properties=props)
                    else:
                        self._client.reconnect()
                except OSError as exc:  # refused, unreachable, TLS handshake (ssl.SSLError is an OSError)
                    log.warning("%s: connect to %s:%d failed: %s", self.client_id, o.host, o.port, exc)
                    continue
            self._client.loop(timeout=0.2)
            if self._up.is_set():
                attempt = 0

    def _sleep(self, delay: float) -> None:
        if self._wait is time.sleep:
            self._stop.wait(delay)  # same wait, but close() can interrupt it
        else:
            self._wait(delay)

    def _on_network_thread(self) -> bool:
        return threading.get_ident() == getattr(self, "_thread_ident", None)

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: mqtt.ConnectFlags,
                    reason: object, properties: Properties | None) -> None:
        code = getattr(reason, "value", reason)
        if isinstance(code, int) and code >= 0x80:
            if code in AUTH_REFUSED:
                self._auth_error = AuthRejected(f"broker refused client {self.client_id}: {reason} ({code})")
                log.error("%s: %s; not retrying", self.client_id, self._auth_error)
                self._settled.set()
            else:
                log.warning("%s: connection refused: %s (%s)", self.client_id, reason, code)
            return
        log.info("%s: connected (session present: %s)", self.client_id, flags.session_present)
        with self._lock:
            stale, self._stale = self._stale, set()
        for f in stale:
            client.unsubscribe(f)
        renewals = []
        for f, qos, sid in self._table.active():
            rh = 1 if f in self._acked else 0
            renewals.append(self._send_subscribe(f, qos, sid, retain_handling=rh))
        with self._lock:
            for _, mid in self._renewals:  # the previous connection's: nobody waits on them any more
                self._acks.pop(mid, None)
                self._ack_codes.pop(mid, None)
            self._renewals = renewals
        self._up.set()
        self._settled.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: object, flags: object, reason: object,
                       properties: Properties | None) -> None:
        self._up.clear()
        if not self._stop.is_set():
            log.warning("%s: connection lost: %s", self.client_id, reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            self.rejected += 1
            log.warning("%s: dropped message with a non-UTF-8 topic", self.client_id)
            return
        if len(msg.payload) > self.options.max_payload_bytes:
            self.rejected += 1
            self.oversize += 1
            if self.oversize <= 5 or self.oversize % 1000 == 0:  # counted always, logged sparsely (a flood)
                log.warning("%s: dropped %d-byte message on %s (limit %d; %d oversize so far)", self.client_id,
                            len(msg.payload), topic[:200], self.options.max_payload_bytes, self.oversize)
            return
        sids = getattr(msg.properties, "SubscriptionIdentifier", []) if msg.properties is not None else []
        d = Delivery(topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup))
        self._table.dispatch(self._table.resolve(topic, sub_ids=sids), d)

    def _on_ack(self, client: mqtt.Client, userdata: object, mid: int, codes: list, properties: object) -> None:
        values = [getattr(c, "value", c) for c in codes]
        with self._lock:
            self._ack_codes[mid] = values
            ev = self._acks.setdefault(mid, threading.Event())
            f = self._sub_mids.pop(mid, None)
            if f is not None and all(v < 0x80 for v in values):
                self._acked.add(f)
        ev.set()

    def _on_publish(self, client: mqtt.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        code = getattr(reason, "value", 0)
        if isinstance(code, int) and code >= 0x80:
            log.warning("%s: broker refused message %d: %s", self.client_id, mid, reason)
            with self._lock:
                self._pub_refused[mid] = code

    # -- acks -------------------------------------------------------------------------------
    def _send_subscribe(self, topic_filter: str, qos: int, sid: int,
                        retain_handling: int) -> tuple[threading.Event, int]:
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = sid
        opts = SubscribeOptions(qos=qos, retainHandling=retain_handling)
        _, mid = self._client.subscribe(topic_filter, options=opts, properties=props)
        with self._lock:
            self._sub_mids[mid] = topic_filter
        ev = self._register_ack(mid)
        return ev, mid

    def _register_ack(self, mid: int) -> threading.Event:
        with self._lock:
            return self._acks.setdefault(mid, threading.Event())

    def _await_ack(self, ev: threading.Event, mid: int) -> list[int] | None:
        ok = ev.wait(self.options.ack_timeout_s)
        with self._lock:
            self._acks.pop(mid, None)
            codes = self._ack_codes.pop(mid, None)
        return codes if ok else None

    def _wait_published(self, info: mqtt.MQTTMessageInfo, timeout: float) -> bool:
        """Wait in short slices, so that `stopping()` shortens a wait already in progress."""
        start = time.monotonic()
        while not info.is_published():
            left = start + min(timeout, self._ack_cap) - time.monotonic()
            if left <= 0:
                break
            try:
                info.wait_for_publish(min(0.1, left))
            except (RuntimeError, ValueError) as exc:
                raise BusError(f"publish failed: {exc}") from exc
        return info.is_published()
