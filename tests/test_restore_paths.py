"""Restore paths that only run after something went wrong on disk or in a round: each keeps the agent up,
says why in one log line, and never corrupts what is left."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

import rsu_agent.rounds as rounds_mod
from cloud_agent.agent import CloudAgent
from cloud_agent.settings import CloudSettings
from cloud_agent.tri_feedback import TriFeedbackConfig
from fedrank.runtime import SimClock
from fedrank.state import atomic_write_bytes, atomic_write_json, read_json
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.messages import RoundAnnouncement, TaskStats
from proto.topics import Channel
from rsu_agent.state import TaskMeta, TaskStore
from tests.helpers_rsu import Rig, make_update, rsu_settings, task_cfg


def closed_round(tmp_path: Path) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    for v in ("v1", "v2"):
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)
    rig.upload(make_update("v1", 0, seed=1))
    rig.upload(make_update("v2", 0, seed=2))
    assert rig.agent.tasks["t1"].meta.global_file == "global_r1.safetensors"
    return rig


# -- the RSU --------------------------------------------------------------------------------------------------
def test_an_unreadable_global_restarts_the_task_from_a_zero_adapter(tmp_path, caplog):
    rig = closed_round(tmp_path)
    (tmp_path / "tasks" / "t1" / "global_r1.safetensors").write_bytes(b"\x00garbage")
    with caplog.at_level(logging.ERROR, logger="rsu_agent.rounds"):
        rig.agent = rig.new_agent()
    tr = rig.agent.tasks["t1"]
    assert (tr.layers, tr.head, tr.meta.global_file, tr.meta.next_round) == ({}, {}, None, 1)
    assert "starting from a zero adapter" in caplog.text
    rig.advance(10.0)  # the next round is announced from zero: rank 0, no tensors
    ann = rig.messages(Channel.ROUND, RoundAnnouncement)[-1]
    assert (ann.msg.round, ann.msg.rank, ann.tensors) == (1, 0, {})


def test_a_global_without_a_configured_layer_restarts_from_zero(tmp_path):
    rig = closed_round(tmp_path)
    rig.settings = rsu_settings(tmp_path, tasks=[task_cfg(layers={"q": (16, 12), "v": (10, 16), "k": (8, 8)})])
    rig.agent = rig.new_agent()
    tr = rig.agent.tasks["t1"]
    assert (tr.layers, tr.meta.global_file) == ({}, None)


def test_meta_that_is_json_but_not_a_task_meta_is_set_aside(tmp_path):
    rig = closed_round(tmp_path)
    meta = tmp_path / "tasks" / "t1" / "meta.json"
    meta.write_text(json.dumps({"task": "t1", "next_round": "three"}))
    rig.agent = rig.new_agent()
    tr = rig.agent.tasks["t1"]
    assert (tr.meta.next_round, tr.pending, tr.layers) == (0, None, {})
    assert json.loads((meta.parent / "meta.json.invalid").read_text())["next_round"] == "three"


def test_a_stored_update_that_no_longer_validates_is_not_resumed(tmp_path, caplog):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    for v in ("v1", "v2", "v3"):
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)
    rig.upload(make_update("v1", 0, rank=2, seed=1))
    rig.upload(make_update("v2", 0, rank=4, seed=2))
    rig.settings = rsu_settings(tmp_path, tasks=[task_cfg(ranks=[2, 8])])  # rank 4 is no longer a candidate
    with caplog.at_level(logging.ERROR, logger="rsu_agent.rounds"):
        rig.agent = rig.new_agent()
    tr = rig.agent.tasks["t1"]
    assert set(tr.accepted) == {"v1"} and set(tr.pending.accepted) == {"v1"}
    assert "v2 no longer valid" in caplog.text
    assert tr.waiting() == {"v2", "v3"}  # v2 may send again


def test_aggregation_that_fails_keeps_the_global_and_says_why(tmp_path, monkeypatch):
    rig = closed_round(tmp_path)
    before = {k: f.S.clone() for k, f in rig.agent.tasks["t1"].layers.items()}

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ValueError("layer q: SVD did not converge")

    monkeypatch.setattr(rounds_mod, "aggregate_robust", broken)
    rig.advance(10.0)
    rig.upload(make_update("v1", 1, seed=3))
    rig.upload(make_update("v2", 1, seed=4))
    rec = rig.agent.history[-1]
    assert rec.round == 1 and rec.note.startswith("aggregation failed (layer q: SVD did not converge)")
    assert (rec.updates, rec.accepted, rec.ranks) == (0, [], [])
    tr = rig.agent.tasks["t1"]
    assert tr.meta.global_file == "global_r1.safetensors" and tr.meta.next_round == 2
    assert all(f.S.equal(before[k]) for k, f in tr.layers.items())
    stats = rig.messages(Channel.STATS, TaskStats)[-1].msg
    assert (stats.round, stats.updates, stats.energy_j) == (1, 0, 20.0)


def test_a_zero_budget_skips_the_dual_step_and_keeps_lambda(tmp_path, caplog):
    TaskStore(tmp_path, "t1").save_meta(TaskMeta(task="t1", budget_j=0.0, lam=0.7, violation_j=3.0))
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    with caplog.at_level(logging.ERROR, logger="rsu_agent.rounds"):
        rig.advance(1.0)
        rig.upload(make_update("v1", 0, joules=50.0, seed=1))
    rec = rig.agent.history[-1]
    assert (rec.budget_j, rec.lam_announced, rec.lam, rec.violation_j, rec.updates) == (0.0, 0.7, 0.7, 3.0, 1)
    assert "dual step skipped" in caplog.text


# -- fedrank.state -----------------------------------------------------------------------------------------
def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "s.json"
    atomic_write_json(target, {"v": 1})

    def refuse(*_a: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"v": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
    assert read_json(target) == {"v": 1}


def test_a_directory_that_cannot_be_opened_or_fsynced_does_not_fail_the_write(tmp_path, monkeypatch):
    real_open, real_fsync = os.open, os.fsync
    dirs_opened: list[str] = []

    def no_dir_open(path: Any, flags: int, *a: Any) -> int:
        if Path(path).is_dir():
            dirs_opened.append(str(path))
            raise OSError(21, "Is a directory")
        return real_open(path, flags, *a)

    monkeypatch.setattr(os, "open", no_dir_open)
    atomic_write_bytes(tmp_path / "a.bin", b"one")
    assert dirs_opened == [str(tmp_path)]
    monkeypatch.setattr(os, "open", real_open)

    synced: list[int] = []

    def fsync_files_only(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            synced.append(fd)
            raise OSError(22, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_files_only)
    atomic_write_bytes(tmp_path / "b.bin", b"two", mode=0o640)
    assert synced  # the directory fsync was tried and its failure tolerated
    assert (tmp_path / "a.bin").read_bytes() == b"one" and (tmp_path / "b.bin").read_bytes() == b"two"
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_corrupt_json_state_file_is_moved_aside(tmp_path):
    p = tmp_path / "x.json"
    p.write_bytes(b"\xff\xfe not json")
    assert read_json(p) is None and not p.exists()
    assert (tmp_path / "x.json.corrupt").read_bytes() == b"\xff\xfe not json"


# -- the cloud ------------------------------------------------------------------------------------------------
def cloud(tmp_path: Path, tasks: list[str]) -> CloudAgent:
    s = CloudSettings(id="cloud", state_dir=tmp_path, tasks=tasks, e_total_j=900.0,
                      feedback=TriFeedbackConfig(window_rounds=2), status_interval_s=1000.0)
    bus = MemoryBus(MemoryBroker(), "cloud")
    agent = CloudAgent(s, bus, SimClock(0.0))
    bus.connect(will=agent.will())
    agent.start()
    return agent


def test_cloud_state_that_fails_validation_starts_fresh(tmp_path, caplog):
    (tmp_path / "cloud.json").write_text(json.dumps({"window": -5, "allocations": {"a": "lots"}}))
    with caplog.at_level(logging.ERROR, logger="cloud_agent.agent"):
        agent = cloud(tmp_path, ["a", "b"])
    assert agent.state.window == 0 and agent.state.allocations == {"a": 450.0, "b": 450.0}
    assert "does not validate" in caplog.text
    assert json.loads((tmp_path / "cloud.json").read_text())["allocations"] == {"a": 450.0, "b": 450.0}


def test_a_changed_task_set_resplits_equally_and_keeps_the_window(tmp_path, caplog):
    agent = cloud(tmp_path, ["a", "b"])
    agent.state.allocations = {"a": 600.0, "b": 300.0}
    agent.state.window = 4
    agent._save()
    with caplog.at_level(logging.WARNING, logger="cloud_agent.agent"):
        again = cloud(tmp_path, ["a", "b"])
    assert again.state.allocations == {"a": 600.0, "b": 300.0} and "tasks changed" not in caplog.text
    with caplog.at_level(logging.WARNING, logger="cloud_agent.agent"):
        agent = cloud(tmp_path, ["a", "b", "c"])
    assert agent.state.allocations == pytest.approx({"a": 300.0, "b": 300.0, "c": 300.0})
    assert agent.state.window == 4 and set(agent.state.acc) >= {"a", "b", "c"}
    assert "tasks changed" in caplog.text
