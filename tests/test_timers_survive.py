"""The same guarantee for every role: a periodic job that raises is logged, counted and runs again
(`Agent.every`); the cloud's window closes even when its allocation fails in an unforeseen way."""

from __future__ import annotations

import cloud_agent.agent as cloud_mod
from fedrank.runtime import Agent, SimClock
from proto.bus import Delivery
from tests.test_cloud_agent import CloudRig


class _Bare(Agent):
    def start(self) -> None: ...
    def stop(self) -> None: ...
    def on_delivery(self, d: Delivery) -> None: ...


def _run(agent: Agent, clock: SimClock, until: float) -> None:
    while (due := agent.next_deadline()) is not None and due <= until:
        clock.advance_to(max(due, clock.now()))
        agent.on_tick()


def test_every_reschedules_a_job_that_raises_and_counts_it():
    clock = SimClock(0.0)
    agent = _Bare(clock)
    runs: list[float] = []

    def job() -> None:
        runs.append(clock.now())
        if len(runs) % 2:
            raise OverflowError("odd run")

    agent.every(10.0, job, "job")
    _run(agent, clock, 45.0)
    assert runs == [0.0, 10.0, 20.0, 30.0, 40.0] and agent.failures["job"] == 3


def test_the_clouds_status_job_survives_a_failing_run(tmp_path, monkeypatch):
    rig = CloudRig(tmp_path, status_interval_s=10.0)
    calls = {"n": 0}
    real = rig.agent._status

    def flaky(state: str):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(state)

    monkeypatch.setattr(rig.agent, "_status", flaky)
    _run(rig.agent, rig.clock, 35.0)
    assert calls["n"] == 3 and rig.agent.failures["status"] == 1


def test_the_clouds_window_closes_when_allocation_overflows(tmp_path, monkeypatch):
    rig = CloudRig(tmp_path)

    def overflow(*a: object, **k: object) -> None:
        raise OverflowError("math range error")  # not a ValueError: the old guard missed it

    monkeypatch.setattr(cloud_mod, "allocate", overflow)
    before = rig.budgets()
    for r in (0, 1):
        for t in ("a", "b"):
            rig.stats(t, r, 100.0, 0.5 + 0.1 * r)
    after = rig.budgets()
    assert rig.agent.failures["allocate"] == 1
    assert {t: b.round for t, b in after.items()} == {"a": 1, "b": 1}  # the next window was published
    assert {t: b.window_budget_j for t, b in after.items()} == {t: b.window_budget_j for t, b in before.items()}
