"""`fedrank --help`, `--version` and `fedrank schema`, run as a user would (a subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fedrank import __version__
from fedrank.cli import COMMANDS, main
from proto.schema_export import schemas

ROOT = Path(__file__).resolve().parents[1]


def fedrank(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedrank", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def test_help_lists_every_subcommand_and_exits_zero() -> None:
    r = fedrank("--help")
    assert r.returncode == 0, r.stderr
    for name, (_, help_text) in COMMANDS.items():
        assert name in r.stdout
        assert help_text in r.stdout


def test_version_prints_the_package_version() -> None:
    r = fedrank("--version")
    assert r.returncode == 0
    assert r.stdout.strip() == f"fedrank {__version__}"


def test_help_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "from fedrank.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.stdout.strip().splitlines()[-1] == "False", r.stdout + r.stderr


def test_an_unknown_or_missing_command_is_a_usage_error() -> None:
    r = fedrank("teleport")
    assert r.returncode == 2
    assert "invalid choice" in r.stderr
    assert fedrank().returncode == 2


def test_schema_writes_every_kind_into_the_given_directory(tmp_path: Path) -> None:
    out = tmp_path / "schemas"
    r = fedrank("schema", "--out", str(out))
    assert r.returncode == 0, r.stderr
    expected = schemas()
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    for name, text in expected.items():
        assert (out / name).read_text() == text
    assert sorted(Path(line).name for line in r.stdout.split()) == sorted(expected)  # one path per line


def test_schema_in_process_returns_zero(tmp_path: Path) -> None:
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.schema.json"))) == len(schemas())


def test_schema_help_documents_out() -> None:
    r = fedrank("schema", "--help")
    assert r.returncode == 0
    assert "--out" in r.stdout



def _no_wait_policy(monkeypatch) -> None:
    monkeypatch.setenv("OMP_WAIT_POLICY", "unset")  # so that teardown restores the real environment
    monkeypatch.delenv("OMP_WAIT_POLICY")


def test_openmp_waits_passively_unless_the_user_chose(monkeypatch) -> None:
    from fedrank.cli import passive_omp

    _no_wait_policy(monkeypatch)
    passive_omp()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_omp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_wait_policy_is_set_before_the_command_module_loads(monkeypatch, tmp_path: Path) -> None:
    """libgomp reads it once, when torch loads it: the command's module (which may import torch) must see it."""
    import importlib

    seen: dict[str, str | None] = {}
    real = importlib.import_module

    def spy(name: str, *args: object) -> object:
        seen[name] = os.environ.get("OMP_WAIT_POLICY")
        return real(name, *args)

    _no_wait_policy(monkeypatch)
    monkeypatch.setattr("fedrank.cli.importlib.import_module", spy)
    assert main(["schema", "--out", str(tmp_path)]) == 0
    assert seen == {"proto.schema_export": "PASSIVE"}
