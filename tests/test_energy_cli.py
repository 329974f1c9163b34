"""`fedrank energy --json`: honest fallback and the fields other tools read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_sysfs import NVML_ERROR_LIBRARY_NOT_FOUND, FakeNvml, RaplTree

from edge_agent.energy import nvml as nvml_backend
from fedrank.cli import main

REQUIRED = {"source", "measured", "domains", "joules", "seconds", "watts", "tried"}


def test_json_on_a_machine_without_meters_falls_back_to_the_labelled_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDRANK_SYSFS_ROOT", str(tmp_path))
    monkeypatch.setattr(nvml_backend, "load_nvml", lambda: FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND))
    assert main(["energy", "--json", "--seconds", "0.05"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= REQUIRED
    assert out["source"] == "estimate-cpu-time" and out["measured"] is False
    assert "not measured" in out["provenance"]
    assert [t["backend"] for t in out["tried"]] == ["jetson", "nvml", "rapl"]
    assert all(t["reason"] for t in out["tried"])
    assert out["seconds"] >= 0.05


def test_json_reports_rapl_from_a_fake_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    RaplTree(tmp_path).add_zone("intel-rapl:0", "package-0", energy_uj=1000)
    monkeypatch.setenv("FEDRANK_SYSFS_ROOT", str(tmp_path))
    assert main(["energy", "--json", "--seconds", "0.05", "--backend", "rapl"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "rapl" and out["measured"] is True and out["domains"] == ["package-0"]
    assert out["joules"] == 0.0  # the fake counter did not move


def test_forced_backend_missing_exits_1_with_the_reason_as_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FEDRANK_SYSFS_ROOT", str(tmp_path))
    assert main(["energy", "--json", "--backend", "jetson"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["tried"][0]["backend"] == "jetson" and "not a Jetson" in out["tried"][0]["reason"]


def test_this_machine_real_sysfs_and_nvml() -> None:
    env = {k: v for k, v in os.environ.items() if k != "FEDRANK_SYSFS_ROOT"}
    proc = subprocess.run([sys.executable, "-m", "fedrank", "energy", "--json", "--seconds", "0.2"],
                          capture_output=True, text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) >= REQUIRED
    if out["source"] == "estimate-cpu-time":  # no meter here: every better backend must say why
        assert out["measured"] is False
        assert [t["backend"] for t in out["tried"]] == ["jetson", "nvml", "rapl"]
    else:
        assert out["measured"] is True


def test_importing_the_energy_package_does_not_import_torch_or_vendor_libraries() -> None:
    code = "import sys, edge_agent.energy.cli; print(sorted(m for m in ('torch', 'pynvml') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"


def test_bad_seconds_is_an_argument_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["energy", "--seconds", "-1"])
    assert info.value.code == 2
