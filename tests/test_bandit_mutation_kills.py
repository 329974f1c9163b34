"""Tests written to kill mutants of edge_agent/bandit.py that survived `make mutation` (TESTING.md lists them).

They pin what tests/test_bandit.py walked past: the LP's tie rules and the vertices it must not mix, the
estimates of arms that are offered but not (fully) played, the seeded draw, the edges of every input range, the
rejection messages (they reach the vehicle's log) and the validation of a restored state file.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable
from pathlib import Path

import pytest

import fedrank.state
from edge_agent.bandit import Arm, BanditError, Decision, Observation, UcbDual, arm_set, lp_mix, round_reward


def _decision(arms: list[Arm], lam: float = 0.0, share: float = 100.0) -> Decision:
    return Decision(arms, lam, share, tau_ref_s=60.0, w_tau=0.0)


# -- lp_mix ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("reward", "cost", "expected"), [
    # an arm that spends exactly the share is feasible on its own
    ([0.9, 0.5], [1.0, 0.5], [1.0, 0.0]),
    # exact tie, and a lead within the 1e-12 tolerance: the first (smaller) arm keeps it
    ([0.5, 0.5], [0.5, 0.5], [1.0, 0.0]),
    ([0.5, 0.5 + 1e-12], [0.5, 0.5], [1.0, 0.0]),
    # a pair that only equals the best single arm, or beats it by exactly the tolerance, is not mixed
    ([0.6, 0.6], [0.5, 1.5], [1.0, 0.0]),
    ([0.5, 0.5 + 2e-12], [0.5, 1.5], [1.0, 0.0]),
    # the expensive arm is worse: paying for it cannot help
    ([0.6, 0.55], [0.5, 1.5], [1.0, 0.0]),
    # infeasible: all mass on the cheapest arm, which is not the first
    ([0.6, 0.8], [1.5, 1.2], [0.0, 1.0]),
])
def test_lp_mix_vertices_and_tie_rules(reward: list[float], cost: list[float], expected: list[float]) -> None:
    assert lp_mix(reward, cost, lam=0.0) == expected


def test_lp_mix_picks_the_best_of_several_pairs_and_weights_it_to_spend_the_share() -> None:
    # pair (0, 1): p1 = 0.5 / 2.5 = 0.2, value 0.8 * 0.6 + 0.2 * 0.9 = 0.66; pair (0, 2): p2 = 1/3, value 0.617;
    # arm 0 alone: 0.6. The third arm gets nothing.
    cost = [0.5, 3.0, 2.0]
    p = lp_mix([0.6, 0.9, 0.65], cost, lam=0.0)
    assert p == pytest.approx([0.8, 0.2, 0.0]) and p[2] == 0.0
    assert sum(pi * ci for pi, ci in zip(p, cost, strict=True)) == pytest.approx(1.0)


# -- estimates ------------------------------------------------------------------------------------------------
def test_estimates_skip_unknown_and_unplayed_arms_and_are_optimistic_without_an_accuracy() -> None:
    b = UcbDual(beta=0.5, beta_cost=0.1)
    b.offer([Arm(2), Arm(4), Arm(8)])
    b.update(Arm(4), Observation(0.5, 30.0, 40.0))
    b.update(Arm(8), Observation(None, 20.0, 30.0, done=0.5))  # only a cut-short round: no accuracy yet
    # Arm(1) was never offered and sorts first; Arm(2) is offered but has no round
    arms, rew, cost = b.estimates(_decision([Arm(1), Arm(2), Arm(4), Arm(8)], share=50.0))
    log_t = math.log(1.5 + 1.0)  # one full round and one half round
    assert arms == [Arm(4), Arm(8)]
    assert rew == pytest.approx([0.5 + 0.5 * math.sqrt(log_t), 1.0]) and rew[1] == 1.0
    assert cost == pytest.approx([40 / 50 * (1 + 0.1 * math.sqrt(log_t)), 60 / 50 * (1 + 0.1 * math.sqrt(log_t / 0.5))])


# -- select ---------------------------------------------------------------------------------------------------
def test_each_decision_draws_from_a_generator_seeded_by_seed_stream_and_decision_number() -> None:
    arms = arm_set([2, 4, 8])
    b = UcbDual(seed=7, stream="veh1/t")
    fresh = list(arms)
    for n in range(len(arms)):
        expected = random.Random(f"7/veh1/t/{n}").choice(fresh)
        assert b.select(_decision(arms)) == expected and b.decisions == n + 1
        b.update(expected, Observation(0.5, 1.0, 10.0))
        fresh.remove(expected)
    # the defaults are the policy factory's (seed 0, empty stream): a default-built bandit draws the same
    default, explicit = UcbDual(), UcbDual(seed=0, stream="")
    assert [default.select(_decision(arms)) for _ in range(8)] == [explicit.select(_decision(arms)) for _ in range(8)]


def test_last_mix_is_the_distribution_the_choice_was_drawn_from() -> None:
    b = UcbDual(beta=0.0, beta_cost=0.0)
    assert b.last_mix == {}
    arms = [Arm(2), Arm(4), Arm(8)]
    b.select(_decision(arms))
    assert b.last_mix == {a: pytest.approx(1 / 3) for a in arms}  # every unplayed arm equally likely
    for a, q, e in ((Arm(2), 0.5, 50.0), (Arm(4), 0.6, 60.0), (Arm(8), 0.8, 150.0)):
        b.update(a, Observation(q, 1.0, e))
    b.select(_decision(arms))
    # LP: Arm(4) and Arm(8) mixed to spend 100 J (p8 = 40 / 90); Arm(2), at probability 0, is not in the mix
    assert b.last_mix == {Arm(4): pytest.approx(50 / 90), Arm(8): pytest.approx(40 / 90)}


class _FixedDraw:
    """A generator whose uniform draw is fixed: the boundary of the inverse-CDF walk."""

    def __init__(self, u: float) -> None:
        self.u = u

    def random(self) -> float:
        return self.u

    def choice(self, seq: list[Arm]) -> Arm:
        return seq[0]


def test_an_arm_at_probability_zero_is_never_drawn_even_by_a_zero_draw(monkeypatch: pytest.MonkeyPatch) -> None:
    b = UcbDual(beta=0.0, beta_cost=0.0)
    b.offer([Arm(2), Arm(4)])
    b.update(Arm(2), Observation(0.5, 1.0, 10.0))
    b.update(Arm(4), Observation(0.9, 1.0, 10.0))  # same cost, better: the mix is [0, 1]
    monkeypatch.setattr(b, "_rng", lambda: _FixedDraw(0.0))  # random() may return exactly 0.0
    assert b.select(_decision([Arm(2), Arm(4)])) == Arm(4)


# -- input edges and rejection messages --------------------------------------------------------------------------
def test_inputs_at_the_edges_of_their_ranges_are_accepted() -> None:
    assert Arm.parse("r1w1") == Arm(1, 1.0)
    assert arm_set([2], [0.5, 1.0]) == [Arm(2, 0.5), Arm(2, 1.0)]
    assert round_reward(0.5, 0.0, 0.5, 0.0) == 0.5  # tau = 0 and tau_ref < 1 s
    assert round_reward(0.5, 0.5, 0.5, 0.1) == pytest.approx(0.4)
    assert round_reward(1.5, 0.0, 1.0, 0.0) == 1.0  # the documented clip at 1
    b = UcbDual(memory=1)  # memory of one round: each round replaces the means
    b.offer([Arm(2)])
    for obs in (Observation(1.0, 0.0, 0.0), Observation(0.0, 0.5, 0.5)):
        b.update(Arm(2), obs)
    s = b.stats[Arm(2)]
    assert (s.n_q, s.q_hat, s.e_hat, s.tau_hat) == (2.0, 0.0, 0.5, 0.5)
    assert b.select(_decision([Arm(2)], share=0.5)) == Arm(2)  # a share below 1 J
    assert UcbDual(memory=1.5).memory == 1.5


def test_the_bandit_memory_is_what_its_arms_use() -> None:
    b = UcbDual(memory=2)
    b.offer([Arm(2)])
    for q in (0.2, 0.4, 0.9):
        b.update(Arm(2), Observation(q, 1.0, 10.0 * q))
    # third round at weight 1/2: 0.3 + (0.9 - 0.3) / 2 (the stationary mean would be 0.5)
    assert b.stats[Arm(2)].q_hat == pytest.approx(0.6) and b.stats[Arm(2)].e_hat == pytest.approx(6.0)


def _offered() -> UcbDual:
    b = UcbDual()
    b.offer([Arm(2)])
    return b


@pytest.mark.parametrize(("call", "message"), [
    (lambda: round_reward(math.nan, 1.0, 1.0, 0.0), "q is not finite (nan)"),
    (lambda: round_reward(0.5, math.inf, 1.0, 0.0), "tau_s is not finite (inf)"),
    (lambda: round_reward(0.5, 1.0, math.nan, 0.0), "tau_ref_s is not finite (nan)"),
    (lambda: round_reward(0.5, 1.0, 1.0, -math.inf), "w_tau is not finite (-inf)"),
    (lambda: round_reward(0.5, -1.0, 60.0, 0.1), "need tau_ref_s > 0, tau_s >= 0, w_tau >= 0 (got 60.0, -1.0, 0.1)"),
    (lambda: round_reward(0.5, 1.0, 60.0, -0.1), "need tau_ref_s > 0, tau_s >= 0, w_tau >= 0 (got 60.0, 1.0, -0.1)"),
    (lambda: UcbDual(beta=-1.0), "beta must be finite and >= 0 (got -1.0)"),
    (lambda: UcbDual(beta_cost=math.inf), "beta_cost must be finite and >= 0 (got inf)"),
    (lambda: UcbDual(memory=0.5), "memory must be >= 1 round (got 0.5)"),
    (lambda: UcbDual().select(_decision([])), "no arm offered"),
    (lambda: UcbDual().select(_decision([Arm(2)], lam=math.inf)), "dual price must be finite and >= 0 (got inf)"),
    (lambda: UcbDual().select(_decision([Arm(2)], share=0.0)), "budget share must be finite and > 0 (got 0.0)"),
    (lambda: _offered().update(Arm(3), Observation(0.5, 1.0, 1.0)), "arm r3w1 was never offered"),
    (lambda: _offered().update(Arm(2), Observation(1.5, 1.0, 1.0)), "accuracy must be in [0, 1] (got 1.5)"),
    (lambda: _offered().update(Arm(2), Observation(0.5, 1.0, -1.0)), "joules must be finite and >= 0 (got -1.0)"),
    (lambda: _offered().update(Arm(2), Observation(0.5, math.nan, 1.0)), "seconds must be finite and >= 0 (got nan)"),
    (lambda: _offered().update(Arm(2), Observation(None, 1.0, 1.0, done=1.5)), "work done must be in (0, 1] (got 1.5)"),
])
def test_bandit_errors_carry_their_reason_and_name_the_input(call: Callable[[], object], message: str) -> None:
    with pytest.raises(BanditError) as exc:
        call()
    assert exc.value.reason == message and str(exc.value) == message


def test_arm_keys_need_both_the_r_and_the_w_and_say_why_not() -> None:
    with pytest.raises(ValueError, match=r"^not an arm key: 'x4w1'$"):
        Arm.parse("x4w1")
    with pytest.raises(ValueError, match=r"^not an arm key: 'r4'$"):
        Arm.parse("r4")
    with pytest.raises(ValueError, match=r"^arm out of range: 'r0w1'$"):
        Arm.parse("r0w1")


# -- persistence ----------------------------------------------------------------------------------------------
_GOOD_ARM = {"n_q": 2.0, "q_hat": 0.5, "n_e": 2.0, "e_hat": 30.0, "tau_hat": 4.0}


def _doc(**over: object) -> dict[str, object]:
    return {"kind": "fedrank.ucb_dual", "version": 2, "decisions": 3, "arms": {"r2w1": dict(_GOOD_ARM)}, **over}


@pytest.mark.parametrize(("doc", "reason"), [
    ([], "ValueError: not a fedrank UCB-DUAL state file of this version"),
    (_doc(version=3), "ValueError: not a fedrank UCB-DUAL state file of this version"),
    (_doc(kind="fedrank.other"), "ValueError: not a fedrank UCB-DUAL state file of this version"),
    (_doc(arms=[["r2w1", _GOOD_ARM]]), "ValueError: arm table or decision count malformed"),
    (_doc(decisions="3"), "ValueError: arm table or decision count malformed"),
    (_doc(decisions=-1), "ValueError: arm table or decision count malformed"),
    (_doc(arms={"r2w1": []}), "ValueError: arm entry is not an object"),
    (_doc(arms={"r2w1": {**_GOOD_ARM, "n_e": -1.0}}), "ValueError: arm statistics must be finite and >= 0: "),
    (_doc(arms={"r2w1": {**_GOOD_ARM, "q_hat": 1.5}}), "ValueError: mean accuracy 1.5 > 1"),
    (_doc(arms={"bogus": _GOOD_ARM}), "ValueError: not an arm key: 'bogus'"),
    (_doc(arms={"r0w1": _GOOD_ARM}), "ValueError: arm out of range: 'r0w1'"),
])
def test_an_unusable_state_file_is_set_aside_with_the_reason(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                              doc: object, reason: str) -> None:
    path = tmp_path / "bandit.json"
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        b = UcbDual(state_path=path)
    assert b.stats == {} and b.decisions == 0 and not path.exists()
    assert len(list(tmp_path.glob("bandit.json.bad-*"))) == 1
    assert f"unusable ({reason}" in caplog.text


def test_a_hand_written_state_file_restores_with_its_edges(tmp_path: Path) -> None:
    """The on-disk format is kind "fedrank.ucb_dual", version 2; no decision count means none yet."""
    path = tmp_path / "bandit.json"
    doc = _doc(arms={"r2w0.5": {**_GOOD_ARM, "q_hat": 1.0}})
    del doc["decisions"]
    path.write_text(json.dumps(doc))
    b = UcbDual(state_path=path)
    assert b.decisions == 0 and b.stats[Arm(2, 0.5)].to_json() == {**_GOOD_ARM, "q_hat": 1.0}


def test_the_set_aside_file_is_named_with_the_time_in_milliseconds(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bandit.json"
    path.write_text("{ not json")
    monkeypatch.setattr(fedrank.state.time, "time", lambda: 1_700_000_000.1234)
    UcbDual(state_path=path)
    assert [p.name for p in tmp_path.iterdir()] == ["bandit.json.bad-1700000000123"]


def test_a_rejected_decision_changes_nothing_not_even_the_decision_count() -> None:
    b = UcbDual(seed=1, stream="v/t")
    arms = [Arm(2, 1.0), Arm(4, 1.0)]
    for tau_ref, w_tau in ((math.inf, 0.1), (0.0, 0.1), (60.0, math.nan), (60.0, -1.0)):
        with pytest.raises(BanditError, match="tau_ref_s"):
            b.select(Decision(arms, lam=0.0, share_j=10.0, tau_ref_s=tau_ref, w_tau=w_tau))
    assert b.decisions == 0 and b.stats == {}
