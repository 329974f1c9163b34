"""The cloud agent over the mock broker: budgets published, moved toward the harder task, impossible stats refused."""

from __future__ import annotations

from typing import Any

import pytest

from cloud_agent.agent import CloudAgent
from cloud_agent.settings import CloudSettings
from cloud_agent.tri_feedback import TriFeedbackConfig
from fedrank.runtime import SimClock
from proto.bus import Delivery
from proto.codec import decode, encode
from proto.memory_bus import MemoryBroker, MemoryBus
from proto.messages import TaskBudget, TaskStats
from proto.topics import Topics

T = Topics()


class CloudRig:
    def __init__(self, tmp_path, **kw: Any) -> None:
        base: dict[str, Any] = {"id": "cloud", "state_dir": tmp_path, "tasks": ["a", "b"], "e_total_j": 1000.0,
                                "feedback": TriFeedbackConfig(window_rounds=2), "status_interval_s": 1000.0}
        base.update(kw)
        self.settings = CloudSettings(**base)
        self.broker = MemoryBroker()
        self.clock = SimClock(0.0)
        self.pub = MemoryBus(self.broker, "rsu-publisher")
        self.pub.connect()
        self.agent = self.new_agent()

    def new_agent(self) -> CloudAgent:
        bus = MemoryBus(self.broker, "cloud")
        agent = CloudAgent(self.settings, bus, self.clock)
        bus.connect(will=agent.will())
        agent.start()
        return agent

    def budgets(self) -> dict[str, TaskBudget]:
        out = {}
        for t in self.settings.tasks:
            raw = self.broker.retained(T.budget("cloud", t))
            out[t] = decode(raw, TaskBudget).msg
        return out

    def stats(self, task: str, round_: int, energy: float, acc: float, rsu: str = "rsu1", **kw: Any) -> None:
        fields: dict[str, Any] = {"sender": rsu, "task": task, "round": round_, "energy_j": energy, "budget_j": 250.0,
                                  "lam": 0.0, "violation_j": 0.0, "accuracy": acc, "loss": 0.5, "participants": 2,
                                  "updates": 2}
        fields.update(kw)
        self.pub.publish(T.stats(rsu, task), encode(TaskStats(**fields)))
        self.agent.pump()


def test_budgets_start_as_an_equal_split_retained(tmp_path):
    rig = CloudRig(tmp_path)
    b = rig.budgets()
    assert {t: (m.round, m.window_budget_j, m.round_budget_j, m.window_rounds) for t, m in b.items()} == {
        "a": (0, 500.0, 250.0, 2), "b": (0, 500.0, 250.0, 2)}


def test_budget_moves_toward_the_task_that_gains_less_accuracy_per_joule(tmp_path):
    rig = CloudRig(tmp_path)
    rig.stats("a", 0, 240.0, 0.50)
    rig.stats("b", 0, 240.0, 0.50)
    rig.stats("a", 1, 240.0, 0.52)
    assert rig.agent.windows == [] and rig.budgets()["a"].round == 0  # b has 1 of Q = 2 rounds: the window waits
    rig.stats("b", 1, 240.0, 0.70)
    [w] = rig.agent.windows
    # U_a = U_b = 480 J of A = 500 J each (u = 0.96); dq_a = 0.02 (hard), dq_b = 0.20 (easy); xi: first window
    h_a, h_b = 480 / 0.02, 480 / 0.20
    w_a, w_b = h_a**2 * 0.96, h_b**2 * 0.96
    want_a = 480 + w_a / (w_a + w_b) * (1000 - 960)
    assert [x["used_j"] for x in w["inputs"]] == [480.0, 480.0]
    assert [x["accuracy_gain"] for x in w["inputs"]] == pytest.approx([0.02, 0.20])
    assert w["allocations"]["a"] == pytest.approx(want_a)
    assert w["allocations"]["a"] + w["allocations"]["b"] == pytest.approx(1000.0)
    b = rig.budgets()
    assert b["a"].window_budget_j > 500 > b["b"].window_budget_j
    assert (b["a"].round, b["a"].window_budget_j, b["a"].round_budget_j) == (1, pytest.approx(want_a),
                                                                            pytest.approx(want_a / 2))


def test_a_stalled_task_cannot_freeze_the_budgets(tmp_path):
    rig = CloudRig(tmp_path)
    rig.stats("b", 0, 100.0, 0.50)
    for r in range(4):  # a reaches 2Q = 4 rounds while b has one
        rig.stats("a", r, 200.0, 0.5 + 0.05 * r)
    [w] = rig.agent.windows
    assert [x["used_j"] for x in w["inputs"]] == [200.0 * 4 * 2 / 4, 100.0 * 2 / 1]  # scaled to Q rounds
    assert rig.budgets()["a"].round == 1


def test_fixed_budgets_ablation_keeps_the_equal_split(tmp_path):
    rig = CloudRig(tmp_path, tri_feedback=False)
    for r in range(2):
        rig.stats("a", r, 240.0, 0.5)
        rig.stats("b", r, 10.0, 0.5 + r * 0.3)
    b = rig.budgets()
    assert b["a"].round == 1 and b["a"].window_budget_j == 500.0 and b["b"].window_budget_j == 500.0


@pytest.mark.parametrize(
    ("task", "kw", "reason"),
    [
        ("a", {"energy_j": 5000.0}, "impossible_energy"),
        ("a", {"updates": 3, "participants": 2}, "impossible_counts"),
        ("zzz", {}, "unknown_task"),
        ("a", {"sender": "rsu2"}, "topic_mismatch"),
    ],
)
def test_impossible_or_foreign_stats_are_refused_and_move_nothing(tmp_path, task, kw, reason):
    rig = CloudRig(tmp_path)
    kw = dict(kw)
    rig.stats(task, 0, kw.pop("energy_j", 240.0), 0.5, **kw)
    assert rig.agent.counters["rejected"] == {reason: 1}
    assert rig.agent.state.acc["a"].rounds == 0 and rig.agent.state.acc["a"].used_j == 0.0


def test_undecodable_stats_are_refused(tmp_path):
    rig = CloudRig(tmp_path)
    rig.agent.on_delivery(Delivery(T.stats("rsu1", "a"), b'{"kind": "task_stats", "v": 2, "sender": "rsu1"}'))
    assert rig.agent.counters["rejected"] == {"invalid_field": 1}


def test_duplicate_stats_count_once(tmp_path):
    rig = CloudRig(tmp_path)
    rig.stats("a", 0, 240.0, 0.5)
    rig.stats("a", 0, 240.0, 0.5)  # an RSU that re-closed the round after a restart
    assert rig.agent.counters["duplicate"] == 1
    assert rig.agent.state.acc["a"].used_j == 240.0


def test_restart_keeps_the_window_accumulators_and_allocations(tmp_path):
    rig = CloudRig(tmp_path)
    rig.stats("a", 0, 240.0, 0.50)
    rig.stats("b", 0, 240.0, 0.50)
    rig.stats("a", 1, 240.0, 0.52)
    rig.agent = rig.new_agent()  # no stop(): as after a crash
    st = rig.agent.state
    assert (st.window, st.acc["a"].used_j, st.acc["a"].rounds, st.acc["b"].baseline) == (0, 480.0, 2, 0.50)
    rig.stats("a", 1, 240.0, 0.52)  # already counted before the restart
    assert rig.agent.counters["duplicate"] == 1
    rig.stats("b", 1, 240.0, 0.70)  # the window closes exactly as without the restart
    h_a, h_b = 480 / 0.02, 480 / 0.20
    want_a = 480 + h_a**2 / (h_a**2 + h_b**2) * 40
    assert rig.agent.state.allocations["a"] == pytest.approx(want_a)
    rig.agent = rig.new_agent()
    assert rig.agent.state.window == 1 and rig.agent.state.allocations["a"] == pytest.approx(want_a)
    assert rig.agent.state.difficulty == pytest.approx({"a": h_a, "b": h_b})


def test_cloud_daemon_with_a_bad_config_exits_2_with_one_line(tmp_path, capsys):
    from fedrank.cli import main

    cfg = tmp_path / "cloud.toml"
    cfg.write_text('id = "cloud"\ntasks = ["a", "a"]\ne_total_j = 100.0\n')
    assert main(["cloud", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unique" in err[0]


@pytest.mark.mosquitto
def test_cloud_daemon_publishes_budgets_and_stops_cleanly_on_sigterm(tmp_path, mosquitto):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from proto.mqtt_bus import MqttBus
    from proto.mqtt_options import MqttOptions

    repo = Path(__file__).resolve().parents[1]
    cfg = tmp_path / "cloud.toml"
    cfg.write_text(f'id = "cloud-d"\nstate_dir = "{tmp_path}"\ntasks = ["a", "b"]\ne_total_j = 900.0\n'
                   f"[broker]\nport = {mosquitto.port}\n")
    seen: dict[str, bytes] = {}
    client = MqttBus(MqttOptions(port=mosquitto.port), "cloud-daemon-test-client")
    client.connect()
    client.subscribe("fedrank/v1/cloud/cloud-d/budget/+", lambda d: seen.__setitem__(d.topic, d.payload))
    proc = subprocess.Popen([sys.executable, "-m", "fedrank", "cloud", "--config", str(cfg)], cwd=repo,
                            env=dict(os.environ, PYTHONPATH=str(repo)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        budgets = {decode(v, TaskBudget).msg.task: decode(v, TaskBudget).msg.window_budget_j for v in seen.values()}
        assert budgets == {"a": 450.0, "b": 450.0}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert (tmp_path / "cloud.json").is_file()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        client.close()
