"""`--preset paper`: a dict of FleetConfig overrides; unknown names fail naming the field."""

from __future__ import annotations

import pytest

from fleet.config import PRESETS, FleetConfig, PresetError, preset_overrides


def test_paper_preset_is_the_papers_setting() -> None:
    p = PRESETS["paper"]
    assert (p["vehicles"], p["rsus"], p["rounds"], len(p["tasks"])) == (9, 3, 40, 3)  # type: ignore[arg-type]
    assert p["channel"] == "paper" and p["lora_targets"] == "qkvo"


def test_the_fields_this_build_has_apply() -> None:
    have = {k: v for k, v in PRESETS["paper"].items() if k in FleetConfig.model_fields}
    cfg = FleetConfig(**have)
    assert (cfg.vehicles, cfg.rsus, cfg.rounds, len(cfg.tasks)) == (9, 3, 40, 3)
    if set(PRESETS["paper"]) <= set(FleetConfig.model_fields):
        full = FleetConfig(**preset_overrides("paper"))
        assert full.rounds == 40
    else:
        with pytest.raises(PresetError, match="has no field"):
            preset_overrides("paper")


def test_an_unknown_preset_names_the_field() -> None:
    with pytest.raises(PresetError, match=r"preset: 'nope' is not one of \['paper'\]"):
        preset_overrides("nope")


def test_cli_reports_an_unknown_preset(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from fleet.cli import _config, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["run", "--preset", "nope"])
    with pytest.raises(SystemExit, match="preset: 'nope'"):
        _config(args)
    args = parser.parse_args(["run", "--preset", "paper", "--rounds", "2"])
    if set(PRESETS["paper"]) <= set(FleetConfig.model_fields):
        cfg = _config(args)
        assert (cfg.rounds, cfg.vehicles) == (2, 9)  # flags override the preset
