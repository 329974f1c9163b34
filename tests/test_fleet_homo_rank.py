"""HomoLoRA's rank is sized from the budget (docs/algorithms.md section 1), not fixed at 8."""

from __future__ import annotations

from edge_agent.bandit import Arm
from fleet.config import FleetConfig
from fleet.costing import FleetCosting


class RankCosting(FleetCosting):
    """A round costs 10 J + 1 J per rank per vehicle at full work; the reference budget is set by hand."""

    def __init__(self, cfg: FleetConfig, budget_j: float) -> None:  # no cost model: joules are by hand
        self.cfg = cfg
        self.budget_j = budget_j

    def joules(self, vehicle: str, config: Arm | int, cost: object = None) -> float:
        arm = config if isinstance(config, Arm) else Arm(int(config))
        return (10.0 + arm.rank) * arm.work

    def _at(self, distance_m: float) -> None:  # type: ignore[override]
        return None

    def reference_round_budget(self, members: list[str]) -> float:
        return self.budget_j


def test_largest_rank_whose_modelled_spend_fits_every_task() -> None:
    cfg = FleetConfig.quick()
    members = {"a": ["v1", "v2"], "b": ["v3"]}
    # task a spends 2 * (10 + r): r = 16 -> 52 J fits 55 J, r = 32 -> 84 J does not; task b spends 10 + r
    assert RankCosting(cfg, 55.0).homo_rank(members) == 16
    assert RankCosting(cfg, 1000.0).homo_rank(members) == 32
    assert RankCosting(cfg, 20.0).homo_rank(members) == 2  # nothing fits: the smallest rank
