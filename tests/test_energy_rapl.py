"""RAPL meter on fake powercap trees: what is counted, wrap-around, and the root-only energy_uj message."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_sysfs import FakeClock, RaplTree

from edge_agent.energy.meter import MeterUnavailable
from edge_agent.energy.rapl import RaplMeter, discover_zones


def _server(root: Path) -> RaplTree:
    tree = RaplTree(root)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=5_000_000)
    tree.add_zone("intel-rapl:0:0", "core", energy_uj=1_000_000)
    tree.add_zone("intel-rapl:0:1", "dram", energy_uj=2_000_000)
    tree.add_zone("intel-rapl:1", "package-1", energy_uj=7_000_000)
    return tree


def test_packages_and_dram_are_counted_and_core_is_reported_inside_the_package(tmp_path: Path) -> None:
    tree = _server(tmp_path)
    clock = FakeClock()
    meter = RaplMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        tree.set_energy("intel-rapl:0", 5_000_000 + 30_000_000)  # +30 J
        tree.set_energy("intel-rapl:0:0", 1_000_000 + 20_000_000)  # +20 J, already inside package-0
        tree.set_energy("intel-rapl:0:1", 2_000_000 + 4_000_000)  # +4 J, outside the package
        tree.set_energy("intel-rapl:1", 7_000_000 + 10_000_000)  # +10 J
        clock.advance(2.0)
        m = span.stop()
    assert set(m.domains) == {"package-0", "dram-0", "package-1"}
    assert m.joules == pytest.approx(30 + 4 + 10)
    assert m.sub_joules == pytest.approx({"core-0": 20.0})
    assert m.seconds == 2.0
    assert m.watts == pytest.approx((30 + 4 + 10) / 2.0)
    assert m.source == "rapl" and m.measured is True
    assert sum(m.domain_joules.values()) == pytest.approx(m.joules)


def test_several_wraps_between_span_reads_are_all_counted_when_polled(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=900_000, max_range_uj=1_000_000)  # wraps every 1 J
    clock = FakeClock()
    meter = RaplMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        raw = 900_000
        for _ in range(5):  # +0.6 J per poll: 900k -> 500k -> 100k -> 700k -> 300k -> 900k, three wraps
            raw = (raw + 600_000) % 1_000_000
            tree.set_energy("intel-rapl:0", raw)
            clock.advance(1.0)
            meter.poll()
        m = span.stop()
    assert m.joules == pytest.approx(5 * 0.6)
    assert m.seconds == 5.0


def test_psys_is_left_out_so_packages_are_not_counted_twice(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0")
    tree.add_zone("intel-rapl:1", "psys")
    assert [z.domain for z in discover_zones(tmp_path)] == ["package-0"]


def test_mmio_zone_is_used_only_without_an_msr_zone(tmp_path: Path) -> None:
    only_mmio = RaplTree(tmp_path / "a")
    only_mmio.add_zone("intel-rapl-mmio:0", "package-0")
    assert [z.path.parent.name for z in discover_zones(tmp_path / "a")] == ["intel-rapl-mmio:0"]
    both = RaplTree(tmp_path / "b")
    both.add_zone("intel-rapl:0", "package-0")
    both.add_zone("intel-rapl-mmio:0", "package-0")
    assert [z.path.parent.name for z in discover_zones(tmp_path / "b")] == ["intel-rapl:0"]


def test_root_only_energy_file_names_the_fixes(tmp_path: Path) -> None:
    _server(tmp_path)

    def read_text(path: Path) -> str:
        if path.name == "energy_uj":
            raise PermissionError(13, "Permission denied", str(path))
        return path.read_text()

    with pytest.raises(MeterUnavailable) as info:
        RaplMeter(tmp_path, read_text=read_text).probe()
    reason = info.value.reason
    assert "CVE-2020-8694" in reason
    assert "z /sys/class/powercap/intel-rapl:*/energy_uj 0440 root fedrank - -" in reason
    assert ('ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl*:*", '
            'RUN+="/bin/chgrp fedrank /sys%p/energy_uj", RUN+="/bin/chmod g+r /sys%p/energy_uj"') in reason
    assert "CAP_DAC_READ_SEARCH" in reason


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 file anyway; the injected test covers it")
def test_root_only_energy_file_by_chmod(tmp_path: Path) -> None:
    tree = _server(tmp_path)
    (tree.zones["intel-rapl:0"] / "energy_uj").chmod(0)
    with pytest.raises(MeterUnavailable, match="CVE-2020-8694"):
        RaplMeter(tmp_path).probe()


def test_missing_powercap_is_reported_not_raised_as_a_crash(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="no powercap sysfs"):
        RaplMeter(tmp_path).probe()


def test_vanished_zone_skips_the_sample_and_keeps_counting(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", energy_uj=0)
    clock = FakeClock()
    meter = RaplMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        energy = tree.zones["intel-rapl:0"] / "energy_uj"
        energy.unlink()
        meter.poll()  # read fails: counted as an error, no crash
        tree.set_energy("intel-rapl:0", 3_000_000)
        m = span.stop()
    assert meter.read_errors == 1
    assert m.joules == pytest.approx(3.0)


def test_poll_period_is_shortened_when_the_counter_could_wrap_twice_between_polls(tmp_path: Path) -> None:
    tree = RaplTree(tmp_path)
    tree.add_zone("intel-rapl:0", "package-0", max_range_uj=200_000_000)  # wraps after 200 J
    meter = RaplMeter(tmp_path, interval_s=1.0)
    meter.probe()
    assert meter.interval_s == pytest.approx(200 / (4 * 500))  # 0.1 s: at 500 W, four polls per wrap
    big = RaplTree(tmp_path / "big")
    big.add_zone("intel-rapl:0", "package-0")  # 262 kJ range: 1 s is far inside
    kept = RaplMeter(tmp_path / "big", interval_s=1.0)
    kept.probe()
    assert kept.interval_s == 1.0
