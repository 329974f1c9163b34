"""The factored global adapter on the wire, and how a vehicle slices it (docs/algorithms.md section 1).

Tensor names: the global (in rank tiers) `{layer}.U` (d_out, r), `{layer}.S` (r,), `{layer}.Vt` (r, d_in);
update/handoff `{layer}.lora_A` (eta, d_in), `{layer}.lora_B` (d_out, eta); heads `head.{param}`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from proto.errors import PayloadRejected

HEAD_PREFIX = "head."


@dataclass
class Factored:
    """One layer of the global update: Delta W = U diag(S) Vt."""

    U: torch.Tensor  # (d_out, r)
    S: torch.Tensor  # (r,)
    Vt: torch.Tensor  # (r, d_in)

    @property
    def rank(self) -> int:
        return int(self.S.shape[0])


@dataclass
class LoraFactors:
    """One layer of a vehicle's adapter: Delta W = scale * B A."""

    A: torch.Tensor  # (eta, d_in)
    B: torch.Tensor  # (d_out, eta)

    @property
    def rank(self) -> int:
        return int(self.A.shape[0])


def lora_scale(alpha: float, rank: int) -> float:
    """s(eta) = alpha / eta, the peft convention."""
    return alpha / rank


def balanced_split(f: Factored, eta: int, alpha: float) -> LoraFactors:
    """Top-eta components split evenly so that s(eta) * B A is the best rank-eta approximation.

    B = U_eta sqrt(S_eta) / sqrt(s), A = sqrt(S_eta) Vt_eta / sqrt(s)   (docs/algorithms.md section 1)
    Requires eta <= f.rank; the caller initialises any extra components itself.
    """
    if eta < 1 or eta > f.rank:
        raise ValueError(f"rank {eta} must be between 1 and the factored rank {f.rank}")
    root_s = f.S[:eta].clamp_min(0).sqrt()  # (eta,)
    inv = 1.0 / math.sqrt(lora_scale(alpha, eta))
    B = f.U[:, :eta] * root_s[None, :] * inv  # (d_out, eta)
    A = root_s[:, None] * f.Vt[:eta, :] * inv  # (eta, d_in)
    return LoraFactors(A=A.contiguous(), B=B.contiguous())


def pack_factored(layers: dict[str, Factored], head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, f in layers.items():
        out[f"{name}.U"], out[f"{name}.S"], out[f"{name}.Vt"] = f.U, f.S, f.Vt
    out.update({HEAD_PREFIX + k: v for k, v in head.items()})
    return out


def pack_lora(layers: dict[str, LoraFactors], head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, f in layers.items():
        out[f"{name}.lora_A"], out[f"{name}.lora_B"] = f.A, f.B
    out.update({HEAD_PREFIX + k: v for k, v in head.items()})
    return out


def split_head(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(layer tensors, head tensors without the prefix)."""
    head = {k[len(HEAD_PREFIX) :]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    rest = {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}
    return rest, head


def unpack_factored(
    tensors: dict[str, torch.Tensor], layers: list[str]
) -> tuple[dict[str, Factored], dict[str, torch.Tensor]]:
    """Read an announcement's tensors; raise PayloadRejected when they do not form U, S, Vt per layer."""
    rest, head = split_head(tensors)
    out: dict[str, Factored] = {}
    expected = {f"{n}.{p}" for n in layers for p in ("U", "S", "Vt")}
    if set(rest) != expected:
        raise PayloadRejected("bad_layers", f"tensors {sorted(set(rest) ^ expected)[:4]} do not match layers")
    for n in layers:
        U, S, Vt = rest[f"{n}.U"], rest[f"{n}.S"], rest[f"{n}.Vt"]
        r = S.shape[0] if S.dim() == 1 else -1
        if U.dim() != 2 or Vt.dim() != 2 or U.shape[1] != r or Vt.shape[0] != r:
            raise PayloadRejected("bad_shape", f"{n}: U{tuple(U.shape)} S{tuple(S.shape)} Vt{tuple(Vt.shape)}")
        out[n] = Factored(U=U, S=S, Vt=Vt)
    return out, head


def unpack_lora(
    tensors: dict[str, torch.Tensor], layers: list[str] | None = None
) -> tuple[dict[str, LoraFactors], dict[str, torch.Tensor]]:
    """Read an update's tensors; raise PayloadRejected when A/B pairs are missing or inconsistent."""
    rest, head = split_head(tensors)
    names = sorted({k.rsplit(".", 1)[0] for k in rest})
    if layers is not None and set(names) != set(layers):
        raise PayloadRejected("bad_layers", f"layers {sorted(set(names) ^ set(layers))[:4]} do not match")
    out: dict[str, LoraFactors] = {}
    for n in names:
        A, B = rest.get(f"{n}.lora_A"), rest.get(f"{n}.lora_B")
        if A is None or B is None or len(rest) != 2 * len(names):
            raise PayloadRejected("bad_layers", f"{n}: needs exactly lora_A and lora_B")
        if A.dim() != 2 or B.dim() != 2 or A.shape[0] != B.shape[1]:
            raise PayloadRejected("bad_shape", f"{n}: A{tuple(A.shape)} B{tuple(B.shape)}")
        out[n] = LoraFactors(A=A, B=B)
    return out, head


def tier_bounds(ranks: list[int], rank: int) -> list[tuple[int, int]]:
    """Nested rank tiers `(first, last)` (1-based, inclusive) of a rank-`rank` global, cut at the candidate ranks:
    ranks [2, 4, 8, 16, 32] give 1-2, 3-4, 5-8, 9-16, 17-32, so a rank-eta vehicle fetches the tiers up to eta."""
    out: list[tuple[int, int]] = []
    first = 1
    for cut in sorted(set(ranks)):
        if first > rank:
            break
        if cut >= first:
            out.append((first, min(cut, rank)))
            first = min(cut, rank) + 1
    if first <= rank:
        out.append((first, rank))
    return out


def tiers_for_rank(tiers: list[tuple[int, int]], eta: int) -> int:
    """How many leading tiers a rank-eta vehicle needs (all of them when eta exceeds the global's rank)."""
    return sum(1 for first, _ in tiers if first <= eta)


def pack_tier(layers: dict[str, Factored], head: dict[str, torch.Tensor], first: int, last: int,
              with_head: bool) -> dict[str, torch.Tensor]:
    """Components first..last of every layer (and the head when `with_head`), as a tier's tensors."""
    out: dict[str, torch.Tensor] = {}
    for name, f in layers.items():
        if f.rank < first:
            continue  # a layer whose global has fewer components has nothing in this tier
        out[f"{name}.U"] = f.U[:, first - 1 : last].contiguous()  # (d_out, n)
        out[f"{name}.S"] = f.S[first - 1 : last].contiguous()  # (n,)
        out[f"{name}.Vt"] = f.Vt[first - 1 : last, :].contiguous()  # (n, d_in)
    if with_head:
        out.update({HEAD_PREFIX + k: v for k, v in head.items()})
    return out


def merge_tiers(parts: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Leading tiers, in order, back into one `{layer}.U/.S/.Vt` + head dict (read with `unpack_factored`).

    Raises PayloadRejected when the tiers do not carry the same layers."""
    if not parts:
        raise PayloadRejected("bad_layers", "no tiers")
    rest0, head = split_head(parts[0])
    rests = [split_head(p)[0] for p in parts]
    out: dict[str, torch.Tensor] = {}
    for key in rest0:
        pieces = []
        for r in rests:  # a layer with fewer components stops early; it never restarts
            if key not in r:
                break
            pieces.append(r[key])
        dim = 1 if key.endswith(".U") else 0
        try:
            out[key] = torch.cat(pieces, dim=dim)
        except RuntimeError as exc:
            raise PayloadRejected("bad_shape", f"{key}: tiers do not stack ({exc})") from None
    if any(not set(r) <= set(rest0) for r in rests[1:]):
        raise PayloadRejected("bad_layers", "a later tier carries layers the first does not")
    out.update({HEAD_PREFIX + k: v for k, v in head.items()})
    return out
