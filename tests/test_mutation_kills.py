"""Tests written to kill mutants that survived `make mutation` (TESTING.md lists each by name).

They pin what the earlier tests walked past: the exact rejection messages (an operator reads them), the
boundaries just inside the valid ranges, and the guards of the helper functions.
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from rsu_agent.dual import dual_step, violation


# -- rsu_agent/dual.py ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kw", "name", "value"), [
    ({"lam": -0.1}, "lam", -0.1),
    ({"lam": math.nan}, "lam", math.nan),
    ({"energy_j": -1.0}, "energy_j", -1.0),
    ({"mu": -0.5}, "mu", -0.5),
    ({"lam_max": math.inf}, "lam_max", math.inf),
])
def test_dual_step_names_the_bad_input_and_its_bound(kw: dict, name: str, value: float) -> None:
    args = {"lam": 0.5, "energy_j": 10.0, "budget_j": 100.0, "mu": 0.5, "lam_max": 10.0, **kw}
    with pytest.raises(ValueError) as exc:
        dual_step(**args)
    assert str(exc.value) == f"{name} = {value!r} must be finite and >= 0.0"


def test_violation_checks_its_energy_and_names_it() -> None:
    with pytest.raises(ValueError, match=re.escape("energy_j = -1.0 must be finite and >= 0.0")):
        violation(-1.0, 100.0)
    with pytest.raises(ValueError, match=re.escape("energy_j = nan must be finite and >= 0.0")):
        violation(math.nan, 100.0)
    with pytest.raises(ValueError, match=re.escape("budget_j = 0.0 must be finite and > 0")):
        violation(1.0, 0.0)


def test_inputs_just_inside_their_ranges_are_accepted() -> None:
    # a budget below 1 J and an energy below 1 J are ordinary values, not errors
    assert dual_step(1.0, 0.25, 0.5, mu=0.5) == pytest.approx(1.0 + 0.5 * (0.25 - 0.5) / 0.5)
    assert dual_step(0.0, 0.5, 0.25, mu=0.1) == pytest.approx(0.1 * (0.5 - 0.25) / 0.25)
    assert violation(0.5, 0.25) == pytest.approx(0.25)
    assert violation(0.0, 0.5) == 0.0


# -- rsu_agent/validate.py -----------------------------------------------------------------------------------
def _update(rank: int = 4, alpha: float = 16.0, tensors: dict | None = None, **report_kw: object):
    from proto.adapter import pack_lora
    from proto.messages import UpdateReport, VehicleUpdate
    from tests.helpers_rsu import factors, head

    rep = {"rank": rank, "samples": 10, "joules": 1.0, "energy_source": "rapl", "energy_measured": True,
           "train_s": 1.0, "wall_s": 1.0, "local_accuracy": 0.5, "loss": 0.1, **report_kw}
    msg = VehicleUpdate(sender="v1", task="t1", round=0, rsu="rsu1", lora_alpha=16.0,
                        report=UpdateReport.model_construct(**rep))
    object.__setattr__(msg, "lora_alpha", alpha)  # as a constructed message could carry it
    return msg, (pack_lora(factors(rank, 0), head(0)) if tensors is None else tensors)


def _rejected(msg, tensors, expected_head=None) -> tuple[str, str]:
    from rsu_agent.validate import UpdateRejected, validate_update
    from tests.helpers_rsu import task_cfg

    with pytest.raises(UpdateRejected) as exc:
        validate_update(msg, tensors, task_cfg(), expected_head)
    return exc.value.reason, exc.value.detail


@pytest.mark.parametrize(("kw", "detail"), [
    ({"joules": -1.0}, "joules = -1.0 must be finite and >= 0"),
    ({"local_accuracy": math.nan}, "local_accuracy = nan must be finite and >= 0"),
    ({"loss": math.inf}, "loss = inf must be finite and >= 0"),
    ({"wall_s": "3"}, "wall_s = '3' must be finite and >= 0"),
    ({"local_accuracy": 1.5}, "local_accuracy = 1.5 outside [0, 1]"),
    ({"samples": 0}, "samples = 0 must be a positive integer"),
    ({"samples": 2.0}, "samples = 2.0 must be a positive integer"),
])
def test_each_bad_report_field_is_named_in_the_rejection(kw: dict, detail: str) -> None:
    assert _rejected(*_update(**kw)) == ("bad_report", detail)


def test_rank_alpha_shape_and_head_rejections_say_what_was_expected() -> None:
    from proto.adapter import LoraFactors, pack_lora
    from tests.helpers_rsu import factors, head

    assert _rejected(*_update(rank=3)) == ("rank_not_candidate", "rank 3 not in [2, 4, 8, 16, 32]")
    assert _rejected(*_update(alpha=8.0)) == ("alpha_mismatch", "lora_alpha 8.0 != task's 16.0")
    f = factors(4, 0)
    f["v"] = LoraFactors(A=f["v"].A, B=torch.zeros(9, 4))  # A (4, 16) fits; B (9, 4) has one row too few
    assert _rejected(*_update(tensors=pack_lora(f, head(0)))) == (
        "bad_shape", "v: A(4, 16) B(9, 4), expected A(4, 16) B(10, 4)")
    g = factors(4, 0)
    g["q"] = LoraFactors(A=torch.zeros(4, 11), B=g["q"].B)  # B fits, A is one column short
    assert _rejected(*_update(tensors=pack_lora(g, head(0)))) == (
        "bad_shape", "q: A(4, 11) B(16, 4), expected A(4, 12) B(16, 4)")
    reason, detail = _rejected(*_update(), expected_head={"weight": (3, 16), "bias": (3,)})
    assert reason == "bad_head" and detail.startswith("head {") and "does not match {'weight': (3, 16)" in detail
    reason, detail = _rejected(*_update(tensors={"q.lora_A": torch.zeros(4, 12)}))
    assert reason == "bad_layers" and detail  # the adapter module's detail is passed on, not lost


def test_values_at_the_edges_of_their_ranges_are_accepted() -> None:
    from rsu_agent.validate import validate_update
    from tests.helpers_rsu import task_cfg

    for kw in ({"joules": 0.0, "loss": 0.0, "wall_s": 0.0, "local_accuracy": 0.0},
               {"local_accuracy": 1.0}, {"samples": 1}):
        msg, tensors = _update(**kw)
        assert validate_update(msg, tensors, task_cfg(), None).samples == kw.get("samples", 10)
    msg, tensors = _update(alpha=16.0 * (1 + 1e-7))  # float noise from a JSON round trip, within 1e-6
    assert validate_update(msg, tensors, task_cfg(), None).alpha == pytest.approx(16.0)


def test_half_precision_factors_are_upcast_for_the_aggregate() -> None:
    from proto.adapter import LoraFactors, pack_lora
    from rsu_agent.validate import validate_update
    from tests.helpers_rsu import factors, head, task_cfg

    f = {k: LoraFactors(A=v.A.half(), B=v.B.half()) for k, v in factors(4, 0).items()}
    msg, tensors = _update(tensors=pack_lora(f, head(0)))
    upd = validate_update(msg, tensors, task_cfg(), None)
    assert {(t.A.dtype, t.B.dtype) for t in upd.layers.values()} == {(torch.float32, torch.float32)}
    assert torch.equal(upd.layers["q"].A, f["q"].A.float())


# -- cloud_agent/tri_feedback.py -----------------------------------------------------------------------------
def test_tri_feedback_state_round_trip_is_canonical_and_its_errors_say_why() -> None:
    from cloud_agent.tri_feedback import TriFeedbackState

    assert TriFeedbackState({"b": 1.0, "a": 2.0}).to_json() == '{"difficulty": {"a": 2.0, "b": 1.0}}'
    assert TriFeedbackState.from_json('{"difficulty": {"a": 0, "b": 0.5}}').difficulty == {"a": 0.0, "b": 0.5}
    with pytest.raises(ValueError, match=r"^tri-feedback state is not JSON: Expecting value"):
        TriFeedbackState.from_json("nope")
    with pytest.raises(ValueError, match=r"^tri-feedback state needs a 'difficulty' object$"):
        TriFeedbackState.from_json('{"difficulty": [1]}')
    with pytest.raises(ValueError, match=r"^difficulty of task 'a' = -1 must be a finite number >= 0$"):
        TriFeedbackState.from_json('{"difficulty": {"a": -1}}')


def test_tri_feedback_input_errors_name_the_field() -> None:
    from cloud_agent.tri_feedback import TaskWindow, TriFeedbackConfig, TriFeedbackState, allocate, equal_split

    cfg, st = TriFeedbackConfig(), TriFeedbackState()
    with pytest.raises(ValueError, match=r"^no task windows to allocate over$"):
        allocate([], st, 100.0, cfg)
    with pytest.raises(ValueError, match=r"^task 'a': used_j = -1.0 must be finite and >= 0$"):
        allocate([TaskWindow("a", -1.0, 1.0, 0.1)], st, 100.0, cfg)
    with pytest.raises(ValueError, match=r"^task 'a': accuracy_gain = nan must be finite$"):
        allocate([TaskWindow("a", 1.0, 1.0, math.nan)], st, 100.0, cfg)
    with pytest.raises(ValueError, match=r"^tasks \['a', 'a'\] must be non-empty and distinct$"):
        equal_split(["a", "a"], 1.0)
    with pytest.raises(ValueError, match=r"^e_total_j = nan must be finite and >= 0$"):
        equal_split(["a"], math.nan)
    assert equal_split(["a", "b"], 0.0) == {"a": 0.0, "b": 0.0}
    assert equal_split(["a", "b"], 0.5) == {"a": 0.25, "b": 0.25}
    alloc, _ = allocate([TaskWindow("a", 0.1, 0.25, 0.1), TaskWindow("b", 0.1, 0.25, 0.1)], st, 0.5,
                        TriFeedbackConfig(rho_max=1.0))
    assert alloc == pytest.approx({"a": 0.25, "b": 0.25})  # a total below 1 J is a total


def test_clip_to_total_at_its_edges() -> None:
    from cloud_agent.tri_feedback import clip_to_total

    # every task pinned at lo (n lo = total): the scale is 0, no interpolation between equal values
    assert clip_to_total({"a": 1.0, "b": 3.0}, 100.0, 50.0, 100.0) == {"a": 50.0, "b": 50.0}
    # raw values below 1 are still positive
    assert clip_to_total({"a": 0.2, "b": 0.6}, 8.0, 0.0, 8.0) == pytest.approx({"a": 2.0, "b": 6.0})
    # no positive raw value: an equal split
    assert clip_to_total({"a": 0.0, "b": 0.0}, 10.0, 0.0, 10.0) == {"a": 5.0, "b": 5.0}
    # the total reached exactly at the last kink
    assert clip_to_total({"a": 1.0, "b": 1.0}, 20.0, 0.0, 10.0) == {"a": 10.0, "b": 10.0}
    # positive tasks all at hi and still short: the raw-zero tasks share the rest
    assert clip_to_total({"a": 0.5, "b": 0.0}, 15.0, 0.0, 10.0) == {"a": 10.0, "b": 5.0}
    assert clip_to_total({"a": 1.0, "b": 1.0, "c": 0.0}, 25.0, 0.0, 10.0) == {"a": 10.0, "b": 10.0, "c": 5.0}


def test_allocation_weights_small_allocations_and_huge_difficulties() -> None:
    from cloud_agent.tri_feedback import TaskWindow, TriFeedbackConfig, TriFeedbackState, allocate

    cfg = TriFeedbackConfig(rho_max=1.0)
    # equal difficulty; u_a = 0.25 / 0.5, u_b = 0.25 / 0.25: the surplus of 10 J splits 1 : 2
    win = [TaskWindow("a", 0.25, 0.5, 0.1), TaskWindow("b", 0.25, 0.25, 0.1)]
    alloc, _ = allocate(win, TriFeedbackState(), 10.5, cfg)
    assert alloc == pytest.approx({"a": 0.25 + 10 / 3, "b": 0.25 + 20 / 3})
    # difficulties below 1 (h_a = 0.1, h_b = 0.05): weights (h / h_top)^2 u = 1 and 0.25
    win = [TaskWindow("a", 0.1, 0.1, 1.0), TaskWindow("b", 0.05, 0.1, 1.0)]
    alloc, _ = allocate(win, TriFeedbackState(), 10.15, TriFeedbackConfig(rho_max=1.0, xi=0.0))
    wb = 0.25 * 0.5
    assert alloc == pytest.approx({"a": 0.1 + 10 / (1 + wb), "b": 0.05 + 10 * wb / (1 + wb)})
    # carried difficulties near the float limit: h^gamma would overflow without the scaling by h_top
    st = TriFeedbackState({"a": 1e300, "b": 5e299})
    win = [TaskWindow("a", 10.0, 50.0, 0.1), TaskWindow("b", 10.0, 50.0, 0.1)]
    alloc, _ = allocate(win, st, 100.0, TriFeedbackConfig(rho_max=1.0))
    assert all(math.isfinite(v) for v in alloc.values()) and sum(alloc.values()) == pytest.approx(100.0)
    assert alloc["a"] == pytest.approx(10 + 80 * 1 / (1 + 0.25))
