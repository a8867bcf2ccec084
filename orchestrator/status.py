"""The status document: one JSON schema for a live search and a stopped one.

A running chief builds it from its broker and fleet and serves it through the
Control RPC ``Status``; with no live chief, :func:`document_from_ledger` builds
the same document from the ledger alone. ``ktc status`` renders either, and
``ktc status --json`` prints it.

Schema (``schema_version`` 1; keys are only ever added)::

    {
      "schema_version": 1,
      "state": "running" | "completed" | "failed" | "cancelled" | "interrupted",
      "message": str,
      "search_dir": str, "search_id": str,
      "objective": str, "direction": "max" | "min", "max_trials": int | null,
      "counts": {"PENDING": n, "RUNNING": n, "COMPLETED": n, "FAILED": n},
      "trials": [{"trial_id", "status", "attempts", "score", "worker", "epoch", "error"}],
      "workers": [{"worker_id", "node", "gpus", "state", "trial_id", "epoch",
                   "pending_reason", "pid", "incarnation", "trials_run"}],
      "best": null | {"trial_id", "score", "hyperparameters"},
      "chief": null | {"address", "pid"}
    }
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import ReplayedSearch, replay
from orchestrator.config import SearchSpec
from orchestrator.errors import ChiefUnavailableError, KtClusterError, LedgerError
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView, rank_trials
from orchestrator.search_dir import LEDGER_FILE, ChiefInfo, read_chief_info, require_search_dir

if TYPE_CHECKING:
    from orchestrator.chief.broker import TrialBroker

STATUS_SCHEMA_VERSION = 1


class WorkerState(str, Enum):
    """What a worker slot is doing, as ``ktc status`` shows it."""

    RUNNING = "running"  # training a trial
    IDLE = "idle"  # alive, waiting for a trial
    PENDING = "pending"  # its actor cannot be placed yet (see pending_reason)
    DRAINING = "draining"  # finishing its trial, then it stops (scale-down)
    STARTING = "starting"  # placed, the process is coming up
    STOPPED = "stopped"  # removed by a scale-down or the end of the search
    DEAD = "dead"  # its process or node died; the fleet replaces it if the slot remains


@dataclass(frozen=True)
class WorkerStatus:
    """One worker slot of the fleet, for the status document.

    ``state`` accepts a :class:`WorkerState` or its string value; an unknown
    string raises :class:`KtClusterError`.
    """

    worker_id: str
    node: str
    gpus: list[int]
    state: WorkerState | str
    trial_id: str | None = None
    epoch: int | None = None
    pending_reason: str | None = None
    pid: int | None = None
    incarnation: int = 0
    trials_run: int = 0
    cuda_visible_devices: str | None = None  # as the worker process sees it
    ray_node_id: str | None = None

    def __post_init__(self) -> None:
        try:
            state = WorkerState(self.state)
        except ValueError:
            allowed = ", ".join(s.value for s in WorkerState)
            raise KtClusterError(
                f"worker {self.worker_id}: state must be one of {allowed}, got {self.state!r}"
            ) from None
        object.__setattr__(self, "state", state)
        object.__setattr__(self, "gpus", list(self.gpus))

    def to_json(self) -> dict[str, Any]:
        """The worker's entry in the status document."""
        state = self.state.value if isinstance(self.state, WorkerState) else str(self.state)
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "gpus": list(self.gpus),
            "state": state,
            "trial_id": self.trial_id,
            "epoch": self.epoch,
            "pending_reason": self.pending_reason,
            "pid": self.pid,
            "incarnation": self.incarnation,
            "trials_run": self.trials_run,
            "cuda_visible_devices": self.cuda_visible_devices,
            "ray_node_id": self.ray_node_id,
        }


def build_status_document(
    *,
    search_dir: Path | str,
    search_id: str,
    state: str,
    message: str,
    trials: list[TrialView],
    objective: str,
    direction: str,
    max_trials: int | None,
    workers: list[WorkerStatus],
    chief: dict[str, Any] | None,
    totals: tuple[dict[str, int], TrialView | None] | None = None,
) -> dict[str, Any]:
    """The status document (see the module docstring for its schema).

    ``totals`` (counts by status, best trial) stand in for ``trials`` when the
    caller leaves the trial list out (the live progress display).
    """
    top: TrialView | None
    if totals is not None:
        counts = {status.value: 0 for status in TrialStatus} | dict(totals[0])
        top = totals[1]
    else:
        counts = {status.value: 0 for status in TrialStatus}
        for trial in trials:
            counts[trial.status.value] += 1
        ranked = rank_trials(trials, direction)
        top = ranked[0] if ranked and ranked[0].status is TrialStatus.COMPLETED else None
    best = None
    if top is not None:
        best = {"trial_id": top.trial_id, "score": top.score, "hyperparameters": dict(top.values)}
    return {
        "schema_version": STATUS_SCHEMA_VERSION,
        "state": SearchState(state).value,
        "message": message,
        "search_dir": str(search_dir),
        "search_id": search_id,
        "objective": objective,
        "direction": direction,
        "max_trials": max_trials,
        "counts": counts,
        "trials": [_trial_entry(t) for t in trials],
        "workers": [w.to_json() for w in workers],
        "best": best,
        "chief": dict(chief) if chief is not None else None,
    }


def _trial_entry(trial: TrialView) -> dict[str, Any]:
    return {
        "trial_id": trial.trial_id,
        "status": trial.status.value,
        "attempts": trial.attempts,
        "score": trial.score,
        "worker": trial.worker_id,
        # Only a running attempt has a current epoch worth showing.
        "epoch": trial.current_epoch if trial.status is TrialStatus.RUNNING else None,
        "error": trial.error_message,
    }


def document_from_broker(
    broker: TrialBroker,
    *,
    search_dir: Path | str,
    search_id: str,
    workers: list[WorkerStatus],
    chief: dict[str, Any] | None,
) -> dict[str, Any]:
    """The live document, from a running chief's broker and its fleet's workers."""
    summary = broker.summary()
    return build_status_document(
        search_dir=search_dir,
        search_id=search_id,
        state=summary.state.value,
        message=summary.message,
        trials=broker.trials(),
        objective=summary.objective,
        direction=summary.direction,
        max_trials=summary.max_trials,
        workers=workers,
        chief=chief,
    )


@dataclass(frozen=True)
class OfflineSearch:
    """A search as its ledger tells it, read without a chief."""

    search_dir: Path
    spec: SearchSpec
    replayed: ReplayedSearch

    def trials(self) -> list[TrialView]:
        """Every trial, in creation order."""
        return [self.replayed.records[tid].view() for tid in self.replayed.start_order]

    @property
    def objective(self) -> str:
        """The objective's metric name."""
        return self.spec.objective.name

    @property
    def direction(self) -> str:
        """``max`` or ``min``."""
        return self.spec.objective.resolved_direction


def read_search(search_dir: Path | str) -> OfflineSearch:
    """Replay the ledger of ``search_dir`` read-only (safe while a chief writes to it)."""
    path = require_search_dir(Path(search_dir))
    with Ledger(path / LEDGER_FILE, read_only=True) as ledger:
        replayed = replay(ledger)
    spec = stored_search_spec(replayed.meta, source=path / LEDGER_FILE)
    return OfflineSearch(search_dir=path, spec=spec, replayed=replayed)


# Oracle keys that belong to one oracle type (orchestrator.config.search._TYPE_KEYS).
_TYPE_ONLY_ORACLE_KEYS: dict[str, tuple[str, ...]] = {
    "hyperband": ("max_epochs", "factor", "hyperband_iterations"),
    "bayesian": ("num_initial_points", "alpha", "beta"),
}


def stored_search_spec(meta: dict[str, Any], *, source: Path | str = LEDGER_FILE) -> SearchSpec:
    """The SearchSpec stored in the ledger meta (``search_spec``).

    A spec dumped with every default (``model_dump()``) does not validate
    again: OracleSpec refuses another type's keys once they are *set*, and a
    full dump sets them all. Those keys (and hyperband's ``max_trials``) carry
    only defaults for other oracle types, so they are dropped before
    validating.
    """
    try:
        data = dict(meta["search_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerError(
            f"{source}: no search spec in the ledger meta ({exc}); expected a directory "
            "made by `ktc submit`"
        ) from exc
    oracle = dict(data.get("oracle") or {})
    kind = oracle.get("type", "random")
    for owner, keys in _TYPE_ONLY_ORACLE_KEYS.items():
        if owner != kind:
            for key in keys:
                oracle.pop(key, None)
    if kind == "hyperband":
        oracle.pop("max_trials", None)
    if oracle:
        data["oracle"] = oracle
    try:
        return SearchSpec.model_validate(data)
    except ValueError as exc:
        raise LedgerError(
            f"{source}: the stored search spec is unreadable ({exc}); "
            "was this directory written by another ktcluster version?"
        ) from exc


def live_chief(search_dir: Path) -> ChiefInfo | None:
    """The chief serving ``search_dir``, when ``chief.json`` names a live process."""
    try:
        info = read_chief_info(search_dir)
    except ChiefUnavailableError:
        return None
    return info if info.running and info.process_alive() else None


def document_from_ledger(search_dir: Path | str) -> dict[str, Any]:
    """The document of a search from its ledger alone (no workers are known).

    A ledger that says ``running`` with no live chief was interrupted (the
    chief was killed, or the machine went down): that is the state reported.
    Its in-flight trials stay RUNNING in ``trials``; resume re-runs them.
    """
    search = read_search(search_dir)
    replayed = search.replayed
    chief = live_chief(search.search_dir)
    state = replayed.state
    message = replayed.message
    if state is SearchState.RUNNING and chief is None:
        state = SearchState.INTERRUPTED
        message = (
            f"no live chief; the search stopped without finishing (last: {replayed.message or 'running'}). "
            f"Continue it with `ktc resume {search.search_dir}`"
        )
    return build_status_document(
        search_dir=search.search_dir,
        search_id=str(replayed.meta.get("search_id", "")),
        state=state.value,
        message=message,
        trials=search.trials(),
        objective=search.objective,
        direction=search.direction,
        max_trials=search.spec.oracle.max_trials,
        workers=[],
        chief={"address": chief.address, "pid": chief.pid} if chief else None,
    )


def status_document(search_dir: Path | str) -> dict[str, Any]:
    """The live document when a chief answers, else the one from the ledger."""
    path = require_search_dir(Path(search_dir))
    if live_chief(path) is not None:
        from orchestrator.protocol.client import TrialClient

        try:
            # Short reconnect: a chief that is alive but not answering should
            # not hold `ktc status` for the client's default 30 s.
            with TrialClient.from_search_dir(path, reconnect_timeout_s=3.0) as client:
                return client.status()
        except ChiefUnavailableError:
            pass
    return document_from_ledger(path)


def is_terminal(document: dict[str, Any]) -> bool:
    """Whether the document's search state is final (not ``running``)."""
    return SearchState(document["state"]).is_terminal
