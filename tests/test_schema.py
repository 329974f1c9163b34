"""The committed JSON Schemas in proto/schema/ are exactly what the models export today."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from proto.messages import ALL_MESSAGES, Message
from proto.schema_export import COMMITTED_DIR, schemas, write

REGENERATE = "stale JSON Schemas: run `fedrank schema --out proto/schema` (or `make schema`) and commit the result"


def stale_files(directory: Path) -> list[str]:
    """Names whose committed text differs from the export, is missing, or has no message behind it."""
    fresh = schemas()
    on_disk = {p.name for p in directory.glob("*.json")}
    stale = sorted(
        n for n, text in fresh.items() if not (directory / n).is_file() or (directory / n).read_text() != text
    )
    return stale + sorted(on_disk - set(fresh))


def test_committed_schemas_are_not_stale() -> None:
    assert stale_files(COMMITTED_DIR) == [], REGENERATE


def test_the_staleness_check_notices_an_edit_a_missing_file_and_a_leftover(tmp_path: Path) -> None:
    copy = tmp_path / "schema"
    shutil.copytree(COMMITTED_DIR, copy)
    assert stale_files(copy) == []
    (copy / "budget.schema.json").write_text((copy / "budget.schema.json").read_text().replace("Window", "Widow"))
    (copy / "command.schema.json").unlink()
    (copy / "old_kind.schema.json").write_text("{}")
    assert stale_files(copy) == ["budget.schema.json", "command.schema.json", "old_kind.schema.json"]


def test_export_writes_one_file_per_kind(tmp_path: Path) -> None:
    written = write(tmp_path / "out")
    assert sorted(p.name for p in written) == sorted(f"{m.KIND}.schema.json" for m in ALL_MESSAGES)
    assert stale_files(tmp_path / "out") == []


def test_export_is_deterministic() -> None:
    assert schemas() == schemas()


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.KIND)
def test_each_schema_pins_kind_and_version_and_requires_the_identity_fields(cls: type[Message]) -> None:
    schema = json.loads((COMMITTED_DIR / f"{cls.KIND}.schema.json").read_text())
    props = schema["properties"]
    assert props["kind"]["const"] == cls.KIND
    assert props["v"]["const"] == 2
    assert "sender" in schema["required"]
    assert props["seq"]["minimum"] == 0
    # Ids become topic levels, so the schema carries the same alphabet as proto/topics.py.
    assert props["sender"]["pattern"] == r"^[A-Za-z0-9_.\-]{1,64}$"
    if cls.HAS_TENSORS:
        spec = schema["$defs"]["TensorSpec"]["properties"]
        assert spec["dtype"]["enum"] == ["F32", "F16", "BF16"]
        assert props["tensors"]["additionalProperties"] == {"$ref": "#/$defs/TensorSpec"}


def test_required_fields_match_the_models() -> None:
    for cls in ALL_MESSAGES:
        schema = json.loads((COMMITTED_DIR / f"{cls.KIND}.schema.json").read_text())
        required = {name for name, f in cls.model_fields.items() if f.is_required()}
        assert set(schema["required"]) == required, cls.KIND
