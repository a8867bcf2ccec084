"""Trial and search states, and the read-only view of a trial."""

from __future__ import annotations

from dataclasses import dataclass
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
    # COMPLETED because the chief's trial scheduler (ASHA, median) stopped it,
    # with its best epoch so far as its score.
    stopped_early: bool = False

    @property
    def epochs_trained(self) -> int | None:
        """Epochs the last attempt reported (Keras' epoch index + 1), if any."""
        return None if self.current_epoch is None else self.current_epoch + 1

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
            "stopped_early": self.stopped_early,
            "epochs_trained": self.epochs_trained,
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
