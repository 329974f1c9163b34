"""What keeps an RSU bounded under hostile traffic, as a mixin of `RsuAgent` (rsu_agent/agent.py).

- the inbox's priority: the update topics open rounds wait for (`_awaited`, `_refresh_expected`) jump the queue
  and may use its reserve, so a flood of strangers cannot crowd them out or delay them past a deadline;
- housekeeping every 10 s: vehicles silent past `vehicle_silence_s` are evicted, drop counts go to metrics;
- rejections: counted by reason, metrics labelled only with configured tasks (`_other` for the rest), logged at
  most `log_burst` lines per reason per minute, and notified to the vehicle (rate-limited, QoS 0);
- the clock: a `sent_at` further ahead of ours than `max_clock_skew_s` is refused (`clock_skew`).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import TYPE_CHECKING, Any

from proto.bus import BusError, Delivery
from proto.messages import Message
from rsu_agent.validate import UpdateRejected

if TYPE_CHECKING:
    from fedrank.metrics import Metrics
    from fedrank.ratelimit import RateLimitedLog
    from fedrank.runtime import Clock, Inbox
    from proto.bus import Bus
    from proto.topics import Topics
    from rsu_agent.notices import Notices
    from rsu_agent.rounds import TaskRounds
    from rsu_agent.settings import RsuSettings

log = logging.getLogger("rsu_agent.agent")  # one logger name for the RSU's lines, wherever the code lives

OTHER_TASK = "_other"  # the metrics label of every task this RSU does not host


class GuardMixin:
    """Resource bounds of an RSU; `RsuAgent` provides the attributes annotated here."""

    s: RsuSettings
    id: str
    bus: Bus
    clock: Clock
    topics: Topics
    metrics: Metrics
    inbox: Inbox
    tasks: dict[str, TaskRounds]
    vehicles: dict[str, Any]
    _delivered_at: dict[str, float]
    _counts: Counter[str]
    _rejected: Counter[str]
    _expected: frozenset[str]
    _reported: Counter[str]
    _rlog: RateLimitedLog
    _notices: Notices

    def _drops(self) -> dict[str, int]:
        """Resources refused so far: a full inbox, oversize messages (at the transport), suppressed log lines."""
        return {"inbox_full": self.inbox.dropped, "oversize": int(getattr(self.bus, "oversize", 0)),
                "log_suppressed": self._rlog.suppressed}

    def _awaited(self, d: Delivery) -> bool:
        """Transport thread: is this an update some open round waits for? (gets the inbox's reserve)"""
        return d.topic in self._expected

    def _refresh_expected(self) -> None:
        """Recompute the update topics open rounds wait for (participants and migration targets)."""
        topics = set()
        for name, tr in self.tasks.items():
            p = tr.pending
            if p is None:
                continue
            for v in list(p.participants) + [r.migrate_to for r in p.ft.values() if r.migrate_to]:
                topics.add(self.topics.update(v, self.id, name))
        self._expected = frozenset(topics)  # one reference swap: the transport thread sees old or new, both whole

    def _housekeeping(self) -> None:
        """Evict vehicles silent past `vehicle_silence_s` and hand new drop counts to metrics."""
        now = self.clock.now()
        silent = [vid for vid, v in self.vehicles.items() if now - v.seen_at > self.s.vehicle_silence_s]
        for vid in silent:
            del self.vehicles[vid]
            self._delivered_at.pop(vid, None)
        if silent:
            log.info("evicted %d vehicles silent for more than %.0f s", len(silent), self.s.vehicle_silence_s)
        for what, n in self._drops().items():
            self.metrics.dropped(what, n - self._reported[what])
            self._reported[what] = n
        self.metrics.received(self.inbox.received - self._reported["received"])
        self._reported["received"] = self.inbox.received
        self._refresh_expected()

    def _publish_notice(self, topic: str, payload: bytes) -> None:
        """QoS 0: a notice is best-effort and must never make the agent wait for a PUBACK in a flood."""
        try:
            self.bus.publish(topic, payload, qos=0)
        except BusError as exc:
            log.debug("notice on %s not sent: %s", topic, exc)

    def _check_clock(self, msg: Message) -> None:
        """A sent_at far ahead of our clock would make every later genuine message look old: refuse it."""
        ahead = msg.sent_at - self.clock.now()
        if ahead > self.s.max_clock_skew_s:
            raise UpdateRejected("clock_skew", f"sent_at {msg.sent_at:.3f} is {ahead:.0f} s ahead of our clock "
                                 f"(limit {self.s.max_clock_skew_s:.0f} s)")

    def _refuse(self, topic: str, reason: str, detail: str, task: str | None) -> None:
        if reason in ("late", "duplicate"):
            self._counts[reason] += 1
            self._rlog(reason, logging.INFO, "ignored %s update on %s: %s", reason, topic[:200], detail[:300])
            return
        self._rejected[reason] += 1
        self._rlog(reason, logging.WARNING, "rejected message on %s: %s (%s)", topic[:200], reason, detail[:300],
                   extra={"topic": topic[:200], "reason": reason})
        if task is not None:  # labels only from configured tasks: a topic cannot create series
            self.metrics.update_rejected(task if task in self.tasks else OTHER_TASK, reason)
        else:
            self.metrics.message_rejected(reason)
