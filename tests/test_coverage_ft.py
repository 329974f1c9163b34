"""Coverage exit times by hand (docs/algorithms.md section 6, T_exit) and the fault-tolerance choice."""

from __future__ import annotations

import math

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from rsu_agent.coverage import Circle, Coverage, Rect
from rsu_agent.fault_tolerance import Candidate, FtWeights, decide, needs_decision

DISC = Circle(cx=0.0, cy=0.0, radius=100.0)
ROAD = Rect(xmin=0.0, ymin=0.0, xmax=100.0, ymax=50.0)


@pytest.mark.parametrize(
    ("x", "y", "vx", "vy", "expected"),
    [
        (0, 0, 10, 0, 10.0),  # centre, 100 m at 10 m/s
        (60, 0, -10, 0, 16.0),  # 60 m back to -100 m
        (0, 0, 3, 4, 20.0),  # speed 5
        (0, 60, 10, 0, 8.0),  # chord: exits at x = sqrt(100^2 - 60^2) = 80
        (60, 80, 3, 4, 0.0),  # on the boundary, moving out
        (60, 80, -3, -4, 40.0),  # on the boundary, moving in: the 200 m diameter at 5 m/s
        (200, 0, -10, 0, 0.0),  # already outside
        (10, 10, 0, 0, math.inf),  # stationary
    ],
)
def test_circle_exit_time_by_hand(x, y, vx, vy, expected):
    assert DISC.time_to_exit(x, y, vx, vy) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("x", "y", "vx", "vy", "expected"),
    [
        (20, 10, 10, 0, 8.0),  # east edge: 80 m / 10
        (20, 10, 0, -5, 2.0),  # south edge: 10 m / 5
        (20, 10, 10, 10, 4.0),  # min(80/10, 40/10)
        (50, 25, 50, 25, 1.0),  # straight into the corner: both axes at once
        (100, 50, 1, 1, 0.0),  # at the corner, moving out
        (100, 50, -1, -1, 50.0),  # at the corner, moving in: min(100, 50)
        (100, 50, -1, 0, 100.0),  # at the corner, along the north edge
        (150, 10, -1, 0, 0.0),  # outside
        (20, 10, 0, 0, math.inf),  # stationary
    ],
)
def test_rect_exit_time_by_hand(x, y, vx, vy, expected):
    assert ROAD.time_to_exit(x, y, vx, vy) == pytest.approx(expected)


def test_contains_counts_the_boundary_and_distance_is_to_the_centre():
    assert DISC.contains(60, 80) and not DISC.contains(60, 80.01)
    assert ROAD.contains(0, 50) and not ROAD.contains(-0.01, 25)
    assert DISC.distance_to(30, 40) == pytest.approx(50.0)
    assert ROAD.distance_to(50, 65) == pytest.approx(40.0)  # centre (50, 25)


def test_coverage_is_a_tagged_union_usable_in_settings():
    class Cfg(BaseModel):
        coverage: Coverage

    cfg = Cfg.model_validate({"coverage": {"shape": "rect", "xmin": 0, "ymin": 0, "xmax": 10, "ymax": 5}})
    assert isinstance(cfg.coverage, Rect)
    assert isinstance(TypeAdapter(Coverage).validate_python({"shape": "circle", "radius": 3}), Circle)
    with pytest.raises(ValidationError):
        TypeAdapter(Coverage).validate_python({"shape": "circle", "radius": 0})
    with pytest.raises(ValidationError, match="xmin < xmax"):
        TypeAdapter(Coverage).validate_python({"shape": "rect", "xmin": 5, "ymin": 0, "xmax": 1, "ymax": 5})
    with pytest.raises(ValidationError):
        TypeAdapter(Coverage).validate_python({"shape": "hexagon"})


def test_non_finite_positions_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        DISC.time_to_exit(math.nan, 0, 1, 0)
    with pytest.raises(ValueError, match="finite"):
        ROAD.contains(math.inf, 0)


def test_a_decision_is_needed_only_when_the_vehicle_leaves_before_its_round_ends():
    assert needs_decision(10.0, 20.0)
    assert not needs_decision(30.0, 20.0)
    assert not needs_decision(math.inf, 20.0)
    with pytest.raises(ValueError):
        needs_decision(math.nan, 20.0)


W = FtWeights()  # gamma_q 1, alpha_tau 0.01, beta_e 0.001, V2V 20 Mbit/s, p_tx 0.2 W, uplink 10 Mbit/s
PEERS = [
    Candidate("v9", distance_m=5.0, spare_budget_j=0.0),  # nearest but no spare budget
    Candidate("v3", distance_m=20.0, spare_budget_j=10.0),
    Candidate("v2", distance_m=50.0, spare_budget_j=10.0),
]


def test_early_upload_wins_when_the_partial_update_is_nearly_there():
    d = decide(
        q_target=0.8, q_partial=0.75, e_spent_j=100.0, adapter_bytes=1_000_000, candidates=[], weights=W, exit_in_s=5.0
    )
    assert d.action == "early_upload" and d.migrate_to is None
    assert d.costs["early_upload"] == pytest.approx(0.05)
    assert d.costs["migrate"] == math.inf  # no candidate
    assert d.costs["abandon"] == pytest.approx(0.001 * 100 + 0.8)
    assert d.exit_in_s == 5.0


def test_migration_to_the_nearest_peer_with_spare_budget_wins_when_the_partial_update_is_poor():
    d = decide(
        q_target=0.8,
        q_partial=0.2,
        e_spent_j=100.0,
        adapter_bytes=1_000_000,
        candidates=PEERS,
        weights=W,
        exit_in_s=5.0,
    )
    # tau = 8e6 bit / 20e6 bit/s = 0.4 s, e = 0.2 W * 0.4 s = 0.08 J, cost = 0.01 * 0.4 + 0.001 * 0.08 = 0.00408.
    assert d.action == "migrate" and d.migrate_to == "v3"
    assert d.costs["migrate"] == pytest.approx(0.00408)
    assert d.costs["early_upload"] == pytest.approx(0.6)


def test_abandon_wins_when_nothing_can_be_sent_before_the_vehicle_leaves():
    # Upload needs 0.8 s, migration 0.4 s, the vehicle leaves in 0.1 s.
    d = decide(
        q_target=0.8, q_partial=0.7, e_spent_j=50.0, adapter_bytes=1_000_000, candidates=PEERS, weights=W, exit_in_s=0.1
    )
    assert d.action == "abandon" and d.migrate_to is None
    assert d.costs["early_upload"] == math.inf and d.costs["migrate"] == math.inf
    assert d.costs["abandon"] == pytest.approx(0.001 * 50 + 0.8)


def test_ties_go_early_upload_then_migrate_then_abandon():
    # Partial already at target (cost 0) and a free migration (0 bytes, cost 0): early upload wins the tie.
    d = decide(q_target=0.5, q_partial=0.6, e_spent_j=1.0, adapter_bytes=0, candidates=PEERS, weights=W, exit_in_s=1.0)
    assert d.action == "early_upload"
    # Upload infeasible (0.8 s > 0.5 s), migration feasible (0.4 s); all weights 0 -> migrate and abandon tie at 0.
    free = FtWeights(gamma_q=0.0, alpha_tau=0.0, beta_e=0.0)
    d = decide(
        q_target=0.5,
        q_partial=0.1,
        e_spent_j=1.0,
        adapter_bytes=1_000_000,
        candidates=PEERS,
        weights=free,
        exit_in_s=0.5,
    )
    assert d.action == "migrate" and d.migrate_to == "v3"


def test_bad_fault_tolerance_inputs_are_rejected():
    with pytest.raises(ValueError, match="q_target"):
        decide(q_target=math.nan, q_partial=0.1, e_spent_j=1.0, adapter_bytes=1, candidates=[], weights=W, exit_in_s=1)
    with pytest.raises(ValueError, match="adapter_bytes"):
        decide(q_target=0.5, q_partial=0.1, e_spent_j=1.0, adapter_bytes=-1, candidates=[], weights=W, exit_in_s=1)
    with pytest.raises(ValidationError):
        FtWeights(v2v_rate_bps=0)
