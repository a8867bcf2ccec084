"""A search session: the chief, the Ray connection and the fleet, run together
in the foreground by ``ktc submit`` and ``ktc resume``.

The session is the chief's control handler: ``ktc status``, ``ktc scale`` and
``ktc cancel`` reach it through the Control RPCs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.chief.chief import Chief
from orchestrator.config import ClusterSpec, SearchSpec, WorkerSlot, parse_cluster, spec_json
from orchestrator.errors import ConfigError, FleetError, KtClusterError
from orchestrator.fleet.embedded_ray import (
    actor_working_dir,
    connect_ray,
    search_uses_user_code,
    user_pythonpath,
)
from orchestrator.fleet.ray_processes import (
    reap_leftover_ray_processes,
    record_ray_processes,
    start_reaper,
)
from orchestrator.fleet.slots import BrokerHooks, Fleet
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.status_document import (
    BestTrial,
    ChiefProcess,
    LastFailure,
    StatusDocument,
    TrialEntry,
    WorkerStatus,
    count_trials,
)
from orchestrator.protocol.trials import SearchState, TrialStatus
from orchestrator.report.refresh import ReportRefresher
from orchestrator.search_meta import DatasetInfo

if TYPE_CHECKING:
    from orchestrator.chief.broker import TrialBroker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SessionOptions:
    """How to run the session."""

    workers: int | None = None  # None: every slot of the cluster file
    on_interrupt: str = "requeue"  # "requeue" | "finish": what Ctrl-C does to running trials
    long_poll_s: float = 5.0
    ray_init_timeout_s: float = 60.0
    # DIR/report and DIR/tensorboard, re-rendered in a child process at most this
    # often while trials end (orchestrator/report/refresh.py); None: not at all.
    report_refresh_s: float | None = 30.0


def live_document(
    broker: TrialBroker,
    *,
    search_dir: Path,
    search_id: str,
    workers: Sequence[WorkerStatus],
    chief: ChiefProcess | None,
    with_trials: bool = True,
    workers_wanted: int | None = None,
) -> StatusDocument:
    """The status document of a running search, from its broker and its fleet's rows.

    ``with_trials=False`` (the progress display, twice a second) leaves the
    trial list empty and takes the counts and the best trial from the broker's
    summary: copying every record holds the broker's lock for O(n) (60 ms at
    10,000 trials).
    """
    summary = broker.summary()
    leases = {lease.worker_id: lease.trial_id for lease in broker.leases.all()}
    trials = broker.trials() if with_trials else []
    epochs = (
        {t.trial_id: t.current_epoch for t in trials}
        if with_trials
        else broker.current_epochs(leases.values())
    )
    if with_trials:
        counts = count_trials(t.status for t in trials)
        best = BestTrial.among(trials, summary.direction)
    else:
        counts = dict.fromkeys(TrialStatus, 0)
        counts.update({TrialStatus(k): n for k, n in summary.trials_by_status.items()})
        best = BestTrial.of(summary.best)
    return StatusDocument(
        state=summary.state,
        message=summary.message,
        search_dir=Path(search_dir),
        search_id=search_id,
        objective=summary.objective,
        direction=summary.direction,
        max_trials=summary.max_trials,
        counts=counts,
        trials=tuple(TrialEntry.of(t) for t in trials),
        # The fleet publishes on its own cadence; the leases read just now
        # decide which trial each worker holds, so the row matches its trial.
        workers=tuple(
            row.holding(leases.get(row.worker_id), epochs.get(leases.get(row.worker_id, "")))
            for row in workers
        ),
        best=best,
        chief=chief,
        last_failure=LastFailure.of(broker.last_failure()),
        workers_wanted=workers_wanted,
    )


class SearchSession:
    """Chief + fleet for one search. ``run`` blocks until the search ends.

    ``ray_started``: None (the default) when :meth:`start` connects Ray itself;
    True or False when the caller already connected it (``ktc submit`` starts
    Ray while the chief's imports run), True meaning the caller started an
    embedded Ray that this session now owns and stops at :meth:`close`.
    """

    def __init__(
        self, chief: Chief, options: SessionOptions, *, ray_started: bool | None = None
    ) -> None:
        self.chief = chief
        self.search: SearchSpec = chief.search
        self.cluster: ClusterSpec = chief.cluster
        self.options = options
        self.fleet: Fleet | None = None
        self._ray_connected = ray_started is not None
        self._started_ray = bool(ray_started)
        self._nonce = uuid.uuid4().hex[:6]
        self._interrupts = 0
        self.report: ReportRefresher | None = None
        self._reaper: subprocess.Popen[bytes] | None = None

    # ---------------------------------------------------------------- setup

    @property
    def actor_prefix(self) -> str:
        return f"ktc-{self.chief.search_id[:8]}"

    def start(self) -> None:
        """Connect Ray, ship the dataset if needed, start the fleet."""
        if self.chief.resumed:
            reap_leftover_ray_processes(self.chief.search_dir)
        if not self._ray_connected:
            self._started_ray = connect_ray(
                self.cluster, user_code=search_uses_user_code(self.search)
            )
            self._ray_connected = True
        if self._started_ray:
            record_ray_processes(self.chief.search_dir)
            # Kills what a SIGKILL of this process would leave of that Ray.
            self._reaper = start_reaper(self.chief.search_dir)
        if self.chief.resumed:
            self._release_orphaned_leases()
        dataset_ref = self._dataset_ref()
        endpoint = self.chief.endpoint
        ca_pem = Path(endpoint.tls_ca).read_bytes() if endpoint.tls_ca else None

        def make_config(slot: WorkerSlot, credential: str) -> Any:
            from workers.runner import WorkerConfig

            # The worker gets its own credential, never the search token: it can
            # act only as itself, and cannot call status, scale or cancel.
            return WorkerConfig(
                worker_id=slot.worker_id,
                chief_address=endpoint.address,
                token=credential,
                search_json=spec_json(self.search),
                slot=slot,
                ca_pem=ca_pem,
                tls_server_name=endpoint.tls_server_name,
                max_trials=self.cluster.fleet.recycle_after_trials,
                wait_s=self.options.long_poll_s,
                reconnect_timeout_s=self.search.failure.lease_timeout_s,
                shared_path=self.cluster.shared_path,
                search_id=self.chief.search_id,
                log_dir=self._worker_log_dir(),
            )

        # From here on the chief hands trials only to the workers this fleet
        # registers (a resumed chief registers its new fleet's the same way).
        self.chief.workers.require()
        self.fleet = Fleet(
            self.cluster,
            make_config=make_config,
            hooks=BrokerHooks(self.chief.broker),
            credentials=self.chief.workers,
            dataset_ref=dataset_ref,
            actor_name_prefix=f"{self.actor_prefix}-{self._nonce}",
            search_label=self.chief.search_dir.name,
            runtime_env=self._runtime_env(),
            # Our embedded Ray's raylet already carries the worker environment.
            env_from_raylet=self._started_ray and self.cluster.is_local,
            autoscale=not self.cluster.is_local,
            on_actor_started=self._record_actor,
        )
        self.chief.control.handler = self
        self.chief.worker_states = self._worker_states  # Prometheus' ktc_workers
        self.fleet.start(self.options.workers)
        self._start_report()

    def _worker_log_dir(self) -> str | None:
        """DIR/logs, when the workers run on this machine (one file per worker;
        workers elsewhere keep Ray's own log files on their machine)."""
        if self.cluster.is_local and not self.cluster.is_multi_machine:
            return str((self.chief.search_dir / "logs").resolve())
        return None

    def _start_report(self) -> None:
        """Keep DIR/report and DIR/tensorboard current, rendered in a child process."""
        if self.options.report_refresh_s is None:
            return
        broker = self.chief.broker

        def progress() -> tuple[int, str]:
            # One O(n) pass under the broker lock every report_refresh_s (as the
            # progress display does twice a second): trials ended, and the state.
            summary = broker.summary()
            ended = sum(
                n for status, n in summary.trials_by_status.items() if TrialStatus(status).is_final
            )
            return ended, summary.state.value

        self.report = ReportRefresher(
            self.chief.search_dir, progress=progress, min_interval_s=self.options.report_refresh_s
        )
        self.report.start()

    def _record_actor(self, info: dict[str, Any]) -> None:
        """Append each started worker process to ``workers.jsonl`` (placement
        audit: which Ray node, pid and CUDA_VISIBLE_DEVICES each worker had)."""
        line = json.dumps({"ts": time.time(), **info})
        path = self.chief.search_dir / "workers.jsonl"
        # 0600 like the rest of the search directory's files (docs/security.md).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as handle:
            handle.write(line + "\n")

    def _runtime_env(self) -> dict[str, Any]:
        """Make user code (``module:attr``) importable on every worker."""
        if self.cluster.is_local:
            if self._started_ray:
                return {}  # the raylet's environment has it (embedded_worker_env)
            return {"env_vars": {"PYTHONPATH": user_pythonpath()}}
        # A local folder went with ray.init (connect_ray), for the whole job.
        uri = actor_working_dir(self.cluster, user_code=search_uses_user_code(self.search))
        return {"working_dir": uri} if uri else {}

    def _dataset_ref(self) -> Any:
        """Load the dataset once here: record its shape for export, and ship it
        through Ray's object store when workers run on other machines."""
        from workers.hypermodels import needs_tensorflow

        if self.search.dataset is None or not needs_tensorflow(self.search.hypermodel):
            return None
        from workers.dataset_paths import dataset_path_problems
        from workers.datasets import load_dataset

        if not self.cluster.is_local and dataset_path_problems(spec_json(self.search)):
            # On a remote cluster the dataset paths are the workers': each worker
            # checks them before its first trial and loads its own copy (a missing
            # path there fails the search). Export then lacks the dataset info.
            log.info("dataset paths are not on this machine; each worker loads its own copy")
            return None
        data = load_dataset(self.search.dataset)
        info = DatasetInfo(
            input_shape=tuple(data.input_shape),
            num_classes=data.num_classes,
            label_mode=data.label_mode,
            train_examples=len(data.x_train),
            val_examples=len(data.x_val),
            test_examples=len(data.x_test) if data.x_test is not None else None,
        )
        self.chief.ledger.set_meta(info.to_meta())
        if self.cluster.is_local and not self.cluster.is_multi_machine:
            return None  # same machine: each worker process loads it (cached per process)
        import ray

        return ray.put(data)

    def _release_orphaned_leases(self) -> None:
        """On resume: keep the lease of an in-flight trial only while the actor
        that held it is still alive in Ray (it may report back); requeue the rest."""
        import ray

        alive: set[str] = set()
        try:
            for entry in ray.util.list_named_actors(all_namespaces=True):
                name = entry["name"] if isinstance(entry, dict) else str(entry)
                if name.startswith(self.actor_prefix + "-"):
                    # <prefix>-<nonce>-<worker_id>-<incarnation>
                    worker_id = (
                        name[len(self.actor_prefix) + 1 :].split("-", 1)[1].rsplit("-", 1)[0]
                    )
                    alive.add(worker_id)
        except Exception as exc:
            log.info("could not list named actors: %s", exc)
        self.chief.broker.requeue_leases_except(alive, "the chief restarted and its worker is gone")

    # ------------------------------------------------------------------ run

    def wait(self, tick_s: float, on_tick: Callable[[], None] | None = None) -> SearchState:
        """Block until the search ends, calling ``on_tick`` every ``tick_s``."""
        while True:
            state = self.chief.wait(tick_s)
            if state is not None:
                return state
            if on_tick is not None:
                on_tick()

    def interrupt(self) -> str:
        """Ctrl-C. First: per --on-interrupt; second: requeue everything now."""
        self._interrupts += 1
        requeue = self.options.on_interrupt == "requeue" or self._interrupts > 1
        self.chief.interrupt(requeue_running=requeue)
        if requeue:
            return "interrupted: running trials were requeued"
        return (
            "interrupted: waiting for running trials to finish (Ctrl-C again to requeue them now)"
        )

    def close(self) -> None:
        """Stop the fleet, the chief, and Ray if we started it.

        The report's final render (a child process: 1.4 to 1.9 s on 2 idle
        cores, 4 to 7 s on busy ones) reads
        only the ledger, which is complete once the chief is closed, so it runs
        while Ray shuts down instead of after it; both are waited for.
        """
        if self.fleet is not None:
            self.fleet.wait_idle(3.0)
            self.fleet.shutdown()
        self.chief.close()
        final_render: threading.Thread | None = None
        if self.report is not None:
            final_render = threading.Thread(
                target=self.report.close, name="ktc-final-report", daemon=True
            )
            final_render.start()
        try:
            if self._started_ray:
                import ray

                ray.shutdown()
        finally:
            if self._reaper is not None and self._reaper.stdin is not None:
                self._reaper.stdin.close()  # it kills what ray.shutdown left, and exits
            if final_render is not None:
                final_render.join()
            if self._reaper is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._reaper.wait(timeout=5.0)

    # ------------------------------------------------- control RPC handler

    def status(self, *, with_trials: bool = True) -> StatusDocument:
        """The live status document (see :func:`live_document`)."""
        return live_document(
            self.chief.broker,
            search_dir=self.chief.search_dir,
            search_id=self.chief.search_id,
            workers=self.fleet.rows() if self.fleet else [],
            chief=ChiefProcess(self.chief.endpoint.address, os.getpid()),
            with_trials=with_trials,
            workers_wanted=self.fleet.wanted_count() if self.fleet else None,
        )

    def _worker_states(self) -> dict[str, int]:
        """Worker slots by state, as `ktc status` shows them (running while leased)."""
        counts: dict[str, int] = {}
        for worker in self.status(with_trials=False).workers:
            counts[worker.state.value] = counts.get(worker.state.value, 0) + 1
        return counts

    def status_document(self) -> dict[str, Any]:
        """The Control RPC ``Status``: the full document, as JSON."""
        return self.status().to_json()

    def scale(self, request: pb.ScaleRequest) -> str:
        if self.fleet is None:
            raise FleetError("the fleet is not running")
        if self.chief.broker.dispatch_stopped:
            raise KtClusterError("the search is ending; scaling is refused")
        if request.cluster_yaml:
            source = request.cluster_yaml_path or "<scale --apply>"
            cluster = parse_cluster(request.cluster_yaml, source=source)
            return self.fleet.apply(cluster, now=request.now)
        if request.node_workers:
            return self.fleet.scale_node(dict(request.node_workers), now=request.now)
        if request.total_workers >= 0:
            return self.fleet.scale_total(request.total_workers, now=request.now)
        raise ConfigError("scale: give --workers N, --node NAME=N or --apply CLUSTER.yaml")

    def cancel(self, now: bool) -> str:
        self.chief.cancel(now=now)
        running = "requeued" if now else "left to finish"
        return f"cancelled {self.chief.search_dir}: running trials {running}"
