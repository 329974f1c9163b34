"""Bounded resources: a bounded inbox, evicted silent vehicles, metric labels only from configured tasks,
rate-limited rejection logs."""

from __future__ import annotations

import logging
import os

from fedrank.metrics import AgentMetrics
from fedrank.runtime import Inbox
from proto.bus import Delivery
from proto.memory_bus import MemoryBus
from rsu_agent.agent import RsuAgent
from tests.helpers_rsu import RSU, TOPICS, Rig, make_update, rsu_settings, status


def test_the_inbox_drops_what_does_not_fit_and_counts_it():
    box = Inbox(max_items=3, max_bytes=100)
    assert all(box.put(Delivery("t", b"x" * 10, 1, False, False)) for _ in range(3))
    assert not box.put(Delivery("t", b"x", 1, False, False))  # items
    box.get(0)
    assert not box.put(Delivery("t", b"x" * 90, 1, False, False))  # bytes: 20 waiting + 90 > 100
    assert box.put(Delivery("t", b"x" * 80, 1, False, False))
    assert box.dropped == 2
    while box.get(0) is not None:
        pass
    assert box.put(Delivery("t", b"x" * 500, 1, False, False))  # an empty inbox takes one message of any size


def _rig_with_metrics(tmp_path, **kw) -> tuple[Rig, AgentMetrics]:
    rig = Rig(tmp_path, rsu_settings(tmp_path, **kw))
    metrics = AgentMetrics("rsu", RSU)

    def new_agent() -> RsuAgent:
        bus = MemoryBus(rig.broker, RSU)
        agent = RsuAgent(rig.settings, bus, rig.clock, metrics=metrics)
        bus.connect(will=agent.will())
        agent.start()
        agent.pump()
        return agent

    rig.agent = new_agent()
    return rig, metrics


def test_5000_bogus_task_names_create_no_series_no_vehicles_and_the_task_goes_on(tmp_path):
    rig, metrics = _rig_with_metrics(tmp_path)
    rig.vehicle("v1", x=10.0)
    before = len(metrics.exposition())
    for i in range(5000):
        rig.pub.publish(TOPICS.update(f"mal{i % 50}", RSU, f"bogus{i}"), os.urandom(64), qos=1)
        if i % 10 == 0:
            rig.pub.publish(*status(f"fake{i}", tasks=(f"bogus{i}",)), qos=1)
    rig.agent.pump()
    assert rig.agent.counters["rejected"] == {"unknown_task": 5000}
    assert set(rig.agent.vehicles) == {"v1"}
    text = metrics.exposition()
    series = [ln for ln in text.splitlines() if ln.startswith("fedrank_updates_rejected_total{")]
    assert series == ['fedrank_updates_rejected_total{reason="unknown_task",task="_other"} 5000.0']
    assert len(text) < before + 2000
    rig.advance(1.0)
    rig.upload(make_update("v1", 0))
    assert rig.agent.history[-1].accepted == ["v1"]


def test_rejection_logs_are_rate_limited_per_reason_and_the_rest_counted(tmp_path, caplog):
    rig, metrics = _rig_with_metrics(tmp_path)
    with caplog.at_level(logging.WARNING, logger="rsu_agent.agent"):
        for i in range(1000):
            rig.pub.publish(TOPICS.update("mal", RSU, f"bogus{i}"), b"junk", qos=1)
            rig.pub.publish(*status("fakeX", tasks=("t1",), sent_at=1e9), qos=1)  # clock_skew
        rig.agent.pump()
    lines = [r for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(lines) == 2 * rig.settings.log_burst
    assert rig.agent.counters["dropped"]["log_suppressed"] == 2000 - 2 * rig.settings.log_burst
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rsu_agent.agent"):
        rig.advance(61.0)  # a new window: the next line says how many were held back
        rig.send(TOPICS.update("mal", RSU, "bogus"), b"junk")
    assert any("995 more 'unknown_task' lines suppressed" in r.getMessage() for r in caplog.records)
    assert 'fedrank_dropped_total{what="log_suppressed"} 1990.0' in metrics.exposition()


def test_silent_vehicles_are_evicted_and_the_table_is_capped(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path, vehicle_silence_s=20.0, max_vehicles=3))
    for v in ("v1", "v2", "v3", "v4"):
        rig.vehicle(v, x=10.0)
    assert set(rig.agent.vehicles) == {"v1", "v2", "v3"}
    assert rig.agent.counters["rejected"] == {"too_many_vehicles": 1}
    rig.advance(15.0)
    rig.vehicle("v1", x=10.0, sent_at=15.0)
    rig.advance(31.0)  # v2, v3 silent for more than 20 s
    assert set(rig.agent.vehicles) == {"v1"}
    rig.vehicle("v4", x=10.0, sent_at=31.0)
    assert set(rig.agent.vehicles) == {"v1", "v4"}


def test_a_full_inbox_still_takes_the_updates_an_open_round_waits_for(tmp_path):
    rig = Rig(tmp_path, rsu_settings(tmp_path, inbox_max_items=5))
    rig.vehicle("v1", x=10.0)
    rig.advance(1.0)
    seen = rig.agent.inbox.received
    for i in range(20):  # a flood from strangers fills the inbox while the agent is busy
        rig.pub.publish(TOPICS.update(f"mal{i}", RSU, "t1"), os.urandom(64), qos=1)
    u = make_update("v1", 0)
    rig.pub.publish(u.topic, u.payload, qos=1)
    assert rig.agent.inbox.dropped == 15 and rig.agent.inbox.received - seen == 21
    rig.agent.pump(max_items=1)  # it jumps the queue: handled before the five strangers that got in
    assert rig.agent.history[-1].accepted == ["v1"] and rig.agent.counters["rejected"] == {}
    rig.agent.pump()
    assert rig.agent.counters["dropped"]["inbox_full"] == 15
    assert rig.agent.counters["rejected"] == {"bad_safetensors": 5}  # random bytes, once the round closed
