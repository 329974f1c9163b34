"""UCB-DUAL on the vehicle: a constrained bandit over work configurations (docs/algorithms.md section 3).

An arm is a work configuration `(rank, work)`: a LoRA rank and the fraction of the configured local steps to run.
Per arm the vehicle keeps what it observed in physical units: mean held-out accuracy `q`, mean round latency `tau`
(seconds) and mean round energy `e` (joules). Nothing is normalised in the statistics: the reward
`clip(q - w_tau * tau / tau_ref, 0, 1)` and the normalised cost `e / b_v` (`b_v` the vehicle's current budget share)
are formed only when choosing, so a new budget or a new participant count applies at once.

Selection is UCB-BwK (Agrawal & Devanur, "Bandits with concave rewards and convex knapsacks", EC 2014): a
distribution over the offered arms from a small LP on an optimistic reward and a pessimistic cost,

    max_p  sum_a p_a (r~_a - lam * c~_a)   s.t.  sum_a p_a c~_a <= 1,  sum_a p_a = 1,  p >= 0,

with the RSU's dual price `lam` (section 4) as a price on what the LP lets through. The optimum mixes at most two
arms; the arm is drawn from it with a generator seeded by (seed, vehicle, task, decision number), so vehicles that
share one `lam` do not switch together, and a run with a seed repeats exactly (also across a restart).
No torch here: the idle edge daemon imports it.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fedrank.state import atomic_write_json, move_aside

log = logging.getLogger(__name__)

STATE_KIND = "fedrank.ucb_dual"
STATE_VERSION = 2  # 1 kept normalised costs per rank; 2 keeps joules and seconds per work configuration
# Exploration weight of the reward bonus beta * sqrt(ln t / n) (docs/algorithms.md section 3), and the relative
# width of the pessimistic cost bonus, c~ = c_hat * (1 + beta_cost * sqrt(ln t / n)). Chosen on
# bench/bench_bandit.py --quick (T = 1000, 3 seeds): beta 0.05 / 0.1 / 0.2 / 0.3 gave regret slopes 0.68 / 0.58 /
# 0.62 / 0.65 on "tight-one" and 0.47 / 0.58 / 0.76 / 0.80 with 15 nearly flat arms. beta_cost on the full bench
# (10 seeds, T 50-5000, decaying dual step): 0.05 / 0.02 gave regret slopes 0.50 / 0.43 on "tight-one" and
# 0.60 / 0.57 on "tight-mix", with violation at or below the LP-mix oracle's (tight-one: 1.07x at 0.02).
DEFAULT_BETA = 0.1
DEFAULT_BETA_COST = 0.02
# After this many rounds of an arm its means become moving averages (weight 1/MEMORY for the newest), so a
# change of accuracy or energy is forgotten in about MEMORY of its rounds; the confidence bonus still uses the
# true count. bench_bandit --quick "reward-swap": regret slope 0.76 / 0.72 / 0.52 / 0.37 with memory inf / 500 /
# 200 / 100, and no change on the stationary scenarios.
DEFAULT_MEMORY = 100.0


class BanditError(ValueError):
    """Bad input to the bandit (unknown arm, non-finite figures, zero budget share, no arm offered)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _fail(reason: str) -> BanditError:
    log.warning("bandit rejected input: %s", reason)
    return BanditError(reason)


@dataclass(frozen=True, order=True)
class Arm:
    """A work configuration: LoRA rank and the fraction of the configured local steps (1.0 = all of them)."""

    rank: int
    work: float = 1.0

    @property
    def key(self) -> str:
        return f"r{self.rank}w{self.work:g}"

    @classmethod
    def parse(cls, key: str) -> Arm:
        """Inverse of `key`; ValueError on anything else."""
        if not key.startswith("r") or "w" not in key:
            raise ValueError(f"not an arm key: {key!r}")
        rank, work = key[1:].split("w", 1)
        arm = cls(int(rank), float(work))
        if arm.rank < 1 or not (0.0 < arm.work <= 1.0):
            raise ValueError(f"arm out of range: {key!r}")
        return arm


def arm_set(ranks: Iterable[int], work: Iterable[float] = (1.0,)) -> list[Arm]:
    """The candidate configurations `ranks x work`, sorted (rank-only arms: work = (1.0,))."""
    return sorted({Arm(int(r), float(w)) for r in ranks for w in work})


def local_steps(arm: Arm, configured: int) -> int:
    """Optimiser steps of a round played with `arm` on a vehicle configured for `configured` steps."""
    return max(1, round(arm.work * configured))


@dataclass(frozen=True)
class Observation:
    """What one round of an arm showed. `done` < 1: a round cut short after that fraction of its work.

    A cut-short round teaches the arm's energy and latency in proportion to the work done (weight `done`, figures
    scaled to the full work) and its accuracy not at all (`accuracy` None): a half-trained model says nothing about
    the arm's accuracy, and half the energy must not read as a cheap arm.
    """

    accuracy: float | None
    seconds: float
    joules: float
    done: float = 1.0


@dataclass
class ArmStats:
    """Weighted means of one arm: accuracy over `n_q` rounds; joules and seconds over `n_e` (full-round units)."""

    n_q: float = 0.0
    q_hat: float = 0.0
    n_e: float = 0.0
    e_hat: float = 0.0
    tau_hat: float = 0.0

    def add(self, obs: Observation, memory: float = math.inf) -> None:
        """Fold one observation in: the running mean of the first `memory` rounds, a moving average after."""
        if obs.accuracy is not None:
            self.n_q += 1.0
            self.q_hat += (obs.accuracy - self.q_hat) / min(self.n_q, memory)
        w = obs.done
        self.n_e += w
        step = w / max(w, min(self.n_e, memory))
        self.e_hat += step * (obs.joules / w - self.e_hat)
        self.tau_hat += step * (obs.seconds / w - self.tau_hat)

    def to_json(self) -> dict[str, float]:
        return {"n_q": self.n_q, "q_hat": self.q_hat, "n_e": self.n_e, "e_hat": self.e_hat, "tau_hat": self.tau_hat}

    @classmethod
    def from_json(cls, d: object) -> ArmStats:
        """Parse one arm; ValueError on anything that is not a sane statistic."""
        if not isinstance(d, dict):
            raise ValueError("arm entry is not an object")
        vals = [d.get(k) for k in ("n_q", "q_hat", "n_e", "e_hat", "tau_hat")]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                   for v in vals):
            raise ValueError(f"arm statistics must be finite and >= 0: {d}")
        st = cls(*(float(v) for v in vals))  # type: ignore[arg-type]
        if st.q_hat > 1.0:
            raise ValueError(f"mean accuracy {st.q_hat} > 1")
        return st


@dataclass(frozen=True)
class Decision:
    """What the vehicle knows when it chooses: the offered arms, the task's price and this vehicle's share (J)."""

    arms: Sequence[Arm]
    lam: float
    share_j: float
    tau_ref_s: float
    w_tau: float


def round_reward(q: float, tau_s: float, tau_ref_s: float, w_tau: float) -> float:
    """Reward of a round, `clip(q - w_tau * tau / tau_ref, 0, 1)` (docs/algorithms.md section 3)."""
    for name, v in (("q", q), ("tau_s", tau_s), ("tau_ref_s", tau_ref_s), ("w_tau", w_tau)):
        if not math.isfinite(v):
            raise _fail(f"{name} is not finite ({v})")
    if tau_ref_s <= 0 or tau_s < 0 or w_tau < 0:
        raise _fail(f"need tau_ref_s > 0, tau_s >= 0, w_tau >= 0 (got {tau_ref_s}, {tau_s}, {w_tau})")
    return min(1.0, max(0.0, q - w_tau * tau_s / tau_ref_s))


def lp_mix(reward: Sequence[float], cost: Sequence[float], lam: float) -> list[float]:
    """The optimum p of `max sum p (r - lam c) s.t. sum p c <= 1, sum p = 1, p >= 0` (first arm wins ties).

    Its vertices are single arms with c <= 1 and pairs (a, b), c_a < 1 < c_b, mixed to spend exactly 1. With no
    arm at c <= 1 the LP is infeasible and all mass goes to the cheapest arm (the least overspend).
    """
    k = len(reward)
    value = [reward[i] - lam * cost[i] for i in range(k)]
    best, best_p = -math.inf, [0.0] * k
    for a in range(k):
        if cost[a] <= 1.0 and value[a] > best + 1e-12:
            best, best_p = value[a], [1.0 if i == a else 0.0 for i in range(k)]
    for a in range(k):
        for b in range(k):
            if cost[a] < 1.0 < cost[b]:
                pb = (1.0 - cost[a]) / (cost[b] - cost[a])
                v = (1.0 - pb) * value[a] + pb * value[b]
                if v > best + 1e-12:
                    best_p = [0.0] * k
                    best_p[a], best_p[b] = 1.0 - pb, pb
                    best = v
    if best == -math.inf:
        cheapest = min(range(k), key=lambda i: cost[i])
        best_p[cheapest] = 1.0
    return best_p


class UcbDual:
    """UCB-DUAL over work configurations for one task on one vehicle (docs/algorithms.md section 3).

    Args:
        seed, stream: the per-decision generator is seeded with (seed, stream, decision number); pass a stream
            that differs per vehicle and task (e.g. "veh03/sentiment").
        beta: weight of the reward bonus; beta_cost: relative width of the pessimistic cost bonus.
        memory: rounds of an arm after which its means become moving averages (math.inf: stationary means).
        state_path: JSON file the statistics live in (written atomically after each update); None = memory only.
    """

    def __init__(self, *, seed: int = 0, stream: str = "", beta: float = DEFAULT_BETA,
                 beta_cost: float = DEFAULT_BETA_COST, memory: float = DEFAULT_MEMORY,
                 state_path: Path | None = None) -> None:
        for name, v in (("beta", beta), ("beta_cost", beta_cost)):
            if not (math.isfinite(v) and v >= 0):
                raise _fail(f"{name} must be finite and >= 0 (got {v})")
        if not memory >= 1:
            raise _fail(f"memory must be >= 1 round (got {memory})")
        self.seed, self.stream, self.beta, self.beta_cost, self.memory = seed, stream, beta, beta_cost, memory
        self.stats: dict[Arm, ArmStats] = {}
        self.decisions = 0
        self.last_mix: dict[Arm, float] = {}
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None:
            self._restore()

    @property
    def total_pulls(self) -> float:
        return sum(s.n_e for s in self.stats.values())

    def _rng(self) -> random.Random:
        return random.Random(f"{self.seed}/{self.stream}/{self.decisions}")  # str seeds hash with SHA-512: stable

    def estimates(self, d: Decision) -> tuple[list[Arm], list[float], list[float]]:
        """(arms, optimistic reward, pessimistic normalised cost) of the offered arms that have been played."""
        log_t = math.log(self.total_pulls + 1.0)
        arms, rew, cost = [], [], []
        for a in sorted(set(d.arms)):
            s = self.stats.get(a)
            if s is None or s.n_e <= 0:
                continue
            if s.n_q > 0:
                r_hat = round_reward(s.q_hat, s.tau_hat, d.tau_ref_s, d.w_tau)
                r = min(1.0, r_hat + self.beta * math.sqrt(log_t / s.n_q))
            else:
                r = 1.0  # no accuracy seen yet (only cut-short rounds): optimistic
            c = s.e_hat / d.share_j * (1.0 + self.beta_cost * math.sqrt(log_t / s.n_e))
            arms.append(a)
            rew.append(r)
            cost.append(c)
        return arms, rew, cost

    def select(self, d: Decision) -> Arm:
        """Choose this round's configuration among `d.arms` (each is played once first, in a seeded order)."""
        if not d.arms:
            raise _fail("no arm offered")
        if not (math.isfinite(d.lam) and d.lam >= 0):
            raise _fail(f"dual price must be finite and >= 0 (got {d.lam})")
        if not (math.isfinite(d.share_j) and d.share_j > 0):
            raise _fail(f"budget share must be finite and > 0 (got {d.share_j})")
        if not (math.isfinite(d.tau_ref_s) and d.tau_ref_s > 0 and math.isfinite(d.w_tau) and d.w_tau >= 0):
            raise _fail(f"need a finite tau_ref_s > 0 and w_tau >= 0 (got {d.tau_ref_s}, {d.w_tau})")
        self.offer(d.arms)
        rng = self._rng()
        self.decisions += 1
        fresh = [a for a in sorted(set(d.arms)) if a not in self.stats or self.stats[a].n_e <= 0]
        if fresh:
            self.last_mix = {a: 1.0 / len(fresh) for a in fresh}
            return rng.choice(fresh)
        arms, rew, cost = self.estimates(d)
        p = lp_mix(rew, cost, d.lam)
        self.last_mix = {a: pa for a, pa in zip(arms, p, strict=True) if pa > 0}
        u, acc = rng.random(), 0.0
        for a, pa in zip(arms, p, strict=True):
            acc += pa
            if u < acc:
                return a
        return max(self.last_mix, key=lambda a: self.last_mix[a])

    def offer(self, arms: Iterable[Arm]) -> None:
        """Make `arms` known (`select` does it for the arms it is offered; a round is learned only for a known arm)."""
        for a in arms:
            self.stats.setdefault(a, ArmStats())

    def update(self, arm: Arm, obs: Observation) -> None:
        """Record one round of `arm` (joules and seconds of the whole round, accuracy in [0, 1]); then persist."""
        if arm not in self.stats:
            raise _fail(f"arm {arm.key} was never offered")
        if obs.accuracy is not None and not (math.isfinite(obs.accuracy) and 0.0 <= obs.accuracy <= 1.0):
            raise _fail(f"accuracy must be in [0, 1] (got {obs.accuracy})")
        for name, v in (("joules", obs.joules), ("seconds", obs.seconds)):
            if not (math.isfinite(v) and v >= 0):
                raise _fail(f"{name} must be finite and >= 0 (got {v})")
        if not (math.isfinite(obs.done) and 0.0 < obs.done <= 1.0):
            raise _fail(f"work done must be in (0, 1] (got {obs.done})")
        self.stats[arm].add(obs, self.memory)
        if self.state_path is not None:
            self._save()

    # -- persistence -------------------------------------------------------------------------------------------
    def _save(self) -> None:
        assert self.state_path is not None
        doc = {"kind": STATE_KIND, "version": STATE_VERSION, "decisions": self.decisions,
               "arms": {a.key: s.to_json() for a, s in sorted(self.stats.items())}}
        atomic_write_json(self.state_path, doc)

    def _restore(self) -> None:
        assert self.state_path is not None
        path = self.state_path
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict) or doc.get("kind") != STATE_KIND or doc.get("version") != STATE_VERSION:
                raise ValueError("not a fedrank UCB-DUAL state file of this version")
            arms, decisions = doc.get("arms"), doc.get("decisions", 0)
            if not isinstance(arms, dict) or not isinstance(decisions, int) or decisions < 0:
                raise ValueError("arm table or decision count malformed")
            self.stats = {Arm.parse(k): ArmStats.from_json(v) for k, v in arms.items()}
            self.decisions = decisions
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            self._move_aside(f"{type(e).__name__}: {e}")
            return
        log.info("restored bandit state from %s (%.1f pulls over %d arms)", path, self.total_pulls, len(self.stats))

    def _move_aside(self, reason: str) -> None:
        assert self.state_path is not None
        move_aside(self.state_path, "bandit state", reason)
        self.stats, self.decisions = {}, 0
