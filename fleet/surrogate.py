"""A learning-curve surrogate that stands in for the training step only, in sweeps too large to train for real.

Clearly labelled wherever it is used: accuracy figures from it say `surrogate`. The factors it returns have the
real shapes (so aggregation, the wire and the RSU are exercised as usual) but carry no learned signal; its
accuracy follows a saturating curve in the samples seen, whose ceiling grows with rank and whose speed falls
with rank, so a rank trade-off exists for the bandit to find. A round of fewer local steps than the configured
`full_steps` ends lower on the vehicle's own curve (`work_drop` at no steps, linear in the missing fraction), so
local work buys accuracy as it does in real training and the work configurations have a trade-off too.
"""

from __future__ import annotations

import math

import torch

from edge_agent.energy.meter import Measurement
from edge_agent.trainer import TrainResult
from proto.adapter import LoraFactors


class SurrogateLearner:
    """q(n, eta) = q0 + (q_max(eta) - q0) * (1 - exp(-n / n_half(eta))), deterministic per seed.

    `n` counts the samples every vehicle of the task has trained on (`progress` is shared by them), as the
    federated global model would: a larger fleet learns faster.
    """

    def __init__(self, layers: dict[str, tuple[int, int]], num_train: int, batch_size: int, task: str,
                 progress: dict[str, int], q0: float = 0.5, q_cap: float = 0.92, seed: int = 0,
                 full_steps: int | None = None, work_drop: float = 0.05) -> None:
        self.layers = layers
        self.num_train = num_train
        self.batch_size = batch_size
        self.task = task
        self.progress = progress
        self.q0, self.q_cap = q0, q_cap
        self.seed = seed
        self.full_steps, self.work_drop = full_steps, work_drop

    @property
    def seen(self) -> int:
        return self.progress.get(self.task, 0)

    def accuracy(self, rank: int) -> float:
        q_max = self.q_cap - 0.08 / math.sqrt(rank)  # more rank, higher ceiling
        n_half = 2000.0 * (1 + math.log2(rank) / 5)  # ... but slower to get there
        return self.q0 + (q_max - self.q0) * (1 - math.exp(-self.seen / n_half))

    def train(self, *, rank: int, alpha: float, init: object, head: object, steps: int, meter: object,
              should_stop: object, seed: int) -> TrainResult:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + seed)
        self.progress[self.task] = self.seen + steps * self.batch_size
        factors = {n: LoraFactors(A=torch.randn(rank, d_in, generator=gen) * 1e-3,
                                  B=torch.randn(d_out, rank, generator=gen) * 1e-3)
                   for n, (d_out, d_in) in self.layers.items()}
        q = self.accuracy(rank)
        if self.full_steps:  # fewer local steps than configured: lower on this round's curve
            q -= self.work_drop * max(0.0, 1.0 - steps / self.full_steps)
        return TrainResult(layers=factors, head=dict(head) if isinstance(head, dict) else {},
                               samples=self.num_train, loss=max(0.0, 1.0 - q), local_accuracy=q, train_s=0.0,
                               energy=Measurement(0.0, 0.0, "none", (), False), steps=steps, partial=False)
