"""A third-party vehicle written from `proto/schema/*.json` and `proto/README.md` alone.

No fedrank import (tests/test_conformance.py checks): plain `json`, `jsonschema`, `numpy`, `safetensors.numpy`
and paho-mqtt, as a vendor's stack in another language would use their equivalents. What it knows comes from
the README: the topic tree, the safetensors envelope (the JSON header under the metadata key `fedrank`, `tensors`
declaring every tensor's shape and dtype) and the tensor naming (`{layer}.lora_A` (eta, d_in), `{layer}.lora_B`
(d_out, eta), `head.*`), with the layer dims and head shapes the round announces.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
from safetensors.numpy import save

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "proto" / "schema"
ROOT = "fedrank/v1"  # README: the default topic root
META_KEY = "fedrank"  # README: the safetensors metadata key holding the JSON header


def schema(kind: str) -> dict:
    return json.loads((SCHEMA_DIR / f"{kind}.schema.json").read_text())


def version() -> int:
    """The schema version, as the schemas pin it (`v` is a required constant)."""
    return int(schema("update")["properties"]["v"]["const"])


def validated(obj: dict) -> dict:
    """`obj` checked against its kind's schema (raises jsonschema.ValidationError)."""
    jsonschema.validate(obj, schema(obj["kind"]), cls=jsonschema.Draft202012Validator)
    return obj


def status_payload(vehicle: str, x: float, y: float, task: str, now: float) -> tuple[str, bytes]:
    obj = {"kind": "status", "v": version(), "sender": vehicle, "sent_at": now, "seq": 1, "role": "vehicle",
           "state": "online", "tasks": [task], "position": {"x": x, "y": y}, "velocity": {"vx": 0.0, "vy": 0.0}}
    return f"{ROOT}/status/vehicle/{vehicle}", json.dumps(validated(obj)).encode()


def read_header(blob: bytes) -> dict:
    """The JSON header of a safetensors-enveloped message (the round announcement)."""
    (n,) = struct.unpack("<Q", blob[:8])
    st_header = json.loads(blob[8 : 8 + n])
    return validated(json.loads(st_header["__metadata__"][META_KEY]))


def update_payload(vehicle: str, announcement: dict, rank: int, now: float, seed: int = 0) -> tuple[str, bytes]:
    """An update for the announced round: rank-`rank` LoRA factors of every announced layer, a head."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for layer in announcement["layers"]:
        d_out, d_in = announcement["dims"][layer]
        tensors[f"{layer}.lora_A"] = (rng.standard_normal((rank, d_in)) * 0.05).astype(np.float32)
        tensors[f"{layer}.lora_B"] = (rng.standard_normal((d_out, rank)) * 0.05).astype(np.float32)
    head = announcement.get("head") or {"head.weight": [2, 8], "head.bias": [2]}  # {} = the first update sets it
    for name, shape in head.items():
        tensors[name] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    header: dict[str, Any] = {
        "kind": "update", "v": version(), "sender": vehicle, "sent_at": now, "seq": 2,
        "task": announcement["task"], "round": announcement["round"], "rsu": announcement["sender"],
        "lora_alpha": announcement["lora_alpha"],
        "report": {"rank": rank, "samples": 64, "joules": 12.5, "energy_source": "vendor-meter",
                   "energy_measured": True, "train_s": 3.0, "upload_s": 0.1, "wall_s": 3.2,
                   "local_accuracy": 0.61, "loss": 0.7, "steps": 8},
        "tensors": {k: {"shape": list(t.shape), "dtype": "F32"} for k, t in tensors.items()},
    }
    payload = save(tensors, metadata={META_KEY: json.dumps(validated(header))})
    topic = f"{ROOT}/vehicle/{vehicle}/update/{announcement['sender']}/{announcement['task']}"
    return topic, payload


def run(port: int, vehicle: str, rsu: str, task: str, timeout_s: float = 60.0) -> dict:
    """Join `rsu`'s round of `task` over MQTT, upload one update, return the RSU's task statistics for it."""
    import paho.mqtt.client as mqtt

    got: dict[str, bytes] = {}
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=vehicle, protocol=mqtt.MQTTv5)
    c.on_message = lambda _c, _u, m: got.__setitem__(m.topic, bytes(m.payload))
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        c.subscribe([(f"{ROOT}/rsu/{rsu}/round/{task}", 1), (f"{ROOT}/rsu/{rsu}/stats/{task}", 1),
                     (f"{ROOT}/rsu/{rsu}/command/{vehicle}", 1)])
        topic, payload = status_payload(vehicle, 10.0, 0.0, task, time.time())
        c.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
        end = time.monotonic() + timeout_s
        announcement = None
        while time.monotonic() < end:
            raw = got.get(f"{ROOT}/rsu/{rsu}/round/{task}")
            if raw:
                header = read_header(raw)
                if vehicle in header["participants"]:
                    announcement = header
                    break
            time.sleep(0.05)
        if announcement is None:
            raise TimeoutError(f"no round of {task} listing {vehicle} within {timeout_s} s")
        rank = announcement["ranks"][0]
        topic, payload = update_payload(vehicle, announcement, rank, time.time())
        c.publish(topic, payload, qos=1).wait_for_publish(10)
        while time.monotonic() < end:
            raw = got.get(f"{ROOT}/rsu/{rsu}/stats/{task}")
            if raw:
                stats = validated(json.loads(raw))
                if stats["round"] == announcement["round"]:
                    return {"stats": stats, "announcement": announcement,
                            "notices": got.get(f"{ROOT}/rsu/{rsu}/command/{vehicle}")}
            time.sleep(0.05)
        raise TimeoutError(f"no statistics for round {announcement['round']}; notices: "
                           f"{got.get(f'{ROOT}/rsu/{rsu}/command/{vehicle}')!r}")
    finally:
        c.publish(f"{ROOT}/status/vehicle/{vehicle}", b"", qos=1, retain=True).wait_for_publish(5)
        c.loop_stop()
        c.disconnect()
