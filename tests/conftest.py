"""Shared fixtures: a private Mosquitto per test module, and `bus_factory` over MemoryBus and MqttBus."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from proto.bus import Bus
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.mqtt_options import MqttOptions

try:
    from tests.mosquitto import Mosquitto, MosquittoUnavailable
except ImportError:  # pytest run from inside tests/ with rootdir-less imports
    from mosquitto import Mosquitto, MosquittoUnavailable  # type: ignore[no-redef]

# Hypothesis: the same inputs on every CI run (a failure there reproduces), fresh ones locally (more coverage
# over time). HYPOTHESIS_PROFILE picks one explicitly; otherwise CI=true (set by .ci/run) selects "ci".
hypothesis_settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
hypothesis_settings.register_profile("dev", derandomize=False)
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or (
    "ci" if os.environ.get("CI", "").lower() in ("1", "true", "yes") else "dev")
hypothesis_settings.load_profile(HYPOTHESIS_PROFILE)

BusFactory = Callable[..., Bus]
_ids = itertools.count()


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[Mosquitto]:
    """A private broker on a free loopback port, persistence in a temp dir; skips if not installed."""
    try:
        broker = Mosquitto()
    except MosquittoUnavailable as exc:
        pytest.skip(str(exc))
    broker.start()
    yield broker
    broker.cleanup()


@pytest.fixture(params=["memory", pytest.param("mqtt", marks=pytest.mark.mosquitto)])
def bus_factory(request: pytest.FixtureRequest) -> Iterator[BusFactory]:
    """`bus_factory(name, clean_start=False)` → an unconnected Bus; ids are unique per test, all closed after."""
    made: list[Bus] = []
    suffix = f"t{next(_ids)}"
    if request.param == "memory":
        broker = MemoryBroker()

        def make(name: str, clean_start: bool = False) -> Bus:
            made.append(MemoryBus(broker, f"{name}-{suffix}", clean_start=clean_start))
            return made[-1]
    else:
        from proto.mqtt_bus import MqttBus

        mosq: Mosquitto = request.getfixturevalue("mosquitto")
        opts = MqttOptions(port=mosq.port, ack_timeout_s=5.0, reconnect_min_s=0.05, reconnect_max_s=0.5)

        def make(name: str, clean_start: bool = False) -> Bus:
            made.append(MqttBus(opts, f"{name}-{suffix}", clean_start=clean_start))
            return made[-1]

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for bus in made:
        bus.close()
