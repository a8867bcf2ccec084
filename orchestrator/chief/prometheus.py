"""The chief's control plane for Prometheus: ``chief.metrics_port``.

Off by default (port 0). When set, the chief serves the text exposition format
on ``http://<chief.metrics_host>:<port>/metrics`` (loopback unless the cluster
file says otherwise), from its own registry, with ``prometheus-client``:

======================================  =========  ===================================
metric                                  type       labels
======================================  =========  ===================================
``ktc_trials``                          gauge      ``status`` (pending, running, ...)
``ktc_queue_depth``                     gauge      trials waiting for a worker
``ktc_leases``                          gauge      attempts leased to workers now
``ktc_parked_create_trials``            gauge      CreateTrial long-polls parked now
``ktc_requeues_total``                  counter    ``cause`` (see :func:`requeue_cause`)
``ktc_rpc_duration_seconds``            histogram  ``method`` (each RPC), ``code``
``ktc_slot_refill_seconds``             histogram  a worker's end to its next trial
``ktc_scheduler_stopped_epochs_total``  counter    epochs the trial scheduler saved
``ktc_workers``                         gauge      ``state`` (running, idle, ...)
======================================  =========  ===================================

Labels carry no token, credential, peer address or path: only status names,
RPC method names, status codes and the causes below. Gauges are read when
Prometheus scrapes (a collector over the broker's summary), so serving them
costs the RPCs nothing; the counters and histograms cost one lock-free
observation each.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import start_http_server
from prometheus_client.registry import Collector

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.chief.broker import TrialBroker

log = logging.getLogger(__name__)

RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
REFILL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Requeue reasons as the broker and the fleet word them, first match wins.
_CAUSES: tuple[tuple[str, str], ...] = (
    ("lease expired", "lease_expired"),
    ("died", "worker_died"),
    ("the chief restarted", "chief_restarted"),
    ("stopped by the chief", "stopped"),
    ("search cancelled", "cancelled"),
    ("search interrupted", "interrupted"),
    ("the search failed", "search_failed"),
)


def requeue_cause(reason: str, *, counted: bool) -> str:
    """A bounded label for why an attempt was requeued (never the reason's text)."""
    for needle, cause in _CAUSES:
        if needle in reason:
            return cause
    return "attempt_failed" if counted else "preempted"


WorkerStates = Callable[[], Mapping[str, int]]


class ChiefMetrics:
    """The chief's metrics: a registry of its own (several chiefs may share a
    process in tests), the counters the chief's code observes, and a collector
    reading the broker when scraped."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requeues = PromCounter(
            "ktc_requeues",
            "Attempts requeued, by cause",
            ["cause"],
            registry=self.registry,
        )
        self.rpc_seconds = Histogram(
            "ktc_rpc_duration_seconds",
            "Time the chief took to answer an RPC (a parked CreateTrial: until it was answered)",
            ["method", "code"],
            buckets=RPC_BUCKETS,
            registry=self.registry,
        )
        self.refill_seconds = Histogram(
            "ktc_slot_refill_seconds",
            "From a worker's recorded end of a trial to its next trial's assignment",
            buckets=REFILL_BUCKETS,
            registry=self.registry,
        )
        self.scheduler_saved = PromCounter(
            "ktc_scheduler_stopped_epochs",
            "Epochs the trial scheduler saved: for each trial it stopped, max_epochs minus "
            "the epochs the trial trained",
            registry=self.registry,
        )
        self._lock = threading.Lock()
        self._ended_at: dict[str, float] = {}
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # ------------------------------------------------------------ observing

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        self.rpc_seconds.labels(method=method, code=code).observe(seconds)

    def observe_requeue(self, reason: str, *, counted: bool) -> None:
        self.requeues.labels(cause=requeue_cause(reason, counted=counted)).inc()

    def observe_scheduler_stop(self, epochs_saved: int) -> None:
        """The trial scheduler stopped a trial, saving ``epochs_saved`` epochs."""
        self.scheduler_saved.inc(max(epochs_saved, 0))

    def observe_end(self, worker_id: str, at: float) -> None:
        """A worker's attempt ended (its slot is free from ``at``, monotonic)."""
        if worker_id:
            with self._lock:
                self._ended_at[worker_id] = at

    def observe_assign(self, worker_id: str, at: float) -> None:
        """A worker got a trial: the refill since its last end, if it had one."""
        with self._lock:
            ended = self._ended_at.pop(worker_id, None)
        if ended is not None:
            self.refill_seconds.observe(max(at - ended, 0.0))

    # -------------------------------------------------------------- serving

    def attach(self, broker: TrialBroker, worker_states: WorkerStates | None = None) -> None:
        """Read the broker (and the fleet's worker states, when given) at each scrape."""
        self.registry.register(_BrokerCollector(broker, worker_states))

    def serve(self, host: str, port: int) -> int:
        """Serve ``/metrics`` on ``host:port`` (0: a free port); the bound port."""
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise _port_refused(host, port, exc) from None
        self.port = int(self._server.server_address[1])
        log.info("metrics for Prometheus on http://%s:%d/metrics", host, self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def check_metrics_port(host: str, port: int) -> None:
    """Refuse a metrics port that is taken before anything is written (``ktc submit``
    and ``resume`` call it ahead of the chief; the chief's own bind may still lose a race)."""
    if not port:
        return
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise _port_refused(host, port, exc) from None


def _port_refused(host: str, port: int, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cluster chief.metrics_port: could not serve metrics on {host}:{port} ({exc}); "
        "pick a free port, or 0 in the cluster file to turn the endpoint off"
    )


class _BrokerCollector(Collector):
    """Gauges read from the broker when Prometheus scrapes."""

    def __init__(self, broker: TrialBroker, worker_states: WorkerStates | None) -> None:
        self.broker = broker
        self.worker_states = worker_states

    def collect(self) -> Iterator[GaugeMetricFamily]:
        broker = self.broker
        summary = broker.summary()
        trials = GaugeMetricFamily("ktc_trials", "Trials by status", labels=["status"])
        for status, count in sorted(summary.trials_by_status.items()):
            trials.add_metric([status.lower()], count)
        yield trials
        with broker._cond:
            queued = len(broker.book.queue)
            leased = len(broker.leases.all())
        yield GaugeMetricFamily("ktc_queue_depth", "Trials waiting for a worker", value=queued)
        yield GaugeMetricFamily("ktc_leases", "Attempts leased to workers now", value=leased)
        yield GaugeMetricFamily(
            "ktc_parked_create_trials",
            "CreateTrial long-polls parked at the chief now",
            value=len(broker.parked),
        )
        if self.worker_states is not None:
            workers = GaugeMetricFamily("ktc_workers", "Worker slots by state", labels=["state"])
            for state, count in sorted(Counter(self.worker_states()).items()):
                workers.add_metric([state], count)
            yield workers


__all__ = ["ChiefMetrics", "check_metrics_port", "requeue_cause"]
