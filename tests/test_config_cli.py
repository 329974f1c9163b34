"""`fedrank config`: generated examples parse, load through load_settings, document every field, and the
checked-in systemd/<role>.example.toml files stay equal to what the command prints."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field

from fedrank import config_cli
from fedrank.config_cli import ROLES, render_example, settings_class
from fedrank.settings import AgentSettings, ConfigError, load_settings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pydantic-settings reads TOML with tomli before 3.11
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]


class _Disc(BaseModel):
    shape: Literal["disc"] = "disc"
    radius: float = Field(gt=0, description="radius, metres")


class _Box(BaseModel):
    shape: Literal["box"] = "box"
    side: float = Field(1.0, gt=0, description="side, metres")


class _Job(BaseModel):
    name: str = Field(pattern=r"^[a-z0-9]+$", description="job name")
    kind: Literal["a", "b"] = Field(description="job kind")
    weights: dict[str, tuple[int, int]] = Field(min_length=1, description="layer -> (d_out, d_in)")
    retries: int = Field(3, ge=0, description="how often to retry")
    note: str | None = Field(None, description="free text")


class _Sub(BaseModel):
    level: int = Field(2, description="nested level")
    tags: list[str] = Field(["x", "y"], description="nested tags")


class _LocalSettings(AgentSettings):
    ROLE: ClassVar[str] = "local"

    area: Annotated[_Disc | _Box, Field(discriminator="shape")] = Field(description="the area")
    jobs: list[_Job] = Field(min_length=1, description="jobs to run")
    sub: _Sub = Field(default_factory=_Sub, description="a nested table")
    threshold: float = Field(0.5, gt=0, description="a float with\na two-line description")
    mode: Literal["fast", "slow"] = Field("slow", description="speed")
    limit: int | None = Field(None, ge=10, description="optional limit")
    label: str = Field(examples=["from-the-field"], description="required, with its own example")


_LOCAL_HINTS = {
    "id": "local-1",
    "area": {"shape": "disc", "radius": 5.0},
    "jobs": [{"name": "j1", "kind": "b", "weights": {"enc.layer.0.q": [4, 8]}}],
    "label": "ignored-because-the-field-has-examples",
}


def _write(tmp_path: Path, text: str, name: str = "c.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_local_model_example_parses_and_loads_with_defaults_and_hints(tmp_path: Path) -> None:
    text = render_example(_LocalSettings, _LOCAL_HINTS)
    data = tomllib.loads(text)
    assert data["id"] == "local-1"
    assert data["area"] == {"shape": "disc", "radius": 5.0}
    assert data["jobs"] == [{"name": "j1", "kind": "b", "retries": 3, "weights": {"enc.layer.0.q": [4, 8]}}]
    assert data["sub"] == {"level": 2, "tags": ["x", "y"]}
    assert data["label"] == "from-the-field"
    assert "limit" not in data and "note" not in data["jobs"][0]  # unset by default: commented out
    s = load_settings(_LocalSettings, _write(tmp_path, text))
    assert s.jobs[0].weights == {"enc.layer.0.q": (4, 8)}
    assert s.threshold == 0.5 and s.mode == "slow" and s.limit is None
    assert s.broker.port == 1883 and s.broker.tls is None
    assert s.state_dir == Path("/var/lib/fedrank")


def test_every_field_is_preceded_by_its_description(tmp_path: Path) -> None:
    lines = render_example(_LocalSettings, _LOCAL_HINTS).splitlines()

    def comment_block_before(key_re: str) -> list[str]:
        i = next(i for i, line in enumerate(lines) if re.match(key_re, line))
        block = []
        for line in reversed(lines[:i]):
            if not line.startswith("#"):
                break
            block.append(line)
        return block[::-1]

    assert comment_block_before(r"^threshold = ") == ["# a float with", "# a two-line description"]
    assert comment_block_before(r"^retries = 3$") == ["# how often to retry"]
    assert comment_block_before(r"^# limit = 10   # unset by default$") == ["# optional limit"]
    assert "# REQUIRED: example value, replace it" in comment_block_before(r"^id = ")
    for name, info in AgentSettings.model_fields.items():
        if name != "broker":
            assert f"# {info.description}" in lines, name


def test_union_member_is_picked_by_its_tag() -> None:
    hints = {**_LOCAL_HINTS, "area": {"shape": "box", "side": 2.0}}
    assert tomllib.loads(render_example(_LocalSettings, hints))["area"] == {"shape": "box", "side": 2.0}


def test_without_hints_placeholders_still_load(tmp_path: Path) -> None:
    text = render_example(AgentSettings)
    assert tomllib.loads(text)["id"] == "CHANGE-ME"
    assert load_settings(AgentSettings, _write(tmp_path, text)).id == "CHANGE-ME"


def test_uncommenting_the_tls_table_enables_mutual_tls(tmp_path: Path) -> None:
    lines = render_example(AgentSettings, {"id": "veh-9"}).splitlines()
    start = lines.index("# [broker.tls]")
    out = list(lines)
    for i in range(start, len(lines)):
        if lines[i].startswith("# ") and not lines[i].startswith("# # "):
            out[i] = lines[i][2:]
        elif lines[i] and not lines[i].startswith("#"):
            break
    s = load_settings(AgentSettings, _write(tmp_path, "\n".join(out)))
    assert s.broker.tls is not None
    assert s.broker.tls.ca_file == Path("/etc/fedrank/tls/ca.crt")
    assert s.broker.tls.cert_file == Path("/etc/fedrank/tls/veh-9.crt")
    assert s.broker.tls.key_file == Path("/etc/fedrank/tls/veh-9.key")


def test_unknown_role_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown role 'plane'"):
        settings_class("plane")


@pytest.mark.parametrize("role", sorted(ROLES))
def test_checked_in_example_matches_the_generator_and_loads(role: str) -> None:
    try:
        cls = settings_class(role)
    except ConfigError as exc:
        pytest.skip(f"{role} settings not in this build yet: {exc}")
    path = REPO / "systemd" / f"{role}.example.toml"
    expected = render_example(cls, config_cli.HINTS[role])
    assert path.is_file(), f"missing {path}; run: fedrank config --role {role} --out {path.relative_to(REPO)}"
    assert path.read_text() == expected, (
        f"{path.name} is stale; regenerate: fedrank config --role {role} --out {path.relative_to(REPO)}"
    )
    settings = load_settings(cls, path)
    assert settings.id == config_cli.HINTS[role]["id"]


def _args(**kw: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    config_cli.add_arguments(parser)
    argv: list[str] = []
    for k, v in kw.items():
        argv += [f"--{k}", str(v)]
    return parser.parse_args(argv)


def test_cli_writes_the_example_and_checks_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    role = next((r for r in ("edge", "rsu", "cloud") if _importable(r)), None)
    if role is None:
        pytest.skip("no role settings in this build yet")
    out = tmp_path / "x.toml"
    assert config_cli.run(_args(role=role, out=out)) == 0
    assert out.read_text() == render_example(settings_class(role), config_cli.HINTS[role])
    assert config_cli.run(_args(role=role, check=out)) == 0
    assert "valid" in capsys.readouterr().out
    bad = _write(tmp_path, out.read_text().replace('topic_root = "fedrank/v1"', "topic_root = 7"), "bad.toml")
    assert config_cli.run(_args(role=role, check=bad)) == 2
    err = capsys.readouterr().err
    assert "topic_root" in err and "bad.toml" in err


def _importable(role: str) -> bool:
    try:
        settings_class(role)
    except ConfigError:
        return False
    return True
