"""detect_meter: the order backends are tried in, and the reasons recorded for those not used."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_sysfs import NVML_ERROR_LIBRARY_NOT_FOUND, FakeGpu, FakeNvml, JetsonHwmonTree, RaplTree

from edge_agent.energy import ORDER, EnergyConfig, MeterUnavailable, detect_meter


def _no_nvml() -> FakeNvml:
    return FakeNvml([], init_error=NVML_ERROR_LIBRARY_NOT_FOUND)


def test_order_is_jetson_nvml_rapl_estimate() -> None:
    assert ORDER == ("jetson", "nvml", "rapl", "estimate")


def test_jetson_board_rail_wins_over_a_partial_nvml(tmp_path: Path) -> None:
    JetsonHwmonTree(tmp_path).add_chip(["VDD_IN"])
    nv = FakeNvml([FakeGpu(energy_mj=None, power_mw=1000)])
    meter = detect_meter(EnergyConfig(sysfs_root=tmp_path), nvml_module=nv)
    assert meter.source == "jetson-ina3221" and meter.tried == []


def test_nvml_wins_over_rapl_and_records_why_jetson_was_not_used(tmp_path: Path) -> None:
    RaplTree(tmp_path).add_zone("intel-rapl:0", "package-0")
    meter = detect_meter(EnergyConfig(sysfs_root=tmp_path), nvml_module=FakeNvml([FakeGpu(energy_mj=0)]))
    assert meter.source == "nvml"
    assert [t["backend"] for t in meter.tried] == ["jetson"]
    assert "not a Jetson" in meter.tried[0]["reason"]


def test_rapl_when_no_gpu_and_estimate_when_nothing(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path / "x86")
    tree.add_zone("intel-rapl:0", "package-0")
    meter = detect_meter(EnergyConfig(sysfs_root=tmp_path / "x86"), nvml_module=_no_nvml())
    assert meter.source == "rapl"
    assert [t["backend"] for t in meter.tried] == ["jetson", "nvml"]
    assert "Library Not Found" in meter.tried[1]["reason"]

    bare = detect_meter(EnergyConfig(sysfs_root=tmp_path / "bare"), nvml_module=_no_nvml(), cpu_seconds=lambda: 1.0)
    assert bare.source == "estimate-cpu-time" and bare.measured is False
    assert [t["backend"] for t in bare.tried] == ["jetson", "nvml", "rapl"]
    assert "no powercap sysfs" in bare.tried[2]["reason"]


def test_root_only_rapl_falls_back_with_the_permission_fix_as_reason(tmp_path: Path) -> None:
    RaplTree(tmp_path).add_zone("intel-rapl:0", "package-0")

    def read_text(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    meter = detect_meter(EnergyConfig(sysfs_root=tmp_path), nvml_module=_no_nvml(), read_text=read_text,
                         cpu_seconds=lambda: 0.0)
    assert meter.source == "estimate-cpu-time"
    assert "CAP_DAC_READ_SEARCH" in meter.tried[2]["reason"]


def test_sysfs_root_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    JetsonHwmonTree(tmp_path).add_chip(["VDD_IN"])
    monkeypatch.setenv("FEDRANK_SYSFS_ROOT", str(tmp_path))
    assert detect_meter(EnergyConfig(), nvml_module=_no_nvml()).source == "jetson-ina3221"


def test_a_configured_backend_that_cannot_work_is_an_error_not_a_silent_fallback(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable) as info:
        detect_meter(EnergyConfig(backend="rapl", sysfs_root=tmp_path), nvml_module=_no_nvml())
    assert info.value.backend == "rapl" and "no powercap sysfs" in info.value.reason


def test_configured_estimate_uses_the_configured_figures(tmp_path: Path) -> None:
    meter = detect_meter(EnergyConfig(backend="estimate", watts_per_core=7.5, idle_watts=2.0, sysfs_root=tmp_path))
    assert meter.describe()["model"] == {"watts_per_core": 7.5, "idle_watts": 2.0}
