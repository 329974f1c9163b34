"""Jetson INA3221 meter on fake hwmon (Orin, JetPack 5/6) and IIO (JetPack 4) trees."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_sysfs import FakeClock, JetsonHwmonTree, JetsonIioTree

from edge_agent.energy.jetson import SOURCE, SOURCE_LOWER_BOUND, JetsonMeter
from edge_agent.energy.meter import MeterUnavailable


def test_orin_vdd_in_is_the_total_and_sub_rails_are_not_added(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"])
    tree.add_chip(["x"], chip_name="tmp451")  # another hwmon device: ignored
    clock = FakeClock()
    meter = JetsonMeter(tmp_path, clock=clock, interval_s=None)
    tree.set_rail("VDD_IN", 5000, 1000)  # 5 V * 1 A = 5 W
    tree.set_rail("VDD_CPU_GPU_CV", 5000, 400)  # 2 W
    tree.set_rail("VDD_SOC", 5000, 200)  # 1 W
    with meter:
        span = meter.start()
        clock.advance(0.1)
        tree.set_rail("VDD_IN", 5000, 1400)  # 7 W
        meter.poll()
        clock.advance(0.1)
        tree.set_rail("VDD_IN", 5000, 1400)
        m = span.stop()
    # trapezoid: (5 + 7) / 2 * 0.1 + (7 + 7) / 2 * 0.1
    assert m.joules == pytest.approx(0.6 + 0.7)
    assert m.domains == ("VDD_IN",)
    assert m.source == SOURCE and not m.lower_bound and m.measured
    assert m.sub_joules == pytest.approx({"VDD_CPU_GPU_CV": 2 * 0.2, "VDD_SOC": 1 * 0.2})


def test_jetpack4_iio_rails_in_milliwatts_with_pom_5v_in_as_total(tmp_path: Path) -> None:
    tree = JetsonIioTree(tmp_path)
    tree.add_chip("6-0040", ["POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"])
    tree.set_power("POM_5V_IN", 4000)
    tree.set_power("POM_5V_GPU", 1500)
    tree.set_power("POM_5V_CPU", 1000)
    clock = FakeClock()
    meter = JetsonMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        clock.advance(0.5)
        tree.set_power("POM_5V_IN", 6000)
        m = span.stop()
    assert m.joules == pytest.approx((4 + 6) / 2 * 0.5)
    assert m.domains == ("POM_5V_IN",)
    assert set(m.sub_joules) == {"POM_5V_GPU", "POM_5V_CPU"}


def test_agx_without_input_rail_sums_rails_and_labels_a_lower_bound(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"])
    tree.add_chip(["NC", "VDDQ_VDD2_1V8AO", "NC"])  # unconnected channels are skipped
    tree.set_rail("VDD_GPU_SOC", 1000, 3000)  # 3 W
    tree.set_rail("VDD_CPU_CV", 1000, 2000)  # 2 W
    tree.set_rail("VIN_SYS_5V0", 5000, 400)  # 2 W
    tree.set_rail("VDDQ_VDD2_1V8AO", 1800, 500)  # 0.9 W
    clock = FakeClock()
    meter = JetsonMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        clock.advance(1.0)
        m = span.stop()
    assert m.joules == pytest.approx(3 + 2 + 2 + 0.9)
    assert set(m.domains) == {"VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"}
    assert m.lower_bound is True and m.source == SOURCE_LOWER_BOUND
    assert m.sub_joules == {}


def test_input_rail_names_are_configurable(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VIN_SYS_5V0", "VDD_CPU_CV"])
    meter = JetsonMeter(tmp_path, input_rails=["VIN_SYS_5V0"], interval_s=None)
    with meter:
        assert meter.domains == ("VIN_SYS_5V0",) and not meter.lower_bound


def test_rail_read_failure_skips_one_sample(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    d = tree.add_chip(["VDD_IN"])
    tree.set_rail("VDD_IN", 5000, 1000)
    clock = FakeClock()
    meter = JetsonMeter(tmp_path, clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        (d / "curr1_input").write_text("garbage\n")
        clock.advance(0.1)
        meter.poll()  # unreadable: skipped, the next good sample integrates across the gap
        tree.set_rail("VDD_IN", 5000, 1000)
        clock.advance(0.1)
        m = span.stop()
    assert meter.read_errors == 1
    assert m.joules == pytest.approx(5 * 0.2)


def test_no_ina3221_means_unavailable_with_reason(tmp_path: Path) -> None:
    with pytest.raises(MeterUnavailable, match="not a Jetson"):
        JetsonMeter(tmp_path).probe()


def test_background_thread_integrates_real_time(tmp_path: Path) -> None:
    tree = JetsonHwmonTree(tmp_path)
    tree.add_chip(["VDD_IN"])
    tree.set_rail("VDD_IN", 5000, 2000)  # a constant 10 W
    meter = JetsonMeter(tmp_path, interval_s=0.01)
    with meter.measure() as span:
        import time

        time.sleep(0.3)
    meter.close()
    assert span.result is not None
    assert span.result.joules == pytest.approx(10 * span.result.seconds, rel=1e-6)
