"""Policies on the vehicle: UCB-DUAL and the baselines' fixed ranks (docs/algorithms.md sections 1 and 3).

HomoLoRA gives every vehicle one fixed rank (`FixedRank`); HetLoRA and FlexLoRA fix each vehicle's rank by its
device capacity (`CapacityRank` with `capacity_rank`). `make_policy` builds the one the config names.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, Protocol

from edge_agent.bandit import DEFAULT_BETA, Arm, ArmStats, BanditError, Decision, Observation, UcbDual

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
    """Chooses a work configuration among the offered arms and learns from the rounds played."""

    def select(self, d: Decision) -> Arm: ...

    def offer(self, arms: Iterable[Arm]) -> None: ...

    def update(self, arm: Arm, obs: Observation) -> None: ...


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
    """Always one rank at the full local work; ignores energy (HomoLoRA; base of CapacityRank).

    `rank` None: the middle of the offered ranks (8 for {2, 4, 8, 16, 32}).
    """

    def __init__(self, rank: int | None) -> None:
        if rank is not None and rank < 1:
            raise PolicyError(f"rank must be >= 1 (got {rank})")
        self.rank = rank
        self.stats: dict[Arm, ArmStats] = {}

    def _rank(self, ranks: list[int]) -> int:
        return ranks[len(ranks) // 2] if self.rank is None else self.rank

    def select(self, d: Decision) -> Arm:
        ranks = sorted({a.rank for a in d.arms})
        if not ranks:
            raise BanditError("no arm offered")
        rank = self._rank(ranks)
        mine = [a for a in d.arms if a.rank == rank]
        if not mine:
            log.warning("fixed rank %d is not offered (%s)", rank, ranks)
            raise BanditError(f"rank {rank} is not among the offered ranks {ranks}")
        return max(mine, key=lambda a: a.work)

    def offer(self, arms: Iterable[Arm]) -> None:
        for a in arms:
            self.stats.setdefault(a, ArmStats())

    def update(self, arm: Arm, obs: Observation) -> None:
        if arm not in self.stats:
            log.warning("fixed-rank policy told of arm %s it was never offered", arm.key)
            raise BanditError(f"arm {arm.key} was never offered")
        if (obs.accuracy is not None and not (math.isfinite(obs.accuracy) and 0.0 <= obs.accuracy <= 1.0)) or not (
            math.isfinite(obs.joules) and obs.joules >= 0 and math.isfinite(obs.seconds) and obs.seconds >= 0
            and 0.0 < obs.done <= 1.0
        ):
            log.warning("fixed-rank policy rejected %s", obs)
            raise BanditError(f"observation out of range: {obs}")
        self.stats[arm].add(obs)


class CapacityRank(FixedRank):
    """The rank fixed by device capacity (HetLoRA, FlexLoRA): `capacity_rank(memory, offered ranks)`."""

    def __init__(self, device: float | str, fits: Callable[[int], bool] = lambda r: True) -> None:
        super().__init__(None)
        capacity_rank(device, [1])  # refuses an unknown device now rather than at the first round
        self.device = device
        self.fits = fits

    def _rank(self, ranks: list[int]) -> int:
        cap = capacity_rank(self.device, ranks)
        below = [r for r in ranks if r <= cap and self.fits(r)]
        if not below:
            raise BanditError(f"capacity rank {cap} and every smaller rank are excluded on this device")
        return below[-1]


def make_policy(
    kind: PolicyKind,
    *,
    rank: int | None = None,
    device: float | str | None = None,
    beta: float = DEFAULT_BETA,
    seed: int = 0,
    stream: str = "",
    state_path: Path | None = None,
    fits: Callable[[int], bool] = lambda r: True,
) -> RankPolicy:
    """Build the policy the config names; the offered arms come with each round, not here.

    Args:
        kind: "ucb-dual" (the bandit), "fixed" (HomoLoRA) or "capacity" (HetLoRA/FlexLoRA).
        rank: the fixed rank for "fixed"; None = the middle of the offered ranks.
        device: memory in GB or a known device name, required for "capacity".
        beta, seed, stream, state_path: UCB-DUAL's exploration weight, its seeded per-decision generator and its
            statistics file (only "ucb-dual" persists).
        fits: whether this device can train a rank ("capacity" steps down to the largest that fits).
    """
    if kind == "ucb-dual":
        try:
            return UcbDual(seed=seed, stream=stream, beta=beta, state_path=state_path)
        except BanditError as e:
            raise PolicyError(str(e)) from e
    if kind == "fixed":
        return FixedRank(rank)
    if kind == "capacity":
        if device is None:
            raise PolicyError("the capacity policy needs the device's memory (GB) or profile name")
        return CapacityRank(device, fits)
    raise PolicyError(f"unknown rank policy kind {kind!r}; expected ucb-dual, fixed or capacity")
