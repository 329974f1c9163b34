"""Tests written to kill mutants that survived `make mutation` (TESTING.md lists each by name).

They pin what the earlier tests walked past: the exact rejection messages (an operator reads them), the
boundaries just inside the valid ranges, and the guards of the helper functions.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

import edge_agent.bandit as bd
from rsu_agent.dual import dual_step, violation
from tests.helpers_rsu import make_update


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
    msg, tensors = _update(tensors=pack_lora(f, {k: v.half() for k, v in head(0).items()}))
    upd = validate_update(msg, tensors, task_cfg(), None)
    assert {(t.A.dtype, t.B.dtype) for t in upd.layers.values()} == {(torch.float32, torch.float32)}
    assert {t.dtype for t in upd.head.values()} == {torch.float32}
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


# -- edge_agent/bandit.py (today's UcbDual; issue 10 replaces the selection) -------------------------------
def _state(path, arms: object, kind: str | None = None, version: object = None, ranks: object = None) -> None:
    from edge_agent.bandit import STATE_KIND, STATE_VERSION

    doc = {"kind": kind or STATE_KIND, "version": STATE_VERSION if version is None else version,
           "ranks": [2, 4] if ranks is None else ranks, "arms": arms}
    path.write_text(json.dumps(doc))


GOOD_ARM = {"n": 3, "r_hat": 0.5, "n_cost": 2, "c_hat": 1.0}


@pytest.mark.parametrize(("bad", "why"), [
    ({"a2": {**GOOD_ARM, "c_hat": "x"}}, "ValueError: means are not numbers"),
    ({"a2": {**GOOD_ARM, "r_hat": 1.5}}, "ValueError: means out of range r_hat=1.5 c_hat=1.0"),
    ({"a2": {**GOOD_ARM, "n_cost": 4}}, "ValueError: bad pull counts n=3 n_cost=4"),
    ({"a2": 5}, "ValueError: arm entry is not an object"),
    ({"kind": "other"}, "ValueError: not a fedrank UCB-DUAL state file of this version"),
    ({"doc": []}, "ValueError: not a fedrank UCB-DUAL state file of this version"),
    ({"arms": ["2", "4"]}, "ValueError: arm table does not match the rank set"),
    ({"ranks": [2, 8]}, "ValueError: state is for ranks [2, 8], this bandit has [2, 4]"),
])
def test_unusable_bandit_state_is_moved_aside_not_crashed_on(tmp_path, caplog, bad: dict, why: str) -> None:
    import logging
    import time as _time

    from edge_agent.bandit import UcbDual

    path = tmp_path / "bandit.json"
    arms: object = {"2": dict(GOOD_ARM), "4": dict(GOOD_ARM)}
    if "a2" in bad:
        arms = {"2": bad["a2"], "4": dict(GOOD_ARM)}
    if "arms" in bad:
        arms = bad["arms"]
    _state(path, arms, kind=bad.get("kind"), ranks=bad.get("ranks"))
    if "doc" in bad:
        path.write_text(json.dumps(bad["doc"]))
    before = _time.time() * 1000
    with caplog.at_level(logging.WARNING, logger="edge_agent.bandit"):
        b = UcbDual([2, 4], state_path=path)
    assert b.total_pulls == 0 and not path.exists()
    [aside] = list(tmp_path.glob("bandit.json.bad-*"))
    assert before - 1 <= int(aside.name.rsplit("-", 1)[1]) <= _time.time() * 1000 + 1  # named by the time in ms
    assert f"unusable ({why}); moved to" in caplog.text


def test_bandit_state_at_the_edges_of_its_ranges_is_restored_exactly(tmp_path) -> None:
    from edge_agent.bandit import COST_CAP, UcbDual

    path = tmp_path / "bandit.json"
    _state(path, {"2": {"n": 4, "r_hat": 1.0, "n_cost": 1, "c_hat": COST_CAP},
                  "4": {"n": 2, "r_hat": 0.0, "n_cost": 0, "c_hat": 0.0}})
    b = UcbDual([2, 4], state_path=path)
    assert {r: s.to_json() for r, s in b.stats.items()} == {
        2: {"n": 4, "r_hat": 1.0, "n_cost": 1, "c_hat": COST_CAP}, 4: {"n": 2, "r_hat": 0.0, "n_cost": 0, "c_hat": 0.0}}


@pytest.mark.parametrize(("call", "message"), [
    (lambda: bd.round_reward(math.nan, 1, 1, 0), "q is not finite (nan)"),
    (lambda: bd.round_reward(0.5, math.inf, 1, 0), "tau_s is not finite (inf)"),
    (lambda: bd.round_reward(0.5, 1, math.nan, 0),
     "tau_ref_s is not finite (nan)"),
    (lambda: bd.round_reward(0.5, 1, 1, math.inf), "w_tau is not finite (inf)"),
    (lambda: bd.round_reward(0.5, -1.0, 1.0, 0.0),
     "need tau_ref_s > 0, tau_s >= 0, w_tau >= 0 (got 1.0, -1.0, 0.0)"),
    (lambda: bd.normalised_cost(-1.0, 1.0, 1),
     "round energy must be finite and >= 0 (got -1.0)"),
    (lambda: bd.normalised_cost(1.0, math.inf, 1), "task budget is not finite (inf)"),
    (lambda: bd.UcbDual([0, 2]), "candidate ranks must be positive integers (got [0, 2])"),
    (lambda: bd.UcbDual([2], beta=math.inf), "beta must be finite and >= 0 (got inf)"),
    (lambda: bd.UcbDual([2, 4], max_rank=1),
     "every candidate rank [2, 4] is excluded (excluded=[], max_rank=1)"),
    (lambda: bd.UcbDual([2]).select(-1.0), "dual price must be finite and >= 0 (got -1.0)"),
    (lambda: bd.UcbDual([2]).update(4, 0.5, 1.0), "rank 4 is not a candidate [2]"),
    (lambda: bd.UcbDual([2]).update(2, 1.5, 1.0), "reward must be in [0, 1] (got 1.5)"),
    (lambda: bd.UcbDual([2]).update(2, 0.5, -1.0), "cost must be finite and >= 0 (got -1.0)"),
])
def test_bandit_errors_carry_their_reason(call, message: str) -> None:
    from edge_agent.bandit import BanditError

    with pytest.raises(BanditError) as exc:
        call()
    assert exc.value.reason == message and str(exc.value) == message


def test_bandit_inputs_at_the_edges_are_accepted() -> None:
    from edge_agent.bandit import COST_CAP, UcbDual, normalised_cost, round_reward

    assert round_reward(1.5, 0.0, 0.5, 0.0) == 1.0  # clipped to 1; tau_ref below 1 s and w_tau = 0 are valid
    assert round_reward(0.8, 1.0, 0.5, 0.1) == pytest.approx(0.6)
    assert normalised_cost(0.25, 0.5, 1) == pytest.approx(0.5)  # a budget below 1 J is a budget
    assert normalised_cost(0.5, 0.0, 1) == COST_CAP  # any energy against a zero budget
    one = UcbDual([1], beta=0.0)
    assert one.allowed == [1] and one.select(0.0) == 1
    one.update(1, 0.0, None)
    one.update(1, 1.0, None)
    assert one.select(5.0) == 1  # a single allowed rank, already pulled: still chosen
    assert UcbDual([2, 4, 8], max_rank=4).allowed == [2, 4]


def test_index_charges_only_a_known_positive_cost() -> None:
    from edge_agent.bandit import UcbDual

    b = UcbDual([2, 4], beta=0.5)
    b.update(2, 0.5, None)  # a reward, no cost known yet: optimistically free
    b.update(4, 0.5, 0.8)
    log_t = math.log(3)
    assert b.index(2, 2.0) == pytest.approx(0.5 + 0.5 * math.sqrt(log_t))
    c_lcb = 0.8 - 0.5 * math.sqrt(log_t)  # below 1 and above 0: charged as it is
    assert 0 < c_lcb < 1
    assert b.index(4, 2.0) == pytest.approx(0.5 + 0.5 * math.sqrt(log_t) - 2.0 * c_lcb)


# -- edge_agent/energy/meter.py ------------------------------------------------------------------------------
class _TwoRails:
    """A bare EnergyMeter with two power channels read from a list the test changes; None: read failed."""

    @staticmethod
    def make(values: dict, clock=None, **kw):
        from edge_agent.energy.meter import EnergyMeter, PowerIntegral

        class Two(EnergyMeter):
            source = "two"

            def _channels(self):
                return {"a": PowerIntegral(), "b": PowerIntegral()}, {}

            def _read(self):
                return dict(values)

        return Two(clock=clock, **kw) if clock is not None else Two(**kw)


def test_measurement_and_describe_have_their_documented_keys() -> None:
    from edge_agent.energy.meter import Measurement

    m = Measurement(joules=6.0, seconds=0.5, source="rapl", domains=("package-0",), measured=True,
                    domain_joules={"package-0": 6.0}, sub_joules={"core-0": 2.0}, lower_bound=False)
    assert m.to_dict() == {"source": "rapl", "measured": True, "lower_bound": False, "domains": ["package-0"],
                           "joules": 6.0, "seconds": 0.5, "watts": 12.0, "domain_joules": {"package-0": 6.0},
                           "domain_watts": {"package-0": 12.0}, "sub_joules": {"core-0": 2.0}}
    zero = Measurement(joules=1.0, seconds=0.0, source="x", domains=("d",), measured=True, domain_joules={"d": 1.0})
    assert zero.to_dict()["domain_watts"] == {"d": 0.0} and zero.watts == 0.0
    meter = _TwoRails.make({"a": 1.0, "b": 1.0})
    assert meter.describe() == {"source": "two", "measured": True, "lower_bound": False, "domains": [],
                                "sub_domains": [], "interval_s": 0.1, "tried": []}


def test_meter_unavailable_keeps_backend_and_reason() -> None:
    from edge_agent.energy.meter import MeterUnavailable

    e = MeterUnavailable("rapl", "no powercap")
    assert (e.backend, e.reason, str(e)) == ("rapl", "no powercap", "rapl: no powercap")


def test_poll_and_error_counts_and_a_failed_channel_does_not_stop_the_others() -> None:
    from fake_sysfs import FakeClock

    values: dict = {"a": 2.0, "b": 4.0}
    clock = FakeClock()
    meter = _TwoRails.make(values, clock=clock, interval_s=None)
    with meter:  # open polls once
        span = meter.start()  # and the span start once more
        values.update(a=None, b=8.0)  # channel a fails; b, read after it, must still count
        clock.advance(1.0)
        meter.poll()
        clock.advance(1.0)
        meter.poll()
        values.update(a=2.0, b=4.0)
        clock.advance(1.0)
        m = span.stop()
    assert meter.polls == 5 and meter.read_errors == 2
    # b: trapezoid over 4, 8, 8, 4 W at 1 s steps; a: 2 W across the gap
    assert m.domain_joules == pytest.approx({"a": 2.0 * 3, "b": 6.0 + 8.0 + 6.0})
    with pytest.raises(RuntimeError, match=r"^energy meter is not open$"):
        meter.poll()


def test_the_polling_thread_is_a_named_daemon_and_close_twice_is_harmless(tmp_path) -> None:
    meter = _TwoRails.make({"a": 1.0, "b": 1.0}, interval_s=0.01)
    meter.open()
    t = meter._thread
    assert t is not None and t.daemon and t.name == "energy-two"
    meter.close()
    meter.close()
    meter.open()  # reopen after close: a new thread
    assert meter._thread is not None and meter._thread is not t and meter._thread.is_alive()
    meter.close()
    assert meter._thread is None


# -- proto/codec.py ------------------------------------------------------------------------------------------
def _rej(payload: object, expected=None, **kw) -> tuple[str, str]:
    from proto.codec import decode
    from proto.errors import PayloadRejected

    with pytest.raises(PayloadRejected) as exc:
        decode(payload, expected, **kw)  # type: ignore[arg-type]
    return exc.value.reason, exc.value.detail


def test_codec_rejections_carry_their_details() -> None:
    from proto.codec import SCHEMA_VERSION, encode
    from proto.messages import AgentStatus, TaskBudget

    status = json.loads(encode(AgentStatus(sender="v1", role="vehicle", state="online")))
    assert _rej(b"[1, 2]") == ("bad_json", "header is not a JSON object")
    long_kind = "k" * 100
    assert _rej(json.dumps({**status, "kind": long_kind}).encode()) == ("unknown_kind", repr(long_kind)[:80])
    assert _rej(json.dumps(status).encode(), TaskBudget) == ("wrong_kind", "got 'status', topic expects 'budget'")
    assert _rej(json.dumps({**status, "v": True}).encode()) == (
        "bad_version", f"schema version True, this build speaks {SCHEMA_VERSION}")
    reason, detail = _rej(json.dumps({**status, "position": {"x": "far", "y": 0.0}}).encode())
    assert reason == "invalid_field" and detail.startswith("position.x: ") and "number" in detail
    assert _rej("text") == ("bad_payload", "payload is str, not bytes")
    assert _rej(b"x" * 11, max_bytes=10) == ("too_large", "11 bytes > limit 10")


def test_decode_header_checks_the_kind_the_topic_expects() -> None:
    from proto.codec import decode_header
    from proto.errors import PayloadRejected
    from proto.messages import Handoff

    upd = make_update("v1", 0).payload
    with pytest.raises(PayloadRejected) as exc:
        decode_header(upd, Handoff)
    assert (exc.value.reason, exc.value.detail) == ("wrong_kind", "got 'update', topic expects 'handoff'")
    with pytest.raises(PayloadRejected) as exc2:
        decode_header(b"\x08" + b"\0" * 7 + b'{"a": 1}', Handoff)
    assert (exc2.value.reason, exc2.value.detail) == ("no_header", "safetensors metadata has no fedrank header")


def test_a_nine_byte_safetensors_prefix_is_recognised() -> None:
    from proto.codec import _looks_like_safetensors

    assert _looks_like_safetensors(b"\x01" + b"\0" * 7 + b"{")  # the shortest: length prefix and the brace
    assert not _looks_like_safetensors(b"\x01" + b"\0" * 7)
    assert not _looks_like_safetensors(b'{"kind": 1}')  # JSON: a brace, but no zero bytes at 3..8
    assert not _looks_like_safetensors(b"\x01\0\0\0\0\0\0\0[")  # zero bytes, but no brace after them


def test_a_read_that_raises_is_skipped_and_counted_each_time() -> None:
    from fake_sysfs import FakeClock

    from edge_agent.energy.meter import EnergyMeter, PowerIntegral

    fail = [False]

    class Flaky(EnergyMeter):
        source = "flaky"

        def _channels(self):
            return {"a": PowerIntegral()}, {}

        def _read(self):
            if fail[0]:
                raise OSError(19, "No such device")
            return {"a": 3.0}

    clock = FakeClock()
    meter = Flaky(clock=clock, interval_s=None)
    with meter:
        span = meter.start()
        fail[0] = True
        clock.advance(1.0)
        meter.poll()
        meter.poll()
        fail[0] = False
        clock.advance(1.0)
        m = span.stop()
    assert meter.read_errors == 2 and m.joules == pytest.approx(3.0 * 2)
