"""One hostile message must not stop a task (issue 15's regressions), each against a running RSU agent.

A participant `mal04` and a legitimate vehicle `v1` are both in the round. Each hostile message below once
stopped a task (a timer died, a round could never close, a poisoned update survived restarts). Now it is
refused with a typed reason, the task keeps opening and closing rounds, v1's updates keep counting, and a
restart finds nothing of the hostile message on disk.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
import torch
from safetensors.torch import save as st_save

from proto import SCHEMA_VERSION
from proto.codec import META_KEY
from proto.messages import TaskStats
from proto.topics import Channel, Role
from tests.helpers_rsu import TOPICS, Rig, factors, make_update, rsu_settings


def raw_status(vid: str, **fields: Any) -> tuple[str, bytes]:
    """A status built as JSON by hand (the models refuse to build these)."""
    obj = {"kind": "status", "v": SCHEMA_VERSION, "sender": vid, "sent_at": 0.0, "role": "vehicle", "state": "online",
           "tasks": ["t1"], "position": {"x": 0.0, "y": 0.0}, "velocity": {"vx": 0.0, "vy": 0.0}}
    obj.update(fields)
    return TOPICS.status(Role.VEHICLE, vid), json.dumps(obj).encode()


def tampered_update(vid: str, round_: int, edit: Callable[[dict], None], scale: float = 1.0) -> tuple[str, bytes]:
    """A well-formed update of `vid` whose JSON header `edit` changes after encoding (and tensors scaled)."""
    u = make_update(vid, round_, layers={n: type(f)(A=f.A * scale, B=f.B * scale) for n, f in factors(4, 7).items()})
    (n,) = struct.unpack("<Q", u.payload[:8])
    st_header = json.loads(u.payload[8 : 8 + n])
    header = json.loads(st_header["__metadata__"][META_KEY])
    edit(header)
    return u.topic, st_save(_load(u.payload), metadata={META_KEY: json.dumps(header)})


def _load(payload: bytes) -> dict[str, torch.Tensor]:
    from safetensors.torch import load

    return load(payload)


def duplicate_key_update(vid: str, round_: int) -> tuple[str, bytes]:
    u = make_update(vid, round_)
    (n,) = struct.unpack("<Q", u.payload[:8])
    header = u.payload[8 : 8 + n].decode()
    key = '"head.bias":'
    entry = header[header.index(key) : header.index("}", header.index(key)) + 1]
    dup = header.replace(entry, entry + "," + entry, 1).encode()
    return u.topic, struct.pack("<Q", len(dup)) + dup + u.payload[8 + n :]


def _set_report(field: str, value: Any) -> Callable[[dict], None]:
    return lambda h: h["report"].__setitem__(field, value)


HOSTILE: dict[str, tuple[Callable[[float], tuple[str, bytes]], str]] = {
    "huge_position": (lambda now: raw_status("mal04", position={"x": 1e200, "y": 0.0}), "invalid_field"),
    "far_future_sent_at": (lambda now: raw_status("mal04", sent_at=now + 1e6), "clock_skew"),
    "5000_task_list": (lambda now: raw_status("mal04", tasks=[f"x{i}" for i in range(5000)]), "invalid_field"),
    "huge_detail": (lambda now: raw_status("mal04", detail="x" * 100_000), "invalid_field"),
    "loss_1e305": (lambda now: tampered_update("mal04", 0, _set_report("loss", 1e305)), "invalid_field"),
    "samples_10e400": (lambda now: tampered_update("mal04", 0, _set_report("samples", 10**400)), "invalid_field"),
    "tensors_1e20": (lambda now: tampered_update("mal04", 0, lambda h: None, scale=1e20), "tensor_magnitude"),
    "duplicate_header_key": (lambda now: duplicate_key_update("mal04", 0), "duplicate_key"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_message_is_refused_and_the_task_keeps_going(tmp_path, name):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("mal04", x=20.0)
    rig.advance(1.0)
    tr = rig.agent.tasks["t1"]
    assert tr.pending is not None and tr.pending.participants == ["mal04", "v1"]
    build, reason = HOSTILE[name]
    rig.send(*build(rig.clock.now()))
    assert rig.agent.counters["rejected"] == {reason: 1}
    assert not rig.agent.failures  # nothing raised inside the agent
    rig.upload(make_update("v1", 0))
    assert rig.agent.counters["accepted"] == 1
    rig.agent = rig.new_agent()  # a restart mid-round: only v1's update is on disk
    assert set(rig.agent.tasks["t1"].accepted) == {"v1"}
    rig.advance(rig.clock.now() + 101.0)  # mal04 never delivers: the round closes at its deadline
    rec = rig.agent.history[-1]
    assert (rec.round, rec.accepted, rec.closed_by) == (0, ["v1"], "deadline")
    # the task keeps opening and closing rounds, and v1 keeps counting
    for r in (1, 2):
        rig.vehicle("v1", x=10.0, sent_at=rig.clock.now())
        rig.advance(rig.clock.now() + 11.0)
        assert rig.agent.tasks["t1"].pending is not None and rig.agent.tasks["t1"].pending.round == r
        rig.upload(make_update("v1", r, seed=r))
        if rig.agent.tasks["t1"].pending is not None:  # still waiting for mal04
            rig.advance(rig.clock.now() + 101.0)
        assert rig.agent.history[-1].round == r and "v1" in rig.agent.history[-1].accepted
    stats = [s.msg for s in rig.messages(Channel.STATS, TaskStats)]
    assert [s.round for s in stats][-3:] == [0, 1, 2] and all(s.updates >= 1 for s in stats[-3:])
    rig.agent = rig.new_agent()
    assert rig.agent.tasks["t1"].meta.next_round == 3 and not rig.agent.failures


def test_a_far_future_status_does_not_hide_the_vehicles_later_genuine_statuses(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.send(*raw_status("v1", sent_at=1e9, position={"x": 10.0, "y": 0.0}))  # a GPS clock in the far future
    assert rig.agent.counters["rejected"] == {"clock_skew": 1}
    rig.clock.advance_to(5.0)
    rig.vehicle("v1", x=500.0, sent_at=5.0)  # genuinely leaves the coverage
    assert rig.agent.vehicles["v1"].status.position.x == 500.0
    rig.advance(6.0)
    assert rig.agent.tasks["t1"].pending is None  # nobody inside: no round


def test_an_update_with_tensors_the_float32_aggregate_cannot_hold_is_rejected_as_numerical(tmp_path):
    """Within the wire bound, but a product that overflows float32 would make the round's SVD fail."""
    from proto.bounds import MAX_UPDATE_ABS
    from rsu_agent.aggregate import ClientUpdate
    from rsu_agent.robust import admit_numerically, aggregate_robust
    from rsu_agent.validate import UpdateRejected

    big = {n: type(f)(A=torch.full_like(f.A, MAX_UPDATE_ABS), B=torch.full_like(f.B, MAX_UPDATE_ABS))
           for n, f in factors(4, 1).items()}
    u = ClientUpdate(layers=big, head={"b": torch.zeros(2)}, samples=10, alpha=16.0)
    admit_numerically(u, "svd", 8)  # 1e4 * 1e4 * 16 stays finite: admitted
    layers, _ = aggregate_robust([u], "svd", 8)
    assert all(torch.isfinite(f.S).all() for f in layers.values())
    nan = {n: type(f)(A=f.A * float("nan"), B=f.B) for n, f in factors(4, 1).items()}
    with pytest.raises(UpdateRejected) as e:
        admit_numerically(ClientUpdate(layers=nan, head={}, samples=10, alpha=16.0), "svd", 8)
    assert e.value.reason == "numerical"


def test_a_poisoned_update_stored_by_an_older_build_is_dropped_on_restart_and_the_round_closes(tmp_path):
    """Before the bounds, an update with loss = 1e305 was accepted and stored; it blocked its round after every
    restart. Read back through the codec, it now fails the bounds and is left out."""
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.vehicle("mal04", x=20.0)
    rig.advance(1.0)
    rig.upload(make_update("v1", 0))
    _, poisoned = tampered_update("mal04", 0, _set_report("loss", 1e305))
    stored = tmp_path / "tasks" / "t1" / "round_0" / "accepted"
    assert (stored / "v1.safetensors").is_file()
    (stored / "mal04.safetensors").write_bytes(poisoned)
    rig.agent = rig.new_agent()
    assert set(rig.agent.tasks["t1"].accepted) == {"v1"}
    rig.advance(rig.clock.now() + 101.0)
    rec = rig.agent.history[-1]
    assert (rec.round, rec.accepted, rec.closed_by) == (0, ["v1"], "deadline") and not rig.agent.failures
