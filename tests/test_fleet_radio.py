"""The fleet's radio: channel presets, the shared cell uplink, download energy at receive power."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from fedrank.runtime import SimClock
from fleet.config import FleetConfig
from fleet.cost import FleetCostModel
from fleet.driver import SimDriver
from fleet.sim.channel import CHANNEL_PRESETS, downlink_rate_bps, noise_w, rate_bps, resolve_channel
from fleet.sim.compute import MINILM_L6
from fleet.sim.devices import get_profile
from fleet.sim.uplink import SharedUplink


def test_every_preset_resolves_and_a_dict_overrides_one_constant() -> None:
    for name in ("paper", "dsrc", "cv2x", "nr5g"):
        assert resolve_channel(name) is CHANNEL_PRESETS[name]
        assert FleetConfig(channel=name).radio == CHANNEL_PRESETS[name]
    custom = resolve_channel({"preset": "dsrc", "max_rate_bps": 12e6})
    assert custom.max_rate_bps == 12e6 and custom.bandwidth_hz == 10e6
    wide = resolve_channel({"bandwidth_hz": 40e6})
    assert wide.n0_w == pytest.approx(noise_w(40e6))  # the noise follows the band


@pytest.mark.parametrize(("channel", "field"), [
    ("wifi6", "unknown preset 'wifi6'"),
    ({"bandwidth_hz": 0}, "channel.bandwidth_hz"),
    ({"preset": "paper", "p_tx_w": -1.0}, "channel.p_tx_w"),
    ({"g0": 0.0}, "channel.g0"),
    ({"preset": "lte"}, "unknown preset 'lte'"),
])
def test_bad_channels_are_refused_naming_the_field(channel: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        FleetConfig(channel=channel)
    assert "channel" in str(err.value) and field in str(err.value)


def test_paper_preset_is_slow_and_the_phy_cap_binds_dsrc() -> None:
    paper, dsrc, nr = (CHANNEL_PRESETS[n] for n in ("paper", "dsrc", "nr5g"))
    # W log2(1 + p g0 d^-2 / N0) at 217 m, the median in-coverage distance of the default grid
    snr = 1.0 * paper.g0 * 217.0**-2 / paper.n0_w
    assert rate_bps(217.0, paper) == pytest.approx(200e3 * math.log2(1 + snr))
    assert 2.0e6 < rate_bps(217.0, paper) < 2.8e6
    assert rate_bps(10.0, dsrc) == 6e6  # Shannon would give far more; 802.11p's PHY does not
    # the downlink runs at the RSU's power: with the cap out of the way it is faster than the uplink
    assert downlink_rate_bps(300.0, nr) > rate_bps(300.0, nr)


def _drive(uplink: SharedUplink, clock: SimClock) -> None:
    SimDriver(clock, [uplink]).run_until(lambda: not uplink.in_flight("rsu0"), 1e6)


def test_two_simultaneous_uploads_in_one_cell_take_twice_as_long_as_one() -> None:
    clock = SimClock(0.0)
    uplink = SharedUplink(clock)
    alone: list[float] = []
    uplink.send("rsu0", 3.0, alone.append)
    _drive(uplink, clock)
    assert alone == [pytest.approx(3.0)]
    both: list[float] = []
    uplink.send("rsu0", 3.0, both.append)
    uplink.send("rsu0", 3.0, both.append)
    _drive(uplink, clock)
    assert both == [pytest.approx(6.0), pytest.approx(6.0)]


def test_processor_sharing_by_hand_and_cells_do_not_share() -> None:
    clock = SimClock(0.0)
    uplink = SharedUplink(clock)
    done: dict[str, float] = {}
    uplink.send("rsu0", 1.0, lambda d: done.setdefault("short", d))
    uplink.send("rsu0", 3.0, lambda d: done.setdefault("long", d))
    uplink.send("rsu1", 3.0, lambda d: done.setdefault("other cell", d))
    _drive(uplink, clock)
    SimDriver(clock, [uplink]).run_until(lambda: not uplink.in_flight("rsu1"), 1e6)
    # both at half speed until the short one has had its 1 s of airtime (t = 2); then the long one alone: 2 s left
    assert done == {"short": pytest.approx(2.0), "long": pytest.approx(4.0), "other cell": pytest.approx(3.0)}


def test_download_energy_is_charged_at_the_vehicles_receive_power() -> None:
    nano = get_profile("jetson-orin-nano")
    channel = CHANNEL_PRESETS["paper"]
    cost = FleetCostModel({"v": nano}, MINILM_L6, 16, 64, locate=lambda v: (200.0, 0.0), rsu_sites=[(0.0, 0.0)],
                          channel=channel)
    down = cost.download("v", 1_000_000)
    t = 8e6 / downlink_rate_bps(200.0, channel)
    assert down.seconds == pytest.approx(t) and down.joules == pytest.approx(nano.rx_w * t)
    up = cost.upload("v", 1_000_000)  # and the upload at the channel's one transmit power, rate and energy alike
    assert up.joules == pytest.approx(channel.p_tx_w * 8e6 / rate_bps(200.0, channel))


@pytest.mark.parametrize("bad", [{"channel": "wifi"}, {"channel": {"p_tx_w": 0}}, {"lora_targets": "qkv"}])
def test_the_cli_refuses_a_bad_fleet_config_naming_the_field_and_writes_nothing(tmp_path, capsys, bad) -> None:
    import json

    from fedrank.cli import main

    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps(bad))
    assert main(["fleet", "run", "--quick", "--config", str(cfg), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    assert next(iter(bad)) in capsys.readouterr().out


def test_channel_tables_give_one_table_per_preset_with_the_breakdown_and_spend() -> None:
    from fleet.compare import channel_tables

    run = {"mean_round_latency_s": 9.0, "avg_accuracy": 0.8, "energy_j": 30.0, "budget_j": 40.0,
           "bytes_on_wire": 5_000_000, "bytes_to_vehicles_by_kind": {"round": 1_000_000, "tier": 2_000_000},
           "latency_breakdown_s": {"download": 1.0, "train": 2.0, "upload": 3.0, "wait": 2.5, "aggregate": 0.5}}
    md = channel_tables({"paper": {"ucb-dual": run}, "nr5g": {"ucb-dual": run}}, FleetConfig(learner="surrogate"))
    assert md.count("#### channel") == 2 and "SURROGATE" in md
    assert "| ucb-dual | 9.00 | reference | 1.00 | 2.00 | 3.00 | 2.50 | 0.50 | 0.75 | 5.0 | 3.0 | 0.800 |" in md


def test_channel_tables_give_the_paired_latency_difference_to_ucb_dual_with_its_noise() -> None:
    from fleet.compare import channel_tables, over_seeds

    def summary(lat: float) -> dict[str, object]:
        return {"mean_round_latency_s": lat, "avg_accuracy": 0.8, "energy_j": 30.0, "budget_j": 40.0,
                "bytes_on_wire": 1, "per_task_accuracy": {"t": 0.8}, "majority_baseline": {"t": 0.5},
                "rank_counts": {}, "ft_decisions": {}, "sources": {"accuracy": "surrogate"}}

    ours = over_seeds({0: summary(9.0), 1: summary(10.0), 2: summary(11.0)})
    slower = over_seeds({0: summary(12.0), 1: summary(13.1), 2: summary(13.9)})  # ~3 s slower on every seed
    noisy = over_seeds({0: summary(8.0), 1: summary(12.0), 2: summary(10.5)})  # no consistent difference
    md = channel_tables({"paper": {"ucb-dual": ours, "homolora": slower, "hetlora": noisy}},
                        FleetConfig(learner="surrogate"))
    row = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("| ")}
    assert "| +3.00 ± " in row["homolora"] and "within noise" not in row["homolora"]
    assert "| +0.17 ± " in row["hetlora"] and "(within noise)" in row["hetlora"]
