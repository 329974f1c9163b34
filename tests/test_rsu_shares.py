"""The share rule (docs/algorithms.md section 3): budget shares proportional to each vehicle's reference cost."""

from __future__ import annotations

import pytest

from proto.messages import RoundAnnouncement
from proto.topics import Channel
from rsu_agent.shares import budget_shares, learn_reference
from tests.helpers_rsu import Rig, make_update, rsu_settings, task_cfg


def test_shares_are_proportional_to_reference_costs_and_equal_when_unknown() -> None:
    assert budget_shares(90.0, ["a", "b", "c"], {}) == {"a": 30.0, "b": 30.0, "c": 30.0}
    # a (NX-like) spends twice b (Nano-like) at full work; c unseen takes the mean of the known (150)
    shares = budget_shares(120.0, ["a", "b", "c"], {"a": 200.0, "b": 100.0})
    assert shares == {"a": pytest.approx(120 * 200 / 450), "b": pytest.approx(120 * 100 / 450),
                      "c": pytest.approx(120 * 150 / 450)}
    assert budget_shares(10.0, [], {"a": 1.0}) == {}


def test_reference_cost_learns_full_own_rounds_scaled_by_work_only() -> None:
    ref: dict[str, float] = {}
    assert learn_reference(ref, "a", make_update("a", 0, joules=40.0, work=0.5).report)
    assert ref == {"a": 80.0}  # 40 J at half the work: 80 J at the reference (full) work
    assert learn_reference(ref, "a", make_update("a", 0, joules=100.0).report)
    assert ref["a"] == pytest.approx(0.7 * 80 + 0.3 * 100)
    for rep in (make_update("a", 0, joules=5.0, partial=True).report,
                make_update("a", 0, joules=5.0, migrated_from="b").report,
                make_update("a", 0, joules=0.0).report):
        assert not learn_reference(ref, "a", rep)
    assert ref["a"] == pytest.approx(86.0)


def test_announcements_carry_the_work_fractions_and_shares_learned_from_reports(tmp_path) -> None:
    rig = Rig(tmp_path, rsu_settings(tmp_path, tasks=[task_cfg(work=[0.25, 0.5, 1.0])]))
    for v in ("v1", "v2"):
        rig.vehicle(v, x=10.0)
    rig.advance(1.0)
    ann = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert ann.work == [0.25, 0.5, 1.0] and ann.shares == {"v1": 50.0, "v2": 50.0}  # B = 100 J, nothing known
    rig.upload(make_update("v1", 0, joules=20.0, work=0.5, seed=1))  # 40 J at full work
    rig.upload(make_update("v2", 0, joules=20.0, work=0.25, seed=2))  # 80 J at full work
    rig.advance(7.0)
    ann = rig.messages(Channel.ROUND, RoundAnnouncement)[-1].msg
    assert ann.round == 1 and ann.shares == {"v1": pytest.approx(100 / 3), "v2": pytest.approx(200 / 3)}
    rig.agent = rig.new_agent()  # a restart keeps what the RSU learned
    assert rig.agent.tasks["t1"].meta.ref_cost_j == {"v1": pytest.approx(40.0), "v2": pytest.approx(80.0)}


def test_work_fractions_must_end_with_the_reference_configuration() -> None:
    with pytest.raises(ValueError):
        task_cfg(work=[0.25, 0.5])
    with pytest.raises(ValueError):
        task_cfg(work=[0.5, 0.25, 1.0])
