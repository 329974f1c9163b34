"""The baseline aggregators HomoLoRA and HetLoRA, one layer at a time (docs/algorithms.md section 1, "Baselines").

Both average the LoRA factors B and A separately, so the product of the averages is NOT the average of the
products; that inexactness is what the baselines are compared on. Each client's scale s_v = alpha / eta_v is
split evenly over its factors (sqrt(s_v) into B_v and into A_v) before averaging, so that the returned
Factored(U = B_avg, S = ones, Vt = A_avg) satisfies U diag(S) Vt = B_avg A_avg. A vehicle of rank eta then
takes the first eta columns of U and rows of Vt through proto.adapter.balanced_split, which with S = 1 is
plain truncation (divided by sqrt(s(eta)), undoing the folded scale when every client uses the same alpha).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from proto.adapter import Factored


def _ranks(Bs: list[Tensor]) -> list[int]:
    return [int(B.shape[1]) for B in Bs]


def homo_layer(Bs: list[Tensor], As: list[Tensor], scales: list[float], p: list[float], r_max: int) -> Factored:
    """HomoLoRA: one common rank r, B_avg = sum_v p_v sqrt(s_v) B_v and A_avg = sum_v p_v sqrt(s_v) A_v.

    Args:
        Bs: per client (d_out, r); As: per client (r, d_in); scales: s_v = alpha / r; p: data weights n_v / sum n.
        r_max: the largest rank broadcast; a common rank above it is a configuration error.

    Raises:
        ValueError: mixed ranks (HomoLoRA assumes one fixed rank) or a rank above r_max.
    """
    ranks = sorted(set(_ranks(Bs)))
    if len(ranks) != 1:
        raise ValueError(f"HomoLoRA needs one common rank, got ranks {ranks}")
    if ranks[0] > r_max:
        raise ValueError(f"HomoLoRA rank {ranks[0]} exceeds r_max {r_max}")
    U = torch.stack([w * math.sqrt(s) * B for B, s, w in zip(Bs, scales, p, strict=True)]).sum(0)  # (d_out, r)
    Vt = torch.stack([w * math.sqrt(s) * A for A, s, w in zip(As, scales, p, strict=True)]).sum(0)  # (r, d_in)
    return Factored(U=U, S=torch.ones(ranks[0], dtype=U.dtype, device=U.device), Vt=Vt)


def frobenius_of_product(B: Tensor, A: Tensor) -> float:
    """||B A||_F without forming B A: ||B A||_F^2 = trace((B^T B)(A A^T)), two eta x eta Gram matrices."""
    gram_b = B.T @ B  # (eta, eta)
    gram_a = A @ A.T  # (eta, eta)
    return math.sqrt(max(float((gram_b * gram_a).sum()), 0.0))


def het_weights(Bs: list[Tensor], As: list[Tensor], scales: list[float]) -> list[float]:
    """HetLoRA's sparsity-weighted aggregation weights, omega_v = ||s_v B_v A_v||_F / sum_u ||s_u B_u A_u||_F.

    Cho et al., "Heterogeneous LoRA for Federated Fine-tuning of On-Device Foundation Models" (EMNLP 2024,
    arXiv 2401.06432), section 3: clients whose update has a larger Frobenius norm get more weight; the data
    counts n_v do not enter. When every product is zero (no client has trained) the weights are uniform.
    """
    norms = [s * frobenius_of_product(B, A) for B, A, s in zip(Bs, As, scales, strict=True)]
    total = sum(norms)
    if total <= 0 or not math.isfinite(total):
        return [1.0 / len(Bs)] * len(Bs)
    return [n / total for n in norms]


def het_layer(Bs: list[Tensor], As: list[Tensor], scales: list[float], r_max: int) -> Factored:
    """HetLoRA: zero-pad every client to a common rank, average the padded factors with `het_weights`.

    B_avg = sum_v omega_v sqrt(s_v) [B_v, 0] and A_avg = sum_v omega_v sqrt(s_v) [A_v; 0]. The padding goes to the
    largest client rank r_hi <= r_max rather than to r_max itself: components beyond r_hi would be zero in both
    factors, and a vehicle that took them would train dead components (zero B and zero A get zero gradient).
    With rank r_hi announced, a vehicle of rank eta > r_hi initialises the missing components itself, as it
    does for any announcement of lower rank than its own.

    Raises:
        ValueError: a client rank above r_max.
    """
    ranks = _ranks(Bs)
    r_hi = max(ranks)
    if r_hi > r_max:
        raise ValueError(f"HetLoRA client rank {r_hi} exceeds r_max {r_max}")
    omega = het_weights(Bs, As, scales)
    d_out, d_in = Bs[0].shape[0], As[0].shape[1]
    U = torch.zeros(d_out, r_hi, dtype=Bs[0].dtype, device=Bs[0].device)  # (d_out, r_hi)
    Vt = torch.zeros(r_hi, d_in, dtype=As[0].dtype, device=As[0].device)  # (r_hi, d_in)
    for B, A, s, w, eta in zip(Bs, As, scales, omega, ranks, strict=True):
        U[:, :eta] += w * math.sqrt(s) * B
        Vt[:eta] += w * math.sqrt(s) * A
    return Factored(U=U, S=torch.ones(r_hi, dtype=U.dtype, device=U.device), Vt=Vt)
