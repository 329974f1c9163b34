"""Modelled training FLOPs, time and energy of a LoRA round on a device profile (PAPER.md section 2).

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

from fleet.sim.devices import DeviceProfile


@dataclass(frozen=True)
class ModelShape:
    """What the FLOP model needs to know about the base model; square (hidden x hidden) adapted layers."""

    hidden: int
    layers: int
    targets: int  # adapted matrices per layer, e.g. 2 for q,v
    base_params: float  # parameters that take part in matmuls (embedding tables excluded)


# MiniLM-L6 (BERT, hidden 384, FFN 1536, 6 layers) with LoRA on q,v. Per layer: attention 4*(384*384 + 384)
# = 591,360; FFN 384*1536 + 1536 + 1536*384 + 384 = 1,181,568; two layernorms 1,536 -> 1,774,464;
# x 6 layers = 10,646,784, plus the 384x384 pooler (147,840) = 10,794,624.
MINILM_L6 = ModelShape(hidden=384, layers=6, targets=2, base_params=10_794_624)


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
    """`lora_train_flops` for a named model shape."""
    return lora_train_flops(rank, samples, epochs, seq_len, shape.hidden, shape.layers, shape.targets,
                            shape.base_params)


def train_time_s(flops: float, device: DeviceProfile) -> float:
    """Modelled training time: FLOPs over the device's effective throughput."""
    _check("flops", flops)
    return flops / device.flops


def train_energy_j(time_s: float, device: DeviceProfile) -> float:
    """Modelled training energy: board power while training times time."""
    _check("time_s", time_s)
    return device.power_w * time_s
