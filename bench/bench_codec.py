"""Codec throughput: fedrank encode+decode vs torch.save + torch.load(weights_only=True), same tensors, same run.

Payloads are realistic LoRA updates (`{layer}.lora_A` (eta, d_in), `{layer}.lora_B` (d_out, eta), `head.*`):
  - MiniLM-L6 q,v: 6 layers x 2 modules, 384x384, ranks 1..32, a 2-class head;
  - BERT-base q,k,v,o: 12 layers x 4 modules, 768x768, rank 16, a 2-class head.
Both paths start from the same fp32 tensors and cast to the wire dtype (F32 or F16) inside the timed region.
fedrank's decode also validates the header, names, dtypes, shapes and finiteness; torch.load checks none of that.
MB/s counts tensor bytes in the wire dtype (numel x element size) per encode+decode round trip; the ratio is
fedrank MB/s / torch MB/s (above 1: fedrank faster). Timings are measured here (time.perf_counter, median).

    python bench/bench_codec.py [--budget-s 0.4] [--threads 1]
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source tree without an install

from proto.codec import WIRE_DTYPES, decode, encode
from proto.messages import UpdateReport, VehicleUpdate

MSG = VehicleUpdate(
    sender="veh-1",
    task="sst2",
    round=1,
    rsu="rsu_1",
    lora_alpha=16.0,
    report=UpdateReport(
        rank=1,
        samples=256,
        joules=12.0,
        energy_source="estimate-cpu-time",
        energy_measured=False,
        train_s=10.0,
        wall_s=11.0,
        local_accuracy=0.8,
        loss=0.4,
    ),
)


def lora_payload(layers: int, modules: list[str], d: int, eta: int, classes: int = 2) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(eta)
    out: dict[str, torch.Tensor] = {}
    for i in range(layers):
        for m in modules:
            name = f"encoder.layer.{i}.attention.{m}"
            out[f"{name}.lora_A"] = torch.randn(eta, d, generator=g) * 0.02  # (eta, d_in)
            out[f"{name}.lora_B"] = torch.randn(d, eta, generator=g) * 0.02  # (d_out, eta)
    out["head.weight"] = torch.randn(classes, d, generator=g) * 0.02  # (classes, d)
    out["head.bias"] = torch.zeros(classes)
    return out


def paired_medians(
    a: Callable[[], object], b: Callable[[], object], budget_s: float, min_reps: int = 5
) -> tuple[float, float]:
    """Median seconds of `a` and of `b`, run alternately so that load from other processes hits both alike."""
    a(), b()  # warm-up (allocator, lazy imports)
    ta: list[float] = []
    tb: list[float] = []
    start = time.perf_counter()
    while len(ta) < min_reps or time.perf_counter() - start < 2 * budget_s:
        for fn, times in ((a, ta), (b, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb)


def fedrank_roundtrip(tensors: dict[str, torch.Tensor], dtype: str) -> Callable[[], int]:
    def run() -> int:
        payload = encode(MSG, tensors, dtype=dtype)
        out = decode(payload, VehicleUpdate, max_bytes=1 << 30)
        assert len(out.tensors) == len(tensors)
        return len(payload)

    return run


def torch_roundtrip(tensors: dict[str, torch.Tensor], dtype: str) -> Callable[[], int]:
    wire = WIRE_DTYPES[dtype]

    def run() -> int:
        buf = io.BytesIO()
        torch.save({k: t.to(wire).contiguous() for k, t in tensors.items()}, buf)
        size = buf.tell()
        buf.seek(0)
        out = torch.load(buf, weights_only=True)
        assert len(out) == len(tensors)
        return size

    return run


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget-s", type=float, default=0.4, help="timing budget per case and path (seconds)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier figures on a shared box)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    cases = [(f"MiniLM-L6 q,v r={eta}", lora_payload(6, ["query", "value"], 384, eta)) for eta in (1, 2, 4, 8, 16, 32)]
    cases.append(("BERT-base q,k,v,o r=16", lora_payload(12, ["query", "key", "value", "output"], 768, 16)))

    cpu = platform.processor() or platform.machine()
    print(f"# bench_codec: torch {torch.__version__}, {args.threads} thread(s), {cpu}")
    print("# measured: wall time (time.perf_counter), median per encode+decode round trip")
    header = f"{'payload':<24} {'dtype':<5} {'tensor MB':>9} {'wire KB':>9} {'torch KB':>9}"
    print(header + f" {'fedrank MB/s':>12} {'torch MB/s':>10} {'ratio':>6}")
    ratios: list[float] = []
    for label, tensors in cases:
        for dtype in ("F32", "F16"):
            elem = torch.empty(0, dtype=WIRE_DTYPES[dtype]).element_size()
            mb = sum(t.numel() for t in tensors.values()) * elem / 1e6
            ours, theirs = fedrank_roundtrip(tensors, dtype), torch_roundtrip(tensors, dtype)
            wire_bytes, torch_bytes = ours(), theirs()
            t_ours, t_theirs = paired_medians(ours, theirs, args.budget_s)
            ratio = t_theirs / t_ours  # = (mb / t_ours) / (mb / t_theirs)
            ratios.append(ratio)
            print(
                f"{label:<24} {dtype:<5} {mb:>9.3f} {wire_bytes / 1e3:>9.1f} {torch_bytes / 1e3:>9.1f}"
                f" {mb / t_ours:>12.1f} {mb / t_theirs:>10.1f} {ratio:>6.2f}"
            )
    geo = statistics.geometric_mean(ratios)
    print(f"# geometric mean ratio fedrank/torch over {len(ratios)} cases: {geo:.2f} (above 1: fedrank faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
