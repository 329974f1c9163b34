"""HomoLoRA's rank is sized from the budget (docs/algorithms.md section 1), not fixed at 8."""

from __future__ import annotations

from edge_agent.work import ModelledCost
from fleet.config import FleetConfig
from fleet.world import budget_rank


class RankCost:
    """Training costs 10 J + 1 J per rank per vehicle (every other method unused)."""

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost:
        return ModelledCost(1.0, 10.0 + rank, "model:fake")


def test_largest_rank_whose_modelled_spend_fits_every_task() -> None:
    cfg = FleetConfig.quick()
    members = {"a": ["v1", "v2"], "b": ["v3"]}
    # task a spends 2 * (10 + r): r = 16 -> 52 J fits 55 J, r = 32 -> 84 J does not; task b spends 10 + r
    assert budget_rank(RankCost(), members, cfg, 55.0) == 16  # type: ignore[arg-type]
    assert budget_rank(RankCost(), members, cfg, 1000.0) == 32  # type: ignore[arg-type]
    assert budget_rank(RankCost(), members, cfg, 20.0) == 2  # nothing fits: the smallest rank  # type: ignore[arg-type]
