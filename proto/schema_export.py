"""`fedrank schema --out DIR`: one JSON Schema file per message kind, for non-Python vehicle stacks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proto import SCHEMA_VERSION
from proto.messages import ALL_MESSAGES, Message

COMMITTED_DIR = Path(__file__).parent / "schema"


DRAFT = "https://json-schema.org/draft/2020-12/schema"


def schema_id(kind: str) -> str:
    """A stable identifier (a URN: nothing to fetch) of one kind's schema in this schema version."""
    return f"urn:fedrank:proto:v{SCHEMA_VERSION}:{kind}"


def schema_of(m: type[Message]) -> dict:
    """The model's JSON Schema, made to stand alone: draft and id, `kind` and `v` required constants, `v` an
    integer, `tensors` required on a tensor message (the codec fills it in; a hand-built header must too)."""
    s = m.model_json_schema(mode="validation")
    props = s["properties"]
    props["kind"] = {**props["kind"], "const": m.KIND, "type": "string"}
    props["v"] = {**props["v"], "const": SCHEMA_VERSION, "type": "integer"}
    required = set(s.get("required", [])) | {"kind", "v"}
    if m.HAS_TENSORS:
        required.add("tensors")
        s["x-fedrank-max-abs"] = m.MAX_ABS  # type: ignore[attr-defined]
    s["required"] = sorted(required)
    return {"$schema": DRAFT, "$id": schema_id(m.KIND), **s}


def schemas() -> dict[str, str]:
    """File name -> schema text, deterministic so the committed copies can be compared."""
    return {
        f"{m.KIND}.schema.json": json.dumps(schema_of(m), indent=2, sort_keys=True) + "\n" for m in ALL_MESSAGES
    }


def write(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in schemas().items():
        path = out / name
        path.write_text(text)
        written.append(path)
    return written


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=COMMITTED_DIR, help="output directory (default: proto/schema)")


def run(args: argparse.Namespace) -> int:
    for path in write(args.out):
        print(path)
    return 0
