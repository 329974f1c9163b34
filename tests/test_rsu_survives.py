"""Every RSU timer survives its own failure: an open that raises is retried, a close that raises closes the round
as failed (with a reason) and the next round opens, a periodic job that raises runs again."""

from __future__ import annotations

import torch

import rsu_agent.rounds as rounds_mod
from proto.messages import AgentStatus, RoundAnnouncement, TaskStats
from proto.topics import Channel
from tests.helpers_rsu import Rig, make_update, rsu_settings


def test_an_open_that_raises_is_counted_and_retried(tmp_path, monkeypatch):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    calls = {"n": 0}
    real = rig.agent._inside

    def flaky(st: AgentStatus) -> bool:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OverflowError("(34, 'Numerical result out of range')")
        return real(st)

    monkeypatch.setattr(rig.agent, "_inside", flaky)
    rig.advance(1.0)  # join_wait_s: the first try raises
    assert rig.agent.failures["open:t1"] == 1
    assert rig.agent.tasks["t1"].pending is None
    rig.advance(12.0)  # participant_retry_s later it looks again
    assert rig.agent.tasks["t1"].pending is not None
    assert [a.msg.round for a in rig.messages(Channel.ROUND, RoundAnnouncement)] == [0]


def test_a_close_that_raises_closes_the_round_as_failed_and_the_next_opens(tmp_path, monkeypatch):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)

    def broken(*a: object, **k: object) -> None:
        raise torch.linalg.LinAlgError("SVD did not converge")  # not a ValueError: the old guard missed it

    monkeypatch.setattr(rounds_mod, "aggregate_robust", broken)
    rig.upload(make_update("v1", 0))
    rec = rig.agent.history[-1]
    assert (rec.round, rec.updates, rec.closed_by) == (0, 0, "all_arrived:failed")
    assert "LinAlgError" in rec.note
    stats = rig.messages(Channel.STATS, TaskStats)
    assert [(s.msg.round, s.msg.updates) for s in stats] == [(0, 0)]
    tr = rig.agent.tasks["t1"]
    assert tr.pending is None and tr.meta.next_round == 1 and not tr.layers and tr.meta.lam == 0.0
    assert not list((tmp_path / "tasks" / "t1").glob("round_*"))  # the failed round's updates are gone
    monkeypatch.undo()
    rig.advance(rig.clock.now() + 6.0)  # round_gap_s
    assert tr.pending is not None and tr.pending.round == 1
    rig.upload(make_update("v1", 1))
    assert rig.agent.history[-1].updates == 1  # the legitimate vehicle's next update counts
    rig.agent = rig.new_agent()  # and a restart finds a clean task
    assert rig.agent.tasks["t1"].meta.next_round == 2 and rig.agent.tasks["t1"].pending is None


def test_a_close_that_fails_even_as_failed_is_retried_not_abandoned(tmp_path, monkeypatch):
    rig = Rig(tmp_path, rsu_settings(tmp_path))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    import rsu_agent.round_cycle as cycle_mod  # where `_close` looks the name up

    monkeypatch.setattr(cycle_mod, "close_or_fail", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("broke")))
    rig.upload(make_update("v1", 0))
    assert rig.agent.failures["close:t1"] == 1 and rig.agent.tasks["t1"].pending is not None
    monkeypatch.undo()
    rig.advance(rig.clock.now() + 11.0)  # participant_retry_s
    assert rig.agent.tasks["t1"].pending is None and rig.agent.history[-1].updates == 1


def test_a_periodic_job_that_raises_runs_again(tmp_path, monkeypatch):
    rig = Rig(tmp_path, rsu_settings(tmp_path, status_interval_s=10.0))
    calls = {"n": 0}
    real = rig.agent._status_changed

    def flaky() -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        real()

    monkeypatch.setattr(rig.agent, "_status_changed", flaky)
    rig.advance(35.0)
    assert rig.agent.failures["status"] == 1 and calls["n"] == 3
