"""`fedrank schema --out DIR`: one JSON Schema file per message kind, for non-Python vehicle stacks."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from proto.messages import ALL_MESSAGES

COMMITTED_DIR = Path(__file__).parent / "schema"


def schemas() -> dict[str, str]:
    """File name -> schema text, deterministic so the committed copies can be compared."""
    return {
        f"{m.KIND}.schema.json": json.dumps(m.model_json_schema(mode="validation"), indent=2, sort_keys=True)
        + "\n"
        for m in ALL_MESSAGES
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
