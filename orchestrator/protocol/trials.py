"""Trial and search states, and the chief's per-trial record."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class TrialStatus(str, Enum):
    """Where a trial is, from the chief's point of view."""

    PENDING = "PENDING"  # waiting for a worker (new, or requeued)
    RUNNING = "RUNNING"  # leased to a worker
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def is_final(self) -> bool:
        return self in (TrialStatus.COMPLETED, TrialStatus.FAILED)


class AttemptStatus(str, Enum):
    """How a worker says an attempt ended (EndTrial)."""

    COMPLETED = "COMPLETED"
    INVALID = "INVALID"  # raised: retry up to the limit (Keras Tuner's INVALID)
    FAILED = "FAILED"  # FailedTrialError: do not retry
    STOPPED = "STOPPED"  # the chief told it to stop: requeue, not a failure


class SearchState(str, Enum):
    """The search as a whole."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self is not SearchState.RUNNING


@dataclass
class TrialRecord:
    """The chief's mutable record of one trial (guarded by the broker lock)."""

    trial_id: str
    trial_state: dict[str, Any]
    values: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    attempt: int = 0  # attempts started
    failures: int = 0  # attempts that failed (raised or lost their lease)
    worker_id: str | None = None
    current_epoch: int | None = None
    last_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    score: float | None = None
    best_step: int = 0
    error_message: str | None = None
    traceback_tail: str | None = None
    created_ts: float = 0.0
    attempt_started_ts: float | None = None
    ended_ts: float | None = None
    duration_s: float | None = None
    stop_requested: str | None = None  # reason, when the chief wants it stopped
    # token -> the final status that EndTrial recorded with it (idempotency)
    ended_tokens: dict[str, str] = field(default_factory=dict)

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
        )


@dataclass(frozen=True)
class TrialView:
    """A read-only copy of a trial record, safe to hand outside the lock."""

    trial_id: str
    status: TrialStatus
    attempts: int
    score: float | None
    metrics: dict[str, float]
    values: dict[str, Any]
    worker_id: str | None
    duration_s: float | None
    error_message: str | None
    traceback_tail: str | None
    current_epoch: int | None
    best_step: int
    trial_state: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The `ktc results --json` shape."""
        return {
            "trial_id": self.trial_id,
            "status": self.status.value,
            "score": self.score,
            "hyperparameters": self.values,
            "metrics": self.metrics,
            "attempts": self.attempts,
            "worker": self.worker_id,
            "duration_s": self.duration_s,
            "best_step": self.best_step,
            "error": self.error_message,
        }


def rank_trials(trials: list[TrialView], direction: str) -> list[TrialView]:
    """Completed trials best first, then the rest in id order."""
    completed: list[TrialView] = []
    rest: list[TrialView] = []
    for trial in trials:
        scored = trial.status is TrialStatus.COMPLETED and trial.score is not None
        (completed if scored else rest).append(trial)
    completed.sort(key=lambda t: t.score or 0.0, reverse=direction == "max")
    rest.sort(key=lambda t: t.trial_id)
    return completed + rest
