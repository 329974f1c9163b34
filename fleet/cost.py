"""The fleet's modelled round costs (PAPER.md section 2), handed to vehicles as their `CostModel`.

Every figure this produces is labelled `model:<device profile>`: nothing here is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from edge_agent.work import ModelledCost
from fleet.sim.channel import ChannelConfig, rate_bps, upload_energy_j
from fleet.sim.compute import ModelShape, model_train_flops, train_energy_j, train_time_s
from fleet.sim.devices import DeviceProfile

Locate = Callable[[str], tuple[float, float]]  # vehicle -> (x, y) now


class FleetCostModel:
    """Latency and energy of each vehicle's download, training and upload, from its device profile,
    the model's shape and its distance to the nearest RSU."""

    def __init__(self, devices: dict[str, DeviceProfile], shape: ModelShape, batch_size: int, seq_len: int,
                 locate: Locate, rsu_sites: list[tuple[float, float]], channel: ChannelConfig | None = None) -> None:
        self.devices = devices
        self.shape = shape
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.locate = locate
        self.rsu_sites = rsu_sites
        self.channel = channel or ChannelConfig()

    def _distance(self, vehicle: str) -> float:
        x, y = self.locate(vehicle)
        return min(math.hypot(x - cx, y - cy) for cx, cy in self.rsu_sites)

    def _link(self, vehicle: str, payload_bytes: int) -> float:
        return 8.0 * payload_bytes / rate_bps(self._distance(vehicle), self.channel)

    def download(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        dev = self.devices[vehicle]
        # Receiving costs the radio little next to training; we count time only (documented in RESULTS.md).
        return ModelledCost(self._link(vehicle, payload_bytes), 0.0, f"model:{dev.name}")

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost:
        dev = self.devices[vehicle]
        flops = model_train_flops(self.shape, rank, samples=steps * self.batch_size, epochs=1.0, seq_len=self.seq_len)
        t = train_time_s(flops, dev)
        return ModelledCost(t, train_energy_j(t, dev), f"model:{dev.name}")

    def upload(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        dev = self.devices[vehicle]
        t = self._link(vehicle, payload_bytes)
        return ModelledCost(t, upload_energy_j(t, dev.p_tx_w), f"model:{dev.name}")
