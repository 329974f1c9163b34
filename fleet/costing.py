"""How the fleet prices a round: wire sizes, each vehicle's candidate configurations, the per-round budget hook,
the reward's latency reference, HomoLoRA's budget-sized rank and the RSU's modelled aggregation time
(docs/algorithms.md sections 1-4).

A configuration is a work configuration `Arm(rank, work)` (edge_agent/bandit.py): the RSUs announce the fleet's
ranks x work fractions (`arms: work`) or the ranks at full work (`arms: ranks`), and the budget is sized from
exactly those, so tightness 0 is every invited vehicle at its cheapest announced configuration whatever the arms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.bandit import Arm, arm_set, local_steps
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

    @property
    def work(self) -> list[float]:
        """The work fractions the RSUs announce: the fleet's with `arms: work`, full work only with `arms: ranks`."""
        return list(self.cfg.work) if self.cfg.arms == "work" else [1.0]

    def candidates(self, vehicle: str) -> list[Arm]:
        """The configurations a vehicle may play: the announced ranks its device allows (the smallest when none)
        x the announced work fractions."""
        dev = self.devices[vehicle]
        ranks = [r for r in self.cfg.ranks if r <= dev.max_rank] or [min(self.cfg.ranks)]
        return arm_set(ranks, self.work)

    def _parts(self, vehicle: str, config: Arm | int, cost: FleetCostModel | None) -> tuple[float, float]:
        """(seconds, joules) of one vehicle's round: download + train + upload (an int is a rank at full work)."""
        c = cost or self.cost
        arm = config if isinstance(config, Arm) else Arm(int(config), 1.0)
        parts = (c.download(vehicle, self.wire.download(arm.rank)),
                 c.train(vehicle, "", arm.rank, local_steps(arm, self.cfg.local_steps), 0),
                 c.upload(vehicle, self.wire.upload(arm.rank)))
        return sum(p.seconds for p in parts), sum(p.joules for p in parts)

    def joules(self, vehicle: str, config: Arm | int, cost: FleetCostModel | None = None) -> float:
        """Modelled energy of one vehicle's round at a configuration: download + train + upload."""
        return self._parts(vehicle, config, cost)[1]

    def seconds(self, vehicle: str, config: Arm | int, cost: FleetCostModel | None = None) -> float:
        return self._parts(vehicle, config, cost)[0]

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
        rank at the middle announced work fraction on the slowest device of the fleet at half the coverage radius,
        plus aggregating a typical round."""
        if self.cfg.tau_ref_s is not None:
            return self.cfg.tau_ref_s
        mid = self.cfg.ranks[len(self.cfg.ranks) // 2]
        work = sorted(self.work)
        at = self._at(self.cfg.rsu_radius_m / 2)
        slowest = max(self.seconds(v, Arm(mid, work[len(work) // 2]), at) for v in self.devices)
        per_round = max(1, math.ceil(self.cfg.vehicles / (len(self.cfg.tasks) * self.cfg.rsus)))
        # the exact (svd) aggregation whatever the policy, so that every compared policy gets the same reference
        agg = aggregation_flops([mid] * per_round, self.layers, self.wire.r_max, "svd") / RSU_FLOPS
        return slowest + agg

    def reference_round_budget(self, members: list[str]) -> float:
        """A task's budget for all its vehicles at half the coverage radius: the scale of the cloud's split."""
        at = self._at(self.cfg.rsu_radius_m / 2)
        lo = sum(min(self.joules(v, a, at) for a in self.candidates(v)) for v in members)
        hi = sum(max(self.joules(v, a, at) for a in self.candidates(v)) for v in members)
        return lo + self.cfg.energy_budget_scale * (hi - lo)

    def homo_rank(self, members: dict[str, list[str]]) -> int:
        """HomoLoRA's rank sized from the budget, as its authors size a fixed-rank baseline (docs/algorithms.md
        section 1): the largest candidate rank whose modelled full-work round (download + train + upload) of every
        vehicle of a task, at half the coverage radius, fits that task's reference budget; the smallest rank when
        none fits."""
        at = self._at(self.cfg.rsu_radius_m / 2)
        budgets = {task: self.reference_round_budget(vids) for task, vids in members.items() if vids}
        fits = [r for r in sorted(self.cfg.ranks)
                if all(sum(self.joules(v, Arm(r, 1.0), at) for v in members[task]) <= b * (1 + 1e-12)
                       for task, b in budgets.items())]
        return fits[-1] if fits else min(self.cfg.ranks)

    def round_budget(self, even_split_j: float) -> RoundBudget:
        return RoundBudget(self.candidates, self.joules, self.cfg.energy_budget_scale, even_split_j)
