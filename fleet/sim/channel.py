"""Modelled V2I uplink: Shannon rate over a path-loss channel, payload size of a LoRA update (PAPER.md section 2).

    R(d) = W log2(1 + p g0 d^-varpi / N0)   bits/s,     S(eta) = bits * eta * sum_layers (d_in + d_out)   bits
    tau_up = S / R,   e_up = p_tx * tau_up
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

# Thermal noise -174 dBm/Hz over 20 MHz (+73 dB) plus a 9 dB receiver noise figure: -92 dBm = 6.3e-13 W.
_DEFAULT_N0_W = 10 ** ((-174 + 10 * math.log10(20e6) + 9) / 10) / 1000


class ChannelConfig(BaseModel):
    """Uplink constants. Defaults: a 20 MHz C-V2X/LTE-V2I carrier, 23 dBm UE, urban path loss.

    g0 = 1e-3 is the power gain at the 1 m reference distance (-30 dB: free-space loss at 1 m near 1 GHz with unit
    antenna gains; at 5.9 GHz ITS free space gives -48 dB, which antenna gains and the RSU mast partly recover);
    varpi = 3 is an urban micro-cell exponent (free space is 2, dense urban up to ~4). With these, a vehicle at
    100 m sees ~166 Mbit/s and at 300 m ~73 Mbit/s (modelled).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bandwidth_hz: float = Field(20e6, gt=0, description="W, channel bandwidth (Hz)")
    p_tx_w: float = Field(0.2, gt=0, description="p, vehicle transmit power (W)")
    g0: float = Field(1e-3, gt=0, description="channel power gain at the 1 m reference distance")
    path_loss_exp: float = Field(3.0, gt=0, description="varpi, path-loss exponent")
    n0_w: float = Field(_DEFAULT_N0_W, gt=0, description="N0, noise power over the band (W)")
    min_distance_m: float = Field(1.0, gt=0, description="distances below this are clamped (d^-varpi diverges)")


def rate_bps(distance_m: float, cfg: ChannelConfig) -> float:
    """Modelled uplink rate at `distance_m` from the RSU, bits/s."""
    if not math.isfinite(distance_m) or distance_m < 0:
        raise ValueError(f"distance must be finite and >= 0 (got {distance_m})")
    d = max(distance_m, cfg.min_distance_m)
    snr = cfg.p_tx_w * cfg.g0 * d ** (-cfg.path_loss_exp) / cfg.n0_w
    return cfg.bandwidth_hz * math.log2(1.0 + snr)


def payload_bits(rank: int, layer_shapes: Mapping[str, tuple[int, int]], bits_per_value: int = 32) -> int:
    """Bits of one rank-`rank` LoRA update: B (d_out, r) and A (r, d_in) for every adapted layer."""
    if rank < 1 or bits_per_value < 1:
        raise ValueError(f"rank and bits_per_value must be >= 1 (got {rank}, {bits_per_value})")
    per_rank = 0
    for name, (d_out, d_in) in layer_shapes.items():
        if d_out < 1 or d_in < 1:
            raise ValueError(f"layer {name} has a bad shape ({d_out}, {d_in})")
        per_rank += d_in + d_out
    return bits_per_value * rank * per_rank


def upload_time_s(bits: float, distance_m: float, cfg: ChannelConfig) -> float:
    """Modelled upload time of `bits` at `distance_m`."""
    if not math.isfinite(bits) or bits < 0:
        raise ValueError(f"bits must be finite and >= 0 (got {bits})")
    return bits / rate_bps(distance_m, cfg)


def upload_energy_j(time_s: float, p_tx_w: float) -> float:
    """Modelled radio energy of an upload, `p_tx * tau_up`."""
    if not (math.isfinite(time_s) and time_s >= 0 and math.isfinite(p_tx_w) and p_tx_w >= 0):
        raise ValueError(f"time and power must be finite and >= 0 (got {time_s}, {p_tx_w})")
    return p_tx_w * time_s
