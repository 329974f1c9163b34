"""UCB-DUAL: the vehicle's rank selector with optimistic reward and optimistic cost (PAPER.md section 3).

One `UcbDual` per task on a vehicle. Its statistics are local state: they persist as JSON (temp file, fsync,
os.replace) after every update and are restored on construction. No torch here: the idle edge daemon imports it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fedrank.state import atomic_write_json

log = logging.getLogger(__name__)

STATE_KIND = "fedrank.ucb_dual"
STATE_VERSION = 1
# PAPER.md section 3 leaves beta free. beta = 1 keeps exploring for a few hundred pulls per arm at reward gaps of
# ~0.1, which is linear regret over the few thousand rounds a vehicle sees; 0.2 gave log-log regret slopes of
# 0.5-0.65 over 20 seeds on the budgeted synthetic environment of tests/test_bandit.py (rewards with noise sd 0.05).
DEFAULT_BETA = 0.2
# A single round's normalised cost is capped so one wild round (a budget share near zero) cannot poison c_hat
# for good; 10x the fair share is far beyond anything the dual price tolerates (lambda_max = 10, section 4).
COST_CAP = 10.0


class BanditError(ValueError):
    """Bad input to the rank bandit (unknown rank, non-finite reward or cost, empty rank set)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _fail(reason: str) -> BanditError:
    log.warning("rank bandit rejected input: %s", reason)
    return BanditError(reason)


@dataclass
class RankStats:
    """Per-arm statistics: pulls n(eta), mean reward r_hat, mean normalised cost c_hat over n_cost observations.

    `n_cost` can lag `n`: a round played before any budget was known has a reward but no cost (see
    `normalised_cost`).
    """

    n: int = 0
    r_hat: float = 0.0
    n_cost: int = 0
    c_hat: float = 0.0

    def add(self, reward: float, cost: float | None) -> None:
        self.n += 1
        self.r_hat += (reward - self.r_hat) / self.n
        if cost is not None:
            self.n_cost += 1
            self.c_hat += (cost - self.c_hat) / self.n_cost

    def to_json(self) -> dict[str, float | int]:
        return {"n": self.n, "r_hat": self.r_hat, "n_cost": self.n_cost, "c_hat": self.c_hat}

    @classmethod
    def from_json(cls, d: object) -> RankStats:
        """Parse one arm; raise ValueError on anything that is not a sane statistic."""
        if not isinstance(d, dict):
            raise ValueError("arm entry is not an object")
        n, n_cost, r_hat, c_hat = d.get("n"), d.get("n_cost"), d.get("r_hat"), d.get("c_hat")
        if not (isinstance(n, int) and isinstance(n_cost, int) and 0 <= n_cost <= n):
            raise ValueError(f"bad pull counts n={n!r} n_cost={n_cost!r}")
        if not (isinstance(r_hat, (int, float)) and isinstance(c_hat, (int, float))):
            raise ValueError("means are not numbers")
        if not (0.0 <= r_hat <= 1.0 and 0.0 <= c_hat <= COST_CAP):
            raise ValueError(f"means out of range r_hat={r_hat} c_hat={c_hat}")
        return cls(n=n, r_hat=float(r_hat), n_cost=n_cost, c_hat=float(c_hat))


def round_reward(q: float, tau_s: float, tau_ref_s: float, w_tau: float) -> float:
    """Reward of one round, `clip(q - w_tau * tau / tau_ref, 0, 1)` (PAPER.md section 3).

    Args:
        q: the vehicle's accuracy on its own held-out split after local training, in [0, 1].
        tau_s: the vehicle's round latency (download + train + upload), seconds.
        tau_ref_s: the latency that costs `w_tau` reward; must be > 0.
        w_tau: weight of latency against accuracy, >= 0.
    """
    for name, v in (("q", q), ("tau_s", tau_s), ("tau_ref_s", tau_ref_s), ("w_tau", w_tau)):
        if not math.isfinite(v):
            raise _fail(f"{name} is not finite ({v})")
    if tau_ref_s <= 0 or tau_s < 0 or w_tau < 0:
        raise _fail(f"need tau_ref_s > 0, tau_s >= 0, w_tau >= 0 (got {tau_ref_s}, {tau_s}, {w_tau})")
    return min(1.0, max(0.0, q - w_tau * tau_s / tau_ref_s))


def normalised_cost(e_j: float, task_budget_j: float | None, n_participants: int) -> float | None:
    """Normalised cost `c = e_v / (B_m / |V_m|)` of one round (PAPER.md section 3), capped at COST_CAP.

    Guards (decided here; the paper is silent):
      - `task_budget_j is None` (no budget published yet): the cost is unknown and None is returned; pass it to
        `update` and only the reward statistics move.
      - `task_budget_j <= 0` (nothing may be spent): any energy is the maximal overspend COST_CAP; zero energy is 0.
      - `n_participants < 1` is treated as 1 (this vehicle took part, so at least one did).
    """
    if not math.isfinite(e_j) or e_j < 0:
        raise _fail(f"round energy must be finite and >= 0 (got {e_j})")
    if task_budget_j is None:
        return None
    if not math.isfinite(task_budget_j):
        raise _fail(f"task budget is not finite ({task_budget_j})")
    if task_budget_j <= 0:
        return COST_CAP if e_j > 0 else 0.0
    share = task_budget_j / max(1, n_participants)
    return min(COST_CAP, e_j / share)


class UcbDual:
    """UCB-DUAL over candidate ranks (PAPER.md section 3).

    Args:
        ranks: the candidate set K (e.g. [2, 4, 8, 16, 32]); the persisted statistics are keyed by it.
        beta: exploration weight of both confidence terms.
        excluded: ranks this device cannot fit; never selected (config, not persisted).
        max_rank: ranks above it are excluded too.
        state_path: JSON file the statistics live in; None keeps them in memory only.
    """

    def __init__(
        self,
        ranks: Iterable[int],
        beta: float = DEFAULT_BETA,
        excluded: Iterable[int] = frozenset(),
        max_rank: int | None = None,
        state_path: Path | None = None,
    ) -> None:
        self.ranks: list[int] = sorted(set(int(r) for r in ranks))
        if not self.ranks or self.ranks[0] < 1:
            raise _fail(f"candidate ranks must be positive integers (got {self.ranks})")
        if not (math.isfinite(beta) and beta >= 0):
            raise _fail(f"beta must be finite and >= 0 (got {beta})")
        self.beta = beta
        excl = set(excluded)
        self.allowed: list[int] = [r for r in self.ranks if r not in excl and (max_rank is None or r <= max_rank)]
        if not self.allowed:
            raise _fail(f"every candidate rank {self.ranks} is excluded (excluded={sorted(excl)}, max_rank={max_rank})")
        self.stats: dict[int, RankStats] = {r: RankStats() for r in self.ranks}
        self.state_path = Path(state_path) if state_path is not None else None
        if self.state_path is not None:
            self._restore()

    @property
    def total_pulls(self) -> int:
        return sum(s.n for s in self.stats.values())

    def index(self, rank: int, lam: float) -> float:
        """The UCB-DUAL index of one arm that has been pulled at least once (PAPER.md section 3).

        `[r_hat + beta*sqrt(ln t / n)] - lam * max(0, c_hat - beta*sqrt(ln t / n_cost))` with t = total pulls + 1,
        i.e. the 1-based number of the round being chosen, so ln t > 0 once every arm has been pulled.
        An arm with no cost observation yet is optimistically free.
        """
        s = self.stats[rank]
        log_t = math.log(self.total_pulls + 1)
        r_ucb = s.r_hat + self.beta * math.sqrt(log_t / s.n)
        c_lcb = s.c_hat - self.beta * math.sqrt(log_t / s.n_cost) if s.n_cost > 0 else 0.0
        return r_ucb - lam * max(0.0, c_lcb)

    def select(self, lam: float) -> int:
        """Pick the rank for this round given the task's dual price `lam` >= 0."""
        if not (math.isfinite(lam) and lam >= 0):
            raise _fail(f"dual price must be finite and >= 0 (got {lam})")
        for r in self.allowed:  # every arm once, smallest first
            if self.stats[r].n == 0:
                return r
        best, best_v = self.allowed[0], -math.inf
        for r in self.allowed:  # ascending, strict '>' keeps ties on the smaller rank
            v = self.index(r, lam)
            if v > best_v:
                best, best_v = r, v
        return best

    def update(self, rank: int, reward: float, cost: float | None) -> None:
        """Record one round of `rank`: reward in [0, 1], normalised cost >= 0 (None: unknown); then persist."""
        if rank not in self.stats:
            raise _fail(f"rank {rank} is not a candidate {self.ranks}")
        if not (math.isfinite(reward) and 0.0 <= reward <= 1.0):
            raise _fail(f"reward must be in [0, 1] (got {reward})")
        if cost is not None:
            if not (math.isfinite(cost) and cost >= 0):
                raise _fail(f"cost must be finite and >= 0 (got {cost})")
            cost = min(cost, COST_CAP)
        self.stats[rank].add(reward, cost)
        if self.state_path is not None:
            self._save()

    # -- persistence -------------------------------------------------------------------------------------------

    def _save(self) -> None:
        assert self.state_path is not None
        doc = {
            "kind": STATE_KIND,
            "version": STATE_VERSION,
            "ranks": self.ranks,
            "arms": {str(r): s.to_json() for r, s in self.stats.items()},
        }
        atomic_write_json(self.state_path, doc)

    def _restore(self) -> None:
        assert self.state_path is not None
        path = self.state_path
        if not path.exists():
            return
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            self.stats = self._parse(doc)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError) as e:
            self._move_aside(f"{type(e).__name__}: {e}")
            return
        log.info("restored rank bandit state from %s (%d pulls)", path, self.total_pulls)

    def _parse(self, doc: object) -> dict[int, RankStats]:
        if not isinstance(doc, dict) or doc.get("kind") != STATE_KIND or doc.get("version") != STATE_VERSION:
            raise ValueError("not a fedrank UCB-DUAL state file of this version")
        if doc.get("ranks") != self.ranks:
            raise ValueError(f"state is for ranks {doc.get('ranks')}, this bandit has {self.ranks}")
        arms = doc.get("arms")
        if not isinstance(arms, dict) or sorted(arms) != sorted(str(r) for r in self.ranks):
            raise ValueError("arm table does not match the rank set")
        return {r: RankStats.from_json(arms[str(r)]) for r in self.ranks}

    def _move_aside(self, reason: str) -> None:
        assert self.state_path is not None
        aside = self.state_path.with_name(f"{self.state_path.name}.bad-{int(time.time() * 1000)}")
        try:
            os.replace(self.state_path, aside)
            log.warning("rank bandit state %s unusable (%s); moved to %s, starting fresh",
                        self.state_path, reason, aside)
        except OSError as e:
            log.warning("rank bandit state %s unusable (%s) and could not be moved (%s); starting fresh",
                        self.state_path, reason, e)
        self.stats = {r: RankStats() for r in self.ranks}
