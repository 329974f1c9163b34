"""Edge daemon footprint: resident memory of an idle `fedrank edge` (before its first round) and while it trains,
against a bare `python -c "import time; time.sleep(5)"` measured in the same run. Goal: idle under 80 MB.

    python bench/bench_edge_footprint.py [--no-minilm] [--rounds N]

Every figure is measured from /proc/PID/status of the daemon process (VmRSS sampled every 50 ms, VmHWM = the
kernel's peak resident set); "torch loaded" is read from /proc/PID/maps (a mapped libtorch*). The daemons run
against a private Mosquitto on loopback; training rounds come from a real `fedrank rsu` process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests/mosquitto.py

import tomli_w  # noqa: E402

from tests.mosquitto import Mosquitto, MosquittoUnavailable  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
MB = 1024 * 1024


def proc_status_kb(pid: int, field: str) -> int:
    """A `VmRSS:   1234 kB` style field of /proc/PID/status, in kB (0 if the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def torch_loaded(pid: int) -> bool:
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


class Sampler(threading.Thread):
    """Peak VmRSS of one process, sampled every 50 ms until stopped."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kb, self._halt = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.peak_kb = max(self.peak_kb, proc_status_kb(self.pid, "VmRSS"))
            time.sleep(0.05)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak_kb


def baseline_rss_kb() -> int:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    time.sleep(1.5)
    kb = proc_status_kb(p.pid, "VmRSS")
    p.terminate()
    p.wait()
    return kb


def edge_doc(work: Path, port: int, model_dir: Path | None, steps: int, batch: int, max_len: int) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": "veh-bench", "state_dir": str(work / "state" / "veh"), "status_interval_s": 1.0,
        "topic_root": f"bench/{work.name}",  # each measurement its own tree: no retained round of the last one
        "broker": {"port": port, "reconnect_min_s": 0.05, "client_id": f"veh-bench-{work.name}"},
        "tasks": [{"name": "t1", "task_type": "sentence"}],
        "local_steps": steps, "batch_size": batch, "max_length": max_len, "threads": 1,
        "position": {"kind": "fixed", "x": 0.0, "y": 0.0}, "energy": {"backend": "auto"}, "log_json": True,
    }
    if model_dir is not None:
        doc["model_dir"] = str(model_dir)
    return doc


def rsu_doc(work: Path, port: int, layers: dict[str, tuple[int, int]], rounds: int) -> dict[str, Any]:
    return {"id": "rsu-bench", "state_dir": str(work / "state" / "rsu"),
            "broker": {"port": port, "client_id": f"rsu-bench-{work.name}"},
            "topic_root": f"bench/{work.name}",
            "join_wait_s": 0.5, "coverage": {"shape": "circle", "cx": 0.0, "cy": 0.0, "radius": 100.0},
            "tasks": [{"name": "t1", "task_type": "sentence", "ranks": [2, 4, 8], "max_rounds": rounds,
                       "layers": {k: list(v) for k, v in layers.items()}, "round_timeout_s": 300.0,
                       "round_gap_s": 0.5, "participant_retry_s": 0.5}]}


def start(role: str, cfg: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fedrank", role, "--config", str(cfg)], cwd=REPO, env=ENV,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)


def stop(p: subprocess.Popen) -> int:
    p.terminate()
    try:
        return p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait()


def measure(name: str, work: Path, port: int, model_dir: Path | None, rounds: int, steps: int, batch: int,
            max_len: int) -> dict[str, Any]:
    """Idle RSS before any round, then peak RSS over `rounds` rounds of training for one model."""
    from edge_agent.model import layer_shapes
    from proto.codec import decode
    from proto.messages import TaskStats
    from proto.mqtt_bus import MqttBus
    from proto.mqtt_options import MqttOptions
    from proto.topics import Topics

    work.mkdir(parents=True)
    edge_cfg = work / "edge.toml"
    edge_cfg.write_text(tomli_w.dumps(edge_doc(work, port, model_dir, steps, batch, max_len)))
    rsu_cfg = work / "rsu.toml"
    rsu_cfg.write_text(tomli_w.dumps(rsu_doc(work, port, layer_shapes(model_dir), rounds)))
    stats: list[int] = []
    obs = MqttBus(MqttOptions(port=port), f"bench-observer-{name}", clean_start=True)
    obs.subscribe(Topics(f"bench/{work.name}").all_stats(),
                  lambda d: stats.append(decode(d.payload, TaskStats).msg.round))
    obs.connect()
    edge = start("edge", edge_cfg, work / "edge.log")
    out: dict[str, Any] = {"model": name}
    try:
        time.sleep(6.0)  # settled: connected, status published, nothing else to do
        out["idle_rss_kb"] = proc_status_kb(edge.pid, "VmRSS")
        out["idle_torch"] = torch_loaded(edge.pid)
        sampler = Sampler(edge.pid)
        sampler.start()
        rsu = start("rsu", rsu_cfg, work / "rsu.log")
        t0 = time.monotonic()
        while len(set(stats)) < rounds and time.monotonic() - t0 < 600 and edge.poll() is None:
            time.sleep(0.1)
        out["rounds_done"] = len(set(stats))
        out["train_wall_s"] = time.monotonic() - t0
        out["train_peak_rss_kb"] = sampler.stop()
        out["hwm_kb"] = proc_status_kb(edge.pid, "VmHWM")
        out["train_torch"] = torch_loaded(edge.pid)
        out["rsu_exit"] = stop(rsu)
    finally:
        out["edge_exit"] = stop(edge)
        obs.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-minilm", action="store_true", help="only the tiny model")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    try:
        broker = Mosquitto().start()
    except MosquittoUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    from fleet.tiny_model import make_tiny_bert

    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="fedrank-footprint-") as tmp:
            work = Path(tmp)
            base_kb = baseline_rss_kb()
            tiny = make_tiny_bert(work / "tiny-bert")
            results.append(measure("tiny", work / "tiny", broker.port, tiny, args.rounds, 2, 8, 24))
            if not args.no_minilm:
                results.append(measure("minilm-l6", work / "minilm", broker.port, None, args.rounds, 5, 16, 64))
    finally:
        broker.cleanup()
    print("Edge daemon footprint (measured: /proc/PID/status of the `fedrank edge` process; 1 torch thread)")
    print(f"  baseline `python -c 'import time; time.sleep(5)'`: VmRSS {base_kb / 1024:.1f} MB")
    for r in results:
        idle, peak = r["idle_rss_kb"] / 1024, r["train_peak_rss_kb"] / 1024
        print(f"  [{r['model']}] idle before first round: VmRSS {idle:.1f} MB (torch loaded: {r['idle_torch']}); "
              f"{'PASS' if idle < 80 else 'FAIL'} goal < 80 MB")
        print(f"  [{r['model']}] training, {r['rounds_done']} rounds in {r['train_wall_s']:.1f} s: peak VmRSS "
              f"{peak:.1f} MB, VmHWM {r['hwm_kb'] / 1024:.1f} MB (torch loaded: {r['train_torch']})")
        print(f"  [{r['model']}] ratio idle / training peak = {idle / peak:.3f}; idle / bare python = "
              f"{idle / (base_kb / 1024):.2f}; exits edge={r['edge_exit']} rsu={r['rsu_exit']}")
    ok = all(r["idle_rss_kb"] < 80 * 1024 and not r["idle_torch"] and r["rounds_done"] >= args.rounds
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
