"""systemd units, energy-counter rules and `fedrank install-service`."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from fedrank import install_service
from fedrank.config_cli import HINTS, settings_class
from fedrank.install_service import ENERGY_TMPFILES, ENERGY_UDEV, ROLES, plan, render_unit
from fedrank.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"


def _directives(text: str) -> dict[str, list[str]]:
    """`Key=value` lines of a unit (comments and section headers skipped), keys mapped to every value."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


@pytest.mark.parametrize("role", ROLES)
def test_checked_in_unit_matches_the_renderer(role: str) -> None:
    assert (SYSTEMD / f"fedrank-{role}.service").read_text() == render_unit(role), (
        f"systemd/fedrank-{role}.service is stale: regenerate it from fedrank.install_service.render_unit"
    )


def test_checked_in_energy_rules_match_the_installer() -> None:
    assert (SYSTEMD / "fedrank-energy.conf").read_text() == ENERGY_TMPFILES
    assert (SYSTEMD / "99-fedrank-energy.rules").read_text() == ENERGY_UDEV


@pytest.mark.parametrize("role", ROLES)
def test_unit_is_notify_with_watchdog_restart_user_and_gpu_friendly_hardening(role: str) -> None:
    d = _directives(render_unit(role))
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == [f"/usr/local/bin/fedrank {role} --config /etc/fedrank/{role}.toml"]
    assert int(d["WatchdogSec"][0]) == install_service.WATCHDOG_S[role] > 0
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["2"]  # a bad config is not retried in a loop
    assert d["User"] == ["fedrank"] and d["Group"] == ["fedrank"]
    assert d["StateDirectory"] == ["fedrank"]
    assert d["SupplementaryGroups"] == ["video"]
    assert d["StandardOutput"] == ["journal"] and d["StandardError"] == ["journal"]
    assert d["NoNewPrivileges"] == ["yes"] and d["ProtectSystem"] == ["strict"]
    for gpu_breaker in ("PrivateDevices", "MemoryDenyWriteExecute", "ProtectClock", "DeviceAllow", "DevicePolicy"):
        assert gpu_breaker not in d, gpu_breaker


def test_prefix_moves_execstart_into_a_venv() -> None:
    d = _directives(render_unit("rsu", "/opt/fedrank/venv/bin/fedrank"))
    assert d["ExecStart"] == ["/opt/fedrank/venv/bin/fedrank rsu --config /etc/fedrank/rsu.toml"]


@pytest.mark.parametrize("role", ROLES)
def test_systemd_analyze_verify_accepts_the_unit(role: str, tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed")
    # verify checks that ExecStart is executable: point it at a binary that exists here.
    unit = tmp_path / f"fedrank-{role}.service"
    unit.write_text(render_unit(role, shutil.which("true") or "/bin/true"))
    res = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    ours = [line for line in res.stderr.splitlines() if unit.name in line]
    assert ours == [], ours  # unknown keys are only warned about: any line about our file is a defect


def test_tmpfiles_rule_makes_rapl_counters_group_readable(tmp_path: Path) -> None:
    tool = shutil.which("systemd-tmpfiles")
    if tool is None:
        pytest.skip("systemd-tmpfiles not installed")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "group").write_text("root:x:0:\nfedrank:x:987:\n")
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    files = []
    for zone in ("intel-rapl:0", "intel-rapl:0:0", "intel-rapl-mmio:0"):
        f = tmp_path / "sys" / "class" / "powercap" / zone / "energy_uj"
        f.parent.mkdir(parents=True)
        f.write_text("123\n")
        f.chmod(0o400)  # as the kernel leaves it since CVE-2020-8694
        files.append(f)
    other = tmp_path / "sys" / "class" / "powercap" / "intel-rapl:0" / "max_energy_range_uj"
    other.write_text("1\n")
    other.chmod(0o400)
    conf = tmp_path / "fedrank-energy.conf"
    conf.write_text(ENERGY_TMPFILES)
    res = subprocess.run([tool, f"--root={tmp_path}", "--create", str(conf)], capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    for f in files:
        st = f.stat()
        assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o440, 987), f
    assert stat.S_IMODE(other.stat().st_mode) == 0o400  # only energy_uj is touched


def test_udev_rule_names_the_powercap_zones_and_the_group() -> None:
    rule = ENERGY_UDEV.replace("\\\n", "")
    line = next(x for x in rule.splitlines() if x.startswith("ACTION"))
    assert 'SUBSYSTEM=="powercap"' in line and 'KERNEL=="intel-rapl*:*"' in line
    assert 'RUN+="/bin/chgrp fedrank /sys%p/energy_uj"' in line and 'RUN+="/bin/chmod g+r /sys%p/energy_uj"' in line


# -- install-service ------------------------------------------------------------------------------
def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    install_service.add_arguments(parser)
    return parser.parse_args(list(argv))


def _available(role: str) -> bool:
    try:
        settings_class(role)
    except ConfigError:
        return False
    return True


def test_dry_run_prints_files_and_commands_and_changes_nothing(tmp_path: Path, capsys) -> None:
    if not _available("edge"):
        pytest.skip("edge settings not in this build")
    assert install_service.run(_args("edge", "--dry-run", "--root", str(tmp_path))) == 0
    out = capsys.readouterr().out
    assert f"write {tmp_path}/etc/systemd/system/fedrank-edge.service" in out
    assert f"write {tmp_path}/etc/fedrank/edge.toml (mode 0640 root:fedrank" in out
    assert f"write {tmp_path}/etc/tmpfiles.d/fedrank-energy.conf" in out
    assert "run   systemctl daemon-reload" in out
    assert list(tmp_path.iterdir()) == []


def test_plan_creates_the_user_only_when_missing() -> None:
    with_user = plan("rsu", config_text="x", user_exists=True, video_exists=False)
    without = plan("rsu", config_text="x", user_exists=False, video_exists=True)
    assert not any(a.argv[:1] == ("useradd",) for a in with_user)
    assert not any(a.argv[:1] == ("usermod",) for a in with_user)
    assert [a.argv[:1] for a in without if a.argv][:2] == [("useradd",), ("usermod",)]
    assert not any(a.path and "tmpfiles" in str(a.path) for a in with_user)  # energy rules: edge only


@pytest.mark.parametrize("role", ROLES)
def test_install_under_root_writes_unit_and_a_loadable_config_and_keeps_an_edited_one(
    role: str, tmp_path: Path, capsys
) -> None:
    if not _available(role):
        pytest.skip(f"{role} settings not in this build")
    assert install_service.run(_args(role, "--root", str(tmp_path), "--prefix", "/opt/fedrank/venv")) == 0
    out = capsys.readouterr().out
    assert "skip  systemctl daemon-reload" in out  # commands never run under --root
    unit = tmp_path / "etc" / "systemd" / "system" / f"fedrank-{role}.service"
    assert unit.read_text() == render_unit(role, "/opt/fedrank/venv/bin/fedrank")
    config = tmp_path / "etc" / "fedrank" / f"{role}.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert load_settings(settings_class(role), config).id == HINTS[role]["id"]
    energy = tmp_path / "etc" / "tmpfiles.d" / "fedrank-energy.conf"
    assert energy.exists() == (role == "edge")
    config.write_text(config.read_text().replace(f'id = "{HINTS[role]["id"]}"', 'id = "site-7"'))
    assert install_service.run(_args(role, "--root", str(tmp_path))) == 0
    assert f"keep  {config}" in capsys.readouterr().out
    assert load_settings(settings_class(role), config).id == "site-7"
    assert unit.read_text() == render_unit(role)  # the unit is ours: rewritten with the new prefix


def test_live_install_needs_root(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    if not _available("cloud"):
        pytest.skip("cloud settings not in this build")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert install_service.run(_args("cloud")) == 2
    assert "needs root" in capsys.readouterr().err


def test_relative_prefix_is_refused(capsys) -> None:
    assert install_service.run(_args("rsu", "--prefix", "venv", "--dry-run")) == 2
    assert "absolute" in capsys.readouterr().err


def test_failed_command_stops_the_install(tmp_path: Path, capsys) -> None:
    steps = [
        install_service.Action("first", argv=("false-cmd",)),
        install_service.Action("file", Path("/etc/x.conf"), "x\n"),
    ]
    calls: list[list[str]] = []

    def fake(argv: list[str]) -> int:
        calls.append(argv)
        return 3

    # A live root is needed for commands to run; no file is written because the command fails first.
    assert install_service.apply(steps, Path("/"), run_cmd=fake) == 1
    assert calls == [["false-cmd"]]
    assert not Path("/etc/x.conf").exists()
    assert "later steps not run" in capsys.readouterr().err
