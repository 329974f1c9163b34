"""Nested rank tiers of the global adapter: bounds, packing and merging back (proto/adapter.py)."""

from __future__ import annotations

import pytest
import torch

from proto.adapter import Factored, merge_tiers, pack_factored, pack_tier, tier_bounds, tiers_for_rank
from proto.errors import PayloadRejected


def test_bounds_are_cut_at_the_candidate_ranks_and_stop_at_the_globals_rank() -> None:
    assert tier_bounds([2, 4, 8, 16, 32], 32) == [(1, 2), (3, 4), (5, 8), (9, 16), (17, 32)]
    assert tier_bounds([2, 4, 8, 16, 32], 12) == [(1, 2), (3, 4), (5, 8), (9, 12)]
    assert tier_bounds([2, 4, 8], 0) == []
    tiers = tier_bounds([2, 4, 8, 16, 32], 32)
    assert [tiers_for_rank(tiers, eta) for eta in (2, 4, 8, 16, 32)] == [1, 2, 3, 4, 5]
    assert tiers_for_rank(tier_bounds([2, 4, 8], 4), 8) == 2  # a rank above the global's takes all there is


def test_leading_tiers_merge_back_into_the_top_components() -> None:
    g = {"q": Factored(U=torch.randn(6, 8), S=torch.arange(8, 0, -1).float(), Vt=torch.randn(8, 5)),
         "v": Factored(U=torch.randn(6, 3), S=torch.ones(3), Vt=torch.randn(3, 5))}  # a layer with fewer components
    head = {"bias": torch.zeros(2)}
    parts = [pack_tier(g, head, a, b, k == 0) for k, (a, b) in enumerate(tier_bounds([2, 4, 8], 8))]
    assert "head.bias" in parts[0] and "head.bias" not in parts[1] and "v.U" not in parts[2]
    full = merge_tiers(parts)
    want = pack_factored(g, head)
    assert set(full) == set(want) and all(torch.equal(full[k], want[k]) for k in want)
    two = merge_tiers(parts[:2])
    assert torch.equal(two["q.U"], g["q"].U[:, :4]) and torch.equal(two["v.S"], g["v"].S)
    # payload of the first two tiers: components 1-4 of q, 1-3 of v, and the head, nothing else
    nbytes = sum(t.numel() * t.element_size() for p in parts[:2] for t in p.values())
    assert nbytes == 4 * (4 * (6 + 1 + 5) + 3 * (6 + 1 + 5) + 2)


def test_tiers_that_do_not_stack_are_rejected() -> None:
    a = {"q.U": torch.randn(6, 2), "q.S": torch.ones(2), "q.Vt": torch.randn(2, 5)}
    b = {"q.U": torch.randn(7, 2), "q.S": torch.ones(2), "q.Vt": torch.randn(2, 5)}
    with pytest.raises(PayloadRejected):
        merge_tiers([a, b])
    with pytest.raises(PayloadRejected):
        merge_tiers([a, {**a, "k.U": torch.randn(6, 2)}])
    with pytest.raises(PayloadRejected):
        merge_tiers([])
