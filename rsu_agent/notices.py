"""`rejected` notices: an RSU tells a vehicle why one of its messages was refused, on the vehicle's command topic.

Rate-limited twice: each (vehicle, reason) at most once per `per_reason_s`, and all notices together at most
`burst` per second (a token bucket), so a flood of hostile messages under many fake vehicle ids costs a bounded
number of publishes. `duplicate` (a QoS 1 redelivery the vehicle cannot help) is never notified.
"""

from __future__ import annotations

from collections.abc import Callable

from proto.codec import encode
from proto.messages import Rejected
from proto.reasons import REASONS, Reason
from proto.topics import Topics

NEVER = frozenset({"duplicate", "bad_state"})


class Notices:
    """Decides whether a refusal is worth a notice, and publishes it through `publish(topic, payload)`."""

    def __init__(self, rsu_id: str, topics: Topics, now: Callable[[], float], publish: Callable[[str, bytes], None],
                 per_reason_s: float = 60.0, rate_per_s: float = 20.0, max_keys: int = 10_000) -> None:
        self.rsu_id, self.topics, self.now, self.publish = rsu_id, topics, now, publish
        self.per_reason_s, self.rate, self.max_keys = per_reason_s, rate_per_s, max_keys
        self._last: dict[tuple[str, str], float] = {}
        self._tokens = rate_per_s
        self._t = now()
        self.sent = 0
        self.held_back = 0

    def _take(self) -> bool:
        t = self.now()
        self._tokens = min(self.rate, self._tokens + max(0.0, t - self._t) * self.rate)
        self._t = t
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def refused(self, vehicle: str, reason: str, about: str, task: str | None, detail: str) -> bool:
        """Notify `vehicle` unless rate limits say no; True when a notice went out."""
        if reason in NEVER or reason not in REASONS:
            return False
        key = (vehicle, reason)
        t = self.now()
        last = self._last.get(key)
        if last is not None and 0 <= t - last < self.per_reason_s:
            self.held_back += 1
            return False
        if not self._take():
            self.held_back += 1
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()  # forget old windows wholesale: at worst one more notice per key
        self._last[key] = t
        msg = Rejected(sender=self.rsu_id, sent_at=t, vehicle=vehicle, reason=Reason(reason), about=about,
                       task=task, detail=detail[:500])
        self.publish(self.topics.command(self.rsu_id, vehicle), encode(msg))
        self.sent += 1
        return True
