"""The factored global adapter on the wire, and how a vehicle slices it (PAPER.md section 1).

Tensor names: announcement `{layer}.U` (d_out, r), `{layer}.S` (r,), `{layer}.Vt` (r, d_in);
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

    B = U_eta sqrt(S_eta) / sqrt(s), A = sqrt(S_eta) Vt_eta / sqrt(s)   (PAPER.md section 1)
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
