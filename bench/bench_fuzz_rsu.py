"""Fuzz benchmark: a real RSU daemon over a real Mosquitto (loopback only) takes a storm of hostile messages next
to one legitimate vehicle; bounded in count (--messages) and time (--max-seconds).

    python bench/bench_fuzz_rsu.py [--messages 100000] [--max-seconds 240] [--seed 0] [--json out.json]

Reports: crashes (the daemon's exit), hostile updates accepted (0), rounds the legitimate task closed before /
during / after the storm, peak RSS against the idle RSS (goal <= 2x), log bytes per rejected message, the
Prometheus series count, and rejection throughput. Every figure is measured in this run: RSS from
/proc/{pid}/status (VmRSS, sampled every 50 ms), counts from the daemon's own /metrics and JSON log, times with
time.monotonic. The hostile mix: random bytes (up to 4 MB), truncated and byte-flipped updates, bad JSON and
safetensors headers, duplicate header keys, NaN/Inf/1e20 tensors, loss = 1e305 and samples = 10**400 reports,
a 20,000-tensor header, replays, sender/topic mismatches, updates for thousands of bogus tasks, hostile statuses
(x = 1e200, 5,000 tasks, 100 KB details, far-future sent_at), invalid budgets and a few 17 MiB payloads.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests/mosquitto.py

import paho.mqtt.client as mqtt  # noqa: E402
import torch  # noqa: E402

from proto import SCHEMA_VERSION  # noqa: E402
from proto.adapter import LoraFactors, pack_lora  # noqa: E402
from proto.codec import META_KEY, decode, encode  # noqa: E402
from proto.messages import (  # noqa: E402
    AgentStatus,
    Position,
    RoundAnnouncement,
    TaskStats,
    UpdateReport,
    VehicleUpdate,
    Velocity,
)
from proto.mqtt_bus import MqttBus  # noqa: E402
from proto.mqtt_options import MqttOptions  # noqa: E402
from proto.topics import Role, Topics  # noqa: E402
from tests.mosquitto import Mosquitto, MosquittoUnavailable, free_port  # noqa: E402

T = Topics()
RSU, TASK, LEGIT = "rsu-fuzz", "t1", "legit-1"
LAYERS = {"q": (64, 64), "v": (64, 64)}


def config(path: Path, state: Path, port: int, metrics_port: int) -> Path:
    layers = ", ".join(f"{k} = [{a}, {b}]" for k, (a, b) in LAYERS.items())
    path.write_text(f"""
id = "{RSU}"
state_dir = "{state}"
join_wait_s = 0.5
status_interval_s = 10.0
metrics_port = {metrics_port}
log_json = true
coverage = {{ shape = "circle", cx = 0.0, cy = 0.0, radius = 1000.0 }}
[broker]
port = {port}
reconnect_min_s = 0.05
[[tasks]]
name = "{TASK}"
task_type = "sentence"
ranks = [2, 4, 8]
layers = {{ {layers} }}
round_timeout_s = 8.0
round_gap_s = 0.5
participant_retry_s = 1.0
""")
    return path


def update(vid: str, round_: int, rank: int = 4, seed: int = 0, scale: float = 0.05, task: str = TASK,
           **report: object) -> tuple[str, bytes]:
    g = torch.Generator().manual_seed(seed)
    layers = {n: LoraFactors(A=torch.randn(rank, d_in, generator=g) * scale, B=torch.randn(d_out, rank, generator=g)
                             * scale) for n, (d_out, d_in) in LAYERS.items()}
    head = {"weight": torch.randn(2, 8, generator=g) * 0.05, "bias": torch.zeros(2)}
    rep = {"rank": rank, "samples": 64, "joules": 5.0, "energy_source": "bench", "energy_measured": False,
           "train_s": 1.0, "wall_s": 1.0, "local_accuracy": 0.6, "loss": 0.7} | report
    msg = VehicleUpdate(sender=vid, sent_at=time.time(), task=task, round=round_, rsu=RSU, lora_alpha=16.0,
                        report=UpdateReport.model_construct(**rep))  # type: ignore[arg-type]
    return T.update(vid, RSU, task), encode(msg, pack_lora(layers, head))


def status(vid: str, x: float = 10.0, **kw: object) -> tuple[str, bytes]:
    msg = AgentStatus(sender=vid, sent_at=time.time(), role="vehicle", state="online", tasks=[TASK],
                      position=Position(x=x, y=0.0), velocity=Velocity(vx=0.0, vy=0.0))
    obj = json.loads(msg.model_dump_json()) | kw
    return T.status(Role.VEHICLE, vid), json.dumps(obj).encode()


def rewrite_header(payload: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    (n,) = struct.unpack("<Q", payload[:8])
    st = json.loads(payload[8 : 8 + n])
    header = json.loads(st["__metadata__"][META_KEY])
    edit(header)
    st["__metadata__"][META_KEY] = json.dumps(header)
    raw = json.dumps(st).encode()
    return struct.pack("<Q", len(raw)) + raw + payload[8 + n :]


def hostile_pool(rng: random.Random) -> list[tuple[str, str, bytes]]:
    """(class, topic, payload) templates; the storm cycles through them with fresh random bytes mixed in."""
    pool: list[tuple[str, str, bytes]] = []
    mal = [f"mal{i:03d}" for i in range(200)]
    _, good = update("mal000", 0)
    for _ in range(300):
        cut = rng.randrange(1, len(good))
        pool.append(("truncated", T.update(rng.choice(mal), RSU, TASK), good[:cut]))
        b = bytearray(good)
        for _ in range(rng.randint(1, 20)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        pool.append(("mutated", T.update(rng.choice(mal), RSU, TASK), bytes(b)))
    for _ in range(50):
        v = rng.choice(mal)
        pool.append(("nan_tensor", *update(v, rng.randrange(5), scale=float("nan"))))
        pool.append(("inf_tensor", *update(v, rng.randrange(5), scale=float("inf"))))
        pool.append(("huge_tensor", *update(v, rng.randrange(5), scale=1e20)))
        pool.append(("denormal_tensor", *update(v, rng.randrange(5), scale=1e-42)))
        pool.append(("loss_1e305", *update(v, 0, loss=1e305)))
        pool.append(("samples_1e400", T.update(v, RSU, TASK),
                     rewrite_header(update(v, 0)[1], lambda h: h["report"].__setitem__("samples", 10**400))))
        pool.append(("bad_header_json", T.update(v, RSU, TASK), struct.pack("<Q", 20) + b'{"__metadata__": {{{' +
                     b"\0" * 64))
        pool.append(("duplicate_key", T.update(v, RSU, TASK),
                     good.replace(b'"head.bias":', b'"head.bias":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                                  b'"head.bias":', 1)))
        pool.append(("sender_mismatch", T.update(v, RSU, TASK), update(LEGIT, 0)[1]))
        pool.append(("wrong_rsu", T.update(v, "rsu-other", TASK), update(v, 0)[1]))
    for i in range(5000):
        pool.append(("bogus_task", T.update(rng.choice(mal), RSU, f"bogus{i}"), os.urandom(rng.randint(8, 256))))
    big_header = {f"t{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]} for i in range(20_000)}
    raw = json.dumps(big_header).encode()
    pool.append(("20000_tensors", T.update("mal001", RSU, TASK), struct.pack("<Q", len(raw)) + raw + bytes(80_000)))
    for i in range(200):
        v = mal[i]
        pool.append(("status_x1e200", *status(v, position={"x": 1e200, "y": 0.0})))
        pool.append(("status_5000_tasks", *status(v, tasks=[f"x{j}" for j in range(5000)])))
        pool.append(("status_100kb_detail", *status(v, detail="x" * 100_000)))
        pool.append(("status_future", *status(v, sent_at=time.time() + 1e7)))
        pool.append(("status_bogus_tasks", *status(f"fake{i}", tasks=[f"bogus{i}"])))
        pool.append(("budget_invalid", T.budget("cloud-x", TASK), json.dumps(
            {"kind": "budget", "v": SCHEMA_VERSION, "sender": "cloud-x", "task": TASK, "round": 1, "window_rounds": 1,
             "window_budget_j": 1e300, "round_budget_j": -1}).encode()))
        pool.append(("bad_json", T.status(Role.VEHICLE, v), b"{" * rng.randint(1, 5000)))
    return pool


class Legit:
    """The legitimate vehicle: status every 2 s, one valid update per round that lists it."""

    def __init__(self, port: int) -> None:
        self.bus = MqttBus(MqttOptions(port=port, reconnect_min_s=0.05), LEGIT)
        self.sent: dict[int, float] = {}
        self.stats: list[tuple[float, int, int]] = []  # (t, round, updates)
        self.payloads: list[bytes] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.bus.connect()
        self.bus.subscribe(T.round(RSU, TASK), self._on_round)
        self.bus.subscribe(T.stats(RSU, TASK), self._on_stats)
        threading.Thread(target=self._status_loop, daemon=True).start()

    def _status_loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):  # a publish timeout in the storm: try again next time
                self.bus.publish(*status(LEGIT), qos=1, retain=True)
            self._stop.wait(2.0)

    def _on_round(self, d) -> None:  # type: ignore[no-untyped-def]
        if not d.payload:
            return
        ann = decode(d.payload, RoundAnnouncement).msg
        with self._lock:
            if LEGIT not in ann.participants or ann.round in self.sent:
                return
            self.sent[ann.round] = time.monotonic()
        topic, payload = update(LEGIT, ann.round, seed=ann.round)
        self.payloads.append(payload)
        threading.Thread(target=self._send, args=(topic, payload), daemon=True).start()

    def _send(self, topic: str, payload: bytes) -> None:
        with contextlib.suppress(Exception):  # counted by what the RSU's statistics say
            self.bus.publish(topic, payload, qos=1)

    def _on_stats(self, d) -> None:  # type: ignore[no-untyped-def]
        s = decode(d.payload, TaskStats).msg
        self.stats.append((time.monotonic(), s.round, s.updates))

    def close(self) -> None:
        self._stop.set()
        self.bus.publish(T.status(Role.VEHICLE, LEGIT), b"", qos=1, retain=True)
        self.bus.close()


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:  # loopback only
        return r.read().decode()


def total(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def storm(port: int, pool: list[tuple[str, str, bytes]], n: int, max_s: float, rng: random.Random,
          legit: Legit, oversize: int) -> dict:
    """Publish `n` hostile messages (QoS 0, three clients) within `max_s`; returns counts by class."""
    clients = []
    for i in range(3):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"fuzzer-{i}", protocol=mqtt.MQTTv5)
        c.max_queued_messages_set(2000)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    sent: dict[str, int] = {}
    t0 = time.monotonic()
    big = os.urandom(17 * 1024 * 1024)
    k = 0
    while k < n and time.monotonic() - t0 < max_s:
        r = rng.random()
        if k < oversize and k % max(1, n // max(1, oversize)) == 0:
            cls, topic, payload = "oversize_17MiB", T.update("mal002", RSU, TASK), big
        elif r < 0.25:
            size = min(4 * 1024 * 1024, int(rng.lognormvariate(6, 2.0)) + 1)
            cls, topic, payload = "random_bytes", T.update(f"mal{rng.randrange(200):03d}", RSU, TASK), os.urandom(size)
        elif r < 0.27 and legit.payloads:
            cls, topic, payload = "replay", T.update(LEGIT, RSU, TASK), rng.choice(legit.payloads)
        else:
            cls, topic, payload = rng.choice(pool)
        c = clients[k % 3]
        while c.publish(topic, payload, qos=0).rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            time.sleep(0.001)
        sent[cls] = sent.get(cls, 0) + 1
        k += 1
    for c in clients:
        c.loop_stop()
        c.disconnect()
    return {"sent": k, "seconds": time.monotonic() - t0, "by_class": sent}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--max-seconds", type=float, default=240.0, help="cap on the storm itself")
    ap.add_argument("--oversize", type=int, default=5, help="17 MiB payloads among the messages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    try:
        # No per-client queue cap at the broker: every hostile message reaches the RSU's transport (what the
        # RSU does with a flood is what is measured, not Mosquitto's own drop policy).
        broker = Mosquitto(extra_conf="max_queued_messages 0\n").start()
    except MosquittoUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="fedrank-fuzz-"))
    mport = free_port()
    cfg = config(tmp / "rsu.toml", tmp / "state", broker.port, mport)
    log_path = tmp / "rsu.log"
    logf = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "fedrank", "rsu", "--config", str(cfg)], cwd=REPO,
                            env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=logf, stderr=subprocess.STDOUT)
    legit = Legit(broker.port)
    peak = {"kb": 0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set() and proc.poll() is None:
            peak["kb"] = max(peak["kb"], rss_kb(proc.pid))
            time.sleep(0.05)

    out: dict = {}
    try:
        legit.start()
        end = time.monotonic() + 90
        while time.monotonic() < end and sum(1 for s in legit.stats if s[2] > 0) < 2:
            time.sleep(0.2)
        idle = [rss_kb(proc.pid) for _ in range(20) if time.sleep(0.1) is None]
        idle_kb = max(idle)
        before = scrape(mport)
        log_before = log_path.stat().st_size
        print("pool of hostile templates: building ...", flush=True)
        pool = hostile_pool(rng)
        rounds_before = len(legit.stats)
        threading.Thread(target=sample, daemon=True).start()
        t_storm = time.monotonic()
        sent = storm(broker.port, pool, args.messages, args.max_seconds, rng, legit, args.oversize)
        # the daemon may still be working through its inbox (and the broker through its queue to the daemon):
        # the storm is over when the inbox has stayed empty for two scrapes in a row
        settle_end = time.monotonic() + 180
        empty = 0
        while time.monotonic() < settle_end and empty < 2:
            time.sleep(1.0)
            empty = empty + 1 if total(scrape(mport), "fedrank_inbox_depth") == 0 else 0
        t_drained = time.monotonic()
        during = [s for s in legit.stats if t_storm <= s[0] <= t_drained]
        after_start = time.monotonic()
        end = after_start + 60
        while time.monotonic() < end and sum(1 for s in legit.stats if s[0] > after_start and s[2] > 0) < 3:
            time.sleep(0.2)
        after = [s for s in legit.stats if s[0] > after_start]
        sampling.set()
        final = scrape(mport)
        log_bytes = log_path.stat().st_size - log_before
        names = ("fedrank_updates_rejected_total", "fedrank_messages_rejected_total")
        rejected = sum(total(final, n) - total(before, n) for n in names)
        dropped = {m.group(1): float(m.group(2)) for m in
                   re.finditer(r'^fedrank_dropped_total{what="([^"]+)"} (\S+)$', final, re.M)}
        accepted_by: dict[str, int] = {}
        for line in log_path.read_text(errors="replace").splitlines():
            m = re.search(r"round \d+: accepted (\S+) \(rank", line)
            if m:
                accepted_by[m.group(1)] = accepted_by.get(m.group(1), 0) + 1
        alive = proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        out = {
            "messages_sent": sent["sent"], "storm_s": round(sent["seconds"], 1),
            "drain_s": round(t_drained - t_storm - sent["seconds"], 1), "by_class": sent["by_class"],
            "crashes": int(not alive or code != 0), "exit_code": code,
            "hostile_updates_accepted": sum(n for v, n in accepted_by.items() if v != LEGIT),
            "legit_updates_accepted": accepted_by.get(LEGIT, 0), "legit_updates_sent": len(legit.sent),
            "rounds_closed_before": rounds_before,
            "rounds_closed_during": len(during), "rounds_with_legit_update_during": sum(1 for s in during if s[2] > 0),
            "rounds_closed_after": len(after), "rounds_with_legit_update_after": sum(1 for s in after if s[2] > 0),
            "idle_rss_mb": round(idle_kb / 1024, 1), "peak_rss_mb": round(peak["kb"] / 1024, 1),
            "peak_over_idle": round(peak["kb"] / idle_kb, 2),
            "delivered_to_rsu": int(total(final, "fedrank_messages_received_total")
                                    - total(before, "fedrank_messages_received_total")),
            "rejected": int(rejected), "dropped": dropped,
            "log_bytes": log_bytes, "log_bytes_per_rejection": round(log_bytes / max(1.0, rejected), 2),
            "prometheus_series": sum(1 for ln in final.splitlines() if ln and not ln.startswith("#")),
            "metrics_bytes": len(final),
            "rejections_per_s": round(rejected / max(1e-9, t_drained - t_storm), 1),
        }
    finally:
        legit.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        logf.close()
        broker.stop()
    for k, v in out.items():
        if k != "by_class":
            print(f"{k:34s} {v}")
    print("by class:", json.dumps(out.get("by_class", {}), sort_keys=True))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    return 0 if out and out["crashes"] == 0 and out["hostile_updates_accepted"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
