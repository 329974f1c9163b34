"""SUMO mobility on a tiny generated network: trace conversion, caching, RSU placement, bad input."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from fleet.config import FleetConfig
from fleet.roads import spread_sites, trace_layout
from fleet.sim.mobility import Trajectory
from fleet.sim.sumo import SumoError, SumoMobility, fcd_to_tdrive, resolve_network, sumo_home, sumo_trace
from fleet.sim.tdrive import read_tdrive

HOME = sumo_home()
needs_sumo = pytest.mark.skipif(HOME is None, reason="eclipse-sumo is not installed (pip install eclipse-sumo)")


@pytest.fixture(scope="module")
def tiny_net(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3 x 3 grid of 200 m blocks from netgenerate (no geo reference)."""
    if HOME is None:
        pytest.skip("eclipse-sumo is not installed (pip install eclipse-sumo)")
    from fleet.sim.sumo import _binary

    out = tmp_path_factory.mktemp("net") / "tiny.net.xml"
    subprocess.run([_binary(HOME, "netgenerate"), "--grid", "--grid.number", "3", "--grid.length", "200",
                    "-o", str(out)], check=True, capture_output=True, timeout=120)
    return out


@needs_sumo
def test_trace_conversion_on_a_tiny_network_is_cached_and_deterministic(tiny_net: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trace = sumo_trace(str(tiny_net), seed=3, duration_s=120, vehicles=3, cache_dir=tmp_path)
    lines = trace.read_text().splitlines()
    ids = {line.split(",")[0] for line in lines}
    assert ids == {"0", "1", "2"} and all(len(line.split(",")) == 4 for line in lines)
    data = read_tdrive(trace)
    assert data.skipped_total == 0
    for traj in data.trajectories.values():
        assert traj.end_s - traj.start_s >= 100  # drives (almost) the whole duration
        # on the 400 m x 400 m grid (plus lane offsets), distances survive the lon/lat round trip
        assert traj.x.max() - traj.x.min() <= 420 and traj.y.max() - traj.y.min() <= 420
        speeds = [math.hypot(*traj.velocity(t)) for t in range(int(traj.start_s), int(traj.end_s))]
        assert max(speeds) < 20.0  # urban speeds, not teleports
    # the second call reads the cache (the simulator is not run again); another seed is another trace
    import fleet.sim.sumo as sumo_mod

    def boom(*a: object, **k: object) -> None:
        raise AssertionError("simulated again")

    monkeypatch.setattr(sumo_mod, "_simulate", boom)
    assert sumo_trace(str(tiny_net), seed=3, duration_s=120, vehicles=3, cache_dir=tmp_path) == trace
    monkeypatch.undo()
    other = sumo_trace(str(tiny_net), seed=4, duration_s=120, vehicles=3, cache_dir=tmp_path)
    assert other != trace and other.read_text() != trace.read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]  # nothing half-written left


@needs_sumo
def test_fleet_layout_from_sumo_places_rsus_on_the_road(tiny_net: Path, tmp_path: Path) -> None:
    cfg = FleetConfig(mobility="sumo", vehicles=3, rsus=4, sumo=SumoMobility(network=str(tiny_net), duration_s=90))
    trajs, sites = trace_layout(cfg, horizon_s=90, cache_dir=tmp_path)
    assert len(trajs) == 3 and set(sites) == {"rsu0", "rsu1", "rsu2", "rsu3"}
    for x, y, r in sites.values():
        assert r == cfg.rsu_radius_m
        assert min(math.hypot(x - tx, y - ty) for t in trajs for tx, ty in zip(t.x, t.y, strict=True)) < 1e-6
    cfg2 = cfg.model_copy(update={"rsus": 1, "sumo": SumoMobility(network=str(tiny_net), duration_s=90,
                                                                   rsu_lonlat=[(116.4, 39.9)])})
    _, one = trace_layout(cfg2, 90, cache_dir=tmp_path)
    assert list(one) == ["rsu0"]


def test_spread_sites_cover_the_bounding_box() -> None:
    a = Trajectory("a", [0, 1, 2], [0, 240, 760], [0, 260, 240])
    b = Trajectory("b", [0, 1, 2], [260, 740, 1000], [740, 760, 1000])
    sites = spread_sites([a, b], 4, 300.0)
    # 2 x 2 cells over [0, 1000]^2: centres (250|750, 250|750), each moved to the nearest waypoint
    assert [s[:2] for s in sites.values()] == [(240.0, 260.0), (760.0, 240.0), (260.0, 740.0), (740.0, 760.0)]
    assert all(s[2] == 300.0 for s in sites.values())


def test_a_network_that_does_not_exist_is_named_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(SumoError, match=r"sumo\.network: 'nowhere\.net\.xml'"):
        resolve_network("nowhere.net.xml")
    with pytest.raises(SumoError, match=r"sumo\.network"):
        sumo_trace(str(tmp_path / "missing.net.xml"), 0, 60, 2, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    with pytest.raises(SumoError, match=r"sumo\.duration_s"):
        sumo_trace("braunschweig", 0, -1, 2, cache_dir=tmp_path)


def test_a_trace_with_bad_rows_names_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "trace.txt"
    bad.write_text("1,2008-02-02 00:00:00,116.4,39.9\nnot,a,row\n1,2008-02-02 00:00:05,999,39.9\n")
    cfg = FleetConfig(mobility=bad, vehicles=2)
    with pytest.raises(ValueError, match=r"mobility .*trace\.txt: 0 usable vehicles .*'fields': 1.*'range': 1"):
        trace_layout(cfg, 100)
    with pytest.raises(ValueError, match=r"^mobility: "):
        trace_layout(FleetConfig(mobility=tmp_path / "absent.txt"), 100)


def test_fcd_conversion_skips_fractional_steps(tmp_path: Path) -> None:
    fcd = tmp_path / "fcd.xml"
    fcd.write_text('<fcd-export><timestep time="0.00"><vehicle id="a" x="13.5" y="52.3"/></timestep>'
                   '<timestep time="0.50"><vehicle id="a" x="13.6" y="52.3"/></timestep>'
                   '<timestep time="1.00"><vehicle id="a" x="13.7" y="52.3"/><vehicle id="b" x="1" y="2"/>'
                   '</timestep></fcd-export>')
    assert fcd_to_tdrive(fcd, tmp_path / "t.txt", geo=True) == 3
    assert (tmp_path / "t.txt").read_text().splitlines()[1] == "a,2008-02-02 00:00:01,13.7000000,52.3000000"


def test_config_rejects_a_bad_sumo_field() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="duration_s"):
        FleetConfig(mobility="sumo", sumo={"duration_s": 0})
    with pytest.raises(ValidationError, match="vehicle"):
        FleetConfig(mobility="sumo", sumo={"vehicle": 3})


@needs_sumo
@pytest.mark.slow
def test_a_fleet_runs_on_a_sumo_network(tiny_net: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fleet.run import run_fleet

    monkeypatch.setenv("FEDRANK_SUMO_CACHE", str(tmp_path / "cache"))
    cfg = FleetConfig.quick(mobility="sumo", sumo=SumoMobility(network=str(tiny_net)), rounds=1, vehicles=3,
                            rsus=1, test_size=20, train_per_vehicle=24, local_steps=2, batch_size=8, max_length=24,
                            threads=1, rsu_radius_m=400.0)
    summary = run_fleet(cfg, tmp_path / "run")
    assert summary["finished"] and summary["rounds_recorded"] == 3


def test_cli_refuses_a_missing_network_in_one_line_and_writes_nothing(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import argparse
    import json

    from fleet.cli import add_arguments, run

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"mobility": "sumo", "sumo": {"network": str(tmp_path / "gone.net.xml")}}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "out"
    args = parser.parse_args(["run", "--quick", "--config", str(cfg), "--out", str(out)])
    assert run(args) == 2
    assert "sumo.network" in capsys.readouterr().out
    assert not (out / "config.json").exists() and not (out / "metrics.jsonl").exists()
