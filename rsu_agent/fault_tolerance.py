"""Mobility-aware fault tolerance: what to do with a vehicle about to leave coverage (docs/algorithms.md section 6).

When T_exit is shorter than the vehicle's expected remaining round time, the RSU compares three costs and
tells the vehicle the cheapest: early upload of the partial update, migration of the adapter over V2V to the
nearest in-coverage vehicle with spare budget, or abandonment. Costs are unit-free sums of weighted terms.

Feasibility (our addition; the paper is silent): with q_v >= 0, abandonment (beta_e e_spent + gamma_q q*) can
never cost less than early upload (gamma_q max(0, q* - q_v)), so as written it would never be chosen. What makes
abandonment right in practice is a vehicle that leaves before it could send anything, so an action whose
transfer cannot finish before T_exit is infeasible (cost inf): early upload needs 8 bytes / uplink_rate <= T_exit,
migration needs tau_mig <= T_exit. Abandonment is always feasible.

Link rates come through `LinkRates`: the fleet hands in its channel model (distance-dependent V2I and V2V rates,
fleet.sim.channel); a field RSU without one uses the rates configured in `FtWeights` (`FixedRates`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

Action = Literal["early_upload", "migrate", "abandon"]
ACTIONS: tuple[Action, ...] = ("early_upload", "migrate", "abandon")  # also the tie-break order


class FtWeights(BaseModel):
    """Weights of the fault-tolerance costs (docs/algorithms.md section 6); configurable, these are defaults."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    gamma_q: float = Field(1.0, ge=0, description="cost per unit of accuracy (accuracy in [0, 1]) lost or short")
    alpha_tau: float = Field(0.01, ge=0, description="cost per second of V2V migration transfer time")
    beta_e: float = Field(0.001, ge=0, description="cost per joule (migration transmit energy, or energy wasted)")
    v2v_rate_bps: float = Field(20e6, gt=0, description="V2V link rate in bit/s used to estimate the migration time "
                                "when the RSU is given no link model (a field RSU; the fleet uses its channel model)")
    p_tx_w: float = Field(0.2, ge=0, description="transmit power in watts of the sender during the migration")
    uplink_rate_bps: float = Field(
        10e6, gt=0, description="vehicle-to-RSU rate in bit/s used to check that an early upload finishes before exit, "
        "when the RSU is given no link model"
    )


class LinkRates(Protocol):
    """Link rates in bit/s by distance in metres: vehicle-to-RSU uplink and vehicle-to-vehicle."""

    def uplink_bps(self, distance_m: float) -> float: ...

    def v2v_bps(self, distance_m: float) -> float: ...


@dataclass(frozen=True)
class FixedRates:
    """Distance-independent rates, as configured (`FtWeights.uplink_rate_bps`, `FtWeights.v2v_rate_bps`)."""

    uplink: float
    v2v: float

    @classmethod
    def from_weights(cls, weights: FtWeights) -> FixedRates:
        return cls(uplink=weights.uplink_rate_bps, v2v=weights.v2v_rate_bps)

    def uplink_bps(self, distance_m: float) -> float:
        return self.uplink

    def v2v_bps(self, distance_m: float) -> float:
        return self.v2v


@dataclass
class Candidate:
    """An in-coverage vehicle that could take over the leaving vehicle's adapter."""

    vehicle: str
    distance_m: float  # from the leaving vehicle
    spare_budget_j: float  # its remaining share of the task's round budget


@dataclass
class FtDecision:
    """The chosen action, the target of a migration, every action's cost, and the exit time it was based on."""

    action: Action
    migrate_to: str | None
    costs: dict[str, float] = field(default_factory=dict)  # action -> cost; migrate is inf without a candidate
    exit_in_s: float = math.inf


def _reject(msg: str) -> None:
    log.warning("fault-tolerance input rejected: %s", msg)
    raise ValueError(msg)


def needs_decision(exit_in_s: float, remaining_s: float) -> bool:
    """True when the vehicle leaves before its round would finish: T_exit < expected remaining round time."""
    if math.isnan(exit_in_s) or math.isnan(remaining_s) or exit_in_s < 0 or remaining_s < 0:
        _reject(f"exit_in_s = {exit_in_s!r} and remaining_s = {remaining_s!r} must be >= 0 (inf allowed)")
    return exit_in_s < remaining_s


def migration_cost(adapter_bytes: int, weights: FtWeights, v2v_bps: float | None = None) -> tuple[float, float, float]:
    """(cost, tau_mig in s, e_mig in J): tau_mig = 8 bytes / v2v rate, e_mig = p_tx tau_mig (modelled).

    `v2v_bps` is the link model's rate to the target; None uses the configured `weights.v2v_rate_bps`.
    """
    rate = weights.v2v_rate_bps if v2v_bps is None else v2v_bps
    if not (rate > 0):
        _reject(f"v2v rate = {rate!r} must be > 0")
    tau = 8.0 * adapter_bytes / rate
    energy = weights.p_tx_w * tau
    return weights.alpha_tau * tau + weights.beta_e * energy, tau, energy


def nearest_candidate(candidates: list[Candidate]) -> Candidate | None:
    """The nearest candidate with spare budget > 0; equal distances go to the smaller vehicle id."""
    usable = [c for c in candidates if c.spare_budget_j > 0 and math.isfinite(c.distance_m) and c.distance_m >= 0]
    return min(usable, key=lambda c: (c.distance_m, c.vehicle), default=None)


def decide(
    *,
    q_target: float,
    q_partial: float,
    e_spent_j: float,
    adapter_bytes: int,
    candidates: list[Candidate],
    weights: FtWeights,
    exit_in_s: float,
    rates: LinkRates | None = None,
    rsu_distance_m: float = 0.0,
) -> FtDecision:
    """Choose early upload, migration or abandonment by least cost (docs/algorithms.md section 6).

    Costs: early upload gamma_q * max(0, q* - q_v); migration alpha_tau * tau_mig + beta_e * e_mig to the nearest
    candidate with spare budget (inf when there is none); abandonment beta_e * e_spent + gamma_q * q*.
    An upload or migration that cannot finish before T_exit costs inf (module docstring).
    Ties go in the order early_upload, migrate, abandon.

    Args:
        q_target: q*, the task's target accuracy (default at the agent: best accuracy of the previous round).
        q_partial: q_v, the accuracy the partial update is expected to have.
        e_spent_j: joules the vehicle has spent on this round so far.
        adapter_bytes: the adapter's size on the wire.
        candidates: in-coverage vehicles of the same task (the leaving vehicle excluded by the caller).
        weights: the cost weights.
        exit_in_s: T_exit in seconds (inf allowed), bounds the transfers and is recorded in the decision.
        rates: the link model (uplink at `rsu_distance_m`, V2V at the candidate's distance); None = the
            configured fixed rates in `weights`.
        rsu_distance_m: the leaving vehicle's distance to the RSU.
    """
    for name, value in (("q_target", q_target), ("q_partial", q_partial), ("e_spent_j", e_spent_j)):
        if not math.isfinite(value) or value < 0:
            _reject(f"{name} = {value!r} must be finite and >= 0")
    if adapter_bytes < 0:
        _reject(f"adapter_bytes = {adapter_bytes} must be >= 0")
    if math.isnan(exit_in_s) or exit_in_s < 0:
        _reject(f"exit_in_s = {exit_in_s!r} must be >= 0 (inf allowed)")
    links = rates if rates is not None else FixedRates.from_weights(weights)
    target = nearest_candidate(candidates)
    mig_cost, tau_mig, _ = migration_cost(adapter_bytes, weights,
                                          links.v2v_bps(target.distance_m) if target is not None else None)
    up_bps = links.uplink_bps(max(0.0, rsu_distance_m))
    if not (up_bps > 0):
        _reject(f"uplink rate = {up_bps!r} must be > 0")
    tau_up = 8.0 * adapter_bytes / up_bps
    costs: dict[str, float] = {
        "early_upload": weights.gamma_q * max(0.0, q_target - q_partial) if tau_up <= exit_in_s else math.inf,
        "migrate": mig_cost if target is not None and tau_mig <= exit_in_s else math.inf,
        "abandon": weights.beta_e * e_spent_j + weights.gamma_q * q_target,
    }
    best: Action = ACTIONS[0]
    for action in ACTIONS[1:]:
        if costs[action] < costs[best]:
            best = action
    migrate_to = target.vehicle if best == "migrate" and target is not None else None
    log.debug("fault tolerance: %s (to %s), costs %s, exit in %.1f s", best, migrate_to, costs, exit_in_s)
    return FtDecision(action=best, migrate_to=migrate_to, costs=costs, exit_in_s=exit_in_s)
