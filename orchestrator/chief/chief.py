"""The chief: one search's ledger, oracle, broker and gRPC server, with a lifecycle.

``Chief.create`` starts a new search in an empty directory; ``Chief.resume``
reopens one from its ledger. ``start()`` binds the server and writes
``chief.json``; ``wait()`` blocks until the search ends; ``close()`` stops the
server and writes the final ``chief.json``. Signals are the CLI's business: it
calls :meth:`interrupt` or :meth:`cancel`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from orchestrator.chief.artifacts import ArtifactStore
from orchestrator.chief.audit import AUDIT_FILE_NAME, AuditLog
from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.chief_log import ChiefLog
from orchestrator.chief.events import SCHEMA_VERSION
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.limits import ProtocolLimits
from orchestrator.chief.oracle_host import OracleHost
from orchestrator.chief.prometheus import ChiefMetrics, WorkerStates
from orchestrator.chief.registry import WorkerRegistry
from orchestrator.chief.replay import replay
from orchestrator.chief.rpc import RpcPools, add_servicers_to_server
from orchestrator.chief.server import (
    Keepalive,
    RpcServer,
    log_capacity,
    raise_open_files_limit,
    server_options,
)
from orchestrator.chief.service import ControlServicer, TrialServicer
from orchestrator.chief.trial_book import RetryPolicy
from orchestrator.clock import Clock, SystemClock
from orchestrator.config import ClusterSpec, SearchSpec, default_cluster
from orchestrator.errors import ConfigError, KtClusterError, LedgerError, NothingToResumeError
from orchestrator.protocol.auth import (
    TOKEN_FILE_NAME,
    TokenAuthInterceptor,
    create_token,
    read_token,
)
from orchestrator.protocol.trials import SearchState
from orchestrator.search_dir import (
    CHIEF_FILE,
    LEDGER_FILE,
    SEARCH_DIR_MODE,
    TRIALS_DIR,
    ChiefInfo,
    read_chief_info,
    write_chief_info,
)
from orchestrator.search_meta import SearchMeta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChiefEndpoint:
    """How to reach a started chief."""

    address: str  # host:port to dial
    port: int
    token: str
    tls_ca: str | None = None
    tls_server_name: str | None = None


class Chief:
    """Hosts one search. Build with :meth:`create` or :meth:`resume`."""

    def __init__(
        self,
        *,
        search: SearchSpec,
        cluster: ClusterSpec,
        search_dir: Path,
        ledger: Ledger,
        broker: TrialBroker,
        search_id: str,
        clock: Clock,
        resumed: bool,
    ) -> None:
        self.search = search
        self.cluster = cluster
        self.search_dir = search_dir
        self.ledger = ledger
        self.broker = broker
        self.search_id = search_id
        self.clock = clock
        self.resumed = resumed
        self._resume_message: str | None = None  # see resume() and start()
        self.token = create_token(search_dir)
        # The workers the fleet started, each with its own credential; enforced
        # once a session starts a fleet (registry.py, docs/security.md).
        self.workers = WorkerRegistry()
        self.artifacts = ArtifactStore(search_dir / TRIALS_DIR)
        # Every refused request, one JSON line each (audit.py); never the token.
        self.audit = AuditLog(search_dir / AUDIT_FILE_NAME, redact=(self.token,), clock=clock)
        # What one peer may hold (limits.py); replace before start() to change it.
        self.limits = ProtocolLimits()
        # How the server reaps dead workers' connections (server.py); likewise.
        self.keepalive = Keepalive()
        self.control = ControlServicer(max_workers=cluster.fleet.max_workers, audit=self.audit)
        self._server: RpcServer | None = None
        self._pools: RpcPools | None = None
        self.log_file = ChiefLog(search_dir)  # <search_dir>/chief.log, INFO and above
        # Prometheus (chief.metrics_port); the session tells it the workers' states.
        self.metrics = ChiefMetrics()
        self.worker_states: WorkerStates | None = None
        broker.metrics = self.metrics
        self._endpoint: ChiefEndpoint | None = None
        self._stop_reaper = threading.Event()
        self._reaper: threading.Thread | None = None
        self._info: ChiefInfo | None = None

    # ----------------------------------------------------------- factories

    @classmethod
    def create(
        cls,
        search: SearchSpec,
        search_dir: Path,
        *,
        cluster: ClusterSpec | None = None,
        clock: Clock | None = None,
        initial_space: Any = None,
        long_poll_s: float = 5.0,
        ledger_synchronous: str = "NORMAL",
    ) -> Chief:
        """A new search in ``search_dir`` (which must not hold one already)."""
        search_dir = Path(search_dir)
        if (search_dir / LEDGER_FILE).exists():
            raise LedgerError(
                f"{search_dir}: already holds a search; run `ktc resume {search_dir}` "
                "to continue it, or pick another --dir"
            )
        search_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(search_dir, SEARCH_DIR_MODE)  # whatever the umask, or a preflight, made
        cluster = cluster or default_cluster()
        clock = clock or SystemClock()
        ledger = Ledger(search_dir / LEDGER_FILE, clock=clock, synchronous=ledger_synchronous)
        search_id = uuid.uuid4().hex
        meta = SearchMeta.new(
            search,
            cluster,
            search_id=search_id,
            created_at=clock.wall(),
            source=search_dir / LEDGER_FILE,
        )
        ledger.set_meta({"schema_version": SCHEMA_VERSION, **meta.to_meta()})
        host = OracleHost(search, initial_space=initial_space)
        broker = TrialBroker(
            search=search, ledger=ledger, oracle_host=host, clock=clock, long_poll_s=long_poll_s
        )
        space = host.space_config()
        if space.get("space"):
            broker.record_space(space)
        broker.set_running("search started")
        return cls(
            search=search,
            cluster=cluster,
            search_dir=search_dir,
            ledger=ledger,
            broker=broker,
            search_id=search_id,
            clock=clock,
            resumed=False,
        )

    @classmethod
    def resume(
        cls,
        search_dir: Path,
        *,
        cluster: ClusterSpec | None = None,
        clock: Clock | None = None,
        long_poll_s: float = 5.0,
        keep_leases: bool = True,
        ledger_synchronous: str = "NORMAL",
    ) -> Chief:
        """Reopen the search in ``search_dir`` from its ledger."""
        search_dir = Path(search_dir)
        if not (search_dir / LEDGER_FILE).exists():
            raise LedgerError(
                f"{search_dir}: no ledger to resume from; expected a directory made by `ktc submit`"
            )
        _refuse_if_chief_alive(search_dir)
        os.chmod(search_dir, SEARCH_DIR_MODE)  # an older search directory is tightened
        clock = clock or SystemClock()
        ledger = Ledger(search_dir / LEDGER_FILE, clock=clock, synchronous=ledger_synchronous)
        stored = SearchMeta.parse(ledger.meta(), source=search_dir / LEDGER_FILE)
        search = stored.search
        cluster = cluster if cluster is not None else stored.cluster()
        # Schema-1 ledgers (before typed events) are rewritten first; a damaged
        # one is refused here, naming the seq, before anything is appended.
        try:
            ledger.migrate()
            replayed = replay(ledger, policy=RetryPolicy.from_search(search), strict=True)
        except LedgerError as exc:
            ledger.close()
            raise LedgerError(
                f"{search_dir}: cannot resume: {exc}. Nothing was "
                f"changed; `ktc status {search_dir}` and `ktc results {search_dir}` show every "
                "other event."
            ) from None
        if replayed.state is SearchState.COMPLETED:
            ledger.close()
            raise NothingToResumeError.completed(str(search_dir))
        host = OracleHost(search)
        broker = TrialBroker(
            search=search, ledger=ledger, oracle_host=host, clock=clock, long_poll_s=long_poll_s
        )
        broker.restore(replayed, keep_leases=keep_leases)
        # A ledger still RUNNING had its chief stop without saying so (killed,
        # the machine rebooted): interrupted, as `ktc status` reports it.
        previous = (
            SearchState.INTERRUPTED if replayed.state is SearchState.RUNNING else replayed.state
        ).value
        done = replayed.book.finished()
        chief = cls(
            search=search,
            cluster=cluster,
            search_dir=search_dir,
            ledger=ledger,
            broker=broker,
            search_id=stored.search_id,
            clock=clock,
            resumed=True,
        )
        # Committed by start() once the server is bound: a resume that cannot
        # serve (its port taken, say) leaves the ledger as it found it.
        chief._resume_message = (
            f"resumed after {previous} with {done} finished trial(s) and "
            f"{len(replayed.in_flight)} in flight"
        )
        return chief

    # -------------------------------------------------------------- serving

    def start(self) -> ChiefEndpoint:
        """Bind the gRPC server, write chief.json, start the lease reaper."""
        chief = self.cluster.chief
        # Validation refuses this already; a spec from elsewhere (a ledger, code)
        # must not get past it either: plaintext beyond loopback is opt-in.
        refusal = chief.plaintext_refusal()
        if refusal is not None:
            raise ConfigError(f"cluster chief.host: {refusal}")
        self.log_file.open()
        # A chief killed mid-upload left its temporary file; it would count
        # against the trial's artifact quota forever.
        self.artifacts.remove_partial_uploads()
        log_capacity(raise_open_files_limit(), self.cluster.fleet.max_workers)
        pools = RpcPools(uploads=self.limits.max_uploads)
        self.broker.report_budget.cap = self.limits.max_progress_bytes_per_attempt
        self.control.pools = pools
        self.control.metrics = self.metrics
        trials = TrialServicer(
            self.broker,
            self.artifacts,
            pools=pools,
            limits=self.limits,
            audit=self.audit,
            metrics=self.metrics,
        )
        server = RpcServer(
            interceptors=[
                TokenAuthInterceptor(
                    self.token,
                    workers=self.workers,
                    on_reject=self.audit,  # refused secrets are audited too
                    lease_holder=self._lease_holder,
                )
            ],
            options=server_options(self.keepalive),
        )
        try:
            port = server.start(
                lambda aio_server: add_servicers_to_server(aio_server, trials, self.control),
                lambda aio_server: self._bind(aio_server, chief.host, self._preferred_port()),
            )
            if chief.metrics_port:
                self.metrics.attach(
                    self.broker,
                    lambda: self.worker_states() if self.worker_states is not None else {},
                )
                self.metrics.serve(chief.metrics_host, chief.metrics_port)
            if self._resume_message is not None:
                self.broker.set_running(self._resume_message)  # the resume is committed here
                self._resume_message = None
        except BaseException:
            server.stop(0)  # a no-op when it never started
            pools.shutdown()
            self.log_file.close()
            raise
        self._server = server
        self._pools = pools
        advertise_host = _advertise_host(chief.host, chief.advertise)
        address = (
            chief.advertise
            if chief.advertise and ":" in chief.advertise
            else f"{advertise_host}:{port}"
        )
        tls = chief.tls
        self._endpoint = ChiefEndpoint(
            address=address,
            port=port,
            token=self.token,
            tls_ca=str(tls.ca) if tls else None,
            tls_server_name=advertise_host if tls else None,
        )
        self._info = ChiefInfo(
            address=address,
            bind=f"{chief.host}:{port}",
            pid=os.getpid(),
            token_file=str(self.search_dir / TOKEN_FILE_NAME),
            search_id=self.search_id,
            started_at=self.clock.wall(),
            tls_ca=self._endpoint.tls_ca,
            tls_server_name=self._endpoint.tls_server_name,
        )
        write_chief_info(self.search_dir, self._info)
        self._reaper = threading.Thread(
            target=self._reap_leases, name="ktc-lease-reaper", daemon=True
        )
        self._reaper.start()
        log.info("chief for %s listening on %s", self.search_dir, address)
        return self._endpoint

    def _lease_holder(self, trial_id: str) -> str | None:
        """The worker that holds ``trial_id``'s lease now (the auth interceptor's
        upload check)."""
        lease = self.broker.leases.get(trial_id)
        return lease.worker_id if lease is not None else None

    def _preferred_port(self) -> int:
        """The configured port; on resume with port 0, the previous port if free,
        so workers that outlived the old chief can reconnect."""
        port = self.cluster.chief.port
        if port or not self.resumed:
            return port
        try:
            return read_chief_info(self.search_dir).port
        except KtClusterError:
            return 0

    def _bind(self, server: grpc.aio.Server, host: str, port: int) -> int:
        tls = self.cluster.chief.tls
        target = f"{host}:{port}"

        def add(target: str) -> int:
            if tls is None:
                return server.add_insecure_port(target)
            credentials = grpc.ssl_server_credentials(
                [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())]
            )
            return server.add_secure_port(target, credentials)

        try:
            bound = add(target)
        except RuntimeError:
            bound = 0
        if bound == 0 and port and self.resumed and port != self.cluster.chief.port:
            bound = add(f"{host}:0")  # previous port taken: any free one
        if bound == 0:
            raise KtClusterError(
                f"cluster chief: could not bind {target}; the port is in use or the host is not "
                "an address of this machine. Set chief.port: 0 for a free port, or free the port."
            )
        return bound

    def _reap_leases(self) -> None:
        timeout = self.broker.leases.timeout_s
        while not self._stop_reaper.is_set():
            next_s = self.broker.leases.seconds_to_next_expiry()
            wait_s = timeout if next_s is None else min(timeout, next_s + 0.01)
            if self._stop_reaper.wait(max(wait_s, 0.05)):
                return
            try:
                self.broker.expire_leases()
            except Exception:  # keep reaping; a ledger error is logged and retried
                log.exception("lease reaper failed")

    @property
    def endpoint(self) -> ChiefEndpoint:
        if self._endpoint is None:
            raise KtClusterError("the chief is not started")
        return self._endpoint

    # ------------------------------------------------------------ lifecycle

    def wait(self, timeout_s: float | None = None) -> SearchState | None:
        """Block until the search ends; None on timeout."""
        return self.broker.wait_finished(timeout_s)

    def interrupt(self, *, requeue_running: bool) -> None:
        """Ctrl-C / SIGTERM: stop handing out trials; requeue or finish the running ones."""
        self.broker.stop_dispatch(
            SearchState.INTERRUPTED,
            f"interrupted; resume with `ktc resume {self.search_dir}`",
            requeue_running=requeue_running,
        )

    def cancel(self, *, now: bool = True) -> None:
        """Stop the search and keep every result."""
        self.broker.stop_dispatch(
            SearchState.CANCELLED,
            f"cancelled; every result is kept. Continue it with `ktc resume {self.search_dir}`",
            requeue_running=now,
        )

    def close(self, grace_s: float = 1.0) -> None:
        """Stop serving; bring the oracle up to date; mark chief.json not running."""
        self._stop_reaper.set()
        self.metrics.close()
        if self._server is not None:
            self._server.stop(grace_s)
            self._server = None
        if self._pools is not None:
            self._pools.shutdown()
            self._pools = None
        try:
            self.broker.apply_pending_ends()
        except Exception:
            log.exception("could not apply the last results to the oracle")
        self.broker.oracle_host.close()
        if self._info is not None:
            from dataclasses import replace

            write_chief_info(self.search_dir, replace(self._info, running=False))
        self.ledger.close()
        self.audit.close()
        self.log_file.close()

    def __enter__(self) -> Chief:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _advertise_host(bind_host: str, advertise: str | None) -> str:
    if advertise:
        return advertise.rsplit(":", 1)[0] if advertise.count(":") == 1 else advertise
    if bind_host in ("0.0.0.0", "::", ""):
        # Bound to every interface: advertise the address other machines route to.
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.connect(("10.255.255.255", 1))
                return str(probe.getsockname()[0])
        except OSError:
            return socket.gethostname()
    return bind_host


def _refuse_if_chief_alive(search_dir: Path) -> None:
    try:
        info = read_chief_info(search_dir)
    except KtClusterError:
        return
    if info.running and info.process_alive() and info.pid != os.getpid():
        raise KtClusterError(
            f"{search_dir}: a chief (pid {info.pid}) is still serving this search at "
            f"{info.address}; watch it with `ktc status {search_dir}`, or stop it with "
            f"`ktc cancel {search_dir}` first"
        )


__all__ = ["CHIEF_FILE", "Chief", "ChiefEndpoint", "read_token"]
