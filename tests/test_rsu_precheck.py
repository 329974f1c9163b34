"""Cheap checks first: topic, size, header, round and participation are judged before any tensor is loaded."""

from __future__ import annotations

import os

import pytest
import safetensors.torch

from rsu_agent.precheck import max_update_bytes
from tests.helpers_rsu import TOPICS, Rig, factors, make_update, rsu_settings


@pytest.fixture
def rig(tmp_path) -> Rig:
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    return rig


@pytest.fixture
def no_tensor_loads(monkeypatch) -> list[int]:
    loads: list[int] = []
    real = safetensors.torch.load

    def counting(data: bytes) -> dict:
        loads.append(len(data))
        return real(data)

    monkeypatch.setattr(safetensors.torch, "load", counting)
    return loads


def test_an_outsiders_update_with_poisoned_tensors_is_refused_as_not_participant_without_loading(rig,
                                                                                                  no_tensor_loads):
    nan = {n: type(f)(A=f.A * float("nan"), B=f.B) for n, f in factors(4, 0).items()}
    rig.upload(make_update("mal01", 0, layers=nan))
    assert rig.agent.counters["rejected"] == {"not_participant": 1}
    rig.upload(make_update("v1", 5))  # a participant, but for a round that is not open
    assert rig.agent.counters["rejected"] == {"not_participant": 1, "wrong_round": 1}
    assert no_tensor_loads == []
    rig.upload(make_update("v1", 0))  # the legitimate one is loaded once and counts
    assert len(no_tensor_loads) == 1 and rig.agent.counters["accepted"] == 1


def test_garbage_for_an_unknown_task_or_beyond_the_tasks_size_is_refused_before_parsing(rig, no_tensor_loads):
    rig.send(TOPICS.update("mal01", "rsu1", "bogus"), os.urandom(1000))
    rig.upload(make_update("v1", 0))  # fixes the head: now the task's largest update is known
    tr = rig.agent.tasks["t1"]
    assert len(make_update("v1", 1, rank=tr.cfg.r_max).payload) <= max_update_bytes(tr) < 1024 * 1024
    huge = b"\0" * (max_update_bytes(tr) + 1)
    rig.send(TOPICS.update("v1", "rsu1", "t1"), huge)
    assert rig.agent.counters["rejected"] == {"unknown_task": 1, "too_large": 1}
    assert len(no_tensor_loads) == 1  # the legitimate update's
