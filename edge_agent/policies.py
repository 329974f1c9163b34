"""Rank policies on the vehicle: UCB-DUAL and the baselines' fixed ranks (PAPER.md sections 1 and 3).

HomoLoRA gives every vehicle one fixed rank (`FixedRank`); HetLoRA and FlexLoRA fix each vehicle's rank by its
device capacity (`CapacityRank` with `capacity_rank`). `make_policy` builds the one the config names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from edge_agent.bandit import DEFAULT_BETA, BanditError, RankStats, UcbDual

log = logging.getLogger(__name__)

PolicyKind = Literal["ucb-dual", "fixed", "capacity"]

# Memory (GB) of the boards fedrank is deployed on, for `capacity_rank(name)`. Public spec-sheet figures; the x86
# entry is a vehicle PC with a 16 GB discrete GPU (e.g. RTX A4000). fleet.sim.devices uses the same names.
KNOWN_DEVICE_MEMORY_GB: dict[str, float] = {
    "jetson-orin-nano": 8.0,
    "jetson-xavier-nx": 8.0,
    "jetson-agx-orin": 32.0,
    "x86-dgpu": 16.0,
}


class PolicyError(ValueError):
    """A rank policy that cannot be built from the given config."""


class RankPolicy(Protocol):
    def select(self, lam: float) -> int: ...

    def update(self, rank: int, reward: float, cost: float | None) -> None: ...


def capacity_rank(device: float | str, ranks: Sequence[int]) -> int:
    """The rank HetLoRA/FlexLoRA assign to a device of this capacity.

    Mapping (decided here; the baselines only say "by capacity"): with the candidate ranks sorted ascending,
    a device with `m` GB takes index `floor(log2(m / 2))`, clamped to the list, i.e. each doubling of memory
    from 2 GB moves one step up. With K = {2, 4, 8, 16, 32}: <4 GB -> 2, 4-8 GB -> 4, 8-16 GB -> 8,
    16-32 GB -> 16, >=32 GB -> 32.

    Args:
        device: memory in GB, or a name in KNOWN_DEVICE_MEMORY_GB.
        ranks: the candidate set.
    """
    if not ranks:
        raise PolicyError("no candidate ranks")
    if isinstance(device, str):
        if device not in KNOWN_DEVICE_MEMORY_GB:
            log.warning("unknown device %r for capacity rank", device)
            raise PolicyError(f"unknown device {device!r}; known: {sorted(KNOWN_DEVICE_MEMORY_GB)}")
        memory_gb = KNOWN_DEVICE_MEMORY_GB[device]
    else:
        memory_gb = float(device)
    if not (math.isfinite(memory_gb) and memory_gb > 0):
        raise PolicyError(f"device memory must be a positive number of GB (got {device!r})")
    ordered = sorted(set(ranks))
    idx = math.floor(math.log2(memory_gb / 2.0))
    return ordered[min(len(ordered) - 1, max(0, idx))]


class FixedRank:
    """Always the same rank; keeps per-rank statistics only for reports (HomoLoRA; base of CapacityRank)."""

    def __init__(self, rank: int) -> None:
        if rank < 1:
            raise PolicyError(f"rank must be >= 1 (got {rank})")
        self.rank = rank
        self.stats = RankStats()

    def select(self, lam: float) -> int:
        return self.rank

    def update(self, rank: int, reward: float, cost: float | None) -> None:
        if rank != self.rank:
            log.warning("fixed-rank policy told of rank %d, it plays %d", rank, self.rank)
            raise BanditError(f"rank {rank} was not selected by this fixed-rank policy ({self.rank})")
        if not (math.isfinite(reward) and 0.0 <= reward <= 1.0) or (
            cost is not None and not (math.isfinite(cost) and cost >= 0)
        ):
            log.warning("fixed-rank policy rejected reward=%s cost=%s", reward, cost)
            raise BanditError(f"reward must be in [0, 1] and cost finite >= 0 (got {reward}, {cost})")
        self.stats.add(reward, cost)


class CapacityRank(FixedRank):
    """The rank fixed by device capacity (HetLoRA, FlexLoRA); build it with `capacity_rank`."""


def make_policy(
    kind: PolicyKind,
    ranks: Sequence[int],
    *,
    rank: int | None = None,
    device: float | str | None = None,
    beta: float = DEFAULT_BETA,
    excluded: Iterable[int] = frozenset(),
    max_rank: int | None = None,
    state_path: Path | None = None,
) -> RankPolicy:
    """Build the rank policy the config names.

    Args:
        kind: "ucb-dual" (the bandit), "fixed" (HomoLoRA) or "capacity" (HetLoRA/FlexLoRA).
        ranks: the candidate set K.
        rank: the fixed rank for "fixed"; default the middle of the sorted candidates (8 for {2,..,32}).
        device: memory in GB or a known device name, required for "capacity".
        beta, state_path: UCB-DUAL's exploration weight and statistics file (only "ucb-dual" persists).
        excluded, max_rank: ranks this device cannot fit; a fixed or capacity rank among them is refused,
            except that "capacity" steps down to the largest rank that fits.
    """
    ordered = sorted(set(int(r) for r in ranks))
    if not ordered:
        raise PolicyError("no candidate ranks")
    excl = set(excluded)
    fits = [r for r in ordered if r not in excl and (max_rank is None or r <= max_rank)]
    if kind == "ucb-dual":
        try:
            return UcbDual(ordered, beta=beta, excluded=excl, max_rank=max_rank, state_path=state_path)
        except BanditError as e:
            raise PolicyError(str(e)) from e
    if not fits:
        raise PolicyError(f"every candidate rank {ordered} is excluded on this device")
    if kind == "fixed":
        chosen = ordered[len(ordered) // 2] if rank is None else rank
        if chosen not in fits:
            raise PolicyError(f"fixed rank {chosen} is not a candidate that fits this device {fits}")
        return FixedRank(chosen)
    if kind == "capacity":
        if device is None:
            raise PolicyError("the capacity policy needs the device's memory (GB) or profile name")
        cap = capacity_rank(device, ordered)
        below = [r for r in fits if r <= cap]
        if not below:
            raise PolicyError(f"capacity rank {cap} and every smaller rank are excluded on this device")
        if below[-1] != cap:
            log.info("capacity rank %d does not fit; using %d", cap, below[-1])
        return CapacityRank(below[-1])
    raise PolicyError(f"unknown rank policy kind {kind!r}; expected ucb-dual, fixed or capacity")
