"""Storage faults at the RSU, through a fault-injecting disk (every atomic write of the RSU's state raises the
OSError a full or read-only filesystem gives while `disk.error` is set): a failed update write is rejected and
counted as `storage`; a failed open or close changes nothing in memory, is retried with backoff and goes
through by itself once the disk is back; meanwhile the RSU says it is degraded and is not healthy (so the daemon
stops feeding the watchdog); and what a restart reads from disk is what the running agent had."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import pytest

from proto.codec import decode
from proto.messages import AgentStatus, RoundAnnouncement, TaskStats
from proto.topics import Channel, Role
from rsu_agent import state as rsu_state
from rsu_agent import storage as rsu_storage
from rsu_agent.storage import StorageHealth, backoff_s
from tests.helpers_rsu import RSU, TOPICS, Rig, make_update, rsu_settings, task_cfg


class FaultyDisk:
    """Replaces the RSU's atomic writers; `error` set = every write fails with it (and writes nothing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.error: OSError | None = None
        self.failed = 0
        real_bytes, real_json = rsu_state.atomic_write_bytes, rsu_state.atomic_write_json

        def guard(real: Any) -> Any:
            def write(path: Path, data: Any, *a: Any, **kw: Any) -> None:
                if self.error is not None:
                    self.failed += 1
                    raise self.error
                real(path, data, *a, **kw)
            return write

        monkeypatch.setattr(rsu_state, "atomic_write_bytes", guard(real_bytes))
        monkeypatch.setattr(rsu_state, "atomic_write_json", guard(real_json))
        monkeypatch.setattr(rsu_storage, "atomic_write_bytes", guard(real_bytes))

    def full(self) -> None:
        self.error = OSError(errno.ENOSPC, "No space left on device")

    def read_only(self) -> None:
        self.error = OSError(errno.EROFS, "Read-only file system")

    def back(self) -> None:
        self.error = None


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FaultyDisk:
    return FaultyDisk(monkeypatch)


def rig(tmp_path: Path, **task: Any) -> Rig:
    r = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(min_participants=2, **task)]))
    r.vehicle("veh1", x=10.0)
    r.vehicle("veh2", x=-10.0)
    return r


def msgs(r: Rig, channel: Channel, cls: type) -> list[Any]:
    return [d.msg for d in r.messages(channel, cls)]


def rsu_details(r: Rig) -> list[str]:
    return [decode(d.payload, AgentStatus).msg.detail for d in r.seen
            if d.topic == TOPICS.status(Role.RSU, RSU) and d.payload]


def test_backoff_doubles_from_the_first_delay_up_to_the_cap() -> None:
    assert [backoff_s(n, 1.0, 10.0) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    h = StorageHealth(min_s=2.0, max_s=5.0)
    assert not h.degraded and h.detail() == ""
    assert h.failed(100.0, "x", OSError(errno.ENOSPC, "No space left on device")) == 2.0
    assert h.degraded and h.due(102.0) and not h.due(101.9)
    assert "No space left" in h.detail()
    assert h.succeeded(103.0) and not h.degraded and not h.succeeded(104.0)


def test_an_update_that_cannot_be_written_is_rejected_as_storage_and_counts_once_the_disk_is_back(
        tmp_path: Path, disk: FaultyDisk) -> None:
    r = rig(tmp_path)
    r.advance(1.0)
    assert r.agent.tasks["t1"].pending is not None
    disk.full()
    u1 = make_update("veh1", 0, seed=1)
    r.upload(u1)
    c = r.agent.counters
    assert c["accepted"] == 0 and c["rejected"] == {"storage": 1}
    assert r.agent.tasks["t1"].accepted == {}  # nothing counted in memory either
    assert rsu_details(r)[-1].startswith("degraded: storage")
    assert r.agent.healthy()  # rejecting updates is progress; only a stuck open/close is not
    disk.back()
    r.upload(u1)  # the same update again (the vehicle's next try) now counts
    assert r.agent.counters["accepted"] == 1
    assert rsu_details(r)[-1] == ""


@pytest.mark.parametrize("fault", ["full", "read_only"])
def test_a_close_that_cannot_be_written_changes_nothing_and_goes_through_when_the_disk_is_back(
        tmp_path: Path, disk: FaultyDisk, fault: str) -> None:
    r = rig(tmp_path, round_timeout_s=50.0)
    r.advance(1.0)
    r.upload(make_update("veh1", 0, seed=1, joules=400.0))
    tr = r.agent.tasks["t1"]
    lam, layers, seq = tr.meta.lam, dict(tr.layers), tr.meta.seq
    getattr(disk, fault)()
    r.advance(60.0)  # deadline at 51: the close fails
    assert tr.pending is not None and tr.pending.round == 0 and set(tr.accepted) == {"veh1"}
    assert (tr.meta.lam, tr.layers, tr.meta.seq, tr.meta.next_round) == (lam, layers, seq, 0)
    assert msgs(r, Channel.STATS, TaskStats) == []
    assert not r.agent.healthy()
    assert "close:t1" in rsu_details(r)[-1]
    r.advance(200.0)  # retries keep failing, backing off; still nothing applied
    assert tr.pending is not None and not r.agent.healthy()
    retries = disk.failed
    disk.back()
    r.advance(260.0)  # the next retry (backoff at most 8 s) finds the disk back
    stats = msgs(r, Channel.STATS, TaskStats)
    assert [(s.round, s.updates) for s in stats] == [(0, 1)]
    assert stats[0].lam > 0  # 400 J over a 100 J budget: the dual step happened once
    assert tr.pending is None and tr.meta.next_round == 1 and r.agent.healthy()
    assert rsu_details(r)[-1] == ""
    assert retries >= 3
    again = r.new_agent()  # what is on disk is what the agent had
    assert again.tasks["t1"].meta.next_round == 1 and again.tasks["t1"].meta.lam == stats[0].lam


def test_an_open_that_cannot_be_written_announces_nothing_and_opens_when_the_disk_is_back(
        tmp_path: Path, disk: FaultyDisk) -> None:
    disk.read_only()
    r = rig(tmp_path)
    r.advance(30.0)
    tr = r.agent.tasks["t1"]
    assert tr.pending is None and tr.meta.seq == 0
    assert msgs(r, Channel.ROUND, RoundAnnouncement) == []
    assert not r.agent.healthy() and "open:t1" in rsu_details(r)[-1]
    disk.back()
    r.advance(70.0)
    anns = msgs(r, Channel.ROUND, RoundAnnouncement)
    assert [a.round for a in anns] == [0] and anns[0].seq == 1
    assert r.agent.healthy() and rsu_details(r)[-1] == ""


def test_a_restart_after_a_failed_close_resumes_the_round_with_its_updates(tmp_path: Path, disk: FaultyDisk) -> None:
    r = rig(tmp_path, round_timeout_s=50.0)
    r.advance(1.0)
    r.upload(make_update("veh1", 0, seed=1))
    disk.full()
    r.advance(60.0)
    assert r.agent.tasks["t1"].pending is not None
    disk.back()
    r.agent = r.new_agent()  # killed while stuck, restarted: the round and its update are still there
    tr = r.agent.tasks["t1"]
    assert tr.pending is not None and tr.pending.round == 0 and set(tr.accepted) == {"veh1"}
    r.advance(70.0)
    assert [(s.round, s.updates) for s in msgs(r, Channel.STATS, TaskStats)] == [(0, 1)]


def test_budget_and_bookkeeping_writes_that_fail_are_retried_until_meta_catches_up(tmp_path: Path,
                                                                                  disk: FaultyDisk) -> None:
    from tests.helpers_rsu import budget

    r = rig(tmp_path)
    disk.full()
    r.send(*budget("t1", 42.0))
    tr = r.agent.tasks["t1"]
    assert tr.budget_j == 42.0 and tr.meta_dirty
    r.advance(0.5)
    assert rsu_details(r)[-1].startswith("degraded")
    disk.back()
    r.advance(0.9)  # not open yet (join_wait 1 s): only the meta retry
    r.advance(40.0)
    assert not tr.meta_dirty and rsu_details(r)[-1] == ""
    assert r.new_agent().tasks["t1"].budget_j == 42.0
