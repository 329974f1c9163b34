"""Tri-feedback budgets (docs/algorithms.md section 5) with hand-computed numbers."""

from __future__ import annotations

import logging

import pytest

from cloud_agent.tri_feedback import TaskWindow, TriFeedbackConfig, TriFeedbackState, allocate, equal_split

CFG = TriFeedbackConfig()  # xi 0.9, gamma 2, eps 1e-3, rho_max 0.7, e_min 0


def test_surplus_goes_by_difficulty_squared_times_utilisation():
    windows = [
        TaskWindow("a", used_j=10, allocated_j=20, accuracy_gain=0.05),  # h = 200, u = 0.5, w = 40000 * 0.5 = 20000
        TaskWindow("b", used_j=10, allocated_j=10, accuracy_gain=0.10),  # h = 100, u = 1.0, w = 10000
        TaskWindow("c", used_j=10, allocated_j=20, accuracy_gain=0.10),  # h = 100, u = 0.5, w = 5000
    ]
    alloc, state = allocate(windows, TriFeedbackState(), 100.0, CFG)
    # surplus 100 - 30 = 70: a 10 + 70 * 20/35, b 10 + 70 * 10/35, c 10 + 70 * 5/35.
    assert alloc == pytest.approx({"a": 50.0, "b": 30.0, "c": 20.0})
    # First observation starts the difficulty.
    assert state.difficulty == pytest.approx({"a": 200.0, "b": 100.0, "c": 100.0})


def test_difficulty_is_smoothed_with_xi_and_absent_tasks_keep_theirs():
    prev = TriFeedbackState(difficulty={"a": 200.0, "z": 7.0})
    _, state = allocate([TaskWindow("a", 10, 50, 0.1), TaskWindow("b", 10, 50, 0.1)], prev, 100.0, CFG)
    # a: 0.9 * 200 + 0.1 * 10 / 0.1 = 190;  b starts at 100;  z untouched.
    assert state.difficulty == pytest.approx({"a": 190.0, "b": 100.0, "z": 7.0})
    assert prev.difficulty == {"a": 200.0, "z": 7.0}  # the input state is not modified


def test_allocation_above_rho_max_is_clipped_and_the_rest_renormalised():
    windows = [
        TaskWindow("a", used_j=20, allocated_j=25, accuracy_gain=0.1),  # h = 200, u = 0.8, w = 32000
        TaskWindow("b", used_j=10, allocated_j=25, accuracy_gain=0.2),  # h = 50,  u = 0.4, w = 1000
    ]
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG)
    # Raw: a 20 + 70 * 32/33 = 87.88 > 0.7 * 100 -> 70; b takes the remaining 30.
    assert alloc == pytest.approx({"a": 70.0, "b": 30.0})
    # With E_min = 35 the raw b (12.12) is lifted to 35 and a is scaled down to 65: still sums to 100.
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG.model_copy(update={"e_min_j": 35.0}))
    assert alloc == pytest.approx({"a": 65.0, "b": 35.0})


def test_a_task_with_no_progress_gets_its_difficulty_pushed_up_but_is_bounded_by_rho_max():
    windows = [TaskWindow("stuck", 10, 50, 0.0), TaskWindow("ok", 10, 50, 0.1)]
    alloc, state = allocate(windows, TriFeedbackState(), 100.0, CFG)
    assert state.difficulty["stuck"] == pytest.approx(10 / 1e-3)
    # Raw: stuck 10 + 80 * 10000/10001 = 89.99 -> 70; ok 30.
    assert alloc == pytest.approx({"stuck": 70.0, "ok": 30.0})
    # A regression (negative gain) counts as no progress.
    _, state = allocate([TaskWindow("stuck", 10, 50, -0.2)], TriFeedbackState(), 100.0, CFG)
    assert state.difficulty["stuck"] == pytest.approx(10 / 1e-3)


def test_an_overspent_window_is_cut_pro_rata():
    windows = [TaskWindow("a", 90, 50, 0.1), TaskWindow("b", 60, 50, 0.1)]
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG)
    assert alloc == pytest.approx({"a": 100 * 90 / 150, "b": 100 * 60 / 150})


def test_tasks_that_used_nothing_share_what_the_capped_tasks_cannot_take():
    windows = [TaskWindow("a", 10, 10, 0.1), TaskWindow("b", 0, 10, 0.1), TaskWindow("c", 0, 10, 0.1)]
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG)
    # Raw a = 100, b = c = 0: a is capped at 70 and b, c split the remaining 30.
    assert alloc == pytest.approx({"a": 70.0, "b": 15.0, "c": 15.0})
    # Nothing used anywhere: every weight is 0 and the surplus is split equally.
    idle = [TaskWindow("a", 0, 10, 0.0), TaskWindow("b", 0, 0, 0.0)]
    assert allocate(idle, TriFeedbackState(), 100.0, CFG)[0] == pytest.approx({"a": 50.0, "b": 50.0})


def test_infeasible_bounds_give_the_equal_split_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cloud_agent.tri_feedback"):
        alloc, _ = allocate([TaskWindow("only", 10, 100, 0.1)], TriFeedbackState(), 100.0, CFG)
    assert alloc == {"only": 100.0}  # one task cannot respect rho_max = 0.7 and use the whole budget
    assert "cannot sum" in caplog.text
    three = [TaskWindow(t, 10, 10, 0.1) for t in "abc"]
    alloc, _ = allocate(three, TriFeedbackState(), 100.0, CFG.model_copy(update={"e_min_j": 40.0}))
    assert alloc == pytest.approx({"a": 100 / 3, "b": 100 / 3, "c": 100 / 3})


def test_state_round_trips_through_json_and_bad_state_is_rejected():
    state = TriFeedbackState(difficulty={"a": 190.0, "b": 1e4})
    assert TriFeedbackState.from_json(state.to_json()) == state
    for bad in (
        "not json",
        "[]",
        '{"difficulty": {"a": -1}}',
        '{"difficulty": {"a": "x"}}',
        '{"difficulty": {"a": NaN}}',
    ):
        with pytest.raises(ValueError):
            TriFeedbackState.from_json(bad)


@pytest.mark.parametrize(
    "window",
    [
        TaskWindow("a", -1.0, 10.0, 0.1),
        TaskWindow("a", 1.0, float("inf"), 0.1),
        TaskWindow("a", 1.0, 10.0, float("nan")),
    ],
)
def test_negative_or_non_finite_inputs_are_rejected(window):
    with pytest.raises(ValueError):
        allocate([window], TriFeedbackState(), 100.0, CFG)


def test_duplicate_tasks_empty_windows_and_bad_totals_are_rejected():
    with pytest.raises(ValueError, match="twice"):
        allocate([TaskWindow("a", 1, 1, 0.1), TaskWindow("a", 1, 1, 0.1)], TriFeedbackState(), 100.0, CFG)
    with pytest.raises(ValueError, match="no task"):
        allocate([], TriFeedbackState(), 100.0, CFG)
    with pytest.raises(ValueError, match="e_total_j"):
        allocate([TaskWindow("a", 1, 1, 0.1)], TriFeedbackState(), 0.0, CFG)


def test_equal_split():
    assert equal_split(["a", "b", "c", "d"], 10.0) == {"a": 2.5, "b": 2.5, "c": 2.5, "d": 2.5}
    with pytest.raises(ValueError):
        equal_split([], 10.0)


def test_an_idle_task_gets_nothing_unless_e_min_reserves_a_floor():
    windows = [TaskWindow("a", 10, 10, 0.1), TaskWindow("b", 10, 10, 0.1), TaskWindow("idle", 0, 10, 0.0)]
    # a, b: h = 100, u = 1, equal weights -> 10 + 80/2 = 50 each; idle: U = 0, u = 0, w = 0 -> 0.
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG)
    assert alloc == pytest.approx({"a": 50.0, "b": 50.0, "idle": 0.0})
    # E_min = 5 lifts the idle task to 5 and scales a, b to 47.5 each.
    alloc, _ = allocate(windows, TriFeedbackState(), 100.0, CFG.model_copy(update={"e_min_j": 5.0}))
    assert alloc == pytest.approx({"a": 47.5, "b": 47.5, "idle": 5.0})
