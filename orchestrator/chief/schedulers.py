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

**Cost.** Each rung (or epoch) splits its scores in two heaps at the rank its
rule asks about (ASHA's top ``1/reduction_factor``, the median): a decision
moves the split by at most two entries and reads a heap's top, O(log n)
amortized in the trials n at that rung. A sorted list did the same with a
binary search and a ``list.insert`` whose memmove is linear in n: 1.6x the
100-trial cost at 10,000 trials and 30x at 1,000,000
(``python -m bench.scheduler_cost``; ``tests/unit/test_schedulers.py`` checks
the decisions against a brute-force reference and the growth).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
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


class _RankedScores:
    """One score per trial, split in two heaps at a movable rank (keys: higher is better).

    ``upper`` (a min-heap) holds the ``k`` best entries and ``lower`` (a max-heap,
    keys negated) the rest, so the k-th best score is ``upper``'s top. Entries
    are ``(key, seq)``: the unique ``seq`` makes equal keys a total order, so
    ``max(lower) <= min(upper)`` always holds, and lets a removed trial's entry
    be deleted lazily (it is dropped when it reaches a top). Moving the split
    by one costs one pop and one push, and a decision moves it at most twice,
    so every operation is O(log n) amortized (a sorted list's insert was a
    memmove of n pointers: linear, visible past 10,000 trials).
    """

    def __init__(self) -> None:
        self.by_trial: dict[str, float] = {}  # what state() compares
        self._entry: dict[str, tuple[float, int]] = {}
        self._upper: list[tuple[float, int]] = []  # (key, seq), min-heap
        self._lower: list[tuple[float, int]] = []  # (-key, -seq), max-heap by negation
        self._in_upper: dict[int, bool] = {}  # live seq -> which heap
        self._upper_live = 0
        self._dead = 0  # removed entries still in a heap
        self._seq = 0

    def __len__(self) -> int:
        return len(self.by_trial)

    def discard(self, trial_id: str) -> None:
        entry = self._entry.pop(trial_id, None)
        if entry is None:
            return
        del self.by_trial[trial_id]
        if self._in_upper.pop(entry[1]):
            self._upper_live -= 1
        self._dead += 1
        if self._dead > 64 and self._dead > len(self.by_trial):
            self._compact()

    def add(self, trial_id: str, key: float) -> None:
        self.discard(trial_id)
        self._seq += 1
        entry = (key, self._seq)
        self.by_trial[trial_id] = key
        self._entry[trial_id] = entry
        top = self._upper_top()
        if top is not None and entry > top:
            heappush(self._upper, entry)
            self._in_upper[entry[1]] = True
            self._upper_live += 1
        else:
            heappush(self._lower, (-key, -entry[1]))
            self._in_upper[entry[1]] = False

    def kth_best(self, k: int) -> float:
        """The k-th best score (1-based, counting equal scores each), for 1 <= k <= len."""
        if not 1 <= k <= len(self.by_trial):
            raise IndexError(f"`1 <= k <= len` must hold, but got ({k=}, len={len(self)})")
        self._split_at(k)
        top = self._upper_top()
        assert top is not None  # k >= 1 entries are in upper now
        return top[0]

    def median(self) -> float:
        n = len(self.by_trial)
        best_half = self.kth_best((n + 1) // 2)
        if n % 2:
            return best_half
        below = self._lower_top()  # the (n/2 + 1)-th best: n >= 2 here
        assert below is not None
        return (below[0] + best_half) / 2.0

    # ------------------------------------------------------------- the heaps

    def _split_at(self, k: int) -> None:
        """Move entries between the heaps until ``upper`` holds exactly the k best."""
        while self._upper_live > k:
            key, seq = self._pop_live(self._upper, negated=False)
            heappush(self._lower, (-key, -seq))
            self._in_upper[seq] = False
            self._upper_live -= 1
        while self._upper_live < k:
            key, seq = self._pop_live(self._lower, negated=True)
            heappush(self._upper, (key, seq))
            self._in_upper[seq] = True
            self._upper_live += 1

    def _pop_live(self, heap: list[tuple[float, int]], *, negated: bool) -> tuple[float, int]:
        while True:
            key, seq = heappop(heap)
            if negated:
                key, seq = -key, -seq
            if seq in self._in_upper:
                return key, seq
            self._dead -= 1

    def _clean_top(
        self, heap: list[tuple[float, int]], *, negated: bool
    ) -> tuple[float, int] | None:
        while heap:
            key, seq = heap[0]
            if negated:
                key, seq = -key, -seq
            if seq in self._in_upper:
                return key, seq
            heappop(heap)
            self._dead -= 1
        return None

    def _upper_top(self) -> tuple[float, int] | None:
        return self._clean_top(self._upper, negated=False)

    def _lower_top(self) -> tuple[float, int] | None:
        return self._clean_top(self._lower, negated=True)

    def _compact(self) -> None:
        """Drop removed entries (once they outnumber the live ones: O(1) amortized)."""
        self._upper = [e for e in self._upper if e[1] in self._in_upper]
        self._lower = [e for e in self._lower if -e[1] in self._in_upper]
        heapify(self._upper)
        heapify(self._lower)
        self._dead = 0


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
        self._scores: dict[int, _RankedScores] = {r - 1: _RankedScores() for r in self.rungs}

    def _judge(self, trial_id: str, epoch: int, key: float, best_key: float) -> bool:
        rung = self._scores.get(epoch)
        if rung is None:
            return False
        rung.discard(trial_id)  # an earlier attempt's score at this rung
        keep = math.ceil((len(rung) + 1) / self.reduction_factor)
        # "At least `keep` scores strictly better than its own" is "below the
        # keep-th best score" (ties continue); with fewer than `keep` scores
        # there, nothing can be.
        stop = keep <= len(rung) and key < rung.kth_best(keep)
        rung.add(trial_id, key)
        return stop

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
        self._at_epoch: dict[int, _RankedScores] = {}

    def _judge(self, trial_id: str, epoch: int, key: float, best_key: float) -> bool:
        others = self._at_epoch.setdefault(epoch, _RankedScores())
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
    spec, max_epochs = search.scheduler, search.scheduler_max_epochs
    if spec is None or max_epochs is None:
        return None
    objective = search.objective.name
    direction = search.objective.resolved_direction
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
        max_epochs=max_epochs,  # training.epochs: max_epochs is an asha key
    )


__all__ = [
    "CONTINUE",
    "AshaScheduler",
    "Decision",
    "MedianStoppingScheduler",
    "TrialScheduler",
    "build_scheduler",
]
