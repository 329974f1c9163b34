"""Typed errors raised at the edge of the wire; agents count them by `reason` and carry on."""

from __future__ import annotations


class WireError(Exception):
    """Base class for everything the wire layer refuses."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


class PayloadRejected(WireError):
    """A payload that cannot become a message: bad bytes, JSON, kind, version, dtype, shape, size, NaN."""


class TopicRejected(WireError):
    """A topic that is not part of the fedrank tree."""
