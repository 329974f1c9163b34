"""Agent metrics: counts and gauges as recorded, served over HTTP when on, a no-op object when off."""

from __future__ import annotations

import inspect
import logging
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedrank.metrics import AgentMetrics, NullMetrics, start_metrics


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_counters_and_gauges_hold_what_the_agent_recorded() -> None:
    m = AgentMetrics("rsu", "rsu-1")
    m.round_done("sst2")
    m.round_done("sst2")
    m.update_accepted("sst2")
    m.update_rejected("sst2", "bad_shape")
    m.update_rejected("sst2", "bad_shape")
    m.update_rejected("ner", "late")
    m.message_rejected("bad_payload")
    m.set_lambda("sst2", 0.25)
    m.set_energy("sst2", used_j=120.5, budget_j=200.0)
    m.set_energy("sst2", used_j=130.0)  # budget unchanged when not given
    m.rank_chosen("sst2", 8)
    m.rank_chosen("sst2", 8)
    m.rank_chosen("sst2", 16)
    m.broker_reconnect()
    m.energy_spent("sst2", 3.5, "nvml")
    m.energy_spent("sst2", 1.5, "nvml")
    s = _samples(m.exposition())
    assert s[("fedrank_agent_info", (("agent", "rsu-1"), ("role", "rsu")))] == 1
    assert s[("fedrank_rounds_total", (("task", "sst2"),))] == 2
    assert s[("fedrank_updates_accepted_total", (("task", "sst2"),))] == 1
    assert s[("fedrank_updates_rejected_total", (("reason", "bad_shape"), ("task", "sst2")))] == 2
    assert s[("fedrank_updates_rejected_total", (("reason", "late"), ("task", "ner")))] == 1
    assert s[("fedrank_messages_rejected_total", (("reason", "bad_payload"),))] == 1
    assert s[("fedrank_lambda", (("task", "sst2"),))] == 0.25
    assert s[("fedrank_energy_used_joules", (("task", "sst2"),))] == 130.0
    assert s[("fedrank_energy_budget_joules", (("task", "sst2"),))] == 200.0
    assert s[("fedrank_rank_chosen_total", (("rank", "8"), ("task", "sst2")))] == 2
    assert s[("fedrank_rank_chosen_total", (("rank", "16"), ("task", "sst2")))] == 1
    assert s[("fedrank_broker_reconnects_total", ())] == 1
    assert s[("fedrank_device_energy_joules_total", (("source", "nvml"), ("task", "sst2")))] == 5.0


def test_bad_values_are_logged_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    m = AgentMetrics("edge", "veh-1")
    m.set_lambda("sst2", 1.0)
    m.set_lambda("sst2", float("nan"))
    m.set_energy("sst2", float("inf"), budget_j=float("nan"))
    m.rank_chosen("sst2", 0)
    m.rank_chosen("sst2", True)  # type: ignore[arg-type]
    s = _samples(m.exposition())
    assert s[("fedrank_lambda", (("task", "sst2"),))] == 1.0
    assert ("fedrank_energy_used_joules", (("task", "sst2"),)) not in s
    assert not any(k[0] == "fedrank_rank_chosen_total" for k in s)
    assert caplog.text.count("metrics: ignoring") == 5


def test_two_agents_in_one_process_do_not_share_series() -> None:
    a, b = AgentMetrics("rsu", "rsu-1"), AgentMetrics("rsu", "rsu-2")
    a.round_done("t")
    assert _samples(a.exposition())[("fedrank_rounds_total", (("task", "t"),))] == 1
    assert ("fedrank_rounds_total", (("task", "t"),)) not in _samples(b.exposition())


def test_metrics_off_gives_a_noop_object_with_the_same_methods() -> None:
    m = start_metrics(None, "edge", "veh-1")
    assert isinstance(m, NullMetrics)
    public = {n for n, _ in inspect.getmembers(AgentMetrics, inspect.isfunction) if not n.startswith("_")}
    null = {n for n, _ in inspect.getmembers(NullMetrics, inspect.isfunction) if not n.startswith("_")}
    assert public - {"exposition"} == null
    for name in null:
        params = list(inspect.signature(getattr(AgentMetrics, name)).parameters)
        assert list(inspect.signature(getattr(NullMetrics, name)).parameters) == params
    m.round_done("t")
    m.set_energy("t", 1.0, 2.0)
    m.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_metrics_on_are_served_over_http_and_close_frees_the_port(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = _free_port()
    m = start_metrics(port, "cloud", "cloud-1", addr="127.0.0.1")
    assert isinstance(m, AgentMetrics)
    try:
        m.set_energy("sst2", 10.0, 50.0)
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert _samples(body)[("fedrank_energy_budget_joules", (("task", "sst2"),))] == 50.0
        assert f"127.0.0.1:{port}/metrics" in caplog.text
    finally:
        m.close()
    with socket.socket() as s:
        # SO_REUSEADDR lets the bind past TIME_WAIT leftovers but still fails while a listener holds the port.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_port_in_use_fails_at_start() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(OSError):
            start_metrics(s.getsockname()[1], "edge", "veh-1", addr="127.0.0.1")
