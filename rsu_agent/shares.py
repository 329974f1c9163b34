"""How a task's round budget is shared among heterogeneous vehicles (docs/algorithms.md section 3).

A Xavier NX spends about twice an Orin Nano on the same configuration. Equal shares `B / |V|` would make the NX's
normalised costs twice the Nano's, so one price `lambda` would price the hardware, not the configuration. Instead
each participant's share is proportional to its own hardware factor `h_v`:

    b_v = B * h_v / sum_{u in V} h_u

so every vehicle's cost of one configuration is the same fraction of its share, and `lambda` prices the
configuration. `h_v` is learned from the reports the RSU accepts: per vehicle and configuration (rank, work) the
mean joules of its full, own rounds, then `h_v = sum_a n_va e_va / sum_a n_va E_a` with `E_a` the configuration's
mean over vehicles in units of their factors (two fixed-point passes). Comparing like with like matters: a
vehicle that just played a quarter-work configuration is not cheaper hardware (a fixed download and upload make
energy far from linear in work), and the share must not move with every round's noise, or a configuration that
sits exactly on the budget is priced in and out of reach round by round.
"""

from __future__ import annotations

import math

from proto.messages import UpdateReport

# Per (vehicle, configuration) the mean is a running mean of its first MEMORY rounds, a moving average after: a
# vehicle's hardware can change (thermal throttling, a new power mode) and is then learned within ~MEMORY rounds.
MEMORY = 200.0
MAX_CONFIGS = 64  # configurations kept per vehicle (the least played go first): bounded state per vehicle

# vehicle -> configuration key "r{rank}w{work}" -> [rounds, mean joules]
CostTable = dict[str, dict[str, list[float]]]


def config_key(rank: int, work: float) -> str:
    return f"r{rank}w{work:g}"


def hardware_factors(costs: CostTable) -> dict[str, float]:
    """`h_v` for every vehicle with a known cost, scaled so that their mean is 1."""
    vehicles = [v for v, per in costs.items() if per]
    h = dict.fromkeys(vehicles, 1.0)
    for _ in range(2):
        sums: dict[str, list[float]] = {}
        for v in vehicles:
            for a, (_n, e) in costs[v].items():
                acc = sums.setdefault(a, [0.0, 0.0])
                acc[0] += e / h[v]
                acc[1] += 1.0
        level = {a: s / k for a, (s, k) in sums.items()}
        h = {v: sum(n * e for n, e in costs[v].values()) / sum(n * level[a] for a, (n, _e) in costs[v].items())
             for v in vehicles}
        mean = sum(h.values()) / len(h) if h else 1.0
        h = {v: x / mean for v, x in h.items()}
    return h


def budget_shares(budget_j: float, participants: list[str], costs: CostTable) -> dict[str, float]:
    """Each participant's share of `budget_j` (joules), proportional to its hardware factor; equal when none is
    known, and a vehicle not seen yet counts as the mean of the known ones."""
    if not participants:
        return {}
    h = hardware_factors({v: costs[v] for v in participants if v in costs})
    default = sum(h.values()) / len(h) if h else 1.0
    weight = {v: h.get(v, default) for v in participants}
    total = sum(weight.values())
    return {v: budget_j * w / total for v, w in weight.items()}


def learn_reference(costs: CostTable, vehicle: str, report: UpdateReport) -> bool:
    """Fold a full, own round's joules into `costs[vehicle][its configuration]`; False (unchanged) otherwise."""
    if report.partial or report.migrated_from is not None or not (math.isfinite(report.joules) and report.joules > 0):
        return False
    per = costs.setdefault(vehicle, {})
    cell = per.setdefault(config_key(report.rank, report.work), [0.0, 0.0])
    cell[0] += 1.0
    cell[1] += (report.joules - cell[1]) / min(cell[0], MEMORY)
    if len(per) > MAX_CONFIGS:
        del per[min(per, key=lambda k: per[k][0])]
    return True
