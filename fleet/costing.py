"""How the fleet prices a round: wire sizes, each vehicle's candidate configurations, the per-round budget hook,
the reward's latency reference and the RSU's modelled aggregation time (docs/algorithms.md sections 2-4)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from fleet.budget import RoundBudget
from fleet.config import FleetConfig
from fleet.cost import FleetCostModel
from fleet.sim.compute import RSU_FLOPS, aggregation_flops
from fleet.sim.devices import DeviceProfile

BITS = {"F32": 32, "F16": 16, "BF16": 16}


@dataclass(frozen=True)
class WireSizes:
    """Bytes a rank-eta vehicle downloads and uploads for one round (the task head left out: it is small)."""

    layers: dict[str, tuple[int, int]]
    r_max: int
    bits: int

    def download(self, rank: int) -> int:
        """The rank tiers up to `rank` (cut at the candidate ranks, so exactly `rank` components of a full global):
        U (d_out, eta), S (eta,), Vt (eta, d_in) of every layer."""
        n = min(rank, self.r_max)
        return self.bits * n * sum(d_out + d_in + 1 for d_out, d_in in self.layers.values()) // 8

    def upload(self, rank: int) -> int:
        """B (d_out, eta) and A (eta, d_in) of every layer."""
        return self.bits * rank * sum(d_out + d_in for d_out, d_in in self.layers.values()) // 8


@dataclass
class FleetCosting:
    cfg: FleetConfig
    cost: FleetCostModel
    devices: dict[str, DeviceProfile]
    layers: dict[str, tuple[int, int]]
    aggregator: str

    def __post_init__(self) -> None:
        self.wire = WireSizes(self.layers, max(self.cfg.ranks), BITS[self.cfg.wire_dtype])

    def candidates(self, vehicle: str) -> list[int]:
        """The ranks a vehicle may train: those its device allows (the smallest when none)."""
        dev = self.devices[vehicle]
        return [r for r in self.cfg.ranks if r <= dev.max_rank] or [min(self.cfg.ranks)]

    def joules(self, vehicle: str, rank: int, cost: FleetCostModel | None = None) -> float:
        """Modelled energy of one vehicle's round at `rank`: download + train + upload."""
        c = cost or self.cost
        return (c.download(vehicle, self.wire.download(rank)).joules
                + c.train(vehicle, "", rank, self.cfg.local_steps, 0).joules
                + c.upload(vehicle, self.wire.upload(rank)).joules)

    def seconds(self, vehicle: str, rank: int, cost: FleetCostModel | None = None) -> float:
        c = cost or self.cost
        return (c.download(vehicle, self.wire.download(rank)).seconds
                + c.train(vehicle, "", rank, self.cfg.local_steps, 0).seconds
                + c.upload(vehicle, self.wire.upload(rank)).seconds)

    def aggregate_time(self, record: object, task_cfg: object) -> float:
        """The RSU's modelled aggregation seconds for a closed round's ranks."""
        ranks = list(getattr(record, "ranks", []))
        return aggregation_flops(ranks, self.layers, self.wire.r_max, self.aggregator) / RSU_FLOPS

    def _at(self, distance_m: float) -> FleetCostModel:
        """The cost model with every vehicle `distance_m` from its RSU."""
        c = self.cost
        return FleetCostModel(c.devices, c.shape, c.batch_size, c.seq_len, locate=lambda v: (distance_m, 0.0),
                              rsu_sites=[(0.0, 0.0)], channel=c.channel)

    def tau_ref_s(self) -> float:
        """The configured reference, else the modelled round time of a middle configuration: the middle candidate
        rank on the slowest device of the fleet at half the coverage radius, plus aggregating a typical round."""
        if self.cfg.tau_ref_s is not None:
            return self.cfg.tau_ref_s
        mid = self.cfg.ranks[len(self.cfg.ranks) // 2]
        at = self._at(self.cfg.rsu_radius_m / 2)
        slowest = max(self.seconds(v, mid, at) for v in self.devices)
        per_round = max(1, math.ceil(self.cfg.vehicles / (len(self.cfg.tasks) * self.cfg.rsus)))
        # the exact (svd) aggregation whatever the policy, so that every compared policy gets the same reference
        agg = aggregation_flops([mid] * per_round, self.layers, self.wire.r_max, "svd") / RSU_FLOPS
        return slowest + agg

    def reference_round_budget(self, members: list[str]) -> float:
        """A task's budget for all its vehicles at half the coverage radius: the scale of the cloud's split."""
        at = self._at(self.cfg.rsu_radius_m / 2)
        lo = sum(min(self.joules(v, r, at) for r in self.candidates(v)) for v in members)
        hi = sum(max(self.joules(v, r, at) for r in self.candidates(v)) for v in members)
        return lo + self.cfg.energy_budget_scale * (hi - lo)

    def round_budget(self, even_split_j: float) -> RoundBudget:
        return RoundBudget(self.candidates, self.joules, self.cfg.energy_budget_scale, even_split_j)
