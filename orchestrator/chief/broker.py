"""The trial broker: the chief's side of every trial RPC.

Trial state lives in the trial book (:mod:`orchestrator.chief.trial_book`).
For each request the broker asks the book what it leads to (a list of typed
events), appends the events to the ledger, and only then applies them
(:meth:`TrialBroker._commit_locked`). A crash at any point therefore leaves a
ledger that ``replay`` folds back into the same book. What the broker keeps
itself is not trial state: the lock, long-polls, the oracle gate, leases and
the search's lifecycle (:mod:`orchestrator.chief.lifecycle`).

Concurrency (the reason for the shape of this class):

- One lock + condition (``_cond``) guards the book and the leases. It is held
  only for memory updates and one SQLite commit.
- The oracle is never called under that lock, and one thread at a time asks
  it (:mod:`orchestrator.chief.oracle_gate`): EndTrial commits and queues the
  oracle's update; the next oracle call feeds the queue first, in commit order.
  Reads never go to the oracle.
- Workers with nothing to run park their CreateTrial in the parking lot
  (:mod:`orchestrator.chief.parking`), which holds no thread: a worker waiting
  on a Hyperband round makes one call per long-poll period, not a busy loop.
  An end, requeue or space change wakes as many parked calls as may now get a
  trial (:meth:`TrialBroker._wake_parked_locked`), not the whole fleet.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.chief.book_reads import BookReads
from orchestrator.chief.events import (
    EventKind,
    SearchChanged,
    SpaceChanged,
    TrialAssigned,
    TrialCompleted,
    TrialEvent,
    TrialFailed,
    TrialProgress,
    TrialRequeued,
    decoder_for,
)
from orchestrator.chief.leases import Lease, LeaseTable
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.lifecycle import SearchLifecycle
from orchestrator.chief.limits import ReportBudget
from orchestrator.chief.long_poll import LongPolls
from orchestrator.chief.oracle_gate import OracleGate
from orchestrator.chief.oracle_host import OracleHost, RestoredTrial
from orchestrator.chief.parking import ParkingLot
from orchestrator.chief.schedulers import TrialScheduler, build_scheduler
from orchestrator.chief.trial_book import RetryPolicy, TrialBook, TrialRecord
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import (
    InvalidRequestError,
    PermissionDeniedError,
    StaleLeaseError,
)
from orchestrator.protocol.answers import (
    EndOutcome,
    ReportDecision,
)
from orchestrator.protocol.failures import objective_missing_message
from orchestrator.protocol.kt_state import canonical_json, check_assigned_values
from orchestrator.protocol.trials import (
    AttemptStatus,
    SearchState,
)

if TYPE_CHECKING:
    from orchestrator.chief.prometheus import ChiefMetrics
    from orchestrator.chief.replay import ReplayedSearch
    from orchestrator.config import SearchSpec

log = logging.getLogger(__name__)


class UnknownTrialError(InvalidRequestError):
    """A request named a trial id the chief never created."""


class TrialBroker(LongPolls, SearchLifecycle, BookReads):
    """Hands out trials under leases and records what comes back.

    Thread-safe. Every public method may be called from any gRPC thread.
    Trial state lives in :attr:`book`; the broker decides with it, commits the
    resulting events (:meth:`_commit_locked`) and keeps only what is not
    trial state: the lock, long-polls, the oracle gate, leases and the search
    lifecycle (drains, interrupts).
    """

    def __init__(
        self,
        *,
        search: SearchSpec,
        ledger: Ledger,
        oracle_host: OracleHost,
        clock: Clock | None = None,
        long_poll_s: float = 5.0,
    ) -> None:
        self.search = search
        self.ledger = ledger
        self.oracle_host = oracle_host
        self.clock = clock or SystemClock()
        self.long_poll_s = long_poll_s
        self.objective = search.objective.name
        self.direction = search.objective.resolved_direction
        self.leases = LeaseTable(self.clock, search.failure.lease_timeout_s)
        self.book = TrialBook(RetryPolicy.from_search(search))
        # The search's trial scheduler (ASHA, median stopping), if any: a pure
        # fold of the committed progress events, consulted under the lock.
        self.scheduler: TrialScheduler | None = build_scheduler(search)
        # The chief's Prometheus metrics (prometheus.py), when it serves them.
        self.metrics: ChiefMetrics | None = None

        # The ledger bytes each attempt's reports took (its cap: Chief.limits).
        self.report_budget = ReportBudget()

        self._cond = threading.Condition(threading.Lock())
        # Parked CreateTrial long-polls; woken by _wake_parked_locked (parking.py).
        self.parked = ParkingLot()
        self.gate = OracleGate(
            self._cond, oracle_host, self._commit_locked, on_release=self._wake_parked_locked
        )
        self._oracle_exhausted = False
        self._idle_at_version: int | None = None
        self._idle_with_nothing_running = False
        self._version = 0  # bumped by every change that may unblock the oracle
        self._draining: set[str] = set()
        self._last_seen: dict[str, float] = {}
        # One parked CreateTrial per worker: a worker's newer call bumps its
        # generation, and the older one, parked, answers WAIT (a worker that
        # timed out and called again must not leave a call behind to be leased to).
        self._poll_generation: dict[str, int] = {}
        self._polls = 0  # generations are unique across workers and time
        self._finished = threading.Event()
        # The committed space's (name, conditions) keys, for UpdateSpace's fast path.
        self._space_keys: frozenset[tuple[str, str]] = frozenset()
        self._space_keys_of: dict[str, Any] | None = None
        # Set by stop_dispatch(requeue_running=False): finish once running trials end.
        self._draining_all = False
        self._state_after_drain: tuple[SearchState, str] | None = None

    # ------------------------------------------------------------- committing

    def _commit_locked(
        self, events: Sequence[TrialEvent], *, snapshot: dict[str, Any] | None = None
    ) -> None:
        """Append ``events`` to the ledger, then apply them to the book; then
        the broker's own follow-ups (leases, the oracle's queue, waking waiters).

        Nothing changes when the append fails: the book is only touched after
        the ledger has the events.
        """
        appended = self.ledger.append(events, snapshot=snapshot)
        wake = False
        for event in events:
            self.book.apply(event, appended.ts)
            if isinstance(event, TrialProgress):
                continue
            if self.metrics is not None:
                self._observe_locked(event)
            wake = True
            if isinstance(event, TrialCompleted | TrialFailed | TrialRequeued):
                self.leases.release(event.trial_id)
            if isinstance(event, TrialCompleted | TrialFailed):
                self.gate.queue_end(self.book.records[event.trial_id], event)
            elif isinstance(event, SearchChanged):
                if event.state.is_terminal:
                    self._finished.set()
                    log.info("search %s: %s", event.state.value, event.message)
                else:
                    self._finished.clear()
        if wake:
            self._version += 1
            self._cond.notify_all()
            self._wake_parked_locked()

    def _observe_locked(self, event: TrialEvent) -> None:
        """Tell Prometheus (``chief.metrics_port``): requeues by cause, slot refills."""
        metrics = self.metrics
        assert metrics is not None
        now = self.clock.monotonic()
        if isinstance(event, TrialRequeued):
            metrics.observe_requeue(event.reason, counted=event.counted)
        if isinstance(event, TrialCompleted | TrialFailed | TrialRequeued):
            metrics.observe_end(event.worker_id, now)
        elif isinstance(event, TrialAssigned):
            metrics.observe_assign(event.worker_id, now)

    # ------------------------------------------------------------ restoring

    def restore(self, replayed: ReplayedSearch, *, keep_leases: bool = True) -> None:
        """Adopt a replayed ledger's book; restore the oracle; lease or requeue
        the attempts that were in flight.

        With ``keep_leases`` an in-flight attempt keeps its lease (same token,
        fresh deadline): a worker that survived the chief and reports back in
        time has its result accepted once. Otherwise, or when the lease then
        expires, the trial runs again.
        """
        book = replayed.book
        book.policy = self.book.policy  # the search's, whatever replay was given
        in_flight = book.in_flight()
        scheduler = build_scheduler(self.search)
        if scheduler is not None:
            # Rung state from the ledger's progress events, in commit order:
            # the same fold the live broker runs, so the next decision is the
            # one it would have made without the restart.
            scheduler.rebuild(self._ledger_progress())
        with self._cond:
            self.book = book
            self.scheduler = scheduler
            if keep_leases:
                for flight in in_flight:
                    self.leases.grant(
                        flight.trial_id, flight.worker_id, flight.attempt, token=flight.token
                    )
        self.oracle_host.restore(
            space_config=book.space_config,
            trials=[
                RestoredTrial(
                    trial_id=rec.trial_id,
                    trial_state=rec.trial_state,
                    final_status=rec.status.value if rec.status.is_final else None,
                    metrics=rec.metrics,
                    best_step=rec.best_step,
                    message=rec.error_message,
                )
                for rec in (book.records[tid] for tid in book.start_order)
            ],
            end_order=book.end_order,
            snapshot=replayed.snapshot,
        )
        if not keep_leases and in_flight:
            with self._cond:
                for trial_id in book.latest_first(f.trial_id for f in in_flight):
                    self._commit_locked(
                        self.book.lose_attempt(
                            trial_id, reason="the chief restarted", count_failure=False
                        )
                    )

    def _ledger_progress(self) -> Iterator[TrialProgress]:
        """The ledger's progress events in commit order (only those rows decoded)."""
        decode = decoder_for(self.ledger.schema_version(), source=str(self.ledger.path))
        for row in self.ledger.rows():
            if row.kind == EventKind.PROGRESS.value:
                event = decode(row)
                if isinstance(event, TrialProgress):
                    yield event

    def record_space(self, space_config: dict[str, Any]) -> None:
        """Commit the initial search space (declared by the chief)."""
        with self._cond:
            self._commit_locked([SpaceChanged(hyperparameters=space_config)])

    def set_running(self, message: str) -> None:
        """(Re)start dispatching, recording why (start or resume)."""
        with self._cond:
            self._commit_locked([SearchChanged(state=SearchState.RUNNING, message=message)])

    def _space_covers_locked(self, config: dict[str, Any]) -> bool:
        """Whether the committed space already holds every hyperparameter of
        ``config`` (then merging it changes nothing: the oracle's space holds at
        least the committed one)."""
        committed = self.book.space_config
        if committed is None:
            return False
        if self._space_keys_of is not committed:
            self._space_keys = _space_keys(committed)
            self._space_keys_of = committed
        return _space_keys(config) <= self._space_keys

    # -------------------------------------------------------------- reports

    def report(
        self,
        trial_id: str,
        token: str,
        *,
        epoch: int,
        metrics: Mapping[str, float],
        worker_id: str = "",
    ) -> ReportDecision:
        """Renew the lease; record an epoch's metrics (epoch < 0: heartbeat only).

        With a trial scheduler, an epoch's report is also judged (in memory,
        after its commit): a STOP it decides is answered with ``scheduler``
        set, and the attempt's COMPLETED end is then marked stopped early.
        Heartbeats are never judged.
        """
        with self._cond:
            rec = self._record_locked(trial_id)
            self._held_lease_locked(rec, token, worker_id)
            verdict = None
            if epoch >= 0:
                used = self.report_budget.check(trial_id, rec.attempt, metrics)
                progress = self.book.progress(trial_id, epoch, metrics)
                self._commit_locked([progress])
                self.report_budget.record(trial_id, rec.attempt, used)
                if self.scheduler is not None:
                    verdict = self.scheduler.apply(progress)
            self.leases.renew(trial_id, token)
            if worker_id:
                self._last_seen[worker_id] = self.clock.monotonic()
            state = self.book.state
            if state.is_terminal:
                return ReportDecision(
                    stop=True,
                    reason=f"the search is {state.value}",
                    lease_expires_in_s=self.leases.timeout_s,
                )
            if verdict is not None and verdict.stop:
                if verdict.epochs_saved is not None:
                    log.info("trial %s (worker %s): %s", trial_id, rec.worker_id, verdict.reason)
                    if self.metrics is not None:
                        self.metrics.observe_scheduler_stop(verdict.epochs_saved)
                return ReportDecision(
                    stop=True,
                    reason=verdict.reason,
                    lease_expires_in_s=self.leases.timeout_s,
                    scheduler=True,
                )
            return ReportDecision(stop=False, reason="", lease_expires_in_s=self.leases.timeout_s)

    def check_lease(self, trial_id: str, token: str, *, worker_id: str = "") -> None:
        """Raise unless ``token`` holds the trial's current lease (artifact uploads)."""
        with self._cond:
            rec = self._record_locked(trial_id)
            self._held_lease_locked(rec, token, worker_id)

    def _record_locked(self, trial_id: str) -> TrialRecord:
        rec = self.book.records.get(trial_id)
        if rec is None:
            raise UnknownTrialError(f"unknown trial id {trial_id!r}; the chief never created it")
        return rec

    @contextlib.contextmanager
    def holding_lease(self, trial_id: str, token: str, *, worker_id: str = "") -> Iterator[None]:
        """Hold the broker's lock while ``token`` holds the trial's lease
        (``check_lease``'s errors otherwise): what runs inside, an upload's
        rename, cannot race the attempt's end, requeue or expiry."""
        with self._cond:
            self._held_lease_locked(self._record_locked(trial_id), token, worker_id)
            yield

    def _held_lease_locked(self, rec: TrialRecord, token: str, worker_id: str) -> Lease:
        """The trial's current lease, which ``token`` must hold and ``worker_id``
        (when named) must own; StaleLeaseError or PermissionDeniedError otherwise."""
        lease = self.leases.get(rec.trial_id)
        if lease is None or lease.token != token:
            raise StaleLeaseError(self._stale_message_locked(rec, token))
        _check_holder(lease, worker_id)
        return lease

    def _stale_message_locked(self, rec: TrialRecord, token: str) -> str:
        lease = self.leases.get(rec.trial_id)
        if rec.status.is_final:
            return (
                f"trial {rec.trial_id} already ended as {rec.status.value}; "
                "this attempt's result is ignored"
            )
        if lease is None:
            return (
                f"trial {rec.trial_id}: this attempt's lease was revoked (expired or requeued); "
                "its result is ignored"
            )
        return (
            f"trial {rec.trial_id}: the token is not the current attempt's "
            f"(attempt {lease.attempt} is held by {lease.worker_id}); its result is ignored"
        )

    # ----------------------------------------------------------------- ends

    def end_trial(
        self,
        trial_id: str,
        token: str,
        *,
        status: AttemptStatus,
        metrics: Mapping[str, float],
        best_step: int = 0,
        error_message: str = "",
        traceback_tail: str = "",
        hyperparameters_config: dict[str, Any] | None = None,
        worker_id: str = "",
    ) -> EndOutcome:
        """Record how an attempt ended. Idempotent per token.

        ``hyperparameters_config`` must already be canonical (the service parses
        it with Keras Tuner before calling).
        """
        with self._cond:
            rec = self._record_locked(trial_id)
            previous = rec.ended_tokens.get(token)
            if previous is not None:
                return EndOutcome(recorded=False, final_status=previous)
            lease = self._held_lease_locked(rec, token, worker_id)
            if hyperparameters_config is not None:
                check_assigned_values(
                    hyperparameters_config.get("values", {}),
                    rec.values,
                    where="trial_state_json.hyperparameters",
                )
            if status is AttemptStatus.COMPLETED and self.objective not in metrics:
                # FAILED, not INVALID: another attempt would report the same
                # metrics, so retrying it as if transient only repeats the training.
                status = AttemptStatus.FAILED
                error_message = objective_missing_message(self.objective, metrics)
            events: list[TrialEvent]
            if status is AttemptStatus.COMPLETED:
                now = self.clock.wall()
                started = rec.attempt_started_ts
                events = self.book.complete(
                    trial_id,
                    metrics=metrics,
                    score=float(metrics[self.objective]),
                    best_step=best_step,
                    duration_s=now - started if started else None,
                    hyperparameters=hyperparameters_config,
                    end_token=token,
                    stopped_early=self.scheduler is not None
                    and self.scheduler.stopped(trial_id, rec.attempt),
                )
            elif status is AttemptStatus.STOPPED:
                events = self.book.lose_attempt(
                    trial_id, reason="stopped by the chief", count_failure=False, end_token=token
                )
            else:
                events = self.book.lose_attempt(
                    trial_id,
                    reason=error_message or "the trial raised an exception",
                    count_failure=True,
                    retryable=status is AttemptStatus.INVALID,
                    traceback_tail=traceback_tail,
                    hyperparameters=hyperparameters_config,
                    end_token=token,
                )
            self._commit_locked(events)
            self._log_end(rec, lease, events)
            self._maybe_complete_locked()
            return EndOutcome(recorded=True, final_status=rec.status)

    def apply_pending_ends(self) -> None:
        """Bring the oracle up to date with every recorded result."""
        self.gate.run(self.gate.apply_pending_ends)

    def space_config(self) -> dict[str, Any]:
        """The search space, including what the trials ended so far registered."""

        def read() -> dict[str, Any]:
            self.gate.apply_pending_ends()
            return self.oracle_host.space_config()

        return self.gate.run(read)

    def update_space(self, hyperparameters_config: dict[str, Any]) -> None:
        """Merge hyperparameters a worker found while building (already
        canonical); commit the space if it grew."""

        with self._cond:
            if self._space_covers_locked(hyperparameters_config):
                # Nothing new (the common case: every worker sends its trial's
                # hyperparameters after each build): no oracle gate to wait for.
                return

        def merge() -> dict[str, Any] | None:
            if not self.oracle_host.update_space(hyperparameters_config):
                return None
            return self.oracle_host.space_config()

        space = self.gate.run(merge)
        if space is not None:
            with self._cond:
                self._commit_locked([SpaceChanged(hyperparameters=space)])


def _space_keys(config: Mapping[str, Any] | None) -> frozenset[tuple[str, str]]:
    """(name, conditions) of each hyperparameter in a canonical space config:
    what Keras Tuner's ``_exists`` compares."""
    if not config:
        return frozenset()
    return frozenset(
        (str(entry["config"]["name"]), canonical_json(entry["config"].get("conditions") or []))
        for entry in config.get("space") or ()
    )


def _check_holder(lease: Lease, worker_id: str) -> None:
    """A worker acts only on the attempt leased to it. ``worker_id`` is the one
    its credential proves (the auth interceptor binds it), or the one a
    search-token caller claims on a chief without a fleet; empty when the
    request names none (the lease token alone authorises it, as before)."""
    if worker_id and worker_id != lease.worker_id:
        raise PermissionDeniedError(
            f"trial {lease.trial_id}: attempt {lease.attempt} is leased to worker "
            f"{lease.worker_id}, not {worker_id}; a worker may report, end and upload for "
            "its own trials only"
        )


__all__ = ["TrialBroker", "UnknownTrialError"]
