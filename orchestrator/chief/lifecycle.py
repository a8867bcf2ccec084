"""What the fleet, the CLI and the lease reaper tell the broker: lost and
drained workers, expired leases, cancel, interrupt and the end of the search.

A mixin of :class:`~orchestrator.chief.broker.TrialBroker`, kept apart so each
module holds one concept: the broker dispatches and records trials; this is
the search's lifecycle around them. Every trial change still goes through the
trial book's decisions and ``_commit_locked``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from orchestrator.chief.chief_log import TRIAL_LINE
from orchestrator.chief.events import SearchChanged, TrialEvent, TrialFailed, TrialRequeued
from orchestrator.chief.leases import Lease, LeaseTable
from orchestrator.chief.trial_book import TrialBook, TrialRecord
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView

if TYPE_CHECKING:
    from orchestrator.chief.oracle_host import OracleHost

log = logging.getLogger(__name__)


class SearchLifecycle:
    """Losing attempts and ending the search (see the module docstring)."""

    # Provided by TrialBroker.
    _cond: threading.Condition
    book: TrialBook
    leases: LeaseTable
    oracle_host: OracleHost
    _draining: set[str]
    _last_seen: dict[str, float]
    _draining_all: bool
    _state_after_drain: tuple[SearchState, str] | None
    _oracle_exhausted: bool

    _finished: threading.Event

    def _commit_locked(
        self, events: Sequence[TrialEvent], *, snapshot: dict[str, Any] | None = None
    ) -> None:
        raise NotImplementedError  # TrialBroker's

    def _wake_parked_locked(self) -> None:
        raise NotImplementedError  # TrialBroker's

    @staticmethod
    def _log_end(rec: TrialRecord, lease: Lease, events: Sequence[TrialEvent]) -> None:
        for event in events:
            if isinstance(event, TrialFailed):
                # The CLI prints each ended trial as its own line: this record
                # goes to chief.log only (chief_log.TRIAL_LINE).
                log.warning(
                    "trial %s FAILED: %s",
                    rec.trial_id,
                    event.error_message,
                    extra={TRIAL_LINE: True},
                )
            elif isinstance(event, TrialRequeued):
                # A failed attempt is worth a warning; a cancel, interrupt or drain is expected.
                level = logging.WARNING if event.counted else logging.INFO
                log.log(
                    level,
                    "trial %s attempt %d requeued: %s",
                    rec.trial_id,
                    lease.attempt,
                    event.reason,
                )

    def _lose_leases_locked(
        self, leases: Iterable[Lease], *, reason: str | Callable[[Lease], str], count_failure: bool
    ) -> list[str]:
        """Requeue (or fail, at the retry limit) each leased trial; their ids."""
        ids = []
        by_trial = {lease.trial_id: lease for lease in leases}
        for lease in (by_trial[tid] for tid in self.book.latest_first(by_trial)):
            current = self.leases.get(lease.trial_id)
            if current is None or current.token != lease.token:
                continue  # ended meanwhile
            events = self.book.lose_attempt(
                lease.trial_id,
                reason=reason if isinstance(reason, str) else reason(lease),
                count_failure=count_failure,
            )
            self._commit_locked(events)
            self._log_end(self.book.records[lease.trial_id], lease, events)
            ids.append(lease.trial_id)
        return ids

    # ---------------------------------------------------------- lost workers

    def expire_leases(self) -> list[str]:
        """Requeue (or fail) every trial whose lease deadline has passed."""
        with self._cond:
            ids = self._lose_leases_locked(
                self.leases.expired(),
                reason=lambda lease: (
                    f"lease expired: worker {lease.worker_id} sent nothing for "
                    f"{self.leases.timeout_s:g} s"
                ),
                count_failure=True,
            )
            self._maybe_complete_locked()
        return ids

    def worker_lost(self, worker_id: str, reason: str) -> list[str]:
        """Requeue the trials of a worker known to be dead (Ray's actor-death signal)."""
        with self._cond:
            requeued = self._lose_leases_locked(
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
            return self._lose_leases_locked(orphans, reason=reason, count_failure=False)

    def preempt_worker(self, worker_id: str, reason: str) -> list[str]:
        """Take a live worker's trials back at once (scale --now); not a failure."""
        with self._cond:
            self._draining.add(worker_id)
            self._wake_parked_locked()
            return self._lose_leases_locked(
                self.leases.held_by(worker_id), reason=reason, count_failure=False
            )

    def drain_worker(self, worker_id: str) -> None:
        """Let the worker finish its trial, then answer STOP."""
        with self._cond:
            self._draining.add(worker_id)
            self._cond.notify_all()
            self._wake_parked_locked()

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
            if self.book.state.is_terminal:
                return
            if requeue_running:
                self._lose_leases_locked(
                    self.leases.all(), reason=f"search {state.value}", count_failure=False
                )
                self._finish_locked(state, message)
            else:
                self._state_after_drain = (state, message)
                self._draining_all = True
                self._wake_parked_locked()  # they answer STOP
                self._finish_if_idle_locked()

    def _finish_if_idle_locked(self) -> None:
        if self._draining_all and not self.leases.all() and self._state_after_drain:
            state, message = self._state_after_drain
            self._finish_locked(state, message)

    def _maybe_complete_locked(self) -> None:
        if self.book.state.is_terminal:
            return
        if self._draining_all:
            self._finish_if_idle_locked()
            return
        if not self._oracle_exhausted and self._max_trials_reached_locked():
            # Known without asking the oracle (which may have no caller left).
            self._oracle_exhausted = True
        if self._oracle_exhausted and not self.book.queue and not self.leases.all():
            self._finish_locked(*self._outcome_locked())

    def _outcome_locked(self) -> tuple[SearchState, str]:
        """How a search whose trials all ended ends: COMPLETED if any trial
        completed, else FAILED naming the most common error (a search that
        produced nothing must not exit 0)."""
        counts = self.book.counts()
        completed = counts[TrialStatus.COMPLETED.value]
        if completed or not self.book.records:
            return SearchState.COMPLETED, "the oracle has no more trials"
        total = len(self.book.records)
        common = self.book.most_common_error()
        if common is None:
            return SearchState.FAILED, f"0 of {total} trials completed"
        error, n = common
        trials = "trial" if n == 1 else "trials"
        return (
            SearchState.FAILED,
            f"0 of {total} trials completed; the most common error ({n} {trials}): {error}",
        )

    def _max_trials_reached_locked(self) -> bool:
        cap = self.oracle_host.oracle.max_trials
        return bool(cap) and len(self.book.records) >= cap

    def _finish_locked(self, state: SearchState, message: str) -> None:
        self._commit_locked([SearchChanged(state=state, message=message)])

    def fail_search(self, message: str) -> None:
        """End the search as FAILED (e.g. no worker can run); running leases are requeued."""
        with self._cond:
            if self.book.state.is_terminal:
                return
            self._lose_leases_locked(
                self.leases.all(), reason="the search failed", count_failure=False
            )
            self._finish_locked(SearchState.FAILED, message)

    @property
    def dispatch_stopped(self) -> bool:
        """True once no more trials will be handed out (drain-all in progress or terminal)."""
        with self._cond:
            return self._draining_all or self.book.state.is_terminal

    @property
    def trials_to_start(self) -> bool:
        """False once every trial the search will run has been handed out: dispatch
        stopped, or the oracle has no more trials (or ``max_trials`` of them exist)
        and none waits in the queue. A requeued trial makes it True again."""
        with self._cond:
            if self._draining_all or self.book.state.is_terminal:
                return False
            if self.book.queue:
                return True
            return not (self._oracle_exhausted or self._max_trials_reached_locked())

    def wait_finished(self, timeout_s: float | None = None) -> SearchState | None:
        """Block until the search reaches a terminal state; None on timeout."""
        if not self._finished.wait(timeout_s):
            return None
        return self.state

    @property
    def state(self) -> SearchState:
        with self._cond:
            return self.book.state

    @property
    def message(self) -> str:
        with self._cond:
            return self.book.message

    def ended_since(self, position: int) -> tuple[list[TrialView], int]:
        """The trials that ended (COMPLETED or FAILED) after the first
        ``position`` ends, in the order they ended, and the new position.
        O(new ends) under the lock: ``--no-progress`` asks every second."""
        with self._cond:
            order = self.book.end_order
            return self.book.views(order[position:]), len(order)

    def last_failure(self) -> tuple[str, str] | None:
        """The trial that FAILED last and its error (the live display shows it)."""
        with self._cond:
            return self.book.last_failure()
