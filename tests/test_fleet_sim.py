"""The fleet's modelled world: device profiles, FLOP-based compute, channel, grid mobility, T-Drive reader."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.policies import KNOWN_DEVICE_MEMORY_GB, capacity_rank
from fleet.sim.channel import ChannelConfig, payload_bits, rate_bps, upload_energy_j, upload_time_s
from fleet.sim.compute import MINILM_L6, lora_train_flops, model_train_flops, train_energy_j, train_time_s
from fleet.sim.devices import BUILTIN_PROFILES, DeviceProfile, UnknownDevice, get_profile
from fleet.sim.mobility import RoadGrid, RsuLayout, Trajectory, grid_trajectories
from fleet.sim.tdrive import EARTH_RADIUS_M, read_tdrive

RANKS = [2, 4, 8, 16, 32]

# -- devices ---------------------------------------------------------------------------------------------------


def test_builtin_profiles_are_found_by_name_and_unknown_names_are_refused() -> None:
    nano = get_profile("jetson-orin-nano")
    assert (nano.power_w, nano.memory_gb) == (15.0, 8.0)
    custom = DeviceProfile(name="pi5", flops=5e10, power_w=8, idle_w=3, memory_gb=8, rx_w=1.0, max_rank=8)
    assert get_profile("pi5", {"pi5": custom}) is custom
    with pytest.raises(UnknownDevice):
        get_profile("toaster")
    with pytest.raises(ValidationError):
        DeviceProfile(name="bad", flops=-1, power_w=8, idle_w=3, memory_gb=8, rx_w=1.0, max_rank=8)


def test_profiles_agree_with_the_capacity_table_and_fit_their_capacity_rank() -> None:
    for name, profile in BUILTIN_PROFILES.items():
        assert KNOWN_DEVICE_MEMORY_GB[name] == profile.memory_gb
        assert capacity_rank(name, RANKS) <= profile.max_rank
    # Bigger boards train faster.
    assert get_profile("jetson-agx-orin").flops > get_profile("jetson-orin-nano").flops


# -- compute ---------------------------------------------------------------------------------------------------


def test_lora_train_flops_by_hand() -> None:
    # rank 8 on q,v of 6 layers, hidden 384: 8 * 2 * 6 * (384 + 384) = 73,728 trainable parameters.
    tokens = 100 * 2 * 64
    expected = (6 * 73_728 + 4 * 10_000_000) * tokens
    assert lora_train_flops(8, 100, 2, 64, 384, 6, 2, 10_000_000) == pytest.approx(expected)
    # The DESIGN figure: LoRA on q,v of MiniLM is 9,216 parameters per unit of rank.
    one = model_train_flops(MINILM_L6, 1, 1, 1, 1)
    assert one - 4 * MINILM_L6.base_params == pytest.approx(6 * 9_216)


def test_train_time_and_energy_follow_the_profile() -> None:
    nano = get_profile("jetson-orin-nano")
    flops = 3.0e12
    assert train_time_s(flops, nano) == pytest.approx(3.0e12 / 1.0e12)
    assert train_energy_j(3.0, nano) == pytest.approx(15.0 * 3.0)
    # Higher rank costs more, but the frozen model dominates at small ranks.
    assert model_train_flops(MINILM_L6, 32, 500, 1, 64) > model_train_flops(MINILM_L6, 2, 500, 1, 64)
    with pytest.raises(ValueError):
        lora_train_flops(0, 10, 1, 64, 384, 6, 2, 1e6)
    with pytest.raises(ValueError):
        train_time_s(float("nan"), nano)


# -- channel ---------------------------------------------------------------------------------------------------


def test_rate_upload_time_and_energy_by_hand() -> None:
    cfg = ChannelConfig()
    n0 = 10 ** ((-174 + 10 * math.log10(20e6) + 9) / 10) / 1000  # -92 dBm in W
    snr = 0.2 * 1e-3 * 100.0**-3 / n0
    rate = 20e6 * math.log2(1 + snr)
    assert rate_bps(100.0, cfg) == pytest.approx(rate)
    bits = payload_bits(8, {"q": (384, 384), "v": (384, 384)}, bits_per_value=16)
    assert bits == 16 * 8 * (768 + 768)
    assert upload_time_s(bits, 100.0, cfg) == pytest.approx(bits / rate)
    assert upload_energy_j(2.0, 0.2) == pytest.approx(0.4)


def test_rate_falls_with_distance_and_close_range_is_clamped() -> None:
    cfg = ChannelConfig()
    assert rate_bps(50, cfg) > rate_bps(200, cfg) > rate_bps(500, cfg) > 0
    assert rate_bps(0.0, cfg) == rate_bps(1.0, cfg)
    with pytest.raises(ValueError):
        rate_bps(-1.0, cfg)


def test_minilm_qv_payload_matches_the_design_figure() -> None:
    shapes = {f"layer{i}.{t}": (384, 384) for i in range(6) for t in ("q", "v")}
    assert payload_bits(1, shapes) == 32 * 9_216  # about 36.9 KB per rank in fp32


# -- mobility --------------------------------------------------------------------------------------------------


def test_trajectory_interpolates_positions_and_velocities_by_hand() -> None:
    tr = Trajectory("v", [0.0, 10.0, 30.0], [0.0, 100.0, 100.0], [0.0, 0.0, 200.0])
    assert tr.position(5.0) == (50.0, 0.0)
    assert tr.position(20.0) == (100.0, 100.0)
    assert tr.velocity(5.0) == (10.0, 0.0)
    assert tr.velocity(10.0) == (0.0, 10.0)  # right-continuous at a waypoint
    assert tr.position(99.0) == (100.0, 200.0) and tr.velocity(99.0) == (0.0, 0.0)
    assert tr.position(-1.0) == (0.0, 0.0)
    with pytest.raises(ValueError):
        Trajectory("v", [0.0, 0.0], [0.0, 1.0], [0.0, 1.0])


def test_grid_trajectories_are_deterministic_for_a_seed() -> None:
    a = grid_trajectories(3, 120.0, seed=5)
    b = grid_trajectories(3, 120.0, seed=5)
    c = grid_trajectories(3, 120.0, seed=6)
    assert all(np.array_equal(x.x, y.x) and np.array_equal(x.t, y.t) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x.x, y.x) for x, y in zip(a, c, strict=True))
    # Adding vehicles leaves the first ones alone.
    assert np.array_equal(grid_trajectories(5, 120.0, seed=5)[1].x, a[1].x)


def test_vehicles_stay_on_roads_at_urban_speeds() -> None:
    grid = RoadGrid(nx=6, ny=6, block_m=200.0)
    for tr in grid_trajectories(10, 600.0, grid, seed=2):
        assert tr.end_s >= 600.0
        for t in np.arange(0.0, 600.0, 3.7):
            x, y = tr.position(float(t))
            assert 0 <= x <= 1000 and 0 <= y <= 1000
            assert min(x % 200, -x % 200) < 1e-6 or min(y % 200, -y % 200) < 1e-6  # on a street
            speed = math.hypot(*tr.velocity(float(t)))
            assert speed == 0.0 or 8.0 - 1e-9 <= speed <= 15.0 + 1e-9


def test_rsu_layout_on_the_default_grid() -> None:
    layout = RsuLayout.on_grid(RoadGrid(), spacing_blocks=3, radius_m=300.0)
    # Intersections 1, 4, 7 on each axis: 3 x 3 RSUs, 600 m apart.
    assert len(layout.rsus) == 9
    assert layout.rsus[0] == ("rsu-01-01", 200.0, 200.0, 300.0)
    assert layout.serving(250.0, 200.0) == "rsu-01-01"
    assert layout.serving(500.0, 500.0) is None  # sqrt(300^2 + 300^2) = 424 m from every RSU


def test_vehicles_leave_coverage_and_hand_over_within_minutes() -> None:
    grid = RoadGrid()
    layout = RsuLayout.on_grid(grid)
    trajectories = grid_trajectories(20, 300.0, grid, seed=1)
    left, handed_over = 0, 0
    for tr in trajectories:
        serving = [layout.serving(*tr.position(float(t))) for t in np.arange(0.0, 300.0, 1.0)]
        changes = list(itertools.pairwise(serving))
        left += any(a is not None and b is None for a, b in changes)
        handed_over += len({s for s in serving if s is not None}) >= 2
    assert left >= 10, f"only {left}/20 vehicles left coverage in 5 minutes"
    assert handed_over >= 10, f"only {handed_over}/20 vehicles met two RSUs in 5 minutes"


# -- T-Drive ---------------------------------------------------------------------------------------------------

TDRIVE = """\
1,2008-02-02 15:36:08,116.51172,39.92123
1,2008-02-02 15:38:08,116.51172,39.92323
1,2008-02-02 15:38:08,116.51172,39.92400
1,2008-02-02 15:38:18,116.53000,39.92323
2,2008-02-02 15:36:08,116.50172,39.91123
2,2008-02-02 15:46:08,116.50172,39.91123
this is not a fix
3,2008-02-31 10:00:00,116.5,39.9
3,2008-02-02 10:00:00,east,39.9
3,2008-02-02 10:00:00,216.5,39.9
"""


def test_tdrive_projects_to_metres_and_counts_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "taxis.txt"
    path.write_text(TDRIVE)
    data = read_tdrive(path)
    # Centre of the bounding box of the kept fixes.
    assert data.lon0 == pytest.approx((116.50172 + 116.51172) / 2)
    assert data.lat0 == pytest.approx((39.91123 + 39.92323) / 2)
    assert sorted(data.trajectories) == ["1", "2"]
    taxi1 = data.trajectories["1"]
    # 0.002 deg of latitude north in 120 s: R * 0.002 * pi / 180 = 222.39 m.
    assert list(taxi1.t) == [0.0, 120.0]
    dy = taxi1.y[1] - taxi1.y[0]
    assert dy == pytest.approx(EARTH_RADIUS_M * math.radians(0.002))
    assert dy == pytest.approx(222.39, abs=0.01)
    assert taxi1.x[1] == taxi1.x[0]
    assert taxi1.velocity(60.0) == pytest.approx((0.0, 222.39 / 120), abs=1e-4)
    # Taxi 2 parked: same place 10 minutes apart, 0.01 deg west and south of taxi 1's start.
    taxi2 = data.trajectories["2"]
    east = taxi1.x[0] - taxi2.x[0]
    assert east == pytest.approx(EARTH_RADIUS_M * math.radians(0.01) * math.cos(math.radians(data.lat0)))
    assert taxi2.velocity(100.0) == (0.0, 0.0)
    # Skipped: a duplicate second, a 0.01828 deg (~1.56 km) jump east in 10 s (~156 m/s > 70 m/s), a line with one
    # field, Feb 31st, "east", lon 216.5.
    assert data.skipped == {"duplicate time": 1, "fields": 1, "time": 1, "number": 1, "range": 1, "speed": 1}
    assert data.skipped_total == 6


def test_tdrive_speed_check_can_be_disabled_and_directories_are_read(tmp_path: Path) -> None:
    (tmp_path / "1.txt").write_text(TDRIVE)
    data = read_tdrive(tmp_path, max_speed_mps=None)
    assert "speed" not in data.skipped
    assert len(data.trajectories["1"]) == 3


def test_tdrive_with_no_usable_lines_returns_no_trajectories(tmp_path: Path) -> None:
    path = tmp_path / "junk.txt"
    path.write_text("a,b\n\n1,2008-02-02 15:36:08,x,y\n")
    data = read_tdrive(path)
    assert data.trajectories == {} and data.skipped_total == 2
