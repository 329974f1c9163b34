"""Heterogeneous-rank aggregation with SVD refactoring, without the dense matrix (docs/algorithms.md section 1).

`svd_aggregate` is the exact route (ours and FlexLoRA): Delta W+ = sum_k w_k B_k A_k, refactored as U diag(S) Vt.
`aggregate` applies one of the three aggregators to every adapted layer of a round and averages the heads.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from proto.adapter import Factored, LoraFactors
from rsu_agent.baselines import het_layer, homo_layer

log = logging.getLogger(__name__)

Method = Literal["svd", "homo", "het"]
_FLOATS = (torch.float32, torch.float64)


def _rank_tol(s_max: float, d_out: int, d_in: int, dtype: torch.dtype) -> float:
    """Singular values at or below this are numerically zero: torch.linalg.matrix_rank's rtol = max(m, n) * eps."""
    return s_max * max(d_out, d_in) * torch.finfo(dtype).eps


def _check_factors(Bs: list[Tensor], As: list[Tensor], weights: list[float]) -> tuple[int, int, torch.dtype]:
    """Validate shapes, dtypes and weights; return (d_out, d_in, dtype)."""
    if not Bs or len(Bs) != len(As) or len(As) != len(weights):
        raise ValueError(f"need equally many B, A and weights (got {len(Bs)}, {len(As)}, {len(weights)}), at least one")
    d_out, d_in, dtype = Bs[0].shape[0], As[0].shape[-1], Bs[0].dtype
    if dtype not in _FLOATS:
        raise ValueError(f"factors must be float32 or float64, not {dtype}")
    for k, (B, A, w) in enumerate(zip(Bs, As, weights, strict=True)):
        if B.dim() != 2 or A.dim() != 2 or B.shape[1] != A.shape[0] or B.shape[0] != d_out or A.shape[1] != d_in:
            shapes = f"B{tuple(B.shape)} A{tuple(A.shape)}"
            raise ValueError(f"client {k}: {shapes} do not fit ({d_out}, eta), (eta, {d_in})")
        if B.dtype != dtype or A.dtype != dtype:
            raise ValueError(f"client {k}: dtypes {B.dtype}/{A.dtype} differ from {dtype}")
        if not math.isfinite(w):
            raise ValueError(f"client {k}: weight {w} is not finite")
    return d_out, d_in, dtype


def svd_aggregate(
    Bs: list[Tensor], As: list[Tensor], weights: list[float], r_max: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Refactor sum_k weights[k] * Bs[k] @ As[k] as U diag(S) Vt, truncated to r = min(r_max, numerical rank).

    Factored path (R = sum eta_k < min(d_out, d_in)): thin QR of the stacked [w_k B_k] (d_out, R) and
    [A_k]^T (d_in, R), SVD of the R x R core R_B R_A^T, rotate back; O((d_in + d_out) R^2 + R^3) and the
    dense matrix is never formed. Otherwise the dense SVD is cheaper and is used. Singular values at or below
    max(d_out, d_in) * eps * S_max (torch.linalg.matrix_rank's convention) are dropped, so r is honest; an
    all-zero sum gives r = 0.

    Args:
        Bs: per client (d_out, eta_k).
        As: per client (eta_k, d_in).
        weights: multiplies Bs[k] @ As[k]; the caller folds in p_v * alpha / eta_v.
        r_max: the largest rank to keep (>= 1).

    Returns:
        U (d_out, r), S (r,) descending, Vt (r, d_in), in the inputs' dtype.
    """
    if r_max < 1:
        raise ValueError(f"r_max must be >= 1, not {r_max}")
    d_out, d_in, dtype = _check_factors(Bs, As, weights)
    # docs/algorithms.md splits sqrt(w_k) over both factors; the QR route is indifferent to where the scale sits (R_B
    # absorbs it), so the whole weight goes on B and the A stack needs no scaling pass.
    B_cat = torch.cat([B * w for B, w in zip(Bs, weights, strict=True)], dim=1)  # (d_out, R)
    A_cat = torch.cat(As, dim=0)  # (R, d_in)
    total_rank = B_cat.shape[1]  # R = sum eta_k
    if total_rank >= min(d_out, d_in):
        U, S, Vt = torch.linalg.svd(B_cat @ A_cat, full_matrices=False)  # (d_out, k), (k,), (k, d_in)
        r = _kept_rank(S, r_max, d_out, d_in, dtype)
        return U[:, :r].contiguous(), S[:r].contiguous(), Vt[:r].contiguous()
    Qb, Rb = torch.linalg.qr(B_cat)  # (d_out, R), (R, R)
    Qa, Ra = torch.linalg.qr(A_cat.T)  # (d_in, R), (R, R)
    Uc, S, Vct = torch.linalg.svd(Rb @ Ra.T)  # core (R, R)
    r = _kept_rank(S, r_max, d_out, d_in, dtype)
    # Rotate back only the kept components.
    return Qb @ Uc[:, :r], S[:r].contiguous(), Vct[:r] @ Qa.T  # (d_out, r), (r,), (r, d_in)


def _kept_rank(S: Tensor, r_max: int, d_out: int, d_in: int, dtype: torch.dtype) -> int:
    """min(r_max, number of singular values above the numerical-zero tolerance)."""
    s_max = float(S[0]) if S.numel() else 0.0
    rank = int(S.gt(_rank_tol(s_max, d_out, d_in, dtype)).sum()) if s_max > 0 else 0
    return min(r_max, rank)


@dataclass
class ClientUpdate:
    """One vehicle's validated update for one task."""

    layers: dict[str, LoraFactors]  # layer name -> A (eta, d_in), B (d_out, eta)
    head: dict[str, Tensor]  # classifier parameters, same names/shapes across clients
    samples: int
    alpha: float  # lora_alpha; the scale is alpha / eta


def _data_weights(updates: list[ClientUpdate]) -> list[float]:
    """p_v = n_v / sum n (docs/algorithms.md section 1); raise ValueError on negative counts or an empty total."""
    for k, u in enumerate(updates):
        if u.samples < 0:
            raise ValueError(f"client {k}: negative sample count {u.samples}")
        if not (math.isfinite(u.alpha) and u.alpha > 0):
            raise ValueError(f"client {k}: lora alpha {u.alpha} must be finite and > 0")
    total = sum(u.samples for u in updates)
    if total <= 0:
        raise ValueError("no client reported any training samples")
    return [u.samples / total for u in updates]


def _work_dtype(tensors: list[Tensor]) -> torch.dtype:
    """float64 if any input is float64, else float32 (fp16/bf16 from the wire are upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def average_heads(heads: list[dict[str, Tensor]], p: list[float]) -> dict[str, Tensor]:
    """p-weighted average of each head tensor; ValueError on mismatched names or shapes."""
    names = set(heads[0])
    out: dict[str, Tensor] = {}
    for k, h in enumerate(heads):
        if set(h) != names:
            raise ValueError(f"client {k}: head tensors {sorted(set(h) ^ names)[:4]} differ from client 0")
    for name in sorted(names):
        ref = heads[0][name]
        if not ref.is_floating_point():
            raise ValueError(f"head tensor {name} has non-float dtype {ref.dtype}")
        acc = torch.zeros(ref.shape, dtype=torch.float64, device=ref.device)
        for k, (h, w) in enumerate(zip(heads, p, strict=True)):
            if h[name].shape != ref.shape:
                raise ValueError(f"client {k}: head {name} shape {tuple(h[name].shape)} != {tuple(ref.shape)}")
            acc += w * h[name].detach().to(torch.float64)
        out[name] = acc.to(ref.dtype)
    return out


def aggregate(updates: list[ClientUpdate], method: Method, r_max: int) -> tuple[dict[str, Factored], dict[str, Tensor]]:
    """Aggregate one round's updates of one task into the new global Delta W per layer, and the head.

    The result REPLACES the previous global adapter (vehicles start from it). Clients with zero samples carry no
    weight and are skipped.

    Args:
        updates: validated client updates; all must adapt the same layers with the same (d_out, d_in).
        method: 'svd' (ours and FlexLoRA; exact, p_v * alpha / eta_v folded in), 'homo' (HomoLoRA) or
            'het' (HetLoRA); see rsu_agent.baselines for the two baselines.
        r_max: the largest rank broadcast (max of the candidate ranks).

    Returns:
        (layer name -> Factored, head parameter name -> averaged tensor).
    """
    if not updates:
        raise ValueError("no updates to aggregate")
    if method not in ("svd", "homo", "het"):
        raise ValueError(f"unknown aggregation method {method!r}")
    p = _data_weights(updates)
    live = [(u, w) for u, w in zip(updates, p, strict=True) if w > 0]
    names = set(live[0][0].layers)
    for k, (u, _) in enumerate(live):
        if set(u.layers) != names:
            raise ValueError(f"client {k}: layers {sorted(set(u.layers) ^ names)[:4]} differ from client 0")
    layers: dict[str, Factored] = {}
    for name in sorted(names):
        facs = [u.layers[name] for u, _ in live]
        dtype = _work_dtype([t for f in facs for t in (f.A, f.B)])
        Bs = [f.B.detach().to(dtype) for f in facs]  # (d_out, eta_v)
        As = [f.A.detach().to(dtype) for f in facs]  # (eta_v, d_in)
        scales = [u.alpha / f.rank for (u, _), f in zip(live, facs, strict=True)]  # s(eta_v) = alpha / eta_v
        pv = [w for _, w in live]
        try:
            _check_factors(Bs, As, scales)  # every method needs consistent shapes; raises with the client index
            if method == "svd":
                U, S, Vt = svd_aggregate(Bs, As, [w * s for w, s in zip(pv, scales, strict=True)], r_max)
                layers[name] = Factored(U=U, S=S, Vt=Vt)
            elif method == "homo":
                layers[name] = homo_layer(Bs, As, scales, pv, r_max)
            else:
                layers[name] = het_layer(Bs, As, scales, r_max)
        except ValueError as exc:
            raise ValueError(f"layer {name}: {exc}") from exc
        log.debug("aggregated %s by %s: %d clients, rank %d", name, method, len(facs), layers[name].rank)
    return layers, average_heads([u.head for u, _ in live], [w for _, w in live])
