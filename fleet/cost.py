"""The fleet's modelled round costs (docs/algorithms.md section 2), handed to vehicles as their `CostModel`.

Every figure this produces is labelled `model:<device profile>`: nothing here is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from edge_agent.work import ModelledCost
from fleet.sim.channel import ChannelConfig, downlink_rate_bps, rate_bps, upload_energy_j
from fleet.sim.compute import ModelShape, model_train_flops, train_energy_j, train_time_s
from fleet.sim.devices import DeviceProfile
from fleet.sim.uplink import SharedUplink

Locate = Callable[[str], tuple[float, float]]  # vehicle -> (x, y) now


class FleetCostModel:
    """Latency and energy of each vehicle's download, training and upload, from its device profile,
    the model's shape, the channel and its distance to the nearest RSU.

    Downloads run at the RSU's transmit power and cost the vehicle its receive power; uploads share their cell's
    capacity with the other uploads in flight (`uplink`), and cost the one transmit power of the channel.
    """

    def __init__(self, devices: dict[str, DeviceProfile], shape: ModelShape, batch_size: int, seq_len: int,
                 locate: Locate, rsu_sites: list[tuple[float, float]], channel: ChannelConfig | None = None,
                 uplink: SharedUplink | None = None) -> None:
        self.devices = devices
        self.shape = shape
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.locate = locate
        self.rsu_sites = rsu_sites
        self.channel = channel or ChannelConfig()
        self.uplink = uplink

    def _distance(self, vehicle: str) -> float:
        x, y = self.locate(vehicle)
        return min(math.hypot(x - cx, y - cy) for cx, cy in self.rsu_sites)

    def download(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        dev = self.devices[vehicle]
        t = 8.0 * payload_bytes / downlink_rate_bps(self._distance(vehicle), self.channel)
        return ModelledCost(t, dev.rx_w * t, f"model:{dev.name}")

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost:
        dev = self.devices[vehicle]
        flops = model_train_flops(self.shape, rank, samples=steps * self.batch_size, epochs=1.0, seq_len=self.seq_len)
        t = train_time_s(flops, dev)
        return ModelledCost(t, train_energy_j(t, dev), f"model:{dev.name}")

    def upload(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        """Airtime and energy of an upload with the cell to itself (what the vehicle spends whatever the sharing)."""
        dev = self.devices[vehicle]
        t = 8.0 * payload_bytes / rate_bps(self._distance(vehicle), self.channel)
        return ModelledCost(t, upload_energy_j(t, self.channel.p_tx_w), f"model:{dev.name}")

    def transmit(self, vehicle: str, rsu: str, payload_bytes: int, deliver: Callable[[], None]) -> None:
        """Put the upload on `rsu`'s shared cell; `deliver()` when its last bit arrives on the simulated clock."""
        airtime = self.upload(vehicle, payload_bytes).seconds
        if self.uplink is None:
            raise RuntimeError("this cost model has no shared uplink to carry uploads")
        self.uplink.send(rsu, airtime, lambda _duration: deliver())
