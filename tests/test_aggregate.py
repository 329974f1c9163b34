"""Exact heterogeneous-rank SVD aggregation (docs/algorithms.md section 1), checked against dense references."""

from __future__ import annotations

import pytest
import torch

from proto.adapter import Factored, LoraFactors, balanced_split
from rsu_agent.aggregate import ClientUpdate, aggregate, svd_aggregate


def _factors(d_out: int, d_in: int, ranks: list[int], seed: int, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    Bs = [torch.randn(d_out, r, generator=g, dtype=dtype) for r in ranks]
    As = [torch.randn(r, d_in, generator=g, dtype=dtype) for r in ranks]
    return Bs, As


def _dense(Bs, As, weights) -> torch.Tensor:
    return sum(w * B @ A for B, A, w in zip(Bs, As, weights, strict=True))


def _product(U: torch.Tensor, S: torch.Tensor, Vt: torch.Tensor) -> torch.Tensor:
    return (U * S) @ Vt


def test_factored_path_matches_dense_svd_of_weighted_sum_in_float64():
    Bs, As = _factors(96, 80, [2, 4, 8, 16], seed=1)  # R = 30 < 80: factored path
    weights = [0.1 * 8 / 2, 0.2 * 8 / 4, 0.3 * 8 / 8, 0.4 * 8 / 16]  # p_v * alpha / eta_v with alpha = 8
    U, S, Vt = svd_aggregate(Bs, As, weights, r_max=64)
    dense = _dense(Bs, As, weights)
    ref = torch.linalg.svdvals(dense)
    assert S.shape == (30,) and U.shape == (96, 30) and Vt.shape == (30, 80)
    assert torch.allclose(S, ref[:30], rtol=1e-5, atol=0)
    assert torch.allclose(_product(U, S, Vt), dense, atol=1e-10)
    assert torch.allclose(U.T @ U, torch.eye(30, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(Vt @ Vt.T, torch.eye(30, dtype=torch.float64), atol=1e-10)


def test_truncation_keeps_the_top_r_max_singular_values():
    Bs, As = _factors(64, 64, [8, 8, 8], seed=2)
    U, S, Vt = svd_aggregate(Bs, As, [1.0, 0.5, 0.25], r_max=5)
    ref = torch.linalg.svdvals(_dense(Bs, As, [1.0, 0.5, 0.25]))
    assert S.shape == (5,) and U.shape == (64, 5) and Vt.shape == (5, 64)
    assert torch.allclose(S, ref[:5], rtol=1e-5, atol=0)


def test_factored_path_never_runs_an_svd_on_a_d_by_d_matrix(monkeypatch):
    Bs, As = _factors(200, 150, [4, 4, 8], seed=3)  # R = 16
    seen: list[tuple[int, ...]] = []
    real_svd = torch.linalg.svd

    def spy(x, *args, **kwargs):
        seen.append(tuple(x.shape))
        return real_svd(x, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", spy)
    svd_aggregate(Bs, As, [1.0, 1.0, 1.0], r_max=32)
    assert seen == [(16, 16)]


def test_dense_path_is_chosen_when_total_rank_reaches_the_smaller_dimension(monkeypatch):
    Bs, As = _factors(40, 24, [8, 8, 8], seed=4)  # R = 24 = min(40, 24)

    def no_qr(*args, **kwargs):
        raise AssertionError("the dense path must not take QR factorisations")

    monkeypatch.setattr(torch.linalg, "qr", no_qr)
    U, S, Vt = svd_aggregate(Bs, As, [0.2, 0.3, 0.5], r_max=32)
    dense = _dense(Bs, As, [0.2, 0.3, 0.5])
    assert torch.allclose(S, torch.linalg.svdvals(dense), rtol=1e-5, atol=0)
    assert torch.allclose(_product(U, S, Vt), dense, atol=1e-10)


def test_refactoring_an_already_factored_adapter_changes_nothing():
    Bs, As = _factors(50, 70, [3, 5], seed=5)
    U, S, Vt = svd_aggregate(Bs, As, [0.7, 0.3], r_max=8)
    U2, S2, Vt2 = svd_aggregate([U * S], [Vt], [1.0], r_max=8)
    assert torch.allclose(S2, S, rtol=1e-10, atol=0)
    assert torch.allclose(_product(U2, S2, Vt2), _product(U, S, Vt), atol=1e-10)
    # Same singular vectors up to sign: |U^T U2| is the identity for distinct singular values.
    assert torch.allclose((U.T @ U2).abs(), torch.eye(8, dtype=torch.float64), atol=1e-8)


def test_numerically_zero_singular_values_are_dropped_so_the_rank_is_honest():
    Bs, As = _factors(64, 48, [4], seed=6)
    # The same rank-4 update three times stacks R = 12 columns but has rank 4.
    U, S, Vt = svd_aggregate(Bs * 3, As * 3, [0.5, 0.25, 0.25], r_max=16)
    assert S.shape == (4,)
    assert torch.allclose(_product(U, S, Vt), Bs[0] @ As[0], atol=1e-10)
    z = torch.zeros(64, 2, dtype=torch.float64)
    U0, S0, Vt0 = svd_aggregate([z], [torch.zeros(2, 48, dtype=torch.float64)], [1.0], r_max=16)
    assert S0.shape == (0,) and U0.shape == (64, 0) and Vt0.shape == (0, 48)


def test_float32_in_gives_float32_out_and_bad_inputs_raise():
    Bs, As = _factors(32, 32, [2, 2], seed=7, dtype=torch.float32)
    U, S, Vt = svd_aggregate(Bs, As, [0.5, 0.5], r_max=4)
    assert U.dtype == S.dtype == Vt.dtype == torch.float32
    with pytest.raises(ValueError, match="dtypes"):
        svd_aggregate([Bs[0], Bs[1].double()], As, [0.5, 0.5], r_max=4)
    with pytest.raises(ValueError, match="do not fit"):
        svd_aggregate([Bs[0], Bs[1][:, :1]], As, [0.5, 0.5], r_max=4)
    with pytest.raises(ValueError, match="r_max"):
        svd_aggregate(Bs, As, [0.5, 0.5], r_max=0)
    with pytest.raises(ValueError, match="not finite"):
        svd_aggregate(Bs, As, [0.5, float("nan")], r_max=4)
    with pytest.raises(ValueError, match="float32 or float64"):
        svd_aggregate([b.half() for b in Bs], [a.half() for a in As], [0.5, 0.5], r_max=4)


def test_top_eta_balanced_split_is_the_best_rank_eta_approximation():
    alpha = 16.0
    Bs, As = _factors(60, 40, [8, 8, 4], seed=8)
    weights = [0.5 * alpha / 8, 0.3 * alpha / 8, 0.2 * alpha / 4]
    dense = _dense(Bs, As, weights)
    sv = torch.linalg.svdvals(dense)
    U, S, Vt = svd_aggregate(Bs, As, weights, r_max=16)
    for eta in (2, 4, 8):
        f = balanced_split(Factored(U=U, S=S, Vt=Vt), eta, alpha)
        approx = (alpha / eta) * f.B @ f.A
        err = dense - approx
        # Eckart-Young: Frobenius error^2 = sum of the tail sigma_i^2, spectral error = sigma_{eta+1}.
        assert torch.allclose(torch.linalg.norm(err) ** 2, (sv[eta:] ** 2).sum(), rtol=1e-8)
        assert torch.allclose(torch.linalg.matrix_norm(err, ord=2), sv[eta], rtol=1e-8)


def _update(layers: dict[str, tuple[torch.Tensor, torch.Tensor]], head: dict[str, torch.Tensor], n: int, alpha: float):
    return ClientUpdate(
        layers={k: LoraFactors(A=A, B=B) for k, (B, A) in layers.items()}, head=head, samples=n, alpha=alpha
    )


def test_aggregating_identical_updates_returns_that_update():
    Bs, As = _factors(48, 32, [4], seed=9)
    head = {"weight": torch.randn(2, 32, dtype=torch.float64), "bias": torch.tensor([0.5, -1.0], dtype=torch.float64)}
    ups = [_update({"q": (Bs[0], As[0])}, head, n, alpha=8.0) for n in (10, 20, 30)]
    layers, avg_head = aggregate(ups, "svd", r_max=16)
    f = layers["q"]
    assert f.rank == 4
    assert torch.allclose(_product(f.U, f.S, f.Vt), (8.0 / 4) * Bs[0] @ As[0], atol=1e-10)
    for k in head:
        assert torch.allclose(avg_head[k], head[k], atol=1e-12)


def test_aggregate_folds_data_weight_and_lora_scale_by_hand():
    e = torch.eye(4, dtype=torch.float64)
    # Client 1: rank 1, n = 1, alpha 4 -> s = 4, p = 1/4: contributes 1/4 * 4 * e1 e1^T = e1 e1^T.
    c1 = _update({"q": (e[:, :1], e[:1, :])}, {"b": torch.tensor([1.0, 2.0])}, n=1, alpha=4.0)
    # Client 2: rank 2, n = 3, alpha 4 -> s = 2, p = 3/4: contributes 3/4 * 2 * (e2 e2^T + e3 e3^T).
    c2 = _update({"q": (e[:, 1:3], e[1:3, :])}, {"b": torch.tensor([3.0, 6.0])}, n=3, alpha=4.0)
    layers, head = aggregate([c1, c2], "svd", r_max=8)
    f = layers["q"]
    assert torch.allclose(f.S, torch.tensor([1.5, 1.5, 1.0], dtype=torch.float64), atol=1e-12)
    assert torch.allclose(_product(f.U, f.S, f.Vt), torch.diag(torch.tensor([1.0, 1.5, 1.5, 0.0], dtype=torch.float64)))
    # Head: (1 * [1, 2] + 3 * [3, 6]) / 4 = [2.5, 5.0], dtype kept.
    assert head["b"].dtype == torch.float32
    assert torch.allclose(head["b"], torch.tensor([(1 * 1 + 3 * 3) / 4, (1 * 2 + 3 * 6) / 4]))


def test_zero_sample_clients_carry_no_weight_and_half_precision_is_upcast():
    e = torch.eye(4, dtype=torch.float16)
    c1 = _update({"q": (e[:, :1], e[:1, :])}, {"b": torch.tensor([1.0])}, n=5, alpha=1.0)
    c2 = _update({"q": (e[:, 1:2] * 7, e[1:2, :])}, {"b": torch.tensor([9.0])}, n=0, alpha=1.0)
    layers, head = aggregate([c1, c2], "svd", r_max=4)
    assert layers["q"].S.dtype == torch.float32
    assert torch.allclose(layers["q"].S, torch.tensor([1.0]))
    assert torch.allclose(head["b"], torch.tensor([1.0]))


def test_aggregate_rejects_mismatched_layers_heads_and_empty_totals():
    Bs, As = _factors(8, 8, [2, 2], seed=10)
    h = {"w": torch.zeros(2)}
    good = _update({"q": (Bs[0], As[0])}, h, 1, 1.0)
    with pytest.raises(ValueError, match="layers"):
        aggregate([good, _update({"v": (Bs[1], As[1])}, h, 1, 1.0)], "svd", 4)
    with pytest.raises(ValueError, match="head tensors"):
        aggregate([good, _update({"q": (Bs[1], As[1])}, {"x": torch.zeros(2)}, 1, 1.0)], "svd", 4)
    with pytest.raises(ValueError, match="shape"):
        aggregate([good, _update({"q": (Bs[1], As[1])}, {"w": torch.zeros(3)}, 1, 1.0)], "svd", 4)
    with pytest.raises(ValueError, match="no client"):
        aggregate([_update({"q": (Bs[0], As[0])}, h, 0, 1.0)], "svd", 4)
    with pytest.raises(ValueError, match="alpha"):
        aggregate([_update({"q": (Bs[0], As[0])}, h, 1, 0.0)], "svd", 4)
    with pytest.raises(ValueError, match="method"):
        aggregate([good], "mean", 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no updates"):
        aggregate([], "svd", 4)
