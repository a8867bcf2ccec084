"""Read-only views of the trial book, for GetTrial, GetBestTrials, GetSearchState
and the status document.

A mixin of :class:`~orchestrator.chief.broker.TrialBroker`. Each read holds
the broker lock only while it copies what it returns; nothing here changes
state or asks the oracle.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.chief.trial_book import TrialBook, TrialRecord
from orchestrator.protocol.answers import SearchSummary
from orchestrator.protocol.trials import TrialView, rank_trials

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec


class BookReads:
    """Copies out of the book (see the module docstring)."""

    # Provided by TrialBroker.
    _cond: threading.Condition
    book: TrialBook
    search: SearchSpec
    objective: str
    direction: str
    _last_seen: dict[str, float]

    def _record_locked(self, trial_id: str) -> TrialRecord:
        raise NotImplementedError  # TrialBroker's

    def get_trial(self, trial_id: str) -> TrialView:
        with self._cond:
            return self._record_locked(trial_id).view()

    def trials(self) -> list[TrialView]:
        with self._cond:
            return self.book.views()

    def current_epochs(self, trial_ids: Iterable[str]) -> dict[str, int | None]:
        """The last reported epoch of each of these trials (O(len(trial_ids)))."""
        with self._cond:
            records = self.book.records
            return {tid: rec.current_epoch for tid in trial_ids if (rec := records.get(tid))}

    def best_trials(self, n: int) -> list[TrialView]:
        return rank_trials(self.trials(), self.direction)[: max(n, 0)]

    def summary(self) -> SearchSummary:
        """Counts, state and the best trial: one O(n) pass, copying one record."""
        with self._cond:
            counts = self.book.counts()
            best_record = self.book.best(self.direction)
            best = best_record.view() if best_record is not None else None
            state, message = self.book.state, self.book.message
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
