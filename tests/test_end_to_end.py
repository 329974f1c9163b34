"""Issue 5, end to end over the in-process broker: one cloud, one RSU hosting two tasks, three vehicles, three rounds
of real LoRA training on the tiny model, driven by the fleet's SimDriver.

What the vehicles spend is scripted (a CostModel wrapper whose joules are set per task and round) so that the dual
price and the budgets have a known direction; training, aggregation, tri-feedback and fault tolerance are the real
code. Energy plan, in units of the cloud's E_total (one window = one round, Q = 1):
  round 0: hard task 0.45, easy task 0.05 -> both under budget; the window's difficulty favours `hard`
  round 1: 0.95 and 0.90               -> both over any budget (<= rho_max = 0.7): lambda rises
  round 2: 0 and 0                      -> both under budget: lambda falls; one vehicle drives out of coverage
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from edge_agent.agent import Fix
from edge_agent.work import ModelledCost
from fleet.config import FleetConfig, FleetTask
from fleet.run import done
from fleet.world import World, build_world
from proto.adapter import merge_tiers
from proto.bus import Delivery
from proto.codec import decode
from proto.memory_bus import MemoryBus
from proto.messages import FaultCommand, RoundAnnouncement, RoundTier, TaskBudget
from rsu_agent.dual import DEFAULT_LAM_MAX, DEFAULT_MU, step_size

pytestmark = pytest.mark.slow

HARD, EASY = "sentiment", "copa"  # vehicles round-robin: veh00 sentiment, veh01 copa, veh02 sentiment
PLAN = {(HARD, 0): 0.45, (EASY, 0): 0.05, (HARD, 1): 0.95, (EASY, 1): 0.90, (HARD, 2): 0.0, (EASY, 2): 0.0}
TRAIN_S = 10.0  # modelled training time of every vehicle: several status intervals, so a leaver is seen mid-round
SPEED = 80.0  # m/s of the vehicle that leaves in round 2
LEAVER = "veh02"


class ScriptedCost:
    """The fleet's cost model with training energy taken from PLAN (split over the task's vehicles), a fixed
    training time, a free download and upload; their times stay the fleet's link model."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.base = world.vehicles[0].cost_model
        self.members = {t.name: sum(1 for v in world.vehicles if t.name in v.tasks) for t in world.cfg.tasks}

    def download(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        return ModelledCost(self.base.download(vehicle, payload_bytes).seconds, 0.0, "model:scripted")

    def train(self, vehicle: str, task: str, rank: int, steps: int, samples: int) -> ModelledCost:
        pending = self.w.rsus[0].tasks[task].pending
        assert pending is not None, "a vehicle trains only inside an open round"
        share = PLAN[(task, pending.round)] * self.w.cloud.s.e_total_j / self.members[task]
        return ModelledCost(TRAIN_S, share, "model:scripted")

    def upload(self, vehicle: str, payload_bytes: int) -> ModelledCost:
        return ModelledCost(self.base.upload(vehicle, payload_bytes).seconds, 0.0, "model:scripted")

    def transmit(self, vehicle: str, rsu: str, payload_bytes: int, deliver: Callable[[], None]) -> None:
        self.base.transmit(vehicle, rsu, payload_bytes, deliver)


def leaving_position(world: World, cx: float, cy: float):
    """At the RSU until round 2 of its task opens, then east at SPEED m/s (and on, out of coverage)."""
    started: list[float] = []

    def at(now: float) -> Fix:
        pending = world.rsus[0].tasks[HARD].pending
        if not started and pending is not None and pending.round == 2:
            started.append(now)
        if not started:
            return Fix(cx, cy)
        return Fix(cx + SPEED * (now - started[0]), cy, SPEED, 0.0)

    return at


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    torch.set_num_threads(1)
    tasks = [FleetTask(name=HARD, task_type="sentence"), FleetTask(name=EASY, task_type="choice")]
    cfg = FleetConfig.quick(vehicles=3, rsus=1, rounds=3, window_rounds=1, local_steps=2, batch_size=8,
                            max_length=24, train_per_vehicle=24, test_size=20, threads=1, tasks=tasks)
    world = build_world(cfg, tmp_path_factory.mktemp("e2e"))
    cx, cy, _ = world.rsu_sites["rsu0"]
    cost = ScriptedCost(world)
    for rsu in world.rsus:  # the cloud's B_m = A_m / Q as a field RSU takes it: the plan is in units of E_total
        rsu.round_budget = None  # (the fleet's per-round sizing from the invited vehicles: tests/test_fleet_budget.py)
    for v in world.vehicles:
        v.cost_model = cost
        v.position = leaving_position(world, cx, cy) if v.id == LEAVER else (lambda now: Fix(cx, cy))
    seen: dict[str, list] = {"round": [], "budget": [], "command": [], "tier": []}

    def tap(d: Delivery) -> None:
        if not d.payload:
            return  # a cleared retained topic
        kind = {"round": RoundAnnouncement, "budget": TaskBudget, "command": FaultCommand, "tier": RoundTier}
        for name, cls in kind.items():
            if f"/{name}/" in d.topic:
                dec = decode(d.payload, cls)
                seen[name].append((dec.msg, dec.tensors))

    probe = MemoryBus(world.broker, "e2e-probe")
    probe.connect()
    probe.subscribe("fedrank/v1/#", tap)
    world.driver.start()
    finished = world.driver.run_until(lambda: done(world), max_time=2000.0)
    yield {"world": world, "seen": seen, "finished": finished}
    world.close()


def records(run: dict, task: str) -> list:
    return sorted((r for r in run["world"].rsus[0].history if r.task == task), key=lambda r: r.round)


def test_three_rounds_of_both_tasks_finish_with_every_vehicle_contributing(run: dict) -> None:
    assert run["finished"]
    for task, n in ((HARD, 2), (EASY, 1)):
        recs = records(run, task)
        assert [r.round for r in recs] == [0, 1, 2]
        assert all(r.updates >= 1 for r in recs)
        assert len(recs[0].accepted) == n and len(recs[1].accepted) == n


def dense(msg: RoundAnnouncement, tensors: dict) -> torch.Tensor:
    """The first layer's global update U diag(S) Vt, (d_out, d_in): small enough for the tiny model."""
    layer = msg.layers[0]
    return tensors[f"{layer}.U"] @ torch.diag(tensors[f"{layer}.S"]) @ tensors[f"{layer}.Vt"]


def test_global_adapter_changes_between_rounds(run: dict) -> None:
    for task in (HARD, EASY):
        tiers = {(m.round, m.index): t for m, t in run["seen"]["tier"] if m.task == task}
        anns = {m.round: (m, merge_tiers([tiers[(m.round, ref.index)] for ref in m.tiers]) if m.tiers else {})
                for m, _ in run["seen"]["round"] if m.task == task}
        assert sorted(anns) == [0, 1, 2]
        assert anns[0][0].rank == 0  # round 0: nothing aggregated yet

        d1, d2 = dense(*anns[1]), dense(*anns[2])
        assert d1.abs().max() > 0
        assert (d2 - d1).abs().max() > 1e-6 * d1.abs().max()


def test_dual_price_rises_on_overspend_and_falls_on_underspend(run: dict) -> None:
    mu, lam_max = DEFAULT_MU, DEFAULT_LAM_MAX  # RsuTaskConfig defaults (docs/algorithms.md section 4)
    for task in (HARD, EASY):
        recs = records(run, task)
        for r in recs:  # lambda <- clip(lambda + mu_t min(1, (E - B) / B), 0, lambda_max), mu_t at round t
            excess = min(1.0, (r.energy_j - r.budget_j) / r.budget_j)
            step = step_size(mu, r.round)
            assert r.lam == pytest.approx(min(lam_max, max(0.0, r.lam_announced + step * excess)))
        over, under = recs[1], recs[2]
        assert over.energy_j > over.budget_j and over.lam > over.lam_announced
        assert under.energy_j < under.budget_j and under.lam < under.lam_announced
        assert over.violation_j > 0


def test_budgets_move_toward_the_harder_task_after_the_window(run: dict) -> None:
    cloud = run["world"].cloud
    e_total, eps = cloud.s.e_total_j, cloud.s.feedback.eps
    first = cloud.windows[0]
    inputs = {w["task"]: w for w in first["inputs"]}
    difficulty = {t: w["used_j"] / max(w["accuracy_gain"], eps) for t, w in inputs.items()}  # U / max(dq, eps)
    assert inputs[HARD]["used_j"] == pytest.approx(0.45 * e_total)
    assert difficulty[HARD] > difficulty[EASY]
    # before: an equal split; after: the harder task's share grows (here up to the rho_max cap)
    assert inputs[HARD]["allocated_j"] == pytest.approx(e_total / 2)
    alloc = first["allocations"]
    assert alloc[HARD] > alloc[EASY] and alloc[HARD] > e_total / 2
    assert alloc[HARD] <= cloud.s.feedback.rho_max * e_total + 1e-9
    assert sum(alloc.values()) == pytest.approx(e_total)
    published = {m.task: m for m, _ in run["seen"]["budget"] if m.round == 1}  # window 1's retained budgets
    assert published[HARD].round_budget_j == pytest.approx(alloc[HARD])  # Q = 1: B_m = A_m
    assert published[HARD].round_budget_j > published[EASY].round_budget_j


def test_vehicle_leaving_coverage_mid_round_gets_a_fault_tolerance_decision(run: dict) -> None:
    cmds = [m for m, _ in run["seen"]["command"]]
    assert [(c.vehicle, c.task, c.round) for c in cmds] == [(LEAVER, HARD, 2)]
    cmd = cmds[0]
    radius = run["world"].rsu_sites["rsu0"][2]
    assert 0 < cmd.exit_in_s <= radius / SPEED + 1e-6  # it was at most at the centre when seen leaving
    assert cmd.costs and all(math.isfinite(v) for v in cmd.costs.values())
    rec = records(run, HARD)[2]
    assert LEAVER in rec.ft and rec.ft[LEAVER].split(":")[0] == cmd.action
    assert all(not r.ft for task in (HARD, EASY) for r in records(run, task) if (r.task, r.round) != (HARD, 2))
