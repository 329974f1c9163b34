"""Tri-feedback energy budgets across tasks, recomputed every Q rounds (docs/algorithms.md section 5).

Per task m over the last window: energy used U_m, allocation A_m, accuracy gain dq_m.
  difficulty   h_m <- xi h_m + (1 - xi) U_m / max(dq_m, eps)   (h_m starts at its first observation)
  utilisation  u_m = U_m / A_m                                  (u_m = 1 when A_m = 0: nothing to judge against)
  weight       w_m = h_m^gamma u_m
  allocation   A_m <- U_m + w_m / sum w * (E_total - sum U), clipped to [E_min, rho_max E_total], sum A = E_total.
Decisions where the paper is silent:
- dq_m <= 0 (no progress or a regression) counts as dq_m = eps, so the task's difficulty is pushed up by U_m / eps;
  its share is then bounded by rho_max. A negative dq_m is therefore accepted; negative energies are not.
- sum U > E_total (the window overspent): the surplus formula would cut the hardest tasks most, so instead
  A_m = E_total U_m / sum U (every task is cut pro rata) before clipping.
- sum w = 0 (nothing used anywhere): the surplus is split equally.
- A task that used nothing (U_m = 0) has u_m = 0 and w_m = 0, so it gets only E_min, unless capped tasks leave
  energy nobody else can take. With the default E_min = 0 that is a zero budget, which rsu_agent.dual refuses:
  deployments with tasks that can go idle should set e_min_j > 0.
- Clip and renormalise: A_m = clip(c Ahat_m, E_min, rho_max E_total) with the one scale c that makes
  sum A = E_total, i.e. the fixed point of "clip, renormalise the unclipped tasks, repeat", found exactly.
- When the bounds and sum A = E_total cannot both hold (n E_min > E_total, or n rho_max < 1 as with a single
  task), the total wins: the budget is split equally, the allocation closest to the bounds; a warning is logged.
Difficulty of tasks absent from a window is kept unchanged (a paused task resumes with its history).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)


class TriFeedbackConfig(BaseModel):
    """Tri-feedback parameters (docs/algorithms.md section 5); configurable defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    window_rounds: int = Field(5, ge=1, description="Q: rounds per allocation window; B_m(t) = A_m / Q")
    xi: float = Field(0.9, ge=0, le=1, description="difficulty smoothing (weight of the previous h_m)")
    gamma: float = Field(2.0, ge=0, description="difficulty amplification in w_m = h_m^gamma u_m")
    eps: float = Field(1e-3, gt=0, description="floor on the accuracy gain in U_m / max(dq_m, eps)")
    rho_max: float = Field(0.7, gt=0, le=1, description="largest share of E_total one task may get")
    e_min_j: float = Field(0.0, ge=0, description="smallest allocation of a task per window, joules")


@dataclass
class TaskWindow:
    """One task's feedback over the last window."""

    task: str
    used_j: float  # U_m
    allocated_j: float  # A_m of the window that just ended
    accuracy_gain: float  # dq_m over the window; the agent feeds TaskStats.accuracy (vehicles reported, weighted)


@dataclass
class TriFeedbackState:
    """h_m per task; the agent persists it as JSON between windows and restarts."""

    difficulty: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"difficulty": self.difficulty}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TriFeedbackState:
        """Parse to_json's output; ValueError on anything else or on a negative / non-finite difficulty."""
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"tri-feedback state is not JSON: {exc}") from exc
        diff = obj.get("difficulty") if isinstance(obj, dict) else None
        if not isinstance(diff, dict):
            raise ValueError("tri-feedback state needs a 'difficulty' object")
        out: dict[str, float] = {}
        for task, h in diff.items():
            if isinstance(h, bool) or not isinstance(h, (int, float)) or not math.isfinite(h) or h < 0:
                raise ValueError(f"difficulty of task {task!r} = {h!r} must be a finite number >= 0")
            out[str(task)] = float(h)
        return cls(difficulty=out)


def _reject(msg: str) -> None:
    log.warning("tri-feedback input rejected: %s", msg)
    raise ValueError(msg)


def _check(windows: list[TaskWindow], e_total_j: float) -> None:
    if not math.isfinite(e_total_j) or e_total_j <= 0:
        _reject(f"e_total_j = {e_total_j!r} must be finite and > 0")
    if not windows:
        _reject("no task windows to allocate over")
    seen: set[str] = set()
    for w in windows:
        if w.task in seen:
            _reject(f"task {w.task!r} appears twice")
        seen.add(w.task)
        for name in ("used_j", "allocated_j"):
            v = getattr(w, name)
            if not math.isfinite(v) or v < 0:
                _reject(f"task {w.task!r}: {name} = {v!r} must be finite and >= 0")
        if not math.isfinite(w.accuracy_gain):
            _reject(f"task {w.task!r}: accuracy_gain = {w.accuracy_gain!r} must be finite")


def equal_split(tasks: list[str], e_total_j: float) -> dict[str, float]:
    """E_total / n for each task (the first window, and the fallback when the bounds are infeasible)."""
    if not tasks or len(set(tasks)) != len(tasks):
        _reject(f"tasks {tasks!r} must be non-empty and distinct")
    if not math.isfinite(e_total_j) or e_total_j < 0:
        _reject(f"e_total_j = {e_total_j!r} must be finite and >= 0")
    return {t: e_total_j / len(tasks) for t in tasks}


def clip_to_total(raw: dict[str, float], total: float, lo: float, hi: float) -> dict[str, float]:
    """clip(c raw_m, lo, hi) with the scale c >= 0 that makes the sum equal total (see the module docstring)."""
    n = len(raw)
    if n * lo > total or n * hi < total:
        log.warning(
            "tri-feedback bounds [%g, %g] J cannot sum to %g J over %d tasks; splitting equally", lo, hi, total, n
        )
        return equal_split(list(raw), total)

    def f(c: float) -> float:
        return sum(min(max(c * a, lo), hi) for a in raw.values())

    pos = [a for a in raw.values() if a > 0]
    if not pos:
        return equal_split(list(raw), total)
    # f is continuous, non-decreasing and piecewise linear with kinks where c * a_m hits lo or hi.
    kinks = sorted({0.0} | {lo / a for a in pos} | {hi / a for a in pos})
    prev = 0.0
    for kink in kinks:
        if f(kink) >= total:
            f_prev, f_kink = f(prev), f(kink)
            c = kink if f_kink == f_prev else prev + (total - f_prev) * (kink - prev) / (f_kink - f_prev)
            return {m: min(max(c * a, lo), hi) for m, a in raw.items()}
        prev = kink
    # Every positive task is at hi and the sum is still short: only tasks with raw 0 (stuck at lo) can take the
    # rest; hand it to them equally (each stays <= hi because n hi >= total).
    zero = [m for m, a in raw.items() if a <= 0]
    rest = (total - hi * len(pos)) / len(zero)
    return {m: (hi if a > 0 else rest) for m, a in raw.items()}


def allocate(
    windows: list[TaskWindow], state: TriFeedbackState, e_total_j: float, cfg: TriFeedbackConfig
) -> tuple[dict[str, float], TriFeedbackState]:
    """The next window's allocation A_m per task, and the updated difficulty state (docs/algorithms.md section 5).

    Args:
        windows: one entry per task of the last window.
        state: difficulties carried from earlier windows (not modified).
        e_total_j: E_total, the global budget of the next window in joules.
        cfg: the parameters.

    Returns:
        (task -> joules for the next window, summing to e_total_j; the new state).
    """
    _check(windows, e_total_j)
    difficulty = dict(state.difficulty)
    for w in windows:
        obs = w.used_j / max(w.accuracy_gain, cfg.eps)
        prev = difficulty.get(w.task)
        difficulty[w.task] = obs if prev is None else cfg.xi * prev + (1 - cfg.xi) * obs
    used_total = sum(w.used_j for w in windows)
    if used_total >= e_total_j:
        raw = {w.task: e_total_j * w.used_j / used_total for w in windows}
    else:
        # Scale h by its maximum before the power so h^gamma cannot overflow; only the ratios of w matter.
        h_top = max(difficulty[w.task] for w in windows)
        weights = {}
        for w in windows:
            util = w.used_j / w.allocated_j if w.allocated_j > 0 else 1.0
            weights[w.task] = (difficulty[w.task] / h_top) ** cfg.gamma * util if h_top > 0 else 0.0
        w_sum = sum(weights.values())
        surplus = e_total_j - used_total
        raw = {
            w.task: w.used_j + (weights[w.task] / w_sum if w_sum > 0 else 1 / len(windows)) * surplus for w in windows
        }
    alloc = clip_to_total(raw, e_total_j, cfg.e_min_j, cfg.rho_max * e_total_j)
    log.info("tri-feedback allocation %s (modelled from reported usage; E_total %.1f J)", alloc, e_total_j)
    return alloc, TriFeedbackState(difficulty=difficulty)
