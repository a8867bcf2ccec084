"""Rebuild a search's state from its ledger: a fold of :meth:`TrialBook.apply`.

Used by ``ktc resume`` (to restart the chief where it stopped) and by the
read-only commands (``ktc results``, ``ktc status`` with no live chief).

``strict`` (resume): the first row that does not decode, or cannot follow
the rows before it, raises :class:`LedgerError` naming its seq. Otherwise
(the read-only commands) such rows are skipped and listed in
:attr:`ReplayedSearch.damaged`, so what decodes can still be shown.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from orchestrator.chief.events import decoder_for
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.trial_book import InFlight, RetryPolicy, TrialBook, TrialRecord
from orchestrator.errors import LedgerError
from orchestrator.protocol.trials import SearchState

# Reads do not need the search's real retry policy: it only shapes decisions,
# never how an event applies. The chief passes the real one.
_READ_ONLY_POLICY = RetryPolicy(retries_per_trial=0, max_consecutive_failures=1)


@dataclass
class ReplayedSearch:
    """Everything the ledger says about a search."""

    meta: dict[str, Any]
    book: TrialBook
    snapshot: dict[str, Any] | None = None
    last_seq: int = 0
    events: int = 0
    damaged: list[LedgerError] = field(default_factory=list)

    @property
    def records(self) -> dict[str, TrialRecord]:
        return self.book.records

    @property
    def start_order(self) -> list[str]:
        return self.book.start_order

    @property
    def end_order(self) -> list[str]:
        return self.book.end_order

    @property
    def queue(self) -> deque[str]:
        return self.book.queue

    @property
    def in_flight(self) -> list[InFlight]:
        return self.book.in_flight()

    @property
    def space_config(self) -> dict[str, Any] | None:
        return self.book.space_config

    @property
    def state(self) -> SearchState:
        return self.book.state

    @property
    def message(self) -> str:
        return self.book.message

    @property
    def consecutive_failures(self) -> int:
        return self.book.consecutive_failures


def replay(
    ledger: Ledger, *, policy: RetryPolicy | None = None, strict: bool = False
) -> ReplayedSearch:
    """Fold the ledger's events into a :class:`TrialBook`."""
    meta = ledger.meta()
    decode = decoder_for(ledger.schema_version(), source=str(ledger.path))
    result = ReplayedSearch(meta=meta, book=TrialBook(policy or _READ_ONLY_POLICY))
    for row in ledger.rows():
        result.events += 1
        result.last_seq = row.seq
        try:
            event = decode(row)  # its LedgerError names the seq
            try:
                result.book.apply(event, row.ts)
            except LedgerError as exc:
                raise LedgerError(
                    f"ledger event seq {row.seq} ({row.kind!r}, trial {row.trial_id!r}): {exc}"
                ) from None
        except LedgerError as error:
            if strict:
                raise
            result.damaged.append(error)
    snap = ledger.latest_snapshot()
    result.snapshot = snap[1] if snap else None
    return result
