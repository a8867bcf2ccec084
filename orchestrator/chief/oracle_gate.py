"""The oracle gate: one thread at a time asks the oracle, never under the
broker's lock, and the oracle sees every result in commit order.

EndTrial commits its result and queues the oracle's update here
(:meth:`OracleGate.queue_end`); whoever next holds the gate (the next
CreateTrial, GetSpace, UpdateSpace, or the chief at shutdown) feeds the queue
to the oracle first. A Bayesian GP fit inside ``create_trial`` can take
seconds; Report and EndTrial never wait for it.

The gate shares the broker's condition variable: ``busy`` is read and
written under it, and releasing the gate wakes a parked long-poll that may now
ask the oracle (``on_release``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from orchestrator.chief.events import SpaceChanged, TrialCompleted, TrialEvent, TrialFailed

if TYPE_CHECKING:
    from orchestrator.chief.oracle_host import OracleHost
    from orchestrator.chief.trial_book import TrialRecord

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class PendingEnd:
    """A committed result the oracle has not seen yet."""

    trial_id: str
    completed: bool
    metrics: dict[str, float]
    best_step: int
    message: str | None
    hyperparameters_config: dict[str, Any] | None


class OracleGate:
    """Serialises oracle calls and feeds it committed results in order."""

    def __init__(
        self,
        cond: threading.Condition,
        host: OracleHost,
        commit_locked: Callable[[Sequence[TrialEvent]], None],
        *,
        on_release: Callable[[], None] | None = None,
    ) -> None:
        self._cond = cond
        self._on_release = on_release  # called under the condition (wakes a parked long-poll)
        self.host = host
        self._commit_locked = commit_locked
        self.busy = False  # guarded by cond
        self._pending: deque[PendingEnd] = deque()

    def queue_end(self, rec: TrialRecord, event: TrialCompleted | TrialFailed) -> None:
        """Queue a committed end for the oracle (caller holds the condition)."""
        self._pending.append(
            PendingEnd(
                trial_id=rec.trial_id,
                completed=isinstance(event, TrialCompleted),
                metrics=dict(rec.metrics),
                best_step=rec.best_step,
                message=rec.error_message,
                hyperparameters_config=event.hyperparameters,
            )
        )

    def acquire_locked(self) -> None:
        """Take the gate, waiting for the holder (caller holds the condition)."""
        while self.busy:
            self._cond.wait()
        self.busy = True

    def release(self) -> None:
        with self._cond:
            self.busy = False
            self._cond.notify_all()
            if self._on_release is not None:
                self._on_release()

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` holding the gate (not the condition)."""
        with self._cond:
            self.acquire_locked()
        try:
            return fn()
        finally:
            self.release()

    def apply_pending_ends(self) -> None:
        """Feed queued results to the oracle, in commit order. Call holding the
        gate, never the condition.

        Keras Tuner's ``end_trial`` merges the trial's hyperparameters into the
        space; when that grows the space, the new space is committed too, so
        GetSpace and a resume see what the last trials registered.
        """
        while True:
            with self._cond:
                if not self._pending:
                    return
                end = self._pending[0]
            size_before = self.host.space_size()
            try:
                self.host.end_trial(
                    end.trial_id,
                    completed=end.completed,
                    metrics=end.metrics,
                    best_step=end.best_step,
                    message=end.message,
                    hyperparameters_config=end.hyperparameters_config,
                )
            except Exception:  # the oracle's bug must not take the search down
                log.exception("the oracle failed to record trial %s", end.trial_id)
            space = self.host.space_config() if self.host.space_size() != size_before else None
            with self._cond:
                self._pending.popleft()
                if space is not None:
                    self._commit_locked([SpaceChanged(hyperparameters=space)])
