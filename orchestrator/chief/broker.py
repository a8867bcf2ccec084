"""The trial broker: the chief's state machine behind every trial RPC.

It hands trials out under leases, takes reports and results, requeues what
was lost, and decides when the search is over. It writes every transition
to the ledger *before* it changes memory or answers, so a crash at any point
leaves a ledger that ``replay`` turns back into the same state.

Concurrency (the reason for the shape of this class):

- One lock + condition (``_cond``) guards the records, the queue and the
  leases. It is held only for memory updates and one SQLite commit.
- The oracle is never called under that lock. A Bayesian GP fit inside
  ``create_trial`` can take seconds; Report and EndTrial must not wait for it.
  EndTrial therefore commits the result and queues the oracle update in
  ``_pending_ends``; the next oracle call (``create_trial``, or
  ``apply_pending_ends`` at shutdown) drains the queue first, in commit order,
  so the oracle sees every result before it decides again. Reads never go to
  the oracle: they come from the broker's own records.
- Only one thread at a time asks the oracle (``_oracle_busy``); the others
  long-poll on the condition, which every end, requeue and space change
  notifies. A worker waiting on a Hyperband round therefore makes one call per
  long-poll period, not a busy loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.chief.leases import Lease, LeaseTable
from orchestrator.chief.ledger import EventKind, Ledger, PendingEvent
from orchestrator.chief.oracle_host import CreatedTrial, CreateOutcome, OracleHost, RestoredTrial
from orchestrator.chief.replay import ReplayedSearch
from orchestrator.clock import Clock, SystemClock
from orchestrator.errors import InvalidRequestError, KtClusterError, StaleLeaseError
from orchestrator.protocol.answers import (
    Assignment,
    AssignmentKind,
    EndOutcome,
    ReportDecision,
    SearchSummary,
)
from orchestrator.protocol.trials import (
    AttemptStatus,
    SearchState,
    TrialRecord,
    TrialStatus,
    TrialView,
    rank_trials,
)

log = logging.getLogger(__name__)

MAX_LONG_POLL_S = 30.0


class UnknownTrialError(InvalidRequestError):
    """A request named a trial id the chief never created."""


@dataclass(frozen=True)
class _PendingEnd:
    trial_id: str
    completed: bool
    metrics: dict[str, float]
    best_step: int
    message: str | None
    hyperparameters_config: dict[str, Any] | None


class TrialBroker:
    """Hands out trials under leases and records what comes back.

    Thread-safe. Every public method may be called from any gRPC thread.
    """

    def __init__(
        self,
        *,
        search: Any,  # SearchSpec
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
        policy = search.failure
        self.retries_per_trial: int = policy.retries_per_trial
        self.max_consecutive_failures: int = policy.max_consecutive_failed_trials
        self.objective = search.objective.name
        self.direction = search.objective.resolved_direction
        self.leases = LeaseTable(self.clock, policy.lease_timeout_s)

        self._cond = threading.Condition(threading.Lock())
        self._records: dict[str, TrialRecord] = {}
        self._queue: deque[str] = deque()
        self._pending_ends: deque[_PendingEnd] = deque()
        self._oracle_busy = False
        self._oracle_exhausted = False
        self._idle_at_version: int | None = None
        self._version = 0  # bumped by every change that may unblock the oracle
        self._state = SearchState.RUNNING
        self._message = ""
        self._consecutive_failures = 0
        self._draining: set[str] = set()
        self._last_seen: dict[str, float] = {}
        self._finished = threading.Event()
        # Set by stop_dispatch(requeue_running=False): finish once running trials end.
        self._draining_all = False
        self._state_after_drain: tuple[SearchState, str] | None = None

    # ------------------------------------------------------------ restoring

    def restore(self, replayed: ReplayedSearch, *, keep_leases: bool = True) -> None:
        """Load a replayed ledger: records, queue, leases and the oracle.

        In-flight attempts keep their lease (same token, fresh deadline) when
        ``keep_leases``: a worker that survived the chief and reports back in
        time has its result accepted once. Otherwise, or when the lease then
        expires, the trial is re-run.
        """
        with self._cond:
            self._records = dict(replayed.records)
            self._queue = deque(replayed.queue)
            self._consecutive_failures = replayed.consecutive_failures
            for flight in replayed.in_flight:
                if keep_leases:
                    self.leases.grant(
                        flight.trial_id, flight.worker_id, flight.attempt, token=flight.token
                    )
                else:
                    self._records[flight.trial_id].status = TrialStatus.PENDING
                    self._queue.appendleft(flight.trial_id)
        restored = [
            RestoredTrial(
                trial_id=rec.trial_id,
                trial_state=rec.trial_state,
                final_status=rec.status.value if rec.status.is_final else None,
                metrics=rec.metrics,
                best_step=rec.best_step,
                message=rec.error_message,
            )
            for rec in (replayed.records[tid] for tid in replayed.start_order)
        ]
        self.oracle_host.restore(
            space_config=replayed.space_config,
            trials=restored,
            end_order=replayed.end_order,
            snapshot=replayed.snapshot,
        )
        if not keep_leases and replayed.in_flight:
            self.ledger.append_many(
                [
                    PendingEvent(
                        EventKind.REQUEUED,
                        trial_id=f.trial_id,
                        attempt=f.attempt,
                        worker_id=f.worker_id,
                        payload={"reason": "the chief restarted", "failures": 0, "front": True},
                    )
                    for f in replayed.in_flight
                ]
            )

    def record_space(self, space_config: dict[str, Any]) -> None:
        """Commit the initial search space (declared by the chief)."""
        self.ledger.append(EventKind.SPACE, payload={"hyperparameters": space_config})

    def set_running(self, message: str) -> None:
        """(Re)start dispatching, recording why (start or resume)."""
        with self._cond:
            self.ledger.append(
                EventKind.SEARCH, payload={"state": SearchState.RUNNING.value, "message": message}
            )
            self._state = SearchState.RUNNING
            self._message = message
            self._finished.clear()

    # ----------------------------------------------------------- dispatching

    def create_trial(self, worker_id: str, wait_s: float | None = None) -> Assignment:
        """A trial for ``worker_id``, or WAIT after a long-poll, or STOP."""
        wait = self.long_poll_s if wait_s is None else min(max(wait_s, 0.0), MAX_LONG_POLL_S)
        deadline = time.monotonic() + wait
        while True:
            with self._cond:
                self._last_seen[worker_id] = self.clock.monotonic()
                while True:
                    answer = self._dispatch_locked(worker_id)
                    if answer is not None:
                        return answer
                    if self._may_ask_oracle_locked():
                        self._oracle_busy = True
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return Assignment(AssignmentKind.WAIT, reason=self._wait_reason_locked())
                    self._cond.wait(remaining)
            # The create and the commit of its CREATED event (with the snapshot
            # taken inside the same oracle call) happen while _oracle_busy is
            # held, so snapshots are committed in the order the oracle made them.
            try:
                self._apply_pending_ends()
                created = self.oracle_host.create_trial()
                with self._cond:
                    if created.outcome is CreateOutcome.RUNNING:
                        return self._register_and_assign_locked(created, worker_id)
                    if created.outcome is CreateOutcome.STOPPED:
                        self._oracle_exhausted = True
                    else:
                        self._idle_at_version = self._version
                    self._maybe_complete_locked()
            finally:
                with self._cond:
                    self._oracle_busy = False
                    self._cond.notify_all()
            if time.monotonic() >= deadline and created.outcome is CreateOutcome.IDLE:
                return Assignment(
                    AssignmentKind.WAIT, reason="the oracle is waiting for running trials"
                )

    def _dispatch_locked(self, worker_id: str) -> Assignment | None:
        """An answer that needs no oracle call, or None."""
        if self._state.is_terminal:
            return Assignment(AssignmentKind.STOP, reason=f"the search is {self._state.value}")
        if self._draining_all:
            # Ctrl-C with --on-interrupt finish: running trials end, nothing new starts.
            return Assignment(AssignmentKind.STOP, reason="the search is stopping")
        if worker_id in self._draining:
            return Assignment(AssignmentKind.STOP, reason="this worker is being drained")
        if self._queue:
            trial_id = self._queue.popleft()
            return self._assign_locked(self._records[trial_id], worker_id, prefix=[])
        return None

    def _may_ask_oracle_locked(self) -> bool:
        if self._oracle_busy or self._oracle_exhausted:
            return False
        # After IDLE, ask again only once something changed (an end, a requeue,
        # a space update); otherwise long-poll.
        return self._idle_at_version is None or self._idle_at_version != self._version

    def _wait_reason_locked(self) -> str:
        if self._oracle_exhausted:
            return "no new trials; waiting for running trials to finish"
        return "the oracle is waiting for running trials"

    def _register_and_assign_locked(self, created: CreatedTrial, worker_id: str) -> Assignment:
        if created.trial_id is None or created.trial_state is None:
            raise KtClusterError("the oracle returned a RUNNING trial without an id or state")
        trial_id = created.trial_id
        values = dict(created.values or {})
        rec = TrialRecord(
            trial_id=trial_id,
            trial_state=created.trial_state,
            values=values,
            created_ts=self.clock.wall(),
        )
        event = PendingEvent(
            EventKind.CREATED,
            trial_id=trial_id,
            payload={"trial_state": created.trial_state, "values": values},
        )
        self._records[trial_id] = rec
        self._idle_at_version = None
        return self._assign_locked(rec, worker_id, prefix=[event], snapshot=created.snapshot)

    def _assign_locked(
        self,
        rec: TrialRecord,
        worker_id: str,
        *,
        prefix: list[PendingEvent],
        snapshot: dict[str, Any] | None = None,
    ) -> Assignment:
        attempt = rec.attempt + 1
        lease = self.leases.grant(rec.trial_id, worker_id, attempt)
        try:
            self.ledger.append_many(
                [
                    *prefix,
                    PendingEvent(
                        EventKind.ASSIGNED,
                        trial_id=rec.trial_id,
                        attempt=attempt,
                        worker_id=worker_id,
                        payload={"token": lease.token},
                    ),
                ],
                snapshot=snapshot,
            )
        except BaseException:
            self.leases.release(rec.trial_id)
            if not prefix:
                self._queue.appendleft(rec.trial_id)
            raise
        rec.attempt = attempt
        rec.status = TrialStatus.RUNNING
        rec.worker_id = worker_id
        rec.current_epoch = None
        rec.stop_requested = None
        rec.attempt_started_ts = self.clock.wall()
        log.info("trial %s attempt %d -> worker %s", rec.trial_id, attempt, worker_id)
        return Assignment(
            AssignmentKind.TRIAL,
            trial_id=rec.trial_id,
            attempt=attempt,
            token=lease.token,
            values=dict(rec.values),
            trial_state=rec.trial_state,
            lease_timeout_s=self.leases.timeout_s,
        )

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
        """Renew the lease; record an epoch's metrics (epoch < 0: heartbeat only)."""
        with self._cond:
            rec = self._record_locked(trial_id)
            if self.leases.renew(trial_id, token) is None:
                raise StaleLeaseError(self._stale_message_locked(rec, token))
            if worker_id:
                self._last_seen[worker_id] = self.clock.monotonic()
            if epoch >= 0:
                self.ledger.append(
                    EventKind.PROGRESS,
                    trial_id=trial_id,
                    attempt=rec.attempt,
                    worker_id=rec.worker_id,
                    payload={"epoch": epoch, "metrics": dict(metrics)},
                )
                rec.current_epoch = epoch
                rec.last_metrics = dict(metrics)
            stop_reason = rec.stop_requested
            if stop_reason is None and self._state.is_terminal:
                stop_reason = f"the search is {self._state.value}"
            return ReportDecision(
                stop=stop_reason is not None,
                reason=stop_reason or "",
                lease_expires_in_s=self.leases.timeout_s,
            )

    def check_lease(self, trial_id: str, token: str) -> None:
        """Raise unless ``token`` holds the trial's current lease (artifact uploads)."""
        with self._cond:
            rec = self._record_locked(trial_id)
            lease = self.leases.get(trial_id)
            if lease is None or lease.token != token:
                raise StaleLeaseError(self._stale_message_locked(rec, token))

    def _record_locked(self, trial_id: str) -> TrialRecord:
        rec = self._records.get(trial_id)
        if rec is None:
            raise UnknownTrialError(f"unknown trial id {trial_id!r}; the chief never created it")
        return rec

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
        """Record how an attempt ended. Idempotent per token."""
        with self._cond:
            rec = self._record_locked(trial_id)
            previous = rec.ended_tokens.get(token)
            if previous is not None:
                return EndOutcome(recorded=False, final_status=TrialStatus(previous))
            lease = self.leases.get(trial_id)
            if lease is None or lease.token != token:
                raise StaleLeaseError(self._stale_message_locked(rec, token))
            if status is AttemptStatus.COMPLETED and self.objective not in metrics:
                status = AttemptStatus.INVALID
                error_message = (
                    f"the objective {self.objective!r} is missing from the reported metrics "
                    f"{sorted(metrics)}; check the metric name in the search file's objective"
                )
            now = self.clock.wall()
            duration = now - rec.attempt_started_ts if rec.attempt_started_ts else None
            if status is AttemptStatus.COMPLETED:
                self._complete_locked(
                    rec, lease, metrics, best_step, hyperparameters_config, duration
                )
            elif status is AttemptStatus.STOPPED:
                self._requeue_locked(rec, lease, reason="stopped by the chief", count_failure=False)
            else:
                reason = error_message or "the trial raised an exception"
                self._fail_attempt_locked(
                    rec,
                    lease,
                    reason=reason,
                    traceback_tail=traceback_tail,
                    retryable=status is AttemptStatus.INVALID,
                    hyperparameters_config=hyperparameters_config,
                )
            rec.ended_tokens[token] = rec.status.value
            self._maybe_complete_locked()
            return EndOutcome(recorded=True, final_status=rec.status)

    def _complete_locked(
        self,
        rec: TrialRecord,
        lease: Lease,
        metrics: Mapping[str, float],
        best_step: int,
        hyperparameters_config: dict[str, Any] | None,
        duration: float | None,
    ) -> None:
        score = float(metrics[self.objective])
        trial_state = dict(rec.trial_state)
        if hyperparameters_config:
            trial_state["hyperparameters"] = hyperparameters_config
        self.ledger.append(
            EventKind.COMPLETED,
            trial_id=rec.trial_id,
            attempt=lease.attempt,
            worker_id=lease.worker_id,
            payload={
                "metrics": dict(metrics),
                "score": score,
                "best_step": best_step,
                "duration_s": duration,
                "failures": rec.failures,
                "trial_state": trial_state if hyperparameters_config else None,
            },
        )
        self.leases.release(rec.trial_id)
        rec.status = TrialStatus.COMPLETED
        if hyperparameters_config:
            # Values the build registered (e.g. inside a conditional scope) join
            # the ones the oracle chose: the trial really ran with them.
            rec.values = {**rec.values, **hyperparameters_config.get("values", {})}
        rec.metrics = dict(metrics)
        rec.score = score
        rec.best_step = best_step
        rec.trial_state = trial_state
        rec.ended_ts = self.clock.wall()
        rec.duration_s = duration
        rec.worker_id = lease.worker_id
        rec.error_message = None
        self._consecutive_failures = 0
        self._queue_oracle_end_locked(rec, True, hyperparameters_config)

    def _requeue_locked(
        self, rec: TrialRecord, lease: Lease, *, reason: str, count_failure: bool
    ) -> None:
        """Give the trial back to the queue (attempt + 1 next time), or fail it
        for good when ``count_failure`` and the retry limit is reached."""
        failures = rec.failures + (1 if count_failure else 0)
        if count_failure and failures > self.retries_per_trial:
            self._fail_final_locked(
                rec,
                lease,
                reason=f"{reason} (attempt {lease.attempt}; retry limit "
                f"{self.retries_per_trial} reached)",
                traceback_tail="",
                failures=failures,
                hyperparameters_config=None,
            )
            return
        self.ledger.append(
            EventKind.REQUEUED,
            trial_id=rec.trial_id,
            attempt=lease.attempt,
            worker_id=lease.worker_id,
            payload={"reason": reason, "failures": failures, "front": True},
        )
        self.leases.release(rec.trial_id)
        rec.failures = failures
        rec.status = TrialStatus.PENDING
        rec.error_message = reason if count_failure else rec.error_message
        rec.current_epoch = None
        self._queue.appendleft(rec.trial_id)
        self._version += 1
        self._cond.notify_all()
        # A failed attempt is worth a warning; a cancel, interrupt or drain is expected.
        level = logging.WARNING if count_failure else logging.INFO
        log.log(level, "trial %s attempt %d requeued: %s", rec.trial_id, lease.attempt, reason)

    def _requeue_leases_locked(
        self, leases: list[Lease], *, reason: str, count_failure: bool
    ) -> list[str]:
        """Requeue each leased trial (see :meth:`_requeue_locked`); their ids."""
        for lease in leases:
            self._requeue_locked(
                self._records[lease.trial_id], lease, reason=reason, count_failure=count_failure
            )
        return [lease.trial_id for lease in leases]

    def _fail_attempt_locked(
        self,
        rec: TrialRecord,
        lease: Lease,
        *,
        reason: str,
        traceback_tail: str,
        retryable: bool,
        hyperparameters_config: dict[str, Any] | None,
    ) -> None:
        rec.traceback_tail = traceback_tail or rec.traceback_tail
        if retryable:
            self._requeue_locked(rec, lease, reason=reason, count_failure=True)
            if rec.status is TrialStatus.FAILED:
                rec.traceback_tail = traceback_tail or rec.traceback_tail
            return
        self._fail_final_locked(
            rec,
            lease,
            reason=reason,
            traceback_tail=traceback_tail,
            failures=rec.failures + 1,
            hyperparameters_config=hyperparameters_config,
        )

    def _fail_final_locked(
        self,
        rec: TrialRecord,
        lease: Lease,
        *,
        reason: str,
        traceback_tail: str,
        failures: int,
        hyperparameters_config: dict[str, Any] | None,
    ) -> None:
        self.ledger.append(
            EventKind.FAILED,
            trial_id=rec.trial_id,
            attempt=lease.attempt,
            worker_id=lease.worker_id,
            payload={
                "error_message": reason,
                "traceback_tail": traceback_tail or rec.traceback_tail,
                "failures": failures,
            },
        )
        self.leases.release(rec.trial_id)
        rec.status = TrialStatus.FAILED
        rec.failures = failures
        rec.error_message = reason
        rec.traceback_tail = traceback_tail or rec.traceback_tail
        rec.ended_ts = self.clock.wall()
        self._consecutive_failures += 1
        self._queue_oracle_end_locked(rec, False, hyperparameters_config)
        log.warning("trial %s FAILED: %s", rec.trial_id, reason)
        if self._consecutive_failures >= self.max_consecutive_failures:
            self._finish_locked(
                SearchState.FAILED,
                f"{self._consecutive_failures} consecutive trials failed (limit "
                f"{self.max_consecutive_failures}); the last, trial {rec.trial_id}, failed with: "
                f"{reason}",
            )

    def _queue_oracle_end_locked(
        self, rec: TrialRecord, completed: bool, hyperparameters_config: dict[str, Any] | None
    ) -> None:
        self._pending_ends.append(
            _PendingEnd(
                trial_id=rec.trial_id,
                completed=completed,
                metrics=dict(rec.metrics),
                best_step=rec.best_step,
                message=rec.error_message,
                hyperparameters_config=hyperparameters_config,
            )
        )
        self._version += 1
        self._cond.notify_all()

    def _apply_pending_ends(self) -> None:
        """Feed queued results to the oracle, in commit order. Never under ``_cond``."""
        while True:
            with self._cond:
                if not self._pending_ends:
                    return
                end = self._pending_ends[0]
            try:
                self.oracle_host.end_trial(
                    end.trial_id,
                    completed=end.completed,
                    metrics=end.metrics,
                    best_step=end.best_step,
                    message=end.message,
                    hyperparameters_config=end.hyperparameters_config,
                )
            except Exception:  # the oracle's bug must not take the search down
                log.exception("the oracle failed to record trial %s", end.trial_id)
            with self._cond:
                self._pending_ends.popleft()

    def apply_pending_ends(self) -> None:
        """Bring the oracle up to date with every recorded result."""
        with self._cond:
            while self._oracle_busy:
                self._cond.wait()
            self._oracle_busy = True
        try:
            self._apply_pending_ends()
        finally:
            with self._cond:
                self._oracle_busy = False
                self._cond.notify_all()

    # ---------------------------------------------------------- lost workers

    def expire_leases(self) -> list[str]:
        """Requeue (or fail) every trial whose lease deadline has passed."""
        requeued = []
        with self._cond:
            for lease in self.leases.expired():
                current = self.leases.get(lease.trial_id)
                if current is None or current.token != lease.token:
                    continue
                rec = self._records[lease.trial_id]
                self._requeue_locked(
                    rec,
                    lease,
                    reason=f"lease expired: worker {lease.worker_id} sent nothing for "
                    f"{self.leases.timeout_s:g} s",
                    count_failure=True,
                )
                requeued.append(lease.trial_id)
            self._maybe_complete_locked()
        return requeued

    def worker_lost(self, worker_id: str, reason: str) -> list[str]:
        """Requeue the trials of a worker known to be dead (Ray's actor-death signal)."""
        with self._cond:
            requeued = self._requeue_leases_locked(
                self.leases.held_by(worker_id),
                reason=f"worker {worker_id} died: {reason}",
                count_failure=True,
            )
            self._draining.discard(worker_id)
            self._last_seen.pop(worker_id, None)
            self._maybe_complete_locked()
        return requeued

    def requeue_leases_except(self, keep_workers: set[str], reason: str) -> list[str]:
        """Requeue every leased trial whose worker is not in ``keep_workers``
        (after a chief restart); not counted as failures."""
        with self._cond:
            orphans = [lease for lease in self.leases.all() if lease.worker_id not in keep_workers]
            return self._requeue_leases_locked(orphans, reason=reason, count_failure=False)

    def preempt_worker(self, worker_id: str, reason: str) -> list[str]:
        """Take a live worker's trials back at once (scale --now); not a failure."""
        with self._cond:
            self._draining.add(worker_id)
            return self._requeue_leases_locked(
                self.leases.held_by(worker_id), reason=reason, count_failure=False
            )

    def drain_worker(self, worker_id: str) -> None:
        """Let the worker finish its trial, then answer STOP."""
        with self._cond:
            self._draining.add(worker_id)
            self._cond.notify_all()

    def forget_worker(self, worker_id: str) -> None:
        with self._cond:
            self._draining.discard(worker_id)
            self._last_seen.pop(worker_id, None)

    # ------------------------------------------------------------ lifecycle

    def stop_dispatch(self, state: SearchState, message: str, *, requeue_running: bool) -> None:
        """Stop handing out trials (cancel, Ctrl-C).

        ``requeue_running``: revoke running attempts now (their late results are
        refused) and put them back in the queue for a resume. Otherwise running
        trials may still finish and be recorded; Report tells them to stop only
        when requeueing.
        """
        with self._cond:
            if self._state.is_terminal:
                return
            if requeue_running:
                self._requeue_leases_locked(
                    self.leases.all(), reason=f"search {state.value}", count_failure=False
                )
                self._finish_locked(state, message)
            else:
                self._state_after_drain = (state, message)
                self._draining_all = True
                self._finish_if_idle_locked()

    def _finish_if_idle_locked(self) -> None:
        if self._draining_all and not self.leases.all() and self._state_after_drain:
            state, message = self._state_after_drain
            self._finish_locked(state, message)

    def _maybe_complete_locked(self) -> None:
        if self._state.is_terminal:
            return
        if self._draining_all:
            self._finish_if_idle_locked()
            return
        if not self._oracle_exhausted and self._max_trials_reached_locked():
            # Known without asking the oracle (which may have no caller left).
            self._oracle_exhausted = True
        if self._oracle_exhausted and not self._queue and not self.leases.all():
            self._finish_locked(SearchState.COMPLETED, "the oracle has no more trials")

    def _max_trials_reached_locked(self) -> bool:
        cap = self.oracle_host.oracle.max_trials
        return bool(cap) and len(self._records) >= cap

    def _finish_locked(self, state: SearchState, message: str) -> None:
        self.ledger.append(EventKind.SEARCH, payload={"state": state.value, "message": message})
        self._state = state
        self._message = message
        self._version += 1
        self._finished.set()
        self._cond.notify_all()
        log.info("search %s: %s", state.value, message)

    def fail_search(self, message: str) -> None:
        """End the search as FAILED (e.g. no worker can run); running leases are requeued."""
        with self._cond:
            if self._state.is_terminal:
                return
            self._requeue_leases_locked(
                self.leases.all(), reason="the search failed", count_failure=False
            )
            self._finish_locked(SearchState.FAILED, message)

    @property
    def dispatch_stopped(self) -> bool:
        """True once no more trials will be handed out (drain-all in progress or terminal)."""
        with self._cond:
            return self._draining_all or self._state.is_terminal

    def wait_finished(self, timeout_s: float | None = None) -> SearchState | None:
        """Block until the search reaches a terminal state; None on timeout."""
        if not self._finished.wait(timeout_s):
            return None
        return self.state

    @property
    def state(self) -> SearchState:
        with self._cond:
            return self._state

    @property
    def message(self) -> str:
        with self._cond:
            return self._message

    # ---------------------------------------------------------------- reads

    def get_trial(self, trial_id: str) -> TrialView:
        with self._cond:
            return self._record_locked(trial_id).view()

    def trials(self) -> list[TrialView]:
        with self._cond:
            return [rec.view() for rec in self._records.values()]

    def current_epochs(self, trial_ids: Iterable[str]) -> dict[str, int | None]:
        """The last reported epoch of each of these trials (O(len(trial_ids)))."""
        with self._cond:
            return {
                tid: rec.current_epoch
                for tid in trial_ids
                if (rec := self._records.get(tid)) is not None
            }

    def best_trials(self, n: int) -> list[TrialView]:
        return rank_trials(self.trials(), self.direction)[: max(n, 0)]

    def summary(self) -> SearchSummary:
        """Counts, state and the best trial: one O(n) pass, copying one record."""
        counts: dict[str, int] = {status.value: 0 for status in TrialStatus}
        sign = 1.0 if self.direction == "max" else -1.0
        best_record: TrialRecord | None = None
        with self._cond:
            for rec in self._records.values():
                counts[rec.status.value] += 1
                if rec.status is not TrialStatus.COMPLETED or rec.score is None:
                    continue
                if best_record is None or sign * rec.score > sign * (best_record.score or 0.0):
                    best_record = rec
            best = best_record.view() if best_record is not None else None
            state, message = self._state, self._message
        return SearchSummary(
            state=state,
            message=message,
            trials_by_status=counts,
            max_trials=self.search.oracle.max_trials,
            objective=self.objective,
            direction=self.direction,
            best=best,
        )

    def worker_last_seen(self) -> dict[str, float]:
        with self._cond:
            return dict(self._last_seen)

    def update_space(self, hyperparameters_config: dict[str, Any]) -> None:
        """Merge hyperparameters a worker found while building; commit if the space grew."""
        grew = self.oracle_host.update_space(hyperparameters_config)
        if grew:
            with self._cond:
                self.ledger.append(
                    EventKind.SPACE, payload={"hyperparameters": self.oracle_host.space_config()}
                )
                self._version += 1
                self._cond.notify_all()


def check_metrics(metrics: Mapping[str, float], *, max_metrics: int = 256) -> None:
    """Reject metric maps a well-behaved worker never sends (INVALID_ARGUMENT)."""
    if len(metrics) > max_metrics:
        raise InvalidRequestError(
            f"metrics: at most {max_metrics} entries are accepted, got {len(metrics)}"
        )
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
            raise InvalidRequestError(
                f"metrics: metric names must be printable strings of 1-200 characters, got {name!r}"
            )
        if not isinstance(value, float | int) or not math.isfinite(value):
            raise InvalidRequestError(
                f"metrics[{name!r}]: expected a finite number, got {value!r}; "
                "drop NaN/inf metrics and end the attempt as INVALID instead"
            )


__all__ = [
    "Assignment",
    "AssignmentKind",
    "EndOutcome",
    "KtClusterError",
    "ReportDecision",
    "SearchSummary",
    "TrialBroker",
    "UnknownTrialError",
    "check_metrics",
]
