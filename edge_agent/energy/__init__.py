"""Energy meters for the vehicle: NVML, RAPL, Jetson INA3221 rails and a labelled CPU-time estimate.

`detect_meter(config)` returns the best one this machine has; importing this package never imports torch
or a vendor library (those load inside the backend that needs them).
"""

from edge_agent.energy.config import EnergyConfig
from edge_agent.energy.detect import ORDER, build_meter, detect_meter
from edge_agent.energy.meter import EnergyMeter, Measurement, MeterUnavailable, Span

__all__ = ["ORDER", "EnergyConfig", "EnergyMeter", "Measurement", "MeterUnavailable", "Span", "build_meter",
           "detect_meter"]
