"""Rebuild a search's full state from its ledger alone.

Used by ``ktc resume`` (to restart the chief where it stopped) and by the
read-only commands (``ktc results``, ``ktc status`` with no live chief).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.chief.ledger import EventKind, Ledger
from orchestrator.protocol.trials import SearchState, TrialRecord, TrialStatus


@dataclass(frozen=True)
class InFlight:
    """An attempt that had a lease when the ledger stopped."""

    trial_id: str
    attempt: int
    worker_id: str
    token: str


@dataclass
class ReplayedSearch:
    """Everything the ledger says about a search."""

    meta: dict[str, Any]
    records: dict[str, TrialRecord] = field(default_factory=dict)
    start_order: list[str] = field(default_factory=list)
    end_order: list[str] = field(default_factory=list)
    queue: deque[str] = field(default_factory=deque)
    in_flight: list[InFlight] = field(default_factory=list)
    space_config: dict[str, Any] | None = None
    snapshot: dict[str, Any] | None = None
    state: SearchState = SearchState.RUNNING
    message: str = ""
    consecutive_failures: int = 0
    last_seq: int = 0
    events: int = 0


def replay(ledger: Ledger) -> ReplayedSearch:
    """Fold the ledger's events into a :class:`ReplayedSearch`."""
    result = ReplayedSearch(meta=ledger.meta())
    tokens: dict[str, tuple[int, str, str]] = {}  # trial -> (attempt, worker, token)
    records = result.records
    for event in ledger.events():
        result.events += 1
        result.last_seq = event.seq
        payload = event.payload
        tid = event.trial_id
        if event.kind is EventKind.SPACE:
            result.space_config = payload["hyperparameters"]
            continue
        if event.kind is EventKind.SEARCH:
            result.state = SearchState(payload["state"])
            result.message = payload.get("message", "")
            continue
        if tid is None:
            continue
        if event.kind is EventKind.CREATED:
            records[tid] = TrialRecord(
                trial_id=tid,
                trial_state=payload["trial_state"],
                values=payload["values"],
                created_ts=event.ts,
            )
            result.start_order.append(tid)
            result.queue.append(tid)
            continue
        rec = records[tid]
        if event.kind is EventKind.ASSIGNED:
            rec.attempt = event.attempt or rec.attempt + 1
            rec.status = TrialStatus.RUNNING
            rec.worker_id = event.worker_id
            rec.attempt_started_ts = event.ts
            rec.current_epoch = None
            tokens[tid] = (rec.attempt, event.worker_id or "", payload.get("token", ""))
            if tid in result.queue:
                result.queue.remove(tid)
        elif event.kind is EventKind.PROGRESS:
            rec.current_epoch = payload.get("epoch")
            rec.last_metrics = payload.get("metrics", {})
        elif event.kind is EventKind.REQUEUED:
            rec.status = TrialStatus.PENDING
            rec.failures = payload.get("failures", rec.failures)
            rec.error_message = payload.get("reason") or rec.error_message
            tokens.pop(tid, None)
            if payload.get("front", True):
                result.queue.appendleft(tid)
            else:
                result.queue.append(tid)
        elif event.kind in (EventKind.COMPLETED, EventKind.FAILED):
            completed = event.kind is EventKind.COMPLETED
            rec.status = TrialStatus.COMPLETED if completed else TrialStatus.FAILED
            rec.metrics = payload.get("metrics", {})
            rec.score = payload.get("score")
            rec.best_step = payload.get("best_step", 0)
            rec.error_message = payload.get("error_message")
            rec.traceback_tail = payload.get("traceback_tail")
            rec.failures = payload.get("failures", rec.failures)
            rec.ended_ts = event.ts
            rec.duration_s = payload.get("duration_s")
            if payload.get("trial_state"):
                rec.trial_state = payload["trial_state"]
                built = rec.trial_state.get("hyperparameters", {}).get("values", {})
                rec.values = {**rec.values, **built}
            if event.worker_id:
                rec.worker_id = event.worker_id
            tokens.pop(tid, None)
            if tid in result.queue:
                result.queue.remove(tid)
            result.end_order.append(tid)
            result.consecutive_failures = 0 if completed else result.consecutive_failures + 1
    result.in_flight = [
        InFlight(trial_id=tid, attempt=attempt, worker_id=worker, token=token)
        for tid, (attempt, worker, token) in tokens.items()
    ]
    snap = ledger.latest_snapshot()
    result.snapshot = snap[1] if snap else None
    return result
