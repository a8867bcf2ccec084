"""A search's status, live from its chief or offline from its ledger.

A running chief's session builds the
:class:`~orchestrator.protocol.status_document.StatusDocument` from its broker
and fleet and serves it through the Control RPC ``Status``. With no live
chief, :func:`document_from_ledger` builds the same document from the ledger
alone. ``ktc status`` renders either, and ``ktc status --json`` prints its
JSON form (the schema is in ``orchestrator/protocol/status_document.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.config import SearchSpec
from orchestrator.errors import ChiefUnavailableError
from orchestrator.protocol.status_document import (
    BestTrial,
    ChiefProcess,
    LastFailure,
    StatusDocument,
    TrialEntry,
    count_trials,
)
from orchestrator.protocol.trials import SearchState, TrialView
from orchestrator.search_dir import LEDGER_FILE, ChiefInfo, read_chief_info, require_search_dir
from orchestrator.search_meta import SearchMeta


@dataclass(frozen=True)
class OfflineSearch:
    """A search as its ledger tells it, read without a chief."""

    search_dir: Path
    meta: SearchMeta
    state: SearchState  # as the ledger last recorded it
    message: str
    trial_views: tuple[TrialView, ...]  # in creation order
    last_failure: tuple[str, str] | None = None  # the trial that FAILED last, its error
    # Rows of the ledger that do not decode, each named by its seq (they are
    # skipped: the rest is shown; `ktc resume` refuses such a ledger).
    damaged: tuple[str, ...] = ()

    def trials(self) -> list[TrialView]:
        """Every trial, in creation order."""
        return list(self.trial_views)

    @property
    def spec(self) -> SearchSpec:
        """The search spec the search ran with."""
        return self.meta.search

    @property
    def objective(self) -> str:
        """The objective's metric name."""
        return self.spec.objective.name

    @property
    def direction(self) -> str:
        """``max`` or ``min``."""
        return self.spec.objective.resolved_direction


def read_search(search_dir: Path | str) -> OfflineSearch:
    """Replay the ledger of ``search_dir`` read-only (safe while a chief writes to it).

    The one place outside the chief that reads ``replay``'s result.
    """
    path = require_search_dir(Path(search_dir))
    with Ledger(path / LEDGER_FILE, read_only=True) as ledger:
        replayed = replay(ledger)
    return OfflineSearch(
        search_dir=path,
        meta=SearchMeta.parse(replayed.meta, source=path / LEDGER_FILE),
        state=replayed.state,
        message=replayed.message,
        trial_views=tuple(replayed.records[tid].view() for tid in replayed.start_order),
        last_failure=replayed.book.last_failure(),
        damaged=tuple(str(error) for error in replayed.damaged),
    )


def live_chief(search_dir: Path) -> ChiefInfo | None:
    """The chief serving ``search_dir``, when ``chief.json`` names a live process."""
    try:
        info = read_chief_info(search_dir)
    except ChiefUnavailableError:
        return None
    return info if info.running and info.process_alive() else None


def document_from_ledger(search_dir: Path | str) -> StatusDocument:
    """The document of a search from its ledger alone (no workers are known).

    A ledger that says ``running`` with no live chief was interrupted (the
    chief was killed, or the machine went down): that is the state reported.
    Its in-flight trials stay RUNNING in ``trials``; resume re-runs them.
    """
    search = read_search(search_dir)
    chief = live_chief(search.search_dir)
    state = search.state
    message = search.message
    if state is SearchState.RUNNING and chief is None:
        state = SearchState.INTERRUPTED
        message = (
            f"no live chief; the search stopped without finishing (last: {search.message or 'running'}). "
            f"Continue it with `ktc resume {search.search_dir}`"
        )
    if search.damaged:
        message = (
            f"{message}. The ledger is damaged, so this shows only what decodes: "
            + "; ".join(search.damaged)
        )
    trials = search.trials()
    return StatusDocument(
        state=state,
        message=message,
        search_dir=search.search_dir,
        search_id=search.meta.search_id,
        objective=search.objective,
        direction=search.direction,
        max_trials=search.spec.oracle.max_trials,
        counts=count_trials(t.status for t in trials),
        trials=tuple(TrialEntry.of(t) for t in trials),
        best=BestTrial.among(trials, search.direction),
        chief=ChiefProcess(chief.address, chief.pid) if chief else None,
        last_failure=LastFailure.of(search.last_failure),
    )


def status_document(search_dir: Path | str) -> StatusDocument:
    """The live document when a chief answers, else the one from the ledger."""
    path = require_search_dir(Path(search_dir))
    if live_chief(path) is not None:
        from orchestrator.protocol.client import TrialClient

        try:
            # Short reconnect: a chief that is alive but not answering should
            # not hold `ktc status` for the client's default 30 s.
            with TrialClient.from_search_dir(path, reconnect_timeout_s=3.0) as client:
                return StatusDocument.from_json(client.status())
        except ChiefUnavailableError:
            pass
    return document_from_ledger(path)
