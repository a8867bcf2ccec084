"""Trial schedulers: stop bad trials early, at the chief, from their epoch reports.

The search file's ``scheduler:`` section picks one (docs/config-reference.md):

- **ASHA** (asynchronous successive halving, Li et al., 2020): rungs after
  ``grace_epochs * reduction_factor**k`` epochs trained, for every ``k`` that
  keeps the rung below ``max_epochs``. A trial that reaches a rung continues
  only if fewer than ``ceil(n / reduction_factor)`` of the ``n`` scores
  recorded at that rung (its own included) are strictly better than its own:
  it is in the top ``1/reduction_factor`` of what the rung has seen so far. The
  first trial at a rung always continues, and nothing waits for a rung to fill
  (asynchronous). Ties continue.
- **Median stopping**: from ``grace_epochs`` epochs trained on, a trial whose
  best score so far is strictly worse than the median of the other trials'
  best scores so far *at the same epoch* stops. Only trials that reported that
  epoch count, and the rule waits until at least ``min_trials`` other trials
  did (an even count takes the mean of the two middle scores).

"Better" and "worse" follow the objective's direction. No scheduler stops a
trial at its last epoch (nothing would be saved).

**Epochs.** Reports carry Keras' 0-based epoch: the report of epoch ``e`` comes
after ``e + 1`` epochs trained. A rung "at r epochs" is therefore decided on
the report of epoch ``r - 1``, and ``grace_epochs: g`` first judges the report
of epoch ``g - 1``.

**Purity.** A scheduler is a fold over the ledger's progress events: the live
broker calls :meth:`TrialScheduler.apply` on each progress event it has
committed (under its lock, after the append), and ``ktc resume`` calls
:meth:`TrialScheduler.rebuild` with the ledger's progress events in commit
order, which runs the same ``apply``. So the rung state and the set of trials
stopped so far are the same after a restart. No I/O, no clock, no lock.

**Attempts.** A requeued trial runs again from epoch 0 (a new attempt). Its
running best restarts, a stop of an earlier attempt no longer applies, and at
each rung or epoch it reaches again its new score replaces its old one (one
entry per trial).

**Cost.** Each rung (or epoch) keeps its scores in a sorted Python list: a
decision is a binary search (O(log n) comparisons) plus one ``list.insert``,
whose memmove of n pointers is a few microseconds at 10,000 trials
(``tests/unit/test_schedulers.py`` measures the whole decision at 10,000).
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from orchestrator.chief.events import TrialProgress

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec


@dataclass(frozen=True)
class Decision:
    """A scheduler's answer to one epoch report."""

    stop: bool
    reason: str = ""
    # Set on the report that stopped the trial (not on a repeated STOP):
    # max_epochs minus the epochs it trained.
    epochs_saved: int | None = None


CONTINUE = Decision(stop=False)


class _SortedScores:
    """One score per trial, kept sorted (keys: higher is better)."""

    def __init__(self) -> None:
        self.keys: list[float] = []
        self.by_trial: dict[str, float] = {}

    def discard(self, trial_id: str) -> None:
        old = self.by_trial.pop(trial_id, None)
        if old is not None:
            del self.keys[bisect_left(self.keys, old)]

    def add(self, trial_id: str, key: float) -> None:
        self.by_trial[trial_id] = key
        insort(self.keys, key)

    def better_than(self, key: float) -> int:
        """How many scores are strictly better than ``key``."""
        return len(self.keys) - bisect_right(self.keys, key)

    def median(self) -> float:
        n = len(self.keys)
        mid = n // 2
        if n % 2:
            return self.keys[mid]
        return (self.keys[mid - 1] + self.keys[mid]) / 2.0

    def __len__(self) -> int:
        return len(self.keys)


class TrialScheduler:
    """The shared bookkeeping: the objective, attempts, stops. Subclasses judge.

    ``direction`` is the objective's (``max`` or ``min``); scores are kept as
    keys where higher is better (the score, or its negation for ``min``).
    """

    def __init__(self, *, objective: str, direction: Literal["max", "min"], max_epochs: int):
        self.objective = objective
        self.direction = direction
        self.max_epochs = max_epochs
        self._sign = 1.0 if direction == "max" else -1.0
        self._attempt: dict[str, int] = {}
        self._best_key: dict[str, float] = {}  # the current attempt's best so far
        self._stopped: dict[str, tuple[int, int]] = {}  # trial -> (attempt, epoch)

    # ------------------------------------------------------------- the fold

    def apply(self, event: TrialProgress) -> Decision:
        """Record a committed epoch report and decide whether its trial goes on."""
        trial_id, attempt, epoch = event.trial_id, event.attempt, event.epoch
        if self._attempt.get(trial_id) != attempt:
            self._attempt[trial_id] = attempt
            self._best_key.pop(trial_id, None)
            self._stopped.pop(trial_id, None)
        stopped = self._stopped.get(trial_id)
        if stopped is not None:
            return Decision(stop=True, reason=self._stop_reason(stopped[1]))
        score = event.metrics.get(self.objective)
        if score is None:
            return CONTINUE  # nothing to judge this epoch on
        key = self._sign * float(score)
        best = max(key, self._best_key.get(trial_id, -math.inf))
        self._best_key[trial_id] = best
        stop = self._judge(trial_id, epoch, key, best)
        if not stop or epoch + 1 >= self.max_epochs:
            return CONTINUE
        self._stopped[trial_id] = (attempt, epoch)
        return Decision(
            stop=True,
            reason=self._stop_reason(epoch),
            epochs_saved=self.max_epochs - (epoch + 1),
        )

    def rebuild(self, events: Iterable[TrialProgress]) -> None:
        """Fold the ledger's progress events, in commit order (``ktc resume``)."""
        for event in events:
            self.apply(event)

    def stopped(self, trial_id: str, attempt: int) -> bool:
        """Whether this scheduler stopped that attempt of the trial."""
        stopped = self._stopped.get(trial_id)
        return stopped is not None and stopped[0] == attempt

    def state(self) -> dict[str, object]:
        """Everything the scheduler knows, comparable (tests: rebuilt == live)."""
        return {
            "attempt": dict(self._attempt),
            "best": dict(self._best_key),
            "stopped": dict(self._stopped),
        }

    # ------------------------------------------------------------ subclasses

    def _judge(self, trial_id: str, epoch: int, key: float, best_key: float) -> bool:
        raise NotImplementedError

    def _stop_reason(self, epoch: int) -> str:
        raise NotImplementedError


class AshaScheduler(TrialScheduler):
    """Asynchronous successive halving (see the module docstring for the rule)."""

    def __init__(
        self,
        *,
        objective: str,
        direction: Literal["max", "min"],
        grace_epochs: int,
        reduction_factor: int,
        max_epochs: int,
    ) -> None:
        if grace_epochs < 1 or reduction_factor < 2:
            raise ValueError(
                f"`grace_epochs >= 1` and `reduction_factor >= 2` must hold, but got "
                f"({grace_epochs=}, {reduction_factor=})"
            )
        super().__init__(objective=objective, direction=direction, max_epochs=max_epochs)
        self.grace_epochs = grace_epochs
        self.reduction_factor = reduction_factor
        self.rungs: list[int] = []  # epochs trained at each rung
        rung = grace_epochs
        while rung < max_epochs:
            self.rungs.append(rung)
            rung *= reduction_factor
        # Keyed by the report's 0-based epoch (rung - 1).
        self._scores: dict[int, _SortedScores] = {r - 1: _SortedScores() for r in self.rungs}

    def _judge(self, trial_id: str, epoch: int, key: float, best_key: float) -> bool:
        rung = self._scores.get(epoch)
        if rung is None:
            return False
        rung.discard(trial_id)  # an earlier attempt's score at this rung
        better = rung.better_than(key)
        keep = math.ceil((len(rung) + 1) / self.reduction_factor)
        rung.add(trial_id, key)
        return better >= keep

    def _stop_reason(self, epoch: int) -> str:
        return (
            f"stopped early by ASHA at the rung of {epoch + 1} epoch(s): not in the top "
            f"1/{self.reduction_factor} of the trials there"
        )

    def state(self) -> dict[str, object]:
        return {
            **super().state(),
            "rungs": {e: dict(s.by_trial) for e, s in self._scores.items()},
        }


class MedianStoppingScheduler(TrialScheduler):
    """Median stopping (see the module docstring for the rule)."""

    def __init__(
        self,
        *,
        objective: str,
        direction: Literal["max", "min"],
        grace_epochs: int,
        min_trials: int,
        max_epochs: int,
    ) -> None:
        if grace_epochs < 1 or min_trials < 1:
            raise ValueError(
                f"`grace_epochs >= 1` and `min_trials >= 1` must hold, but got "
                f"({grace_epochs=}, {min_trials=})"
            )
        super().__init__(objective=objective, direction=direction, max_epochs=max_epochs)
        self.grace_epochs = grace_epochs
        self.min_trials = min_trials
        self._at_epoch: dict[int, _SortedScores] = {}

    def _judge(self, trial_id: str, epoch: int, key: float, best_key: float) -> bool:
        others = self._at_epoch.setdefault(epoch, _SortedScores())
        others.discard(trial_id)  # an earlier attempt's entry
        stop = (
            epoch + 1 >= self.grace_epochs
            and len(others) >= self.min_trials
            and best_key < others.median()
        )
        others.add(trial_id, best_key)
        return stop

    def _stop_reason(self, epoch: int) -> str:
        return (
            f"stopped early by median stopping after {epoch + 1} epoch(s): its best score so far "
            "is worse than the median of the other trials at that epoch"
        )

    def state(self) -> dict[str, object]:
        return {
            **super().state(),
            "epochs": {e: dict(s.by_trial) for e, s in self._at_epoch.items()},
        }


def build_scheduler(search: SearchSpec) -> TrialScheduler | None:
    """The search file's ``scheduler:``, or None when it has none."""
    spec = search.scheduler
    if spec is None:
        return None
    objective = search.objective.name
    direction = search.objective.resolved_direction
    max_epochs = spec.max_epochs or search.training.epochs
    if spec.type == "asha":
        return AshaScheduler(
            objective=objective,
            direction=direction,
            grace_epochs=spec.grace_epochs,
            reduction_factor=spec.reduction_factor,
            max_epochs=max_epochs,
        )
    return MedianStoppingScheduler(
        objective=objective,
        direction=direction,
        grace_epochs=spec.grace_epochs,
        min_trials=spec.min_trials,
        max_epochs=search.training.epochs,
    )


__all__ = [
    "CONTINUE",
    "AshaScheduler",
    "Decision",
    "MedianStoppingScheduler",
    "TrialScheduler",
    "build_scheduler",
]
