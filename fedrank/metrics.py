"""Prometheus metrics for the daemons, off by default (settings `metrics_port` unset).

Each daemon gets one small object with the calls its agent makes (`round_done`, `update_rejected`, ...).
When metrics are off it is a `NullMetrics` with the same methods, so agents never test a flag. Each
`AgentMetrics` has its own registry: two agents in one process (the fleet, tests) never collide.
Energy figures are whatever the caller measured or was budgeted; the gauge names say joules, and the
source of a measurement is labelled by the caller's log, not re-derived here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, start_http_server

log = logging.getLogger(__name__)


class Metrics(Protocol):
    """What an agent may record; both implementations below have exactly these methods."""

    def round_done(self, task: str) -> None: ...
    def update_accepted(self, task: str) -> None: ...
    def update_rejected(self, task: str, reason: str) -> None: ...
    def message_rejected(self, reason: str) -> None: ...
    def set_lambda(self, task: str, value: float) -> None: ...
    def set_energy(self, task: str, used_j: float, budget_j: float | None = None) -> None: ...
    def rank_chosen(self, task: str, rank: int) -> None: ...
    def broker_reconnect(self) -> None: ...
    def energy_spent(self, task: str, joules: float, source: str) -> None: ...
    def set_degraded(self, component: str, degraded: bool) -> None: ...
    def dropped(self, what: str, n: int = 1) -> None: ...
    def received(self, n: int = 1) -> None: ...
    def watch_inbox(self, depth: Callable[[], float]) -> None: ...
    def job_failed(self, job: str) -> None: ...
    def close(self) -> None: ...


class NullMetrics:
    """Metrics off: every call does nothing."""

    def round_done(self, task: str) -> None:
        pass

    def update_accepted(self, task: str) -> None:
        pass

    def update_rejected(self, task: str, reason: str) -> None:
        pass

    def message_rejected(self, reason: str) -> None:
        pass

    def set_lambda(self, task: str, value: float) -> None:
        pass

    def set_energy(self, task: str, used_j: float, budget_j: float | None = None) -> None:
        pass

    def rank_chosen(self, task: str, rank: int) -> None:
        pass

    def broker_reconnect(self) -> None:
        pass

    def energy_spent(self, task: str, joules: float, source: str) -> None:
        pass

    def set_degraded(self, component: str, degraded: bool) -> None:
        pass

    def dropped(self, what: str, n: int = 1) -> None:
        pass

    def received(self, n: int = 1) -> None:
        pass

    def watch_inbox(self, depth: Callable[[], float]) -> None:
        pass

    def job_failed(self, job: str) -> None:
        pass

    def close(self) -> None:
        pass


class AgentMetrics:
    """Counters and gauges of one agent, in a registry of its own.

    Args:
        role: edge, rsu or cloud (exported once, as `fedrank_agent_info{role, agent}`).
        agent_id: this agent's id.
        registry: where to register (default: a fresh one).
    """

    def __init__(self, role: str, agent_id: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        r = self.registry
        # An info-style gauge rather than labels on every series: the scrape target already identifies the host.
        Gauge("fedrank_agent_info", "role and id of this agent", ["role", "agent"], registry=r).labels(
            role, agent_id
        ).set(1)
        self._rounds = Counter("fedrank_rounds", "rounds completed", ["task"], registry=r)
        self._accepted = Counter("fedrank_updates_accepted", "vehicle updates accepted", ["task"], registry=r)
        self._rejected = Counter(
            "fedrank_updates_rejected", "vehicle updates rejected, by reason", ["task", "reason"], registry=r
        )
        self._msg_rejected = Counter(
            "fedrank_messages_rejected", "messages rejected before reaching the agent", ["reason"], registry=r
        )
        self._lambda = Gauge("fedrank_lambda", "dual price lambda per task (docs/algorithms.md §4)", ["task"],
                             registry=r)
        self._used = Gauge("fedrank_energy_used_joules", "energy used in the current period", ["task"], registry=r)
        self._budget = Gauge(
            "fedrank_energy_budget_joules", "energy budget of the current period", ["task"], registry=r
        )
        self._ranks = Counter("fedrank_rank_chosen", "LoRA ranks chosen, by rank", ["task", "rank"], registry=r)
        self._reconnects = Counter("fedrank_broker_reconnects", "reconnections to the MQTT broker", registry=r)
        self._device_energy = Counter(
            "fedrank_device_energy_joules", "energy this device spent on its updates (train + upload), by meter source",
            ["task", "source"], registry=r)
        self._degraded = Gauge("fedrank_degraded", "1 while a component (storage) keeps the agent from full service",
                               ["component"], registry=r)
        self._dropped = Counter(
            "fedrank_dropped", "messages or log lines dropped to bound resources (inbox_full, oversize, "
            "log_suppressed)", ["what"], registry=r)
        self._received = Counter("fedrank_messages_received", "deliveries offered to the agent's inbox",
                                 registry=r)
        self._depth = Gauge("fedrank_inbox_depth", "deliveries waiting for the agent", registry=r)
        self._job_failed = Counter("fedrank_job_failures", "handler or timer runs that raised (and were survived)",
                                   ["job"], registry=r)
        self._server: object | None = None

    def round_done(self, task: str) -> None:
        self._rounds.labels(task).inc()

    def update_accepted(self, task: str) -> None:
        self._accepted.labels(task).inc()

    def update_rejected(self, task: str, reason: str) -> None:
        self._rejected.labels(task, reason).inc()

    def message_rejected(self, reason: str) -> None:
        self._msg_rejected.labels(reason).inc()

    def set_lambda(self, task: str, value: float) -> None:
        if _finite("lambda", task, value):
            self._lambda.labels(task).set(value)

    def set_energy(self, task: str, used_j: float, budget_j: float | None = None) -> None:
        if _finite("energy used", task, used_j):
            self._used.labels(task).set(used_j)
        if budget_j is not None and _finite("energy budget", task, budget_j):
            self._budget.labels(task).set(budget_j)

    def rank_chosen(self, task: str, rank: int) -> None:
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            log.warning("metrics: ignoring rank %r for task %s (not a positive integer)", rank, task)
            return
        self._ranks.labels(task, str(rank)).inc()

    def broker_reconnect(self) -> None:
        self._reconnects.inc()

    def energy_spent(self, task: str, joules: float, source: str) -> None:
        if _finite("device energy", task, joules) and joules >= 0:
            self._device_energy.labels(task, source).inc(joules)

    def set_degraded(self, component: str, degraded: bool) -> None:
        self._degraded.labels(component).set(1 if degraded else 0)

    def dropped(self, what: str, n: int = 1) -> None:
        if n > 0:
            self._dropped.labels(what).inc(n)

    def job_failed(self, job: str) -> None:
        self._job_failed.labels(job).inc()

    def received(self, n: int = 1) -> None:
        if n > 0:
            self._received.inc(n)

    def watch_inbox(self, depth: Callable[[], float]) -> None:
        """Export the inbox's current depth, read at each scrape."""
        self._depth.set_function(depth)

    def exposition(self) -> str:
        """The text a scrape of this registry returns."""
        return generate_latest(self.registry).decode()

    def close(self) -> None:
        """Stop the HTTP server, if `start_metrics` started one."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]


def _finite(what: str, task: str, value: float) -> bool:
    """True for a finite number; otherwise log why the value is dropped."""
    try:
        ok = math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        log.warning("metrics: ignoring %s %r for task %s (not a finite number)", what, value, task)
    return ok


def start_metrics(port: int | None, role: str, agent_id: str, addr: str = "0.0.0.0") -> AgentMetrics | NullMetrics:
    """Serve `/metrics` on `addr:port` and return the agent's metrics; `NullMetrics` when `port` is None.

    Raises:
        OSError: the port cannot be bound (in use, privileged); the daemon should fail at start, not later.
    """
    if port is None:
        return NullMetrics()
    metrics = AgentMetrics(role, agent_id)
    started = start_http_server(port, addr=addr, registry=metrics.registry)
    # prometheus-client >= 0.17 returns (server, thread); older versions return None and cannot be stopped.
    metrics._server = started[0] if isinstance(started, tuple) else None
    log.info("metrics on http://%s:%d/metrics", addr, port)
    return metrics
