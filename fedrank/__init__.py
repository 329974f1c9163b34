"""fedrank: energy-aware federated LoRA fine-tuning for vehicles and roadside units."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fedrank")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+local"
