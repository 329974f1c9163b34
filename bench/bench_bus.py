"""Bus benchmark: small-message throughput and 300 KB publish-to-handler latency, MemoryBus vs MqttBus
over a private Mosquitto on loopback, measured in the same run; prints the ratio memory / mosquitto.

    python bench/bench_bus.py [--small N] [--large N]

Every figure is measured with time.perf_counter in this process (publisher and subscriber are two
clients in one process; for Mosquitto that includes loopback TCP and paho's network threads).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/mosquitto.py

from proto.bus import Bus, Delivery
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.mqtt_bus import MqttBus
from proto.mqtt_options import MqttOptions
from tests.mosquitto import Mosquitto, MosquittoUnavailable

SMALL = b"x" * 64
LARGE = bytes(300 * 1024)


class Counter:
    """Counts deliveries and remembers when each arrived."""

    def __init__(self) -> None:
        self.n = 0
        self.last_t = 0.0
        self.cv = threading.Condition()

    def __call__(self, d: Delivery) -> None:
        t = time.perf_counter()
        with self.cv:
            self.n += 1
            self.last_t = t
            self.cv.notify_all()

    def wait(self, n: int, timeout: float = 60.0) -> None:
        with self.cv:
            if not self.cv.wait_for(lambda: self.n >= n, timeout):
                raise TimeoutError(f"only {self.n}/{n} messages arrived within {timeout}s")


def throughput(pub: Bus, sub: Bus, n: int, qos: int) -> float:
    """Messages/s from the first publish until the subscriber's handler has seen the n-th."""
    c = Counter()
    topic = f"bench/tp/{qos}"
    unsubscribe = sub.subscribe(topic, c, qos=qos)
    t0 = time.perf_counter()
    for _ in range(n):
        pub.publish(topic, SMALL, qos=qos)
    c.wait(n)
    unsubscribe()
    return n / (c.last_t - t0)


def latency(pub: Bus, sub: Bus, n: int) -> tuple[float, float]:
    """p50, p99 in ms of publish() call → handler entry for a 300 KB QoS 1 message, one at a time."""
    c = Counter()
    unsubscribe = sub.subscribe("bench/lat", c)
    samples = []
    for i in range(n):
        t0 = time.perf_counter()
        pub.publish("bench/lat", LARGE, qos=1)
        c.wait(i + 1)
        samples.append((c.last_t - t0) * 1e3)
    unsubscribe()
    q = statistics.quantiles(samples, n=100, method="inclusive")
    return q[49], q[98]


def run(kind: str, make: Callable[[str], Bus], n_small: int, n_large: int) -> dict[str, float]:
    pub, sub = make("bench-pub"), make("bench-sub")
    pub.connect()
    sub.connect()
    try:
        res = {
            "qos1_msgs_per_s": throughput(pub, sub, n_small, qos=1),
            "qos0_msgs_per_s": throughput(pub, sub, n_small, qos=0),
        }
        res["p50_ms"], res["p99_ms"] = latency(pub, sub, n_large)
    finally:
        pub.close()
        sub.close()
    print(f"{kind:>9}: QoS1 {res['qos1_msgs_per_s']:>9.0f} msg/s  QoS0 {res['qos0_msgs_per_s']:>9.0f} msg/s  "
          f"300KB p50 {res['p50_ms']:.3f} ms  p99 {res['p99_ms']:.3f} ms  (measured, perf_counter)")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=5000, help="small (64 B) messages per throughput run")
    ap.add_argument("--large", type=int, default=200, help="300 KB messages for the latency percentiles")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    broker = MemoryBroker()
    mem = run("memory", lambda name: MemoryBus(broker, name), args.small, args.large)
    try:
        mosq = Mosquitto()
    except MosquittoUnavailable as exc:
        print(f"mosquitto: skipped ({exc}); no ratio")
        return 0
    mosq.start()
    try:
        opts = MqttOptions(port=mosq.port)
        real = run("mosquitto", lambda name: MqttBus(opts, name, clean_start=True), args.small, args.large)
    finally:
        mosq.cleanup()
    print("ratio memory/mosquitto (same run): "
          f"QoS1 throughput x{mem['qos1_msgs_per_s'] / real['qos1_msgs_per_s']:.1f}, "
          f"QoS0 throughput x{mem['qos0_msgs_per_s'] / real['qos0_msgs_per_s']:.1f}, "
          f"300KB p50 latency x{real['p50_ms'] / mem['p50_ms']:.1f} lower, "
          f"p99 x{real['p99_ms'] / mem['p99_ms']:.1f} lower")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
