"""A vehicle's finished round waits for the RSU's round latency; that wait survives a restart of the edge daemon
(issue 10, "restart keeps statistics"): the held outcome is on disk, restored on start and learned exactly once."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from edge_agent.bandit import Arm, UcbDual
from edge_agent.scoring import Outcome, PendingOutcomes
from tests.test_vehicle_agent import Rig

FILE = "pending-outcomes.json"


def bandit(state: Path) -> UcbDual:
    return UcbDual(seed=0, stream="veh1/t1", state_path=state / "bandit-t1.json")  # the real one, on disk


def restart(first: Rig, state: Path, client: str) -> Rig:
    """New agent, policy and learner objects over the same state dir and broker (the retained round included)."""
    first.bus.close()
    rig = Rig(state, broker=first.broker, client=client)
    rig.policy = bandit(state)
    return rig


def test_a_held_outcome_survives_a_restart_and_is_learned_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = Rig(state)
    first.policy = bandit(state)
    first.announce(0, ranks=(4,))
    first.agent.pump()
    assert len(first.updates) == 1 and len(first.agent._unscored) == 1
    assert first.policy.total_pulls == 0  # waiting for the round's latency

    second = restart(first, state, "veh1-b")  # the daemon restarted before the next announcement
    second.agent.pump()  # the retained round 0 again: seen before, nothing trained, nothing learned
    assert second.policy.total_pulls == 0 and second.learner.calls == []
    second.announce(1, ranks=(4,), participants=("veh2",), last_latency=30.0)  # round 0 took 30 s; not invited
    second.agent.pump()
    stats = second.policy.stats[Arm(4)]
    assert (stats.n_e, stats.n_q, stats.tau_hat, stats.q_hat) == (1.0, 1.0, pytest.approx(30.0), pytest.approx(0.6))
    assert json.loads((state / FILE).read_text())["kept"] == {}

    third = restart(second, state, "veh1-c")  # round 1's announcement redelivered (retained) after another restart
    third.agent.pump()
    assert third.policy.stats[Arm(4)].n_e == 1.0 and len(third.agent._unscored) == 0  # learned once, not twice


def test_a_corrupt_file_is_moved_aside_and_the_vehicle_starts_empty(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / FILE).write_text('{"kind": "fedrank.pending-outcomes", "version": 1, "kept": {"rsu1/t1": {"ro')
    with caplog.at_level(logging.WARNING, logger="edge_agent.scoring"):
        rig = Rig(state)
    assert len(rig.agent._unscored) == 0 and not (state / FILE).exists()
    assert len(list(state.glob(f"{FILE}.bad-*"))) == 1
    assert sum("pending outcomes" in r.getMessage() for r in caplog.records) == 1
    rig.announce(0)
    rig.agent.pump()  # and it works as before: a new round is held and written
    assert len(rig.updates) == 1 and len(rig.agent._unscored) == 1 and (state / FILE).is_file()


@pytest.mark.parametrize("doc", [
    [],  # not an object
    {"kind": "fedrank.bandit", "version": 1, "kept": {}},  # another file
    {"kind": "fedrank.pending-outcomes", "version": 1, "kept": {"a/t": {"task": "t", "round": 0, "arm": "r4w1",
                                                                        "q": 1.5, "joules": 1.0, "wall_s": 1.0}}},
    {"kind": "fedrank.pending-outcomes", "version": 1, "kept": {"a/t": {"task": "t", "round": 0, "arm": "x",
                                                                        "q": 0.5, "joules": 1.0, "wall_s": 1.0}}},
    {"kind": "fedrank.pending-outcomes", "version": 1, "kept": {"a/t": {"task": "t", "round": -1, "arm": "r4w1",
                                                                        "q": 0.5, "joules": 1.0, "wall_s": 1.0}}},
])
def test_malformed_outcomes_are_refused_whole(tmp_path: Path, doc: object) -> None:
    (tmp_path / FILE).write_text(json.dumps(doc))
    assert len(PendingOutcomes(tmp_path / FILE)) == 0
    assert len(list(tmp_path.glob(f"{FILE}.bad-*"))) == 1


def test_outcomes_round_trip_and_an_unwritable_file_keeps_them_in_memory(tmp_path: Path) -> None:
    out = Outcome("t1", 3, Arm(8, 0.5), 0.75, 12.5, 4.0)
    kept = PendingOutcomes(tmp_path / FILE)
    assert kept.keep("rsu1/t1", out) is None
    assert PendingOutcomes(tmp_path / FILE).settle("rsu1/t1", 3, 9.0) == (out, 9.0)  # restored equal
    assert len(PendingOutcomes(tmp_path / FILE)) == 0  # settled: gone from the file too
    blocked = PendingOutcomes(tmp_path / "file" / FILE)
    (tmp_path / "file").write_text("a file where the directory should be")
    blocked.keep("rsu1/t1", out)  # logged, not raised
    assert len(blocked) == 1


@pytest.mark.parametrize("content", ['{"seq": "seven"}', '{"seq": 3, "done_rounds": [1, 2]}',
                                     '{"done_rounds": {"rsu1/t1": null}}', '[1, 2]'])
def test_vehicle_state_of_the_wrong_shape_is_set_aside_and_the_vehicle_starts(tmp_path: Path, content: str,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "vehicle.json").write_text(content)
    with caplog.at_level(logging.WARNING, logger="fedrank.state"):
        rig = Rig(state)
    fresh = Rig(tmp_path / "fresh")  # what a vehicle with no state on disk starts with
    assert rig.agent.seq == fresh.agent.seq and rig.agent.done_rounds == {}
    assert not (state / "vehicle.json").exists() and len(list(state.glob("vehicle.json.bad-*"))) == 1
    assert any("vehicle state" in r.getMessage() for r in caplog.records)
    rig.announce(0, ranks=(4,))
    rig.agent.pump()
    assert len(rig.updates) == 1  # and it takes part as usual
