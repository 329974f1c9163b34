"""Deterministic splits and per-vehicle partitions: sizes, IID balance, Dirichlet skew."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.data import partition_labels
from edge_agent.data.partition import local_heldout, partition, split_indices
from edge_agent.data.readers import TokenExample

LABELS = [0] * 500 + [1] * 500  # balanced, two classes


def _skew(parts: list[list[int]], labels: list[int]) -> float:
    """Mean total-variation distance between each part's label mix and the global one."""
    y = np.asarray(labels)
    glob = np.bincount(y, minlength=2) / len(y)
    return float(np.mean([0.5 * np.abs(np.bincount(y[p], minlength=2) / len(p) - glob).sum() for p in parts]))


def test_split_indices_is_deterministic_and_disjoint() -> None:
    train, test = split_indices(100, 0.2, seed=5)
    assert (len(train), len(test)) == (80, 20)
    assert sorted(train + test) == list(range(100))
    assert split_indices(100, 0.2, seed=5) == (train, test) != split_indices(100, 0.2, seed=6)


def test_given_sizes_are_met_exactly_and_parts_are_disjoint() -> None:
    for alpha in (None, 0.3):
        parts = partition(LABELS, 3, sizes=[100, 250, 50], alpha=alpha, seed=1)
        assert [len(p) for p in parts] == [100, 250, 50]
        flat = [i for p in parts for i in p]
        assert len(set(flat)) == len(flat)


def test_without_sizes_all_examples_are_spread_evenly() -> None:
    parts = partition(list(range(10)), 3, seed=0)
    assert [len(p) for p in parts] == [4, 3, 3]
    assert sorted(i for p in parts for i in p) == list(range(10))


def test_iid_parts_keep_the_global_label_balance() -> None:
    parts = partition(LABELS, 10, seed=2)
    assert _skew(parts, LABELS) < 0.1  # 100 draws per part: TV distance ~ 0.04 expected


def test_small_alpha_skews_labels_more_than_large_alpha() -> None:
    strong = _skew(partition(LABELS, 10, alpha=0.1, seed=3), LABELS)
    weak = _skew(partition(LABELS, 10, alpha=100.0, seed=3), LABELS)
    iid = _skew(partition(LABELS, 10, seed=3), LABELS)
    # Dir(0.1) over 2 classes puts most mass on one class: TV near 0.5. Dir(100) stays near the global mix.
    assert strong > 0.3
    assert weak < 0.1 and iid < 0.1
    assert strong > 3 * weak


def test_partition_is_deterministic_per_seed() -> None:
    assert partition(LABELS, 4, alpha=0.5, seed=9) == partition(LABELS, 4, alpha=0.5, seed=9)
    assert partition(LABELS, 4, alpha=0.5, seed=9) != partition(LABELS, 4, alpha=0.5, seed=10)


@pytest.mark.parametrize(("sizes", "alpha"), [([600, 600], None), ([1, 2, 3], None), ([10, 10], -1.0)])
def test_impossible_partitions_are_rejected(sizes: list[int], alpha: float | None) -> None:
    with pytest.raises(ValueError):
        partition(LABELS, 2, sizes=sizes, alpha=alpha, seed=0)


def test_local_heldout_splits_a_partition_by_seed() -> None:
    part = list(range(100, 150))
    train, held = local_heldout(part, 0.2, seed=0)
    assert (len(train), len(held)) == (40, 10)
    assert sorted(train + held) == part


def test_token_examples_partition_by_their_main_entity_type() -> None:
    exs = [
        TokenExample(("a",), ("O",)),
        TokenExample(("Ann", "Lee", "Acme"), ("B-PER", "I-PER", "B-ORG")),  # tie PER/ORG -> PER (listed first)
        TokenExample(("Acme", "Oslo", "Rome"), ("B-ORG", "B-LOC", "B-LOC")),
    ]
    assert partition_labels(exs) == [0, 1, 3]


def test_vehicle_data_gives_disjoint_train_and_heldout_per_vehicle() -> None:
    from edge_agent.data import TaskDataset, vehicle_data
    from edge_agent.data.readers import SentenceExample

    ds = TaskDataset("sentence", [SentenceExample(f"s{i}", i % 2) for i in range(100)], [], 2)
    seen: set[str] = set()
    for part in range(4):
        train, held = vehicle_data(ds, part, 4, seed=3, heldout_fraction=0.2)
        assert (len(train), len(held)) == (20, 5)  # 100 / 4 = 25 each, 20% held out
        texts = {e.text for e in train + held}
        assert len(texts) == 25 and not texts & seen
        seen |= texts
    assert vehicle_data(ds, 1, 4, seed=3) == vehicle_data(ds, 1, 4, seed=3)
    with pytest.raises(ValueError, match="out of range"):
        vehicle_data(ds, 4, 4)
