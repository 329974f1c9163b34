"""Aggregation that cannot kill a round: float64 where float32 is not enough, and a numerical failure of one
update is that update's rejection (reason `numerical`), found when it arrives rather than when the round closes.

The wire bounds (`proto/bounds.py`) already keep every factor's magnitude small enough that float32 products
cannot overflow; this is the second line: an update whose own aggregate (alone, in float64) is not finite and
float32-representable is refused at admission, and the round's aggregate is retried in float64 when the float32
one fails or is not finite.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace

import torch

from proto.adapter import Factored, LoraFactors
from proto.bounds import MAX_ANNOUNCE_ABS
from rsu_agent.aggregate import ClientUpdate, Method, aggregate
from rsu_agent.validate import UpdateRejected

log = logging.getLogger(__name__)

Global = tuple[dict[str, Factored], dict[str, torch.Tensor]]


def _as64(u: ClientUpdate) -> ClientUpdate:
    layers = {n: LoraFactors(A=f.A.to(torch.float64), B=f.B.to(torch.float64)) for n, f in u.layers.items()}
    return replace(u, layers=layers, head={k: v.to(torch.float64) for k, v in u.head.items()})


def _peak(t: torch.Tensor) -> float:
    if t.numel() == 0:
        return 0.0
    v = float(t.detach().abs().max())
    return v if not math.isnan(v) else math.inf


def check_global(layers: dict[str, Factored], head: dict[str, torch.Tensor]) -> None:
    """Raise ArithmeticError unless every tensor of a global is finite and fits float32 (the announcement)."""
    tensors = [t for f in layers.values() for t in (f.U, f.S, f.Vt)] + list(head.values())
    worst = max((_peak(t) for t in tensors), default=0.0)
    if not worst <= MAX_ANNOUNCE_ABS:
        raise ArithmeticError(f"aggregate has an element of magnitude {worst:.3g}: not finite in float32")


def admit_numerically(update: ClientUpdate, method: Method, r_max: int) -> None:
    """Refuse (UpdateRejected `numerical`) an update whose aggregate on its own, in float64, fails or is not
    finite in float32: in a round with others it could only fail or poison theirs."""
    try:
        check_global(*aggregate([_as64(update)], method, r_max))
    except (ValueError, ArithmeticError, RuntimeError) as exc:  # torch.linalg.LinAlgError is a RuntimeError
        raise UpdateRejected("numerical", f"{type(exc).__name__}: {str(exc)[:160]}") from exc


def aggregate_robust(updates: list[ClientUpdate], method: Method, r_max: int) -> Global:
    """`aggregate`, checked; on a numerical failure (or a non-finite result) again in float64.

    Raises:
        ValueError: the updates do not fit together (shapes, layers), as `aggregate` does.
        ArithmeticError: not even float64 gives a finite global (the caller keeps the old one).
    """
    try:
        out = aggregate(updates, method, r_max)
        check_global(*out)
        return out
    except (ArithmeticError, RuntimeError) as exc:
        log.warning("aggregation in float32 failed (%s: %s); retrying in float64", type(exc).__name__, exc)
    try:
        layers, head = aggregate([_as64(u) for u in updates], method, r_max)
    except RuntimeError as exc:
        raise ArithmeticError(f"aggregation failed in float64 too: {type(exc).__name__}: {exc}") from exc
    check_global(layers, head)
    dtype = next(iter(updates[0].layers.values())).A.dtype if updates and updates[0].layers else torch.float32
    return ({n: Factored(U=f.U.to(dtype), S=f.S.to(dtype), Vt=f.Vt.to(dtype)) for n, f in layers.items()},
            {k: v.to(dtype) for k, v in head.items()})
