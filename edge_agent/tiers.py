"""A vehicle's download of the global adapter in nested rank tiers (proto/README.md, "Rank tiers").

The announcement names the tiers; a rank-eta vehicle subscribes to the leading tiers whose first component is
at most eta (retained, so they arrive at once), keeps each that belongs to the round, and when it has them all
merges them back into one factored adapter. Nothing here touches the bus: the agent subscribes and unsubscribes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proto.messages import RoundAnnouncement, RoundTier, TierRef

# No torch at import: the idle edge daemon imports this module (proto.adapter is imported when tiers merge).


def tiers_needed(ann: RoundAnnouncement, rank: int) -> list[TierRef]:
    """The leading tiers a rank-`rank` vehicle fetches: those whose first component is at most `rank`."""
    return [t for t in ann.tiers if t.first <= rank]


@dataclass
class TierFetch:
    """The tiers one round still needs, and those that arrived."""

    rsu: str
    ann: RoundAnnouncement
    need: list[TierRef]
    got: dict[int, dict[str, Any]] = field(default_factory=dict)
    unsubscribe: list[Callable[[], None]] = field(default_factory=list)

    def belongs(self, rsu: str, msg: RoundTier) -> bool:
        """Whether a tier message is one of ours (this RSU, task, round, a needed index with its bounds)."""
        if (rsu, msg.task, msg.round) != (self.rsu, self.ann.task, self.ann.round) or msg.index >= len(self.need):
            return False
        ref = self.need[msg.index]
        return (msg.first, msg.last) == (ref.first, ref.last)

    def add(self, msg: RoundTier, tensors: dict[str, Any]) -> bool:
        """Keep a tier (a redelivery replaces it); True once every needed tier is here."""
        self.got[msg.index] = tensors
        return len(self.got) == len(self.need)

    def merged(self) -> dict[str, Any]:
        """The fetched tiers as one `{layer}.U/.S/.Vt` + head dict; PayloadRejected if they do not stack."""
        from proto.adapter import merge_tiers

        return merge_tiers([self.got[k] for k in range(len(self.need))])

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for part in self.got.values() for t in part.values())

    def close(self) -> None:
        for unsub in self.unsubscribe:
            unsub()
        self.unsubscribe.clear()
