"""The status document: what ``ktc status`` shows, typed from source to screen.

One schema for a live search and a stopped one. The fleet publishes each
worker slot as a :class:`WorkerStatus`; the search session adds the trial each
worker holds and builds a :class:`StatusDocument`, which travels as JSON over
the Control RPC ``Status``; ``ktc status`` parses it back with
:meth:`StatusDocument.from_json` and renders it. With no live chief,
``orchestrator.status`` builds the same document from the ledger.

It lives in ``protocol`` because it is the payload of a protocol RPC, and
because both its producer (the session, in ``fleet``) and its readers (status,
the CLI) must be able to import it without an import running back up.

JSON (``schema_version`` 1; keys are only ever added, so readers ignore keys
they do not know)::

    {
      "schema_version": 1,
      "state": "running" | "completed" | "failed" | "cancelled" | "interrupted",
      "message": str,
      "search_dir": str, "search_id": str,
      "objective": str, "direction": "max" | "min", "max_trials": int | null,
      "counts": {"PENDING": n, "RUNNING": n, "COMPLETED": n, "FAILED": n},
      "trials": [{"trial_id", "status", "attempts", "score", "worker", "epoch", "error",
                  "stopped_early"}],
      "workers": [{"worker_id", "node", "gpus", "state", "trial_id", "epoch",
                   "pending_reason", "pid", "incarnation", "trials_run",
                   "cuda_visible_devices", "ray_node_id",
                   "spare": null | "warming" | "warm"}],
      "best": null | {"trial_id", "score", "hyperparameters"},
      "chief": null | {"address", "pid"},
      "last_failure": null | {"trial_id", "error"},
      "workers_wanted": null | int
    }

``workers_wanted`` is how many workers a live fleet is asked for (0 after
``ktc scale DIR --workers 0``: paused); null without a live fleet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from orchestrator.errors import KtClusterError
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView, rank_trials

STATUS_SCHEMA_VERSION = 1

_E = TypeVar("_E", bound=Enum)


class WorkerState(str, Enum):
    """What a worker slot is doing: the fleet's own state of the slot, and the
    state ``ktc status`` shows (the same value, never converted).

    The fleet records an alive worker as IDLE; :meth:`WorkerStatus.holding`
    makes it RUNNING while the chief's leases say it holds a trial.
    """

    RUNNING = "running"  # alive, training a trial
    IDLE = "idle"  # alive, waiting for a trial
    PENDING = "pending"  # its actor cannot be placed yet (see pending_reason)
    DRAINING = "draining"  # finishing its trial, then it stops (scale-down)
    STARTING = "starting"  # actor created, its process is coming up
    STOPPED = "stopped"  # no process: retired, finished, or about to be restarted
    DEAD = "dead"  # crash-looping: not restarted (see pending_reason)


@dataclass(frozen=True)
class WorkerStatus:
    """One worker slot: published by the fleet, shown by ``ktc status``."""

    worker_id: str
    node: str
    gpus: tuple[int, ...]
    state: WorkerState
    trial_id: str | None = None
    epoch: int | None = None
    pending_reason: str | None = None
    pid: int | None = None
    incarnation: int = 0
    trials_run: int = 0
    cuda_visible_devices: str | None = None  # as the worker process sees it
    ray_node_id: str | None = None
    # The slot's next process, started during this one's last trial before it
    # is recycled: "warming" (importing TensorFlow), "warm", or None.
    spare: str | None = None

    def holding(self, trial_id: str | None, epoch: int | None) -> WorkerStatus:
        """This row with the trial its worker holds now, by the chief's leases.

        The one place where running and idle are told apart: an alive worker
        is RUNNING while it holds a trial and IDLE otherwise; every other
        state (a draining worker finishing its trial, say) stands.
        """
        state = self.state
        if state in (WorkerState.IDLE, WorkerState.RUNNING):
            state = WorkerState.RUNNING if trial_id is not None else WorkerState.IDLE
        return replace(self, state=state, trial_id=trial_id, epoch=epoch)

    def to_json(self) -> dict[str, Any]:
        """The worker's entry in the status document."""
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "gpus": list(self.gpus),
            "state": self.state.value,
            "trial_id": self.trial_id,
            "epoch": self.epoch,
            "pending_reason": self.pending_reason,
            "pid": self.pid,
            "incarnation": self.incarnation,
            "trials_run": self.trials_run,
            "cuda_visible_devices": self.cuda_visible_devices,
            "ray_node_id": self.ray_node_id,
            "spare": self.spare,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WorkerStatus:
        """Parse an entry of the document's ``workers``; KtClusterError when malformed."""
        worker_id = str(_required(data, "worker_id", "a worker"))
        where = f"worker {worker_id}"
        return cls(
            worker_id=worker_id,
            node=str(_required(data, "node", where)),
            gpus=tuple(int(g) for g in data.get("gpus") or ()),
            state=_enum(WorkerState, _required(data, "state", where), f"{where}: state"),
            trial_id=data.get("trial_id"),
            epoch=data.get("epoch"),
            pending_reason=data.get("pending_reason"),
            pid=data.get("pid"),
            incarnation=int(data.get("incarnation", 0)),
            trials_run=int(data.get("trials_run", 0)),
            cuda_visible_devices=data.get("cuda_visible_devices"),
            ray_node_id=data.get("ray_node_id"),
            spare=_spare(data.get("spare"), where),
        )


def _spare(value: Any, where: str) -> str | None:
    if value is None or value in ("warming", "warm"):
        return value  # type: ignore[no-any-return]
    raise KtClusterError(f"{where}: spare: expected null, 'warming' or 'warm', got {value!r}")


@dataclass(frozen=True)
class TrialEntry:
    """One trial, as the status document lists it."""

    trial_id: str
    status: TrialStatus
    attempts: int
    score: float | None
    worker: str | None
    epoch: int | None  # only a running attempt has a current epoch worth showing
    error: str | None
    stopped_early: bool = False  # COMPLETED: the trial scheduler stopped it

    @classmethod
    def of(cls, trial: TrialView) -> TrialEntry:
        """The entry of a trial."""
        running = trial.status is TrialStatus.RUNNING
        return cls(
            trial_id=trial.trial_id,
            status=trial.status,
            attempts=trial.attempts,
            score=trial.score,
            worker=trial.worker_id,
            epoch=trial.current_epoch if running else None,
            error=trial.error_message,
            stopped_early=trial.stopped_early,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "status": self.status.value,
            "attempts": self.attempts,
            "score": self.score,
            "worker": self.worker,
            "epoch": self.epoch,
            "error": self.error,
            "stopped_early": self.stopped_early,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialEntry:
        trial_id = str(_required(data, "trial_id", "a trial"))
        where = f"trial {trial_id}"
        return cls(
            trial_id=trial_id,
            status=_enum(TrialStatus, _required(data, "status", where), f"{where}: status"),
            attempts=int(data.get("attempts", 0)),
            score=data.get("score"),
            worker=data.get("worker"),
            epoch=data.get("epoch"),
            error=data.get("error"),
            stopped_early=_flag(data.get("stopped_early", False), f"{where}: stopped_early"),
        )


def _flag(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    raise KtClusterError(f"{where}: expected true or false, got {value!r}")


@dataclass(frozen=True)
class BestTrial:
    """The best completed trial so far."""

    trial_id: str
    score: float | None
    hyperparameters: Mapping[str, Any]

    @classmethod
    def of(cls, trial: TrialView | None) -> BestTrial | None:
        """The entry of ``trial`` (None stays None)."""
        if trial is None:
            return None
        return cls(trial.trial_id, trial.score, dict(trial.values))

    @classmethod
    def among(cls, trials: Sequence[TrialView], direction: str) -> BestTrial | None:
        """The best completed trial of ``trials`` by ``direction`` (``max``/``min``)."""
        ranked = rank_trials(list(trials), direction)
        top = ranked[0] if ranked and ranked[0].status is TrialStatus.COMPLETED else None
        return cls.of(top)

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "score": self.score,
            "hyperparameters": dict(self.hyperparameters),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BestTrial:
        return cls(
            trial_id=str(_required(data, "trial_id", "best")),
            score=data.get("score"),
            hyperparameters=dict(data.get("hyperparameters") or {}),
        )


@dataclass(frozen=True)
class LastFailure:
    """The trial that FAILED last, and its error in one line (``Type: message``)."""

    trial_id: str
    error: str

    @classmethod
    def of(cls, failure: tuple[str, str] | None) -> LastFailure | None:
        """From the trial book's ``last_failure()`` (None stays None)."""
        return None if failure is None else cls(*failure)

    def to_json(self) -> dict[str, Any]:
        return {"trial_id": self.trial_id, "error": self.error}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LastFailure:
        return cls(
            trial_id=str(_required(data, "trial_id", "last_failure")),
            error=str(data.get("error") or ""),
        )


@dataclass(frozen=True)
class ChiefProcess:
    """The live chief serving the search."""

    address: str  # host:port
    pid: int

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "pid": self.pid}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ChiefProcess:
        return cls(
            address=str(_required(data, "address", "chief")),
            pid=int(_required(data, "pid", "chief")),
        )


def count_trials(statuses: Iterable[TrialStatus]) -> dict[TrialStatus, int]:
    """Trials by status, every status present (0 when none)."""
    counts = dict.fromkeys(TrialStatus, 0)
    for status in statuses:
        counts[status] += 1
    return counts


@dataclass(frozen=True)
class StatusDocument:
    """A search's state, trials, workers and best trial (see the module docstring).

    ``trials`` may be empty while ``counts`` and ``best`` are not: the live
    progress display leaves the trial list out (copying every trial holds the
    broker's lock for O(n)).
    """

    state: SearchState
    message: str
    search_dir: Path
    search_id: str
    objective: str
    direction: str  # "max" | "min"
    max_trials: int | None
    counts: Mapping[TrialStatus, int]
    trials: tuple[TrialEntry, ...] = ()
    workers: tuple[WorkerStatus, ...] = ()
    best: BestTrial | None = None
    chief: ChiefProcess | None = None
    last_failure: LastFailure | None = None
    workers_wanted: int | None = None  # a live fleet's target; 0: paused by `ktc scale`
    schema_version: int = STATUS_SCHEMA_VERSION

    @property
    def is_terminal(self) -> bool:
        """Whether the search state is final (not ``running``)."""
        return self.state.is_terminal

    def to_json(self) -> dict[str, Any]:
        """The JSON form: what the Control RPC carries and ``ktc status --json`` prints."""
        return {
            "schema_version": self.schema_version,
            "state": self.state.value,
            "message": self.message,
            "search_dir": str(self.search_dir),
            "search_id": self.search_id,
            "objective": self.objective,
            "direction": self.direction,
            "max_trials": self.max_trials,
            "counts": {status.value: self.counts.get(status, 0) for status in TrialStatus},
            "trials": [t.to_json() for t in self.trials],
            "workers": [w.to_json() for w in self.workers],
            "best": self.best.to_json() if self.best is not None else None,
            "chief": self.chief.to_json() if self.chief is not None else None,
            "last_failure": self.last_failure.to_json() if self.last_failure else None,
            "workers_wanted": self.workers_wanted,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StatusDocument:
        """Parse the JSON form; KtClusterError naming the bad key when malformed.

        Unknown keys are ignored: a newer chief may add some.
        """
        try:
            return cls._parse(data)
        except (TypeError, ValueError, AttributeError) as exc:
            raise KtClusterError(
                f"status document: malformed ({type(exc).__name__}: {exc}); is the chief "
                "another ktcluster version?"
            ) from exc

    @classmethod
    def _parse(cls, data: Mapping[str, Any]) -> StatusDocument:
        counts_data = data.get("counts") or {}
        counts = dict.fromkeys(TrialStatus, 0)
        for name, count in counts_data.items():
            counts[_enum(TrialStatus, name, "status document: counts")] = int(count)
        best = data.get("best")
        chief = data.get("chief")
        last_failure = data.get("last_failure")
        max_trials = data.get("max_trials")
        workers_wanted = data.get("workers_wanted")
        return cls(
            state=_enum(SearchState, _required(data, "state", "status document"), "state"),
            message=str(data.get("message", "")),
            search_dir=Path(str(_required(data, "search_dir", "status document"))),
            search_id=str(data.get("search_id", "")),
            objective=str(_required(data, "objective", "status document")),
            direction=str(_required(data, "direction", "status document")),
            max_trials=None if max_trials is None else int(max_trials),
            counts=counts,
            trials=tuple(TrialEntry.from_json(t) for t in data.get("trials") or ()),
            workers=tuple(WorkerStatus.from_json(w) for w in data.get("workers") or ()),
            best=BestTrial.from_json(best) if best else None,
            chief=ChiefProcess.from_json(chief) if chief else None,
            last_failure=LastFailure.from_json(last_failure) if last_failure else None,
            workers_wanted=None if workers_wanted is None else int(workers_wanted),
            schema_version=int(data.get("schema_version", STATUS_SCHEMA_VERSION)),
        )


def _required(data: Mapping[str, Any], key: str, where: str) -> Any:
    try:
        return data[key]
    except KeyError:
        raise KtClusterError(
            f"{where}: the status document has no {key!r} (keys: {sorted(data)}); "
            "is the chief another ktcluster version?"
        ) from None


def _enum(kind: type[_E], value: Any, where: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(str(member.value) for member in kind)
        raise KtClusterError(f"{where} must be one of {allowed}, got {value!r}") from None
