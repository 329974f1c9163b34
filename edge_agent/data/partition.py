"""Deterministic splits: train/test, per-vehicle partitions (IID or Dirichlet label skew), local held-out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Shuffle 0..n-1 with `seed` and cut off `test_fraction` of them (at least one each side when n >= 2)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = min(max(1, round(n * test_fraction)), n - 1) if n >= 2 else 0
    return sorted(order[n_test:].tolist()), sorted(order[:n_test].tolist())


def partition(
    labels: Sequence[int], n_parts: int, sizes: Sequence[int] | None = None, alpha: float | None = None, seed: int = 0
) -> list[list[int]]:
    """Split example indices into `n_parts` disjoint vehicle partitions.

    Args:
        labels: one class id per example (for token tasks, e.g. the sentence's main entity type).
        n_parts: number of vehicles.
        sizes: examples per part; None splits all examples as evenly as possible.
        alpha: None for IID; else each part draws its class mix from Dirichlet(alpha), small alpha = strong skew.
        seed: the same seed gives the same partitions.

    Returns:
        n_parts lists of indices into `labels`, each sorted.
    """
    n = len(labels)
    if n_parts < 1:
        raise ValueError("n_parts must be >= 1")
    if sizes is None:
        sizes = [n // n_parts + (1 if k < n % n_parts else 0) for k in range(n_parts)]
    if len(sizes) != n_parts or any(s < 0 for s in sizes):
        raise ValueError(f"sizes {list(sizes)} must be {n_parts} non-negative counts")
    if sum(sizes) > n:
        raise ValueError(f"sizes sum to {sum(sizes)} but there are only {n} examples")
    if alpha is not None and alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    rng = np.random.default_rng(seed)
    if alpha is None:
        order = rng.permutation(n)
        bounds = np.cumsum([0, *sizes])
        return [sorted(order[bounds[k] : bounds[k + 1]].tolist()) for k in range(n_parts)]
    return _dirichlet(np.asarray(labels), sizes, alpha, rng)


def _dirichlet(labels: np.ndarray, sizes: Sequence[int], alpha: float, rng: np.random.Generator) -> list[list[int]]:
    """Each part k draws a class mix pi_k ~ Dir(alpha) and fills its size from shuffled class pools.

    When a pool runs dry, the part's remaining draws go to the classes that still have examples (in proportion
    to its mix renormalised over them), so sizes are always met exactly.
    """
    classes = np.unique(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    parts: list[list[int]] = []
    for size in sizes:
        mix = rng.dirichlet([alpha] * len(classes))
        taken: list[int] = []
        while len(taken) < size:
            left = np.array([len(p) for p in pools], dtype=float)
            weights = mix * (left > 0)
            if weights.sum() <= 0:  # the mix only covers exhausted classes: fall back to what remains
                weights = left
            counts = rng.multinomial(size - len(taken), weights / weights.sum())
            for c, want in enumerate(counts):
                got = min(int(want), len(pools[c]))
                taken += [int(i) for i in pools[c][:got]]
                del pools[c][:got]
        parts.append(sorted(taken))
    return parts


def local_heldout(indices: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """A vehicle's own (train, held-out) split of its partition, for the local accuracy it reports."""
    inner_train, inner_test = split_indices(len(indices), fraction, seed)
    return [indices[i] for i in inner_train], [indices[i] for i in inner_test]
