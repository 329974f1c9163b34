"""How a task's round budget is shared among heterogeneous vehicles (docs/algorithms.md section 3).

A Xavier NX spends about twice an Orin Nano on the same configuration. Equal shares `B / |V|` would make the NX's
normalised costs twice the Nano's, so one price `lambda` would price the hardware, not the configuration. Instead
each participant's share is proportional to its own cost of the reference configuration (the full local work):

    b_v = B * e_ref(v) / sum_{u in V} e_ref(u)

so every vehicle's full-work configuration costs the same normalised `sum e_ref / B`, and `lambda` prices work.
The RSU learns `e_ref(v)` from the reports it accepts (joules / work fraction of full, own rounds: training energy
is nearly linear in local steps) as a moving average; a vehicle not seen yet gets the mean of the known ones.
"""

from __future__ import annotations

import math

from proto.messages import UpdateReport

REF_EMA = 0.3  # weight of the newest report in e_ref(v)


def budget_shares(budget_j: float, participants: list[str], ref_j: dict[str, float]) -> dict[str, float]:
    """Each participant's share of `budget_j` (joules), proportional to its reference cost; equal when none known."""
    if not participants:
        return {}
    known = [ref_j[v] for v in participants if v in ref_j and ref_j[v] > 0]
    default = sum(known) / len(known) if known else 1.0
    weight = {v: ref_j[v] if ref_j.get(v, 0.0) > 0 else default for v in participants}
    total = sum(weight.values())
    return {v: budget_j * w / total for v, w in weight.items()}


def learn_reference(ref_j: dict[str, float], vehicle: str, report: UpdateReport) -> bool:
    """Fold a full, own round's `joules / work` into `ref_j[vehicle]`; False (unchanged) for any other report."""
    if report.partial or report.migrated_from is not None or not (math.isfinite(report.joules) and report.joules > 0):
        return False
    full = report.joules / report.work
    old = ref_j.get(vehicle)
    ref_j[vehicle] = full if old is None else (1 - REF_EMA) * old + REF_EMA * full
    return True
