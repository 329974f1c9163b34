"""Modelled training FLOPs, time and energy of a LoRA round on a device profile (docs/algorithms.md section 2).

    tau_train = FLOPs(eta, samples, epochs) / device.flops,    e_train = device.power_w * tau_train

FLOP count (the usual 2-FLOPs-per-multiply-add accounting, per token):
    - trainable LoRA parameters P_lora = eta * targets * layers * (d_in + d_out): forward 2, weight gradient 2,
      activation gradient 2 -> 6 * P_lora per token;
    - frozen base parameters P_base: forward 2 and the activation gradient that must flow through them to reach
      the adapters below 2 (no weight gradient) -> 4 * P_base per token.
    FLOPs = (6 * P_lora + 4 * P_base) * tokens,  tokens = samples * epochs * seq_len.
Ignored (small at the sequence lengths used here): attention score products (O(seq_len^2) per layer),
softmax/layernorm, the classifier head, and the embedding lookups (which is why `base_params` excludes the
embedding tables). The result is a model, not a measurement.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edge_agent.model import names_target, unmatched_targets
from fleet.sim.devices import DeviceProfile


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP model needs to know about the base model. Without `lora_width` the adapted layers are square
    (hidden x hidden), `targets` of them per layer; with it, `lora_width` = sum over adapted layers of
    (d_in + d_out), the LoRA parameters per unit of rank, for any target set (e.g. the FFN's 384 x 1536)."""

    hidden: int
    layers: int
    targets: int  # adapted matrices per layer, e.g. 2 for q,v
    base_params: float  # parameters that take part in matmuls (embedding tables excluded)
    lora_width: float | None = None

    def with_adapted(self, layer_shapes: dict[str, tuple[int, int]]) -> ModelShape:
        """This base with LoRA on exactly these (d_out, d_in) layers."""
        width = float(sum(d_out + d_in for d_out, d_in in layer_shapes.values()))
        return ModelShape(self.hidden, self.layers, max(1, len(layer_shapes) // self.layers), self.base_params, width)


# MiniLM-L6 (BERT, hidden 384, FFN 1536, 6 layers) with LoRA on q,v. Per layer: attention 4*(384*384 + 384)
# = 591,360; FFN 384*1536 + 1536 + 1536*384 + 384 = 1,181,568; two layernorms 1,536 -> 1,774,464;
# x 6 layers = 10,646,784, plus the 384x384 pooler (147,840) = 10,794,624.
MINILM_L6 = ModelShape(hidden=384, layers=6, targets=2, base_params=10_794_624)
# BERT-base (hidden 768, FFN 3072, 12 layers): attention 4*(768*768 + 768) = 2,362,368; FFN 768*3072 + 3072 +
# 3072*768 + 768 = 4,722,432; layernorms 3,072 -> 7,087,872 per layer, x 12 = 85,054,464, + pooler 590,592.
BERT_BASE = ModelShape(hidden=768, layers=12, targets=2, base_params=85_645_056)
BERT_BASE_FFN = 3072


def bert_layer_shapes(targets: tuple[str, ...], hidden: int = 768, n_layers: int = 12,
                      ffn: int = BERT_BASE_FFN) -> dict[str, tuple[int, int]]:
    """(d_out, d_in) of the adapted layers of a BERT encoder of this size, named as the encoder names them; what the
    cost model and the wire need for cost studies of a model whose weights we do not have."""
    per_layer = {"attention.self.query": (hidden, hidden), "attention.self.key": (hidden, hidden),
                 "attention.self.value": (hidden, hidden), "attention.output.dense": (hidden, hidden),
                 "intermediate.dense": (ffn, hidden), "output.dense": (hidden, ffn)}
    shapes = {f"encoder.layer.{i}.{name}": dims for i in range(n_layers) for name, dims in per_layer.items()
              if any(names_target(name, t) for t in targets)}
    if not shapes:
        raise ValueError(f"lora_targets: {list(targets)} match no layer of a BERT encoder")
    unused = unmatched_targets(targets, per_layer)
    if unused:
        raise ValueError(f"lora_targets: {unused} match no layer of a BERT encoder")
    return shapes


def _check(name: str, v: float, positive: bool = False) -> None:
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise ValueError(f"{name} must be finite and {'> 0' if positive else '>= 0'} (got {v})")


def lora_train_flops(
    rank: int,
    samples: int,
    epochs: float,
    seq_len: int,
    hidden: int,
    layers: int,
    targets: int,
    base_params: float,
) -> float:
    """Modelled FLOPs of LoRA training: `(6 * rank*targets*layers*2*hidden + 4 * base_params) * tokens`.

    Args:
        rank: LoRA rank eta.
        samples: training samples per epoch.
        epochs: passes over the samples (fractional allowed: a step budget is `steps * batch / samples` epochs).
        seq_len: tokens per sample (padded length).
        hidden, layers, targets: shape of the adapted square layers.
        base_params: frozen parameters that take part in matmuls.
    """
    if rank < 1:
        raise ValueError(f"rank must be >= 1 (got {rank})")
    for name, v in (("samples", samples), ("epochs", epochs), ("seq_len", seq_len), ("base_params", base_params)):
        _check(name, v)
    for name, v in (("hidden", hidden), ("layers", layers), ("targets", targets)):
        _check(name, v, positive=True)
    tokens = samples * epochs * seq_len
    lora_params = rank * targets * layers * (hidden + hidden)  # B (d_out, r) + A (r, d_in) per target
    return (6.0 * lora_params + 4.0 * base_params) * tokens


def model_train_flops(shape: ModelShape, rank: int, samples: int, epochs: float, seq_len: int) -> float:
    """`lora_train_flops` for a named model shape (with its own adapted widths when it has them)."""
    flops = lora_train_flops(rank, samples, epochs, seq_len, shape.hidden, shape.layers, shape.targets,
                             shape.base_params)
    if shape.lora_width is None:
        return flops
    square = rank * shape.targets * shape.layers * 2 * shape.hidden
    return flops + 6.0 * (rank * shape.lora_width - square) * samples * epochs * seq_len


def train_time_s(flops: float, device: DeviceProfile) -> float:
    """Modelled training time: FLOPs over the device's effective throughput."""
    _check("flops", flops)
    return flops / device.flops


def train_energy_j(time_s: float, device: DeviceProfile) -> float:
    """Modelled training energy: board power while training times time."""
    _check("time_s", time_s)
    return device.power_w * time_s


# The RSU's effective throughput on the aggregation's small QR/SVD/GEMM calls: about 1 GFLOP/s, which puts the
# model below at the ~0.06 s (MiniLM q,v) and ~1.4 s (BERT-base-sized q,k,v,o) measured on a 2-core x86 CPU.
RSU_FLOPS = 1.0e9


def aggregation_flops(ranks: list[int], layers: dict[str, tuple[int, int]], r_max: int, method: str = "svd") -> float:
    """Modelled FLOPs of one round's aggregation (docs/algorithms.md section 1), `R = sum of the ranks`:

    svd: per layer, thin QR of the stacked B (d_out x R) and A^T (d_in x R) ~ 4 (d_out + d_in) R^2, the SVD of
    the R x R core ~ 22 R^3, rotating back to r_max ~ 2 (d_out + d_in) R r_max.
    homo / het: per layer, a weighted sum of zero-padded factors ~ 2 (d_out + d_in) r_max per update.
    """
    if not ranks:
        return 0.0
    big_r = sum(ranks)
    total = 0.0
    for d_out, d_in in layers.values():
        if method == "svd":
            total += 4.0 * (d_out + d_in) * big_r**2 + 22.0 * big_r**3 + 2.0 * (d_out + d_in) * big_r * r_max
        else:
            total += 2.0 * (d_out + d_in) * r_max * len(ranks)
    return total
