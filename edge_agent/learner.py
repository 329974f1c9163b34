"""Binds the trainer to one task's local data, and the energy meter to the trainer's start/stop protocol.

Imported only when a round starts (torch, transformers and peft load then, not at daemon start).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge_agent.energy.meter import EnergyMeter, Measurement
from edge_agent.settings import EdgeSettings, EdgeTaskConfig

if TYPE_CHECKING:  # the daemon imports SpanMeter at start: torch, transformers and peft wait for the first round
    from edge_agent.tasks import TaskSpec
    from edge_agent.trainer import LocalTrainer, TrainResult

log = logging.getLogger(__name__)


class SpanMeter:
    """Adapts an opened `EnergyMeter` (start() -> span, span.stop()) to the trainer's start()/stop()."""

    def __init__(self, meter: EnergyMeter) -> None:
        self.meter = meter
        self._span: Any = None

    def start(self) -> None:
        self._span = self.meter.start()

    def stop(self) -> Measurement:
        span, self._span = self._span, None
        return span.stop()


class NoMeter:
    """For modelled runs (the fleet): training time and energy come from the cost model instead."""

    def start(self) -> None:
        pass

    def stop(self) -> Measurement:
        return Measurement(joules=0.0, seconds=0.0, source="none", domains=(), measured=False)


@dataclass
class TaskLearner:
    """One task's local training on this vehicle."""

    trainer: LocalTrainer
    spec: TaskSpec
    examples: Sequence[Any]
    heldout: Sequence[Any]

    @property
    def num_train(self) -> int:
        return len(self.examples)

    def train(self, *, rank: int, alpha: float, init: Any, head: Any, steps: int, meter: Any,
              should_stop: Callable[[], bool] | None, seed: int) -> TrainResult:
        return self.trainer.train(self.spec, self.examples, self.heldout, rank=rank, alpha=alpha, init=init,
                                  head=head, steps=steps, meter=meter, should_stop=should_stop, seed=seed)


def build_learner(settings: EdgeSettings, task: EdgeTaskConfig, trainer: LocalTrainer) -> TaskLearner:
    """Read the task's data (the default offline data or a local file) and keep this vehicle's share."""
    from edge_agent.data import load_task_dataset, vehicle_data
    from edge_agent.tasks import TaskSpec

    ds = load_task_dataset(task.task_type, task.data, seed=settings.seed)
    train, held = vehicle_data(ds, task.partition % task.num_partitions, task.num_partitions,
                               alpha=task.dirichlet_alpha, seed=settings.seed,
                               heldout_fraction=task.heldout_fraction)
    log.info("task %s: %d local training examples, %d held out", task.name, len(train), len(held))
    return TaskLearner(trainer, TaskSpec(task.name, task.task_type, ds.num_labels), train, held)


def make_trainer(settings: EdgeSettings) -> LocalTrainer:
    from edge_agent.trainer import LocalTrainer

    return LocalTrainer(settings.model_dir, targets=settings.targets, max_length=settings.max_length,
                        batch_size=settings.batch_size, lr=settings.lr, threads=settings.threads)
