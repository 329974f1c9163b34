"""Real training in worker threads while the simulated clock catches up: the fleet's use of several cores.

A vehicle's round is fully determined when it begins (global factors, head, rank, steps, seed), and the simulated
fleet needs the trained adapter only at the modelled end of training. So a vehicle's learner starts the real work
as the round begins, on a worker thread with its own copy of the frozen base (`BaseModelCache` replica), and the
vehicle collects it when simulated time gets there; meanwhile the other vehicles begin theirs. Each worker runs
torch on one thread, so a result does not depend on which worker ran it or how many there are: a run with
`workers: 1, threads: 1` writes the same metrics as one with `workers: 2`.

Work that the round did not end up needing (a fault-tolerance command cut training short: the vehicle trains the
shorter run itself) is discarded. The daemons never use this: a field vehicle trains when its round begins.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edge_agent.learner import NoMeter, TaskLearner
from edge_agent.trainer import LocalTrainer, TrainResult

log = logging.getLogger(__name__)


class TrainPool:
    """`workers` threads, each with its own `LocalTrainer` on its own base replica (1, 2, ...; the fleet's own
    trainer, used for evaluation on the main thread, keeps replica 0)."""

    def __init__(self, make_trainer: Callable[[int], LocalTrainer], workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self._make_trainer = make_trainer
        self._replicas = itertools.count(1)
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fleet-train")
        self.workers = workers
        self.submitted = 0
        self.discarded = 0

    def _trainer(self) -> LocalTrainer:
        trainer = getattr(self._local, "trainer", None)
        if trainer is None:
            trainer = self._local.trainer = self._make_trainer(next(self._replicas))
        return trainer

    def submit(self, learner: TaskLearner, kwargs: dict[str, Any]) -> Future[TrainResult]:
        self.submitted += 1

        def run() -> TrainResult:
            return self._trainer().train(learner.spec, learner.examples, learner.heldout, meter=NoMeter(), **kwargs)

        return self._executor.submit(run)

    def evaluate(self, spec: Any, examples: Any, *, layers: Any, head: Any, alpha: float) -> Future[dict[str, float]]:
        """Score a global model on a worker (the recorder's evaluations: the simulated clock need not wait)."""
        return self._executor.submit(lambda: self._trainer().evaluate(spec, examples, layers=layers, head=head,
                                                                      alpha=alpha))

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Pending:
    kwargs: dict[str, Any]
    future: Future[TrainResult]


class PooledLearner:
    """A `TaskLearner` whose rounds start in the pool at `prefetch` and are collected by `train`.

    `train` with exactly the prefetched arguments (the same init and head objects) returns the pool's result;
    anything else (a shorter run after a command, a meter that measures, a stop callback) trains here, as
    `TaskLearner` would, and the prefetched work is dropped.
    """

    def __init__(self, learner: TaskLearner, pool: TrainPool) -> None:
        self.learner = learner
        self.pool = pool
        self._pending: _Pending | None = None

    @property
    def num_train(self) -> int:
        return self.learner.num_train

    def prefetch(self, *, rank: int, alpha: float, init: Any, head: Any, steps: int, seed: int) -> None:
        self._drop()
        kwargs = {"rank": rank, "alpha": alpha, "init": init, "head": head, "steps": steps, "seed": seed}
        self._pending = _Pending(kwargs, self.pool.submit(self.learner, kwargs))

    def train(self, *, rank: int, alpha: float, init: Any, head: Any, steps: int, meter: Any,
              should_stop: Callable[[], bool] | None, seed: int) -> TrainResult:
        pending = self._pending
        wanted = {"rank": rank, "alpha": alpha, "init": init, "head": head, "steps": steps, "seed": seed}
        if (pending is not None and should_stop is None and isinstance(meter, NoMeter)
                and _same_call(pending.kwargs, wanted)):
            self._pending = None
            return pending.future.result()  # a training error is raised here, as a direct call would raise it
        self._drop()
        return self.learner.train(rank=rank, alpha=alpha, init=init, head=head, steps=steps, meter=meter,
                                  should_stop=should_stop, seed=seed)

    def discard(self) -> None:
        """The round was abandoned: its pooled training is not wanted."""
        self._drop()

    def _drop(self) -> None:
        if self._pending is not None:
            self._pending.future.cancel()  # still queued: never runs; already running: its result is ignored
            self.pool.discarded += 1
            self._pending = None


def _same_call(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same arguments; the init and head by identity (tensors: the objects the round began with)."""
    return a.keys() == b.keys() and all(
        a[k] is b[k] if k in ("init", "head") else a[k] == b[k] for k in a)
