"""Modelled V2I radio: Shannon rate over a path-loss channel, payload size of a LoRA update (docs/algorithms.md
section 2), and the channel presets a fleet config names.

    R(d, p) = min(W log2(1 + p g0 d^-varpi / N0), R_max)   bits/s,   S(eta) = bits * eta * sum_layers (d_in + d_out)
    uplink:   p = p_tx (the vehicle's one transmit power),  tau_up = S / R,  e_up = p_tx * tau_up (airtime)
    downlink: p = p_rsu (the RSU's transmit power),         tau_down = S / R,  e_down = p_rx * tau_down

The uplink capacity of a cell is shared by the vehicles uploading to it at the same time (fleet/sim/uplink.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


def noise_w(bandwidth_hz: float, noise_figure_db: float = 9.0) -> float:
    """Thermal noise -174 dBm/Hz over the band plus a receiver noise figure, in W."""
    return 10 ** ((-174 + 10 * math.log10(bandwidth_hz) + noise_figure_db) / 10) / 1000


class ChannelConfig(BaseModel):
    """Radio constants of one fleet. Defaults: a 20 MHz C-V2X/LTE-V2I carrier, 23 dBm UE, urban path loss.

    g0 = 1e-3 is the power gain at the 1 m reference distance (-30 dB: free-space loss at 1 m near 1 GHz with unit
    antenna gains; at 5.9 GHz ITS free space gives -48 dB, which antenna gains and the RSU mast partly recover);
    varpi = 3 is an urban micro-cell exponent (free space is 2, dense urban up to ~4).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    bandwidth_hz: float = Field(20e6, gt=0, description="W, channel bandwidth (Hz), uplink and downlink")
    p_tx_w: float = Field(0.2, gt=0, description="p, every vehicle's radio transmit power (W): rate and energy")
    rsu_tx_w: float = Field(1.0, gt=0, description="the RSU's transmit power (W): the downlink rate")
    g0: float = Field(1e-3, gt=0, description="channel power gain at the 1 m reference distance")
    path_loss_exp: float = Field(3.0, gt=0, description="varpi, path-loss exponent")
    n0_w: float = Field(noise_w(20e6), gt=0, description="N0, noise power over the band (W)")
    max_rate_bps: float | None = Field(None, gt=0, description="the PHY's highest rate (bits/s); none = Shannon")
    min_distance_m: float = Field(1.0, gt=0, description="distances below this are clamped (d^-varpi diverges)")


# The presets a FleetConfig names in `channel`. One line of source each; every constant can be overridden by
# giving a dict instead of a name.
CHANNEL_PRESETS: dict[str, ChannelConfig] = {
    # The paper's own simulation code: W = 200 kHz, 1 W uplink, free-space exponent 2. g0 and N0 are set so that
    # the median in-coverage rate on the default road grid is about 2.4 Mbit/s, as measured with that code.
    "paper": ChannelConfig(bandwidth_hz=200e3, p_tx_w=1.0, rsu_tx_w=1.0, g0=1.2e-6, path_loss_exp=2.0,
                           n0_w=noise_w(200e3)),
    # IEEE 802.11p / ETSI ITS-G5 10 MHz channel: PHY rates 3-27 Mbit/s, 6 Mbit/s (QPSK 1/2) the usual default;
    # 20 dBm OBU, 30 dBm RSU (ETSI EN 302 571 allows up to 33 dBm EIRP).
    "dsrc": ChannelConfig(bandwidth_hz=10e6, p_tx_w=0.1, rsu_tx_w=1.0, g0=1e-3, path_loss_exp=3.0,
                          n0_w=noise_w(10e6), max_rate_bps=6e6),
    # LTE-V2X (3GPP Rel-14) 20 MHz: 23 dBm power-class-3 UE; 75 Mbit/s is the 20 MHz single-layer 64QAM uplink peak.
    "cv2x": ChannelConfig(bandwidth_hz=20e6, p_tx_w=0.2, rsu_tx_w=1.0, g0=1e-3, path_loss_exp=3.0,
                          n0_w=noise_w(20e6), max_rate_bps=75e6),
    # 5G NR (3GPP Rel-16 V2X) 100 MHz at 30 kHz SCS: 23 dBm UE, 5 W small cell; about 0.7 Gbit/s single-layer
    # 256QAM peak (TS 38.306 max data rate formula).
    "nr5g": ChannelConfig(bandwidth_hz=100e6, p_tx_w=0.2, rsu_tx_w=5.0, g0=1e-3, path_loss_exp=3.0,
                          n0_w=noise_w(100e6), max_rate_bps=7e8),
}


class ChannelPresetError(ValueError):
    """A `channel` a fleet cannot use: an unknown preset name or bad constants. The message names the field."""


def resolve_channel(spec: str | Mapping[str, Any] | ChannelConfig) -> ChannelConfig:
    """A preset name, a dict of constants (a `preset` key starts from that preset), or a ChannelConfig."""
    from pydantic import ValidationError

    if isinstance(spec, ChannelConfig):
        return spec
    if isinstance(spec, str):
        if spec not in CHANNEL_PRESETS:
            raise ChannelPresetError(f"channel: unknown preset {spec!r}; known: {sorted(CHANNEL_PRESETS)}")
        return CHANNEL_PRESETS[spec]
    consts = dict(spec)
    base_name = consts.pop("preset", None)
    base = resolve_channel(base_name) if base_name is not None else ChannelConfig()
    if "bandwidth_hz" in consts and "n0_w" not in consts and isinstance(consts["bandwidth_hz"], (int, float)) \
            and consts["bandwidth_hz"] > 0:
        consts["n0_w"] = noise_w(float(consts["bandwidth_hz"]))  # the noise follows the band unless given
    try:
        return ChannelConfig(**{**base.model_dump(), **consts})
    except ValidationError as exc:
        bad = "; ".join(f"channel.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ChannelPresetError(bad) from None


def rate_bps(distance_m: float, cfg: ChannelConfig, power_w: float | None = None) -> float:
    """Modelled rate at `distance_m` from the RSU, bits/s, at `power_w` (default: the vehicle's uplink power)."""
    if not math.isfinite(distance_m) or distance_m < 0:
        raise ValueError(f"distance must be finite and >= 0 (got {distance_m})")
    p = cfg.p_tx_w if power_w is None else power_w
    d = max(distance_m, cfg.min_distance_m)
    snr = p * cfg.g0 * d ** (-cfg.path_loss_exp) / cfg.n0_w
    r = cfg.bandwidth_hz * math.log2(1.0 + snr)
    return min(r, cfg.max_rate_bps) if cfg.max_rate_bps is not None else r


def downlink_rate_bps(distance_m: float, cfg: ChannelConfig) -> float:
    """Modelled downlink rate: the same channel, at the RSU's transmit power."""
    return rate_bps(distance_m, cfg, cfg.rsu_tx_w)


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
    """Modelled upload time of `bits` at `distance_m` with the cell to itself."""
    if not math.isfinite(bits) or bits < 0:
        raise ValueError(f"bits must be finite and >= 0 (got {bits})")
    return bits / rate_bps(distance_m, cfg)


def upload_energy_j(time_s: float, p_tx_w: float) -> float:
    """Modelled radio energy of an upload, `p_tx * tau_up` (airtime: sharing the cell stretches the wait, not the
    time on air)."""
    if not (math.isfinite(time_s) and time_s >= 0 and math.isfinite(p_tx_w) and p_tx_w >= 0):
        raise ValueError(f"time and power must be finite and >= 0 (got {time_s}, {p_tx_w})")
    return p_tx_w * time_s
