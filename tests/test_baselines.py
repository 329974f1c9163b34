"""HomoLoRA and HetLoRA aggregation by hand on tiny matrices (docs/algorithms.md section 1, "Baselines")."""

from __future__ import annotations

import pytest
import torch

from proto.adapter import LoraFactors, balanced_split
from rsu_agent.aggregate import ClientUpdate, aggregate
from rsu_agent.baselines import frobenius_of_product, het_layer, het_weights, homo_layer


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def _update(B: torch.Tensor, A: torch.Tensor, n: int, alpha: float) -> ClientUpdate:
    return ClientUpdate(layers={"q": LoraFactors(A=A, B=B)}, head={"b": torch.zeros(1)}, samples=n, alpha=alpha)


def test_homolora_averages_each_factor_with_data_weights():
    c1 = _update(_t([[1], [2]]), _t([[1, 1]]), n=1, alpha=1.0)  # s = 1
    c2 = _update(_t([[3], [0]]), _t([[0, 2]]), n=3, alpha=1.0)
    layers, _ = aggregate([c1, c2], "homo", r_max=4)
    f = layers["q"]
    # B_avg = 1/4 [1, 2] + 3/4 [3, 0] = [2.5, 0.5];  A_avg = 1/4 [1, 1] + 3/4 [0, 2] = [0.25, 1.75].
    assert torch.allclose(f.U, _t([[2.5], [0.5]]))
    assert torch.allclose(f.Vt, _t([[0.25, 1.75]]))
    assert torch.equal(f.S, torch.ones(1, dtype=torch.float64))
    # The baseline is inexact: the product of the averages is not the average of the products.
    avg_of_products = 0.25 * c1.layers["q"].B @ c1.layers["q"].A + 0.75 * c2.layers["q"].B @ c2.layers["q"].A
    assert not torch.allclose(f.U @ f.Vt, avg_of_products)


def test_homolora_scale_is_folded_and_undone_by_the_vehicles_balanced_split():
    c1 = _update(_t([[1], [2]]), _t([[1, 1]]), n=1, alpha=4.0)  # s = 4, sqrt(s) = 2 on each factor
    c2 = _update(_t([[3], [0]]), _t([[0, 2]]), n=3, alpha=4.0)
    f = aggregate([c1, c2], "homo", r_max=4)[0]["q"]
    assert torch.allclose(f.U, 2 * _t([[2.5], [0.5]]))
    # The vehicle's rank-1 slice is the plain HomoLoRA average again: B = U / sqrt(4).
    lf = balanced_split(f, 1, alpha=4.0)
    assert torch.allclose(lf.B, _t([[2.5], [0.5]]))
    assert torch.allclose(lf.A, _t([[0.25, 1.75]]))


def test_homolora_rejects_mixed_ranks_and_ranks_above_r_max():
    c1 = _update(_t([[1], [2]]), _t([[1, 1]]), n=1, alpha=1.0)
    c2 = _update(_t([[1, 0], [0, 1]]), _t([[1, 0], [0, 1]]), n=1, alpha=1.0)
    with pytest.raises(ValueError, match=r"layer q: HomoLoRA needs one common rank"):
        aggregate([c1, c2], "homo", r_max=4)
    with pytest.raises(ValueError, match="exceeds r_max"):
        homo_layer([_t([[1, 0], [0, 1]])], [_t([[1, 0], [0, 1]])], [1.0], [1.0], r_max=1)


def test_hetlora_pads_and_weights_by_frobenius_norm_of_each_product():
    # Client 1, rank 1, alpha 1 (s = 1): B1 A1 = [[2, 0], [0, 0]], ||.||_F = 2.
    c1 = _update(_t([[1], [0]]), _t([[2, 0]]), n=100, alpha=1.0)
    # Client 2, rank 2, alpha 2 (s = 1): B2 A2 = [[0, 0], [0, 3]], ||.||_F = 3.
    c2 = _update(_t([[0, 0], [3, 0]]), _t([[0, 1], [1, 0]]), n=1, alpha=2.0)
    f = aggregate([c1, c2], "het", r_max=4)[0]["q"]
    # omega = (2/5, 3/5) whatever the sample counts; padded averages:
    # U = 0.4 [[1, 0], [0, 0]] + 0.6 [[0, 0], [3, 0]];  Vt = 0.4 [[2, 0], [0, 0]] + 0.6 [[0, 1], [1, 0]].
    assert torch.allclose(f.U, _t([[0.4, 0.0], [1.8, 0.0]]))
    assert torch.allclose(f.Vt, _t([[0.8, 0.6], [0.6, 0.0]]))
    assert torch.equal(f.S, torch.ones(2, dtype=torch.float64))
    # Padded to the largest client rank (2), not r_max (4): no dead all-zero components are announced.
    assert f.rank == 2


def test_hetlora_weights_ignore_sample_counts_and_fall_back_to_uniform_when_nothing_trained():
    B1, A1, B2, A2 = _t([[1], [0]]), _t([[2, 0]]), _t([[0], [1]]), _t([[0, 6]])
    assert het_weights([B1, B2], [A1, A2], [1.0, 0.5]) == pytest.approx([2 / 5, 3 / 5])
    zero_b = torch.zeros(2, 1, dtype=torch.float64)
    assert het_weights([zero_b, zero_b], [A1, A2], [1.0, 1.0]) == [0.5, 0.5]
    with pytest.raises(ValueError, match="exceeds r_max"):
        het_layer([B1, _t([[1, 0], [0, 1]])], [A1, _t([[1, 0], [0, 1]])], [1.0, 1.0], r_max=1)


def test_frobenius_of_product_matches_the_dense_norm():
    g = torch.Generator().manual_seed(0)
    B, A = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(5, 20, generator=g, dtype=torch.float64)
    assert frobenius_of_product(B, A) == pytest.approx(float(torch.linalg.norm(B @ A)), rel=1e-12)


def test_baselines_reject_factors_of_different_layer_shapes():
    c1 = _update(_t([[1], [2]]), _t([[1, 1]]), n=1, alpha=1.0)
    c2 = _update(_t([[1], [2], [3]]), _t([[1, 1]]), n=1, alpha=1.0)  # d_out 3 instead of 2
    for method in ("homo", "het"):
        with pytest.raises(ValueError, match="layer q: client 1"):
            aggregate([c1, c2], method, r_max=4)
