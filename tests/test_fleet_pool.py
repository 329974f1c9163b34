"""The fleet's training pool: vehicles' rounds train on worker threads, each on its own copy of the base, and the
run's results do not depend on it."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
import torch

from edge_agent.learner import NoMeter, TaskLearner
from edge_agent.model import BaseModelCache
from edge_agent.tasks import TaskSpec
from edge_agent.trainer import LocalTrainer
from fleet.pool import PooledLearner, TrainPool
from fleet.run import run_fleet
from fleet.tiny_model import make_tiny_bert
from tests.test_fleet import small


class FakeLearner:
    """Stands in for TaskLearner: counts direct calls, returns a marker result."""

    def __init__(self) -> None:
        self.spec, self.examples, self.heldout = TaskSpec("s", "sentence", 2), ["x"], []
        self.direct: list[dict[str, Any]] = []

    @property
    def num_train(self) -> int:
        return 1

    def train(self, **kw: Any) -> str:
        self.direct.append(kw)
        return "direct"


class FakePool:
    """A pool whose futures the test completes by hand."""

    def __init__(self) -> None:
        self.futures: list[Future] = []
        self.discarded = 0

    def submit(self, learner: Any, kwargs: dict[str, Any]) -> Future:
        self.futures.append(Future())
        return self.futures[-1]


ARGS = dict(rank=4, alpha=16.0, steps=5, seed=3)


def test_the_round_begun_in_the_pool_is_collected_by_train() -> None:
    pool, inner = FakePool(), FakeLearner()
    learner = PooledLearner(inner, pool)  # type: ignore[arg-type]
    init, head = {"layer": object()}, None
    learner.prefetch(init=init, head=head, **ARGS)
    pool.futures[0].set_result("pooled")
    assert learner.train(init=init, head=head, meter=NoMeter(), should_stop=None, **ARGS) == "pooled"
    assert inner.direct == [] and pool.discarded == 0


@pytest.mark.parametrize("change", [
    {"steps": 2},  # a command cut training short: the vehicle trains the shorter run itself
    {"init": {"layer": object()}},  # other factors than the round began with (identity, not equality)
    {"should_stop": lambda: False},  # the field's way of training: never pooled
])
def test_any_other_call_trains_directly_and_drops_the_pooled_work(change: dict[str, Any]) -> None:
    pool, inner = FakePool(), FakeLearner()
    learner = PooledLearner(inner, pool)  # type: ignore[arg-type]
    init = {"layer": object()}
    learner.prefetch(init=init, head=None, **ARGS)
    call = {"init": init, "head": None, "meter": NoMeter(), "should_stop": None, **ARGS, **change}
    assert learner.train(**call) == "direct"
    assert len(inner.direct) == 1 and pool.discarded == 1
    assert pool.futures[0].cancelled()


def test_a_training_error_in_the_pool_is_raised_where_the_vehicle_collects_it() -> None:
    pool, inner = FakePool(), FakeLearner()
    learner = PooledLearner(inner, pool)  # type: ignore[arg-type]
    learner.prefetch(init=None, head=None, **ARGS)
    pool.futures[0].set_exception(ValueError("factors do not fit"))
    with pytest.raises(ValueError, match="do not fit"):
        learner.train(init=None, head=None, meter=NoMeter(), should_stop=None, **ARGS)


def test_a_new_round_drops_the_previous_one_that_was_never_collected() -> None:
    pool, inner = FakePool(), FakeLearner()
    learner = PooledLearner(inner, pool)  # type: ignore[arg-type]
    learner.prefetch(init=None, head=None, **ARGS)  # e.g. abandoned by a command
    learner.prefetch(init=None, head=None, **{**ARGS, "seed": 4})
    assert pool.discarded == 1 and pool.futures[0].cancelled() and not pool.futures[1].cancelled()


def test_workers_train_on_their_own_base_and_match_a_single_thread(tmp_path: Path) -> None:
    model_dir = make_tiny_bert(tmp_path / "tiny")
    from edge_agent.data import load_task_dataset

    ds = load_task_dataset("sentence", "default", seed=0)
    spec = TaskSpec("sentiment", "sentence", ds.num_labels)

    def make(replica: int) -> LocalTrainer:
        return LocalTrainer(model_dir, max_length=24, batch_size=8, threads=1, replica=replica)

    learners = [TaskLearner(make(0), spec, ds.train[8 * k: 8 * k + 24], ds.train[200 + 8 * k: 208 + 8 * k])
                for k in range(4)]
    direct = [lr.train(rank=4, alpha=16.0, init=None, head=None, steps=3, meter=NoMeter(), should_stop=None, seed=k)
              for k, lr in enumerate(learners)]
    pool = TrainPool(make, workers=2)
    try:
        pooled = [PooledLearner(lr, pool) for lr in learners]
        for k, lr in enumerate(pooled):
            lr.prefetch(rank=4, alpha=16.0, init=None, head=None, steps=3, seed=k)
        results = [lr.train(rank=4, alpha=16.0, init=None, head=None, meter=NoMeter(), should_stop=None, seed=k,
                            steps=3) for k, lr in enumerate(pooled)]
    finally:
        pool.close()
    assert pool.submitted == 4 and pool.discarded == 0
    for a, b in zip(direct, results, strict=True):
        assert a.loss == b.loss and a.local_accuracy == b.local_accuracy
        for name in a.layers:
            assert torch.equal(a.layers[name].A, b.layers[name].A) and torch.equal(a.layers[name].B, b.layers[name].B)
    # both workers ran, each on a replica of its own: the main thread's base was never shared with them
    path = model_dir.resolve()
    assert {(path, r) for r in (0, 1, 2)} <= set(BaseModelCache._entries)
    assert len({id(BaseModelCache._entries[(path, r)][0]) for r in (0, 1, 2)}) == 3


def test_a_pooled_fleet_writes_the_same_metrics_as_one_thread(tmp_path: Path) -> None:
    run_fleet(small(workers=1, threads=1), tmp_path / "one")
    run_fleet(small(workers=2, threads=None), tmp_path / "two")
    one = (tmp_path / "one" / "metrics.jsonl").read_text()
    assert one and one == (tmp_path / "two" / "metrics.jsonl").read_text()


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        TrainPool(lambda r: None, workers=0)  # type: ignore[arg-type, return-value]


def test_an_abandoned_round_discards_its_pooled_work() -> None:
    pool, inner = FakePool(), FakeLearner()
    learner = PooledLearner(inner, pool)  # type: ignore[arg-type]
    learner.prefetch(init=None, head=None, **ARGS)
    learner.discard()
    assert pool.discarded == 1 and pool.futures[0].cancelled()
    learner.discard()  # nothing pending: nothing to count
    assert pool.discarded == 1


def test_a_parallel_comparison_gives_the_serial_figures(tmp_path: Path) -> None:
    from fleet.compare import compare

    kw = dict(policies=["ucb-dual", "homolora"], ablations=False, seeds=[0, 1])
    serial = compare(small(rounds=1), tmp_path / "serial", **kw)
    parallel = compare(small(rounds=1), tmp_path / "parallel", jobs=2, **kw)
    assert serial == parallel
    assert (tmp_path / "parallel" / "compare.md").read_text() == (tmp_path / "serial" / "compare.md").read_text()
    for name in ("ucb-dual", "homolora"):  # each run logged to its own directory
        assert (tmp_path / "parallel" / name / "seed-1" / "fleet.log").stat().st_size > 0


@pytest.mark.parametrize("text", ["0", "-2", "two"])
def test_jobs_must_be_a_positive_integer(text: str) -> None:
    import argparse

    from fleet.cli import _positive

    with pytest.raises(argparse.ArgumentTypeError):
        _positive(text)
    assert _positive("3") == 3
