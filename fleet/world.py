"""Builds the mock fleet: one cloud, RSUs and vehicles over the in-process broker on a simulated clock.

The agents are the daemons' own classes. What the fleet adds is the simulated world they run in:
positions from trajectories, a cost model for latency and energy (labelled `model:<device>`), shared
data partitions and one shared trainer (one frozen base model for every vehicle in the process).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from cloud_agent.agent import CloudAgent
from cloud_agent.settings import CloudSettings
from cloud_agent.tri_feedback import TriFeedbackConfig
from edge_agent.agent import Fix, VehicleAgent
from edge_agent.data import TaskDataset, load_task_dataset, vehicle_data
from edge_agent.learner import NoMeter, TaskLearner
from edge_agent.model import layer_shapes
from edge_agent.policies import make_policy
from edge_agent.settings import EdgeSettings, EdgeTaskConfig
from edge_agent.tasks import TaskSpec
from edge_agent.trainer import LocalTrainer
from fedrank.runtime import SimClock
from fleet.config import FleetConfig
from fleet.cost import FleetCostModel
from fleet.costing import FleetCosting
from fleet.driver import SimDriver
from fleet.pool import PooledLearner, TrainPool
from fleet.sim.compute import BERT_BASE, ModelShape, bert_layer_shapes
from fleet.sim.devices import DeviceProfile, get_profile
from fleet.sim.links import ChannelRates, fleet_channel
from fleet.sim.mobility import RoadGrid, Trajectory, grid_trajectories
from fleet.sim.route import route_exit_s
from fleet.sim.uplink import SharedUplink
from fleet.surrogate import SurrogateLearner
from proto.bus import Delivery
from proto.errors import TopicRejected
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.topics import Topics
from rsu_agent.agent import RsuAgent
from rsu_agent.coverage import Circle
from rsu_agent.settings import RsuSettings, RsuTaskConfig

log = logging.getLogger(__name__)
EXIT_HORIZON_S = 600.0  # how far ahead a vehicle's navigation looks for its exit from an RSU's coverage

# How each compared policy chooses ranks on the vehicle and aggregates at the RSU (docs/algorithms.md section 1).
POLICY_WIRING = {
    "ucb-dual": ("ucb-dual", "svd"),
    "homolora": ("fixed", "homo"),
    "hetlora": ("capacity", "het"),
    "flexlora": ("capacity", "svd"),
    "fixed-rank": ("fixed", "svd"),  # one rank for everyone, exact aggregation: the regret reference
}


@dataclass
class WireTap:
    """Counts what agents publish (every payload once, as the broker receives it)."""

    topics: Topics = field(default_factory=Topics)
    bytes_by_kind: dict[str, int] = field(default_factory=dict)  # published, once per message
    down_by_kind: dict[str, int] = field(default_factory=dict)  # delivered to vehicles, once per copy

    def __call__(self, d: Delivery) -> None:
        try:
            kind = self.topics.parse(d.topic).channel.value
        except TopicRejected:
            kind = "other"
        self.bytes_by_kind[kind] = self.bytes_by_kind.get(kind, 0) + len(d.payload)

    @property
    def total(self) -> int:
        return sum(self.bytes_by_kind.values())

    def delivered(self, d: Delivery) -> None:
        """A delivery to a vehicle (the downlink: the broker sends a copy to every subscriber)."""
        try:
            kind = self.topics.parse(d.topic).channel.value
        except TopicRejected:
            kind = "other"
        self.down_by_kind[kind] = self.down_by_kind.get(kind, 0) + len(d.payload)


class MeteredBus(MemoryBus):
    """A vehicle's in-process bus that tells the wire tap what the broker delivered to it."""

    def __init__(self, broker: MemoryBroker, client_id: str, tap: WireTap) -> None:
        super().__init__(broker, client_id)
        self.tap = tap

    def _receive(self, topic_filter: str, d: Delivery) -> None:
        self.tap.delivered(d)
        super()._receive(topic_filter, d)


@dataclass
class World:
    cfg: FleetConfig
    clock: SimClock
    broker: MemoryBroker
    driver: SimDriver
    cloud: CloudAgent
    rsus: list[RsuAgent]
    vehicles: list[VehicleAgent]
    trainer: LocalTrainer
    datasets: dict[str, TaskDataset]
    specs: dict[str, TaskSpec]
    tests: dict[str, list]
    devices: dict[str, DeviceProfile]
    trajectories: dict[str, Trajectory]
    rsu_sites: dict[str, tuple[float, float, float]]
    layers: dict[str, tuple[int, int]]
    tap: WireTap
    round_budget_j: float  # a task's reference budget (all its vehicles); the RSUs size each round's own
    homo_rank: int
    tau_ref_s: float = 60.0
    budgets: object = None  # the RoundBudget hook: what each opened round was sized at
    pool: TrainPool | None = None  # worker threads training the vehicles' rounds (cfg.workers > 1)
    threads_before: int | None = None  # torch's thread count before the run set its own

    def close(self) -> None:
        """Stop the pool (waiting for work already running) and give torch its thread count back."""
        if self.pool is not None:
            self.pool.close()
        if self.threads_before is not None:
            import torch

            torch.set_num_threads(self.threads_before)


def resolve_model_dir(cfg: FleetConfig, cache: Path) -> Path | None:
    if cfg.model_dir is not None:
        return cfg.model_dir
    if cfg.model == "tiny":
        from fleet.tiny_model import make_tiny_bert

        path = cache / "tiny-bert"
        return path if (path / "config.json").exists() else make_tiny_bert(path, seed=cfg.seed)
    return None  # the packaged MiniLM-L6


def model_shape(layers: dict[str, tuple[int, int]], trainer: LocalTrainer) -> ModelShape:
    """The FLOP model's view of the base: hidden size, layer count, matmul params, and the adapted layers."""
    from edge_agent.model import BaseModelCache

    encoder, _ = BaseModelCache.get(trainer.model_dir)
    hidden = int(encoder.config.hidden_size)
    n_layers = int(encoder.config.num_hidden_layers)
    embed = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" in n)
    base = sum(p.numel() for p in encoder.parameters()) - embed
    return ModelShape(hidden=hidden, layers=n_layers, targets=1, base_params=float(base)).with_adapted(layers)


def base_and_layers(cfg: FleetConfig, trainer: LocalTrainer) -> tuple[dict[str, tuple[int, int]], ModelShape]:
    """The adapted layers and the FLOP model's shape: from the model's files, or from the BERT-base shape alone
    (cost studies on the surrogate learner: shapes, no weights)."""
    if cfg.model == "bert-base-shape":
        layers = bert_layer_shapes(cfg.targets)
        return layers, BERT_BASE.with_adapted(layers)
    layers = layer_shapes(trainer.model_dir, cfg.targets)
    return layers, model_shape(layers, trainer)


def rsu_layout(cfg: FleetConfig, grid: RoadGrid) -> dict[str, tuple[float, float, float]]:
    """RSUs spread along the middle road of the grid, at intersections, with overlapping-or-gapped coverage."""
    sites: dict[str, tuple[float, float, float]] = {}
    span = (grid.nx - 1) * grid.block_m
    for k in range(cfg.rsus):
        x = round((k + 0.5) / cfg.rsus * (grid.nx - 1)) * grid.block_m
        y = round((grid.ny - 1) / 2) * grid.block_m
        sites[f"rsu{k}"] = (min(x, span), y, cfg.rsu_radius_m)
    return sites


def build_world(cfg: FleetConfig, out_dir: Path) -> World:
    import torch

    pooled = cfg.workers > 1 and cfg.learner == "real"
    threads = cfg.threads or (1 if pooled else None)  # one torch thread per worker: results independent of the pool
    threads_before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = out_dir / "state"
    clock = SimClock(0.0)
    broker = MemoryBroker()
    topics = Topics()
    model_dir = resolve_model_dir(cfg, out_dir / "cache")
    def make_trainer(replica: int = 0) -> LocalTrainer:
        return LocalTrainer(model_dir, targets=cfg.targets, max_length=cfg.max_length, batch_size=cfg.batch_size,
                            lr=cfg.lr, threads=threads, replica=replica)

    trainer = make_trainer()
    pool = TrainPool(make_trainer, cfg.workers) if pooled else None
    layers, shape = base_and_layers(cfg, trainer)
    rank_policy, aggregator = POLICY_WIRING[cfg.policy]

    # -- data: each task's test split, and one partition per vehicle of that task ----------------------
    datasets: dict[str, TaskDataset] = {}
    specs: dict[str, TaskSpec] = {}
    tests: dict[str, list] = {}
    for t in cfg.tasks:
        ds = load_task_dataset(t.task_type, t.data, seed=cfg.seed)
        datasets[t.name] = ds
        specs[t.name] = TaskSpec(t.name, t.task_type, ds.num_labels)
        tests[t.name] = ds.test[: cfg.test_size]
    task_of = {f"veh{i:02d}": cfg.tasks[i % len(cfg.tasks)] for i in range(cfg.vehicles)}
    members: dict[str, list[str]] = {t.name: [v for v, tt in task_of.items() if tt.name == t.name] for t in cfg.tasks}
    shares: dict[str, tuple[list, list]] = {}
    for t in cfg.tasks:
        vids = members[t.name]
        size = min(cfg.train_per_vehicle, len(datasets[t.name].train) // max(1, len(vids)))
        for k, vid in enumerate(vids):
            shares[vid] = vehicle_data(datasets[t.name], k, len(vids), sizes=[size] * len(vids), seed=cfg.seed)

    # -- the world: grid or T-Drive trajectories, RSU sites, device profiles ---------------------------
    grid = RoadGrid(nx=cfg.grid_blocks + 1, ny=cfg.grid_blocks + 1, block_m=cfg.block_m)
    horizon = cfg.rounds * (cfg.round_timeout_s + cfg.round_gap_s) * 3 + 600
    vids = list(task_of)
    if cfg.mobility == "grid":
        trajs = grid_trajectories(cfg.vehicles, horizon, grid, seed=cfg.seed)
        sites = rsu_layout(cfg, grid)
    else:
        from fleet.roads import trace_layout

        trajs, sites = trace_layout(cfg, horizon)
    trajectories = dict(zip(vids, trajs, strict=True))
    devices = {vid: get_profile(cfg.devices[i % len(cfg.devices)]) for i, vid in enumerate(vids)}

    def fix(vid: str):
        traj = trajectories[vid]

        def at(now: float) -> Fix:
            t = traj.start_s + now
            x, y = traj.position(t)
            vx, vy = traj.velocity(t)
            # the vehicle's navigation: when it leaves each RSU it is in, along its own route
            exits = {rid: route_exit_s(traj, t, cx, cy, r, EXIT_HORIZON_S) for rid, (cx, cy, r) in sites.items()
                     if (x - cx) ** 2 + (y - cy) ** 2 <= r * r}
            return Fix(x, y, vx, vy, exits=exits or None)

        return at

    def locate(vid: str) -> tuple[float, float]:
        traj = trajectories[vid]
        return traj.position(traj.start_s + clock.now())

    fixes = {vid: fix(vid) for vid in vids}
    channel = fleet_channel(cfg)  # the preset or constants of `cfg.channel` (fleet/sim/channel.py)
    uplink = SharedUplink(clock)
    cost = FleetCostModel(devices, shape, cfg.batch_size, cfg.max_length, locate=locate,
                          rsu_sites=[(x, y) for x, y, _ in sites.values()], channel=channel, uplink=uplink)

    # Budgets: each RSU round's is sized from the vehicles it invites (fleet/budget.py); the cloud's split is
    # scaled to a task's reference budget, so that an even split leaves the sized budget as it is.
    costing = FleetCosting(cfg, cost, devices, layers, aggregator)
    round_budget = sum(costing.reference_round_budget(members[t.name]) for t in cfg.tasks) / max(1, len(cfg.tasks))
    e_total = round_budget * len(cfg.tasks) * cfg.window_rounds
    homo_rank = cfg.homo_rank if cfg.homo_rank is not None else costing.homo_rank(members)
    budget_hook = costing.round_budget(round_budget)
    tau_ref = costing.tau_ref_s()

    # -- agents ------------------------------------------------------------------------------------------
    cloud = CloudAgent(
        CloudSettings(id="cloud", state_dir=state / "cloud", tasks=[t.name for t in cfg.tasks], e_total_j=e_total,
                      tri_feedback=cfg.tri_feedback, feedback=TriFeedbackConfig(
                          window_rounds=cfg.window_rounds, e_min_j=0.1 * e_total / len(cfg.tasks))),
        MemoryBus(broker, "cloud"), clock)
    rsus = []
    work = list(cfg.work) if cfg.arms == "work" else [1.0]  # `--arms ranks`: the paper's rank-only decision
    for rid, (x, y, r) in sites.items():
        tasks = [RsuTaskConfig(name=t.name, task_type=t.task_type, ranks=cfg.ranks, work=work,
                               lora_alpha=cfg.lora_alpha, layers=layers, aggregator=aggregator,
                               round_timeout_s=cfg.round_timeout_s,
                               round_gap_s=max(cfg.round_gap_s, 1e-3), default_round_budget_j=round_budget,
                               max_rounds=cfg.rounds, expected_round_s=cfg.round_timeout_s / 4)
                 for t in cfg.tasks]
        rsus.append(RsuAgent(RsuSettings(id=rid, state_dir=state / rid, coverage=Circle(shape="circle", cx=x, cy=y,
                                                                                           radius=r),
                                         tasks=tasks, fault_tolerance=cfg.fault_tolerance, wire_dtype=cfg.wire_dtype,
                                         status_interval_s=cfg.status_interval_s, join_wait_s=cfg.status_interval_s,
                                         cold_start_s=0.0),  # simulated vehicles have no model to load
                             MemoryBus(broker, rid), clock, topics, rates=ChannelRates(channel),
                             aggregate_time=costing.aggregate_time, round_budget=budget_hook))
    tap = WireTap(topics)
    vehicles = []
    surrogate_progress: dict[str, int] = {}  # task -> samples trained by all its vehicles (surrogate only)
    for vid in vids:
        t = task_of[vid]
        dev = devices[vid]
        s = EdgeSettings(id=vid, state_dir=state / vid, tasks=[EdgeTaskConfig(name=t.name, task_type=t.task_type)],
                         rank_policy=rank_policy, fixed_rank=homo_rank, local_steps=cfg.local_steps,
                         batch_size=cfg.batch_size, lr=cfg.lr, max_length=cfg.max_length, seed=cfg.seed,
                         status_interval_s=cfg.status_interval_s, wire_dtype=cfg.wire_dtype,
                         device_memory_gb=dev.memory_gb, max_rank=None if rank_policy == "fixed" else dev.max_rank,
                         tau_ref_s=tau_ref)
        learner: TaskLearner | PooledLearner | SurrogateLearner = TaskLearner(trainer, specs[t.name], *shares[vid])
        if pool is not None:
            learner = PooledLearner(learner, pool)
        if cfg.learner == "surrogate":
            learner = SurrogateLearner(layers, len(shares[vid][0]), cfg.batch_size, t.name, surrogate_progress,
                                       seed=cfg.seed + len(vehicles), full_steps=cfg.local_steps)

        def policy_for(task: str, s: EdgeSettings = s, dev: DeviceProfile = dev):
            return make_policy(s.rank_policy, rank=s.fixed_rank if s.rank_policy == "fixed" else None,
                               device=dev.memory_gb, beta=s.beta, seed=s.seed, stream=f"{s.id}/{task}",
                               state_path=Path(s.state_dir) / f"bandit-{task}.json",
                               fits=lambda r, m=s.max_rank: m is None or r <= m)

        vehicles.append(VehicleAgent(s, MeteredBus(broker, vid, tap), clock, learner_for=lambda task, lr=learner: lr,
                                     policy_for=policy_for, meter=NoMeter(), cost_model=cost, position=fixes[vid],
                                     topics=topics))
    for agent in (cloud, *rsus, *vehicles):
        agent.bus.connect(will=agent.will())
    tap_bus = MemoryBus(broker, "fleet-tap")
    tap_bus.connect()
    tap_bus.subscribe(f"{topics.root}/#", tap)
    driver = SimDriver(clock, [cloud, *rsus, *vehicles, uplink])
    log.info("fleet: %d vehicles, %d RSUs, tasks %s, policy %s, reference task budget %.1f J, tau_ref %.2f s "
             "(modelled)", len(vehicles), len(rsus), [t.name for t in cfg.tasks], cfg.policy, round_budget, tau_ref)
    return World(cfg, clock, broker, driver, cloud, rsus, vehicles, trainer, datasets, specs, tests, devices,
                 trajectories, sites, layers, tap, round_budget, homo_rank, tau_ref, budget_hook, pool,
                 threads_before)


def majority_baseline(spec: TaskSpec, examples: list) -> float:
    """Accuracy of always answering the most frequent label (token tasks: the most frequent tag)."""
    from collections import Counter

    if spec.task_type == "token":
        counts = Counter(tag for ex in examples for tag in ex.tags)
    else:
        counts = Counter(ex.label for ex in examples)
    total = sum(counts.values())
    return counts.most_common(1)[0][1] / total if total else math.nan
