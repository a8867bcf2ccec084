"""The trial book: every trial's record, the queue, the retry policy and the
summary, changed only by :meth:`TrialBook.apply`.

The book is pure: no locks, no clock, no I/O. It answers two kinds of call:

- **Decisions** (``assign``, ``end_attempt``, ``lose_attempt``, ...) read the
  records and return the events that a request or a fault leads to, changing
  nothing. The retry policy lives here: whether a lost attempt is requeued or
  fails for good, and whether a final failure ends the search.
- :meth:`TrialBook.apply` is the only code that changes a trial record.

The live chief decides, appends the events to the ledger, then applies them
(``TrialBroker._commit``); replay folds the same ``apply`` over the ledger.
Live state and recovered state therefore cannot diverge: a property test
(tests/unit/test_trial_book_property.py) checks them field by field.
"""

from __future__ import annotations

import json
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from orchestrator.chief.events import (
    SearchChanged,
    SpaceChanged,
    TrialAssigned,
    TrialCompleted,
    TrialCreated,
    TrialEvent,
    TrialFailed,
    TrialProgress,
    TrialRequeued,
)
from orchestrator.errors import LedgerError
from orchestrator.protocol.failures import error_signature
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec


# The same error (error_signature) ending this many trials with different
# hyperparameters cannot depend on them: the search fails with it.
SAME_ERROR_LIMIT = 3


@dataclass(frozen=True)
class RetryPolicy:
    """How often a trial may fail before it is FAILED, and when failures end
    the search: ``max_consecutive_failures`` in a row, or the same error
    (:func:`~orchestrator.protocol.failures.error_signature`) on
    ``same_error_limit`` different hyperparameter sets.

    Whether an attempt may be retried at all is the worker's call: it ends a
    deterministic error ``FAILED`` (workers/failures.py), and the book never
    retries those."""

    retries_per_trial: int
    max_consecutive_failures: int
    same_error_limit: int = SAME_ERROR_LIMIT

    @classmethod
    def from_search(cls, search: SearchSpec) -> RetryPolicy:
        """The search file's ``failure`` section."""
        return cls(
            retries_per_trial=search.failure.retries_per_trial,
            max_consecutive_failures=search.failure.max_consecutive_failed_trials,
        )


def hp_key(values: Mapping[str, Any]) -> str:
    """A trial's hyperparameter set, as a comparable string (Keras Tuner's own
    ``tuner/...`` bookkeeping left out: a Hyperband continuation is the same set)."""
    return json.dumps(
        {k: v for k, v in values.items() if not str(k).startswith("tuner/")},
        sort_keys=True,
        default=str,
    )


@dataclass
class TrialRecord:
    """The chief's record of one trial. Changed only by :meth:`TrialBook.apply`.

    ``trial_state`` dicts are never mutated once stored (a completion swaps in
    a new dict); Keras Tuner only ever sees copies (orchestrator.protocol.kt_state).
    """

    trial_id: str
    trial_state: dict[str, Any]
    values: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    attempt: int = 0  # attempts started
    failures: int = 0  # attempts that counted as failed (raised, or lost their lease)
    worker_id: str | None = None
    token: str | None = None  # the current attempt's lease token while RUNNING
    current_epoch: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    best_step: int = 0
    stopped_early: bool = False  # the trial scheduler stopped it (COMPLETED with its best so far)
    error_message: str | None = None
    traceback_tail: str | None = None
    created_ts: float = 0.0
    attempt_started_ts: float | None = None
    ended_ts: float | None = None
    duration_s: float | None = None
    # token -> the status its EndTrial left the trial in (EndTrial is idempotent per token)
    ended_tokens: dict[str, TrialStatus] = field(default_factory=dict)

    def view(self) -> TrialView:
        return TrialView(
            trial_id=self.trial_id,
            status=self.status,
            attempts=self.attempt,
            score=self.score,
            metrics=dict(self.metrics),
            values=dict(self.values),
            worker_id=self.worker_id,
            duration_s=self.duration_s,
            error_message=self.error_message,
            traceback_tail=self.traceback_tail,
            current_epoch=self.current_epoch,
            best_step=self.best_step,
            trial_state=self.trial_state,
            stopped_early=self.stopped_early,
        )


@dataclass(frozen=True)
class InFlight:
    """An attempt that holds a lease in the book (RUNNING)."""

    trial_id: str
    attempt: int
    worker_id: str
    token: str


class TrialBook:
    """Records, queue, retry policy and summary of one search."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.records: dict[str, TrialRecord] = {}
        self.queue: deque[str] = deque()
        self.start_order: list[str] = []
        self._start_index: dict[str, int] = {}
        self.end_order: list[str] = []
        self.consecutive_failures = 0
        # error_signature -> the hyperparameter sets (hp_key) of the FAILED
        # trials that ended with it.
        self.failed_by_error: dict[str, set[str]] = {}
        self.last_failed: str | None = None  # the trial that FAILED last
        self.space_config: dict[str, Any] | None = None
        self.state = SearchState.RUNNING
        self.message = ""

    # ------------------------------------------------------------------ apply

    def apply(self, event: TrialEvent, ts: float) -> None:
        """Change the book by one committed event (``ts``: its commit time).

        Raises :class:`LedgerError` for an event that cannot follow the ones
        before it (a trial that was never created, a second creation).
        """
        if isinstance(event, SpaceChanged):
            self.space_config = event.hyperparameters
            return
        if isinstance(event, SearchChanged):
            self.state = event.state
            self.message = event.message
            return
        if isinstance(event, TrialCreated):
            if event.trial_id in self.records:
                raise LedgerError(f"trial {event.trial_id} is created twice")
            self.records[event.trial_id] = TrialRecord(
                trial_id=event.trial_id,
                trial_state=event.trial_state,
                values=dict(event.values),
                created_ts=ts,
            )
            self._start_index[event.trial_id] = len(self.start_order)
            self.start_order.append(event.trial_id)
            self.queue.append(event.trial_id)
            return
        rec = self.records.get(event.trial_id)
        if rec is None:
            raise LedgerError(
                f"a {event.kind.value} event names trial {event.trial_id}, which was never created"
            )
        self._check_follows(rec, event)
        if isinstance(event, TrialAssigned):
            self._discard_queued(rec.trial_id)
            rec.attempt = event.attempt
            rec.status = TrialStatus.RUNNING
            rec.worker_id = event.worker_id
            rec.token = event.token
            rec.attempt_started_ts = ts
            rec.current_epoch = None
        elif isinstance(event, TrialProgress):
            rec.current_epoch = event.epoch
            rec.last_metrics = dict(event.metrics)
        elif isinstance(event, TrialRequeued):
            rec.status = TrialStatus.PENDING
            rec.failures = event.failures
            if event.counted:
                # A failed attempt's reason is worth keeping; a cancel's is not an error.
                rec.error_message = event.reason
                rec.traceback_tail = event.traceback_tail or rec.traceback_tail
            rec.token = None
            rec.current_epoch = None
            self._discard_queued(rec.trial_id)
            if event.front:
                self.queue.appendleft(rec.trial_id)
            else:
                self.queue.append(rec.trial_id)
            if event.end_token:
                rec.ended_tokens[event.end_token] = TrialStatus.PENDING
        elif isinstance(event, TrialCompleted):
            self._end(rec, event, ts, TrialStatus.COMPLETED)
            rec.metrics = dict(event.metrics)
            rec.score = event.score
            rec.best_step = event.best_step
            rec.duration_s = event.duration_s
            rec.stopped_early = event.stopped_early
            rec.error_message = None
            rec.traceback_tail = None
            self.consecutive_failures = 0
        elif isinstance(event, TrialFailed):
            self._end(rec, event, ts, TrialStatus.FAILED)
            rec.error_message = event.error_message
            rec.traceback_tail = event.traceback_tail
            self.consecutive_failures += 1
            self.failed_by_error.setdefault(error_signature(event.error_message), set()).add(
                hp_key(rec.values)
            )
            self.last_failed = rec.trial_id

    @staticmethod
    def _check_follows(rec: TrialRecord, event: TrialEvent) -> None:
        """An attempt event must fit the record: assign a PENDING trial; report
        or end the RUNNING attempt it names."""
        if isinstance(event, TrialAssigned):
            ok = rec.status is TrialStatus.PENDING and event.attempt == rec.attempt + 1
            expected = f"PENDING with attempt {rec.attempt}"
        else:
            attempt = getattr(event, "attempt", None)
            ok = rec.status is TrialStatus.RUNNING and attempt == rec.attempt
            expected = f"RUNNING attempt {attempt}"
        if not ok:
            raise LedgerError(
                f"a {event.kind.value} event for trial {rec.trial_id} (attempt "
                f"{getattr(event, 'attempt', None)}) cannot follow its state: expected "
                f"{expected}, the trial is {rec.status.value} at attempt {rec.attempt}"
            )

    def _end(
        self, rec: TrialRecord, event: TrialCompleted | TrialFailed, ts: float, status: TrialStatus
    ) -> None:
        self._discard_queued(rec.trial_id)
        rec.status = status
        rec.failures = event.failures
        rec.worker_id = event.worker_id
        rec.token = None
        rec.ended_ts = ts
        if event.hyperparameters is not None:
            # Values the build registered (e.g. inside a conditional scope) join
            # the ones the oracle chose: the trial really ran with them.
            rec.trial_state = {**rec.trial_state, "hyperparameters": event.hyperparameters}
            rec.values = {**rec.values, **event.hyperparameters.get("values", {})}
        if event.end_token:
            rec.ended_tokens[event.end_token] = status
        self.end_order.append(rec.trial_id)

    def _discard_queued(self, trial_id: str) -> None:
        # The queue holds each trial at most once; a trial is at its front when
        # dispatched, so this is O(1) on the live path.
        if self.queue and self.queue[0] == trial_id:
            self.queue.popleft()
        elif trial_id in self.queue:
            self.queue.remove(trial_id)

    # -------------------------------------------------------------- decisions

    def assign(self, trial_id: str, worker_id: str, token: str) -> TrialAssigned:
        """The next attempt of a PENDING trial (or the first of one created in the
        same commit), leased to ``worker_id``."""
        rec = self.records.get(trial_id)
        attempt = rec.attempt + 1 if rec is not None else 1
        return TrialAssigned(trial_id=trial_id, attempt=attempt, worker_id=worker_id, token=token)

    def progress(self, trial_id: str, epoch: int, metrics: Mapping[str, float]) -> TrialProgress:
        rec = self.records[trial_id]
        return TrialProgress(
            trial_id=trial_id,
            attempt=rec.attempt,
            worker_id=rec.worker_id or "",
            epoch=epoch,
            metrics=dict(metrics),
        )

    def complete(
        self,
        trial_id: str,
        *,
        metrics: Mapping[str, float],
        score: float,
        best_step: int,
        duration_s: float | None,
        hyperparameters: dict[str, Any] | None,
        end_token: str,
        stopped_early: bool = False,
    ) -> list[TrialEvent]:
        """The running attempt of ``trial_id`` completed (``stopped_early``: the
        trial scheduler stopped it)."""
        rec = self.records[trial_id]
        return [
            TrialCompleted(
                trial_id=trial_id,
                attempt=rec.attempt,
                worker_id=rec.worker_id or "",
                metrics=dict(metrics),
                score=score,
                best_step=best_step,
                duration_s=duration_s,
                failures=rec.failures,
                hyperparameters=hyperparameters,
                end_token=end_token,
                stopped_early=stopped_early,
            )
        ]

    def lose_attempt(
        self,
        trial_id: str,
        *,
        reason: str,
        count_failure: bool,
        retryable: bool = True,
        traceback_tail: str = "",
        hyperparameters: dict[str, Any] | None = None,
        end_token: str | None = None,
    ) -> list[TrialEvent]:
        """The running attempt ended without a result.

        The trial is requeued (same hyperparameters, next attempt), or, when
        the failure counts and is not retryable or the retry limit is reached,
        FAILED; a FAILED that makes ``max_consecutive_failures`` in a row also
        ends the search.
        """
        rec = self.records[trial_id]
        failures = rec.failures + (1 if count_failure else 0)
        limit_reached = count_failure and failures > self.policy.retries_per_trial
        if count_failure and (not retryable or limit_reached):
            message = reason
            if retryable:
                message = (
                    f"{reason} (attempt {rec.attempt}; retry limit "
                    f"{self.policy.retries_per_trial} reached)"
                )
            return self._fail(rec, message, traceback_tail, failures, hyperparameters, end_token)
        return [
            TrialRequeued(
                trial_id=trial_id,
                attempt=rec.attempt,
                worker_id=rec.worker_id or "",
                reason=reason,
                failures=failures,
                counted=count_failure,
                traceback_tail=traceback_tail or None,
                end_token=end_token,
            )
        ]

    def _fail(
        self,
        rec: TrialRecord,
        message: str,
        traceback_tail: str,
        failures: int,
        hyperparameters: dict[str, Any] | None,
        end_token: str | None,
    ) -> list[TrialEvent]:
        events: list[TrialEvent] = [
            TrialFailed(
                trial_id=rec.trial_id,
                attempt=rec.attempt,
                worker_id=rec.worker_id or "",
                error_message=message,
                traceback_tail=traceback_tail or rec.traceback_tail,
                failures=failures,
                hyperparameters=hyperparameters,
                end_token=end_token,
            )
        ]
        if self.state.is_terminal:
            return events
        values = {**rec.values, **(hyperparameters or {}).get("values", {})}
        same = self.failed_by_error.get(error_signature(message), set()) | {hp_key(values)}
        in_a_row = self.consecutive_failures + 1
        limit = self.policy.max_consecutive_failures
        # The older rule keeps its message when both hold (it names the error too).
        if in_a_row >= limit:
            events.append(
                SearchChanged(
                    state=SearchState.FAILED,
                    message=f"{in_a_row} consecutive trials failed (limit {limit}); the last, "
                    f"trial {rec.trial_id}, failed with: {message}",
                )
            )
        elif len(same) >= self.policy.same_error_limit:
            events.append(
                SearchChanged(
                    state=SearchState.FAILED,
                    message=f"{message} (the same error ended {len(same)} trials with "
                    "different hyperparameters, so it does not depend on them; the last was "
                    f"trial {rec.trial_id})",
                )
            )
        return events

    def last_failure(self) -> tuple[str, str] | None:
        """The trial that FAILED last and its error, O(1)."""
        if self.last_failed is None:
            return None
        rec = self.records[self.last_failed]
        return rec.trial_id, rec.error_message or ""

    def most_common_error(self) -> tuple[str, int] | None:
        """The error (as first recorded) that FAILED the most trials, and how many; one O(n) pass."""
        counts: Counter[str] = Counter()
        first: dict[str, str] = {}
        for tid in self.start_order:
            rec = self.records[tid]
            if rec.status is TrialStatus.FAILED and rec.error_message:
                signature = error_signature(rec.error_message)
                counts[signature] += 1
                first.setdefault(signature, rec.error_message)
        if not counts:
            return None
        signature, n = counts.most_common(1)[0]
        return first[signature], n

    # ------------------------------------------------------------------ reads

    def latest_first(self, trial_ids: Iterable[str]) -> list[str]:
        """``trial_ids`` from the last created to the first: requeue them in this
        order (each to the queue's front) and they run again in creation order."""
        return sorted(trial_ids, key=self._start_index.__getitem__, reverse=True)

    def in_flight(self) -> list[InFlight]:
        """Every RUNNING attempt, in start order."""
        return [
            InFlight(rec.trial_id, rec.attempt, rec.worker_id or "", rec.token or "")
            for tid in self.start_order
            if (rec := self.records[tid]).status is TrialStatus.RUNNING
        ]

    def counts(self) -> dict[str, int]:
        """Trials per status."""
        counts = {status.value: 0 for status in TrialStatus}
        for rec in self.records.values():
            counts[rec.status.value] += 1
        return counts

    def best(self, direction: str) -> TrialRecord | None:
        """The completed trial with the best score: one O(n) pass."""
        sign = 1.0 if direction == "max" else -1.0
        best: TrialRecord | None = None
        for rec in self.records.values():
            if rec.status is not TrialStatus.COMPLETED or rec.score is None:
                continue
            if best is None or sign * rec.score > sign * (best.score or 0.0):
                best = rec
        return best

    def views(self, trial_ids: Iterable[str] | None = None) -> list[TrialView]:
        ids = self.start_order if trial_ids is None else trial_ids
        return [self.records[tid].view() for tid in ids]

    def finished(self) -> int:
        return sum(1 for rec in self.records.values() if rec.status.is_final)
