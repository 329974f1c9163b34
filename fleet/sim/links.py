"""The fleet's link model for fault tolerance: V2I uplink and V2V rates from the channel model (modelled).

The RSU decides early upload / migration with `rsu_agent.fault_tolerance.LinkRates`; here both rates come from
the Shannon rate over the path-loss channel of `fleet.sim.channel` at the distance in question. V2V (sidelink)
uses the same carrier, transmit power and path loss as the uplink: an assumption, the paper gives no V2V model.
"""

from __future__ import annotations

from dataclasses import dataclass

from fleet.sim.channel import ChannelConfig, rate_bps


@dataclass(frozen=True)
class ChannelRates:
    """`LinkRates` from a `ChannelConfig`: bit/s at a distance in metres (modelled)."""

    channel: ChannelConfig

    def uplink_bps(self, distance_m: float) -> float:
        return rate_bps(distance_m, self.channel)

    def v2v_bps(self, distance_m: float) -> float:
        return rate_bps(distance_m, self.channel)


def fleet_channel(cfg: object) -> ChannelConfig:
    """The channel a fleet config asks for: its `channel` field (a `ChannelConfig`, or a preset name / dict of
    constants resolved by `fleet.sim.channel.resolve_channel` where that exists), else the default channel."""
    chosen = getattr(cfg, "channel", None)
    if isinstance(chosen, ChannelConfig):
        return chosen
    if chosen is not None:
        from fleet.sim import channel as ch

        resolve = getattr(ch, "resolve_channel", None)
        if callable(resolve):
            resolved = resolve(chosen)
            if isinstance(resolved, ChannelConfig):
                return resolved
    return ChannelConfig()
