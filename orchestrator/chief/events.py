"""The typed events of a search: every trial transition, as the ledger stores it.

One frozen type per kind. Each encodes itself into the ledger's row (the
columns ``trial_id``, ``attempt`` and ``worker_id`` plus a JSON payload) and
decodes from one, so the ledger appends and reads only these types. A row
that does not decode is a :class:`~orchestrator.errors.LedgerError` naming its
seq, never an ``AttributeError`` three calls later.

The live chief and replay apply the same events through
:meth:`orchestrator.chief.trial_book.TrialBook.apply`, so an event carries
every value that ``apply`` needs: resulting failure counts, the resolved
error text, and the token of the EndTrial call that ended an attempt (so
idempotency survives a restart).

Schema versions:
- 2 (this module): the types below.
- 1 (ledgers written before typed events): decoded by :class:`V1Decoder`,
  which maps the old payloads onto these types.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, ClassVar, TypeAlias

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from orchestrator.errors import LedgerError
from orchestrator.protocol.kt_state import hp_config_shape_problem
from orchestrator.protocol.trials import SearchState

SCHEMA_VERSION = 2
SUPPORTED_SCHEMA_VERSIONS = (1, 2)


class EventKind(str, Enum):
    """What a ledger row records."""

    CREATED = "created"  # the oracle produced a trial (its Keras Tuner state)
    ASSIGNED = "assigned"  # a worker leased an attempt
    PROGRESS = "progress"  # an epoch report
    REQUEUED = "requeued"  # an attempt ended without a result; the trial waits again
    COMPLETED = "completed"  # final: metrics, score
    FAILED = "failed"  # final: retries exhausted or not retryable
    SPACE = "space"  # the hyperparameter space grew
    SEARCH = "search"  # the search changed state


def _check_hp_config(value: dict[str, Any]) -> dict[str, Any]:
    # The structure replay and the oracle rely on. Keras Tuner itself parsed
    # every config before it was committed (orchestrator.protocol.kt_state);
    # decoding stays TensorFlow-free, so it checks the shape only.
    problem = hp_config_shape_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _check_trial_state(value: dict[str, Any]) -> dict[str, Any]:
    hyperparameters = value.get("hyperparameters")
    if not isinstance(hyperparameters, dict):
        raise ValueError(
            "expected Keras Tuner's Trial.get_state() with a 'hyperparameters' object, got "
            f"{type(hyperparameters).__name__}"
        )
    _check_hp_config(hyperparameters)
    return value


def _check_finite(value: dict[str, float]) -> dict[str, float]:
    for name, number in value.items():
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r} is {number!r}; only finite numbers are stored")
    return value


HpConfig: TypeAlias = Annotated[dict[str, Any], AfterValidator(_check_hp_config)]
TrialState: TypeAlias = Annotated[dict[str, Any], AfterValidator(_check_trial_state)]
Metrics: TypeAlias = Annotated[dict[str, float], AfterValidator(_check_finite)]
Id: TypeAlias = Annotated[str, Field(min_length=1)]

# The row columns; everything else is the JSON payload.
_COLUMNS = frozenset({"trial_id", "attempt", "worker_id"})


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ClassVar[EventKind]

    def encode(self) -> tuple[str | None, int | None, str | None, str]:
        """(trial_id, attempt, worker_id, payload JSON) for the ledger row."""
        data = self.model_dump(mode="json")
        columns = (
            data.pop("trial_id", None),
            data.pop("attempt", None),
            data.pop("worker_id", None),
        )
        return (*columns, json.dumps(data, allow_nan=False))


class _AttemptEvent(_Event):
    trial_id: Id
    attempt: Annotated[int, Field(ge=1)]
    worker_id: str


class TrialCreated(_Event):
    """The oracle made a trial: Keras Tuner's canonical ``Trial.get_state()``."""

    kind: ClassVar[EventKind] = EventKind.CREATED
    trial_id: Id
    trial_state: TrialState
    values: dict[str, Any]


class TrialAssigned(_AttemptEvent):
    """A worker leased attempt ``attempt`` under ``token``."""

    kind: ClassVar[EventKind] = EventKind.ASSIGNED
    token: Id


class TrialProgress(_AttemptEvent):
    """An epoch's metrics."""

    kind: ClassVar[EventKind] = EventKind.PROGRESS
    epoch: Annotated[int, Field(ge=0)]
    metrics: Metrics


class TrialRequeued(_AttemptEvent):
    """The attempt ended without a result; the trial waits for its next attempt.

    ``counted``: the attempt counts toward the retry limit (it raised, or its
    worker was lost); a cancel, interrupt or preemption does not.
    ``end_token``: the lease token of the EndTrial call that ended the attempt
    (None when the chief ended it: expiry, death, preemption).
    """

    kind: ClassVar[EventKind] = EventKind.REQUEUED
    reason: str
    failures: Annotated[int, Field(ge=0)]
    counted: bool
    front: bool = True
    traceback_tail: str | None = None
    end_token: str | None = None


class TrialCompleted(_AttemptEvent):
    """Final: the attempt reported the objective.

    ``hyperparameters`` is the config the build really ran with (values a
    ``conditional_scope`` registered included), when the worker sent one.
    ``stopped_early``: the chief's trial scheduler stopped the attempt, which
    ended with its best score so far (absent in ledgers from before schedulers).
    """

    kind: ClassVar[EventKind] = EventKind.COMPLETED
    metrics: Metrics
    score: float
    best_step: Annotated[int, Field(ge=0)] = 0
    duration_s: float | None = None
    failures: Annotated[int, Field(ge=0)]
    hyperparameters: HpConfig | None = None
    end_token: str | None = None
    stopped_early: bool = False


class TrialFailed(_AttemptEvent):
    """Final: the retries are used up, or the failure is not retryable."""

    kind: ClassVar[EventKind] = EventKind.FAILED
    error_message: str
    traceback_tail: str | None = None
    failures: Annotated[int, Field(ge=0)]
    hyperparameters: HpConfig | None = None
    end_token: str | None = None


class SpaceChanged(_Event):
    """The search space as it now is (Keras Tuner's ``HyperParameters.get_config()``)."""

    kind: ClassVar[EventKind] = EventKind.SPACE
    hyperparameters: HpConfig


class SearchChanged(_Event):
    """The search as a whole changed state."""

    kind: ClassVar[EventKind] = EventKind.SEARCH
    state: SearchState
    message: str = ""


TrialEvent: TypeAlias = (
    TrialCreated
    | TrialAssigned
    | TrialProgress
    | TrialRequeued
    | TrialCompleted
    | TrialFailed
    | SpaceChanged
    | SearchChanged
)
END_EVENTS = (TrialCompleted, TrialFailed)
_BY_KIND: dict[str, type[_Event]] = {
    cls.kind.value: cls
    for cls in (
        TrialCreated,
        TrialAssigned,
        TrialProgress,
        TrialRequeued,
        TrialCompleted,
        TrialFailed,
        SpaceChanged,
        SearchChanged,
    )
}


@dataclass(frozen=True)
class RecordedEvent:
    """An event as the ledger holds it: its seq and commit time."""

    seq: int
    ts: float
    event: TrialEvent

    @property
    def kind(self) -> EventKind:
        return self.event.kind

    @property
    def trial_id(self) -> str | None:
        return getattr(self.event, "trial_id", None)

    @property
    def attempt(self) -> int | None:
        return getattr(self.event, "attempt", None)

    @property
    def worker_id(self) -> str | None:
        return getattr(self.event, "worker_id", None)

    @property
    def payload(self) -> dict[str, Any]:
        """The event's fields other than the row columns (for reports and tests)."""
        return {k: v for k, v in self.event.model_dump().items() if k not in _COLUMNS}


@dataclass(frozen=True)
class Row:
    """One raw row of the events table."""

    seq: int
    ts: float
    kind: str
    trial_id: str | None
    attempt: int | None
    worker_id: str | None
    payload: str


def _bad_row(row: Row, problem: str) -> LedgerError:
    return LedgerError(
        f"ledger event seq {row.seq} ({row.kind!r}, trial {row.trial_id!r}) does not decode: "
        f"{problem}"
    )


def decode(row: Row) -> TrialEvent:
    """The typed event of a schema-2 row (raises LedgerError naming the seq)."""
    cls = _BY_KIND.get(row.kind)
    if cls is None:
        raise _bad_row(row, f"unknown event kind (known: {', '.join(sorted(_BY_KIND))})")
    payload = _payload(row)
    return _validate(row, cls, payload)


def _payload(row: Row) -> dict[str, Any]:
    try:
        payload = json.loads(row.payload)
    except (ValueError, RecursionError) as exc:
        raise _bad_row(row, f"the payload is not JSON ({exc})") from exc
    if not isinstance(payload, dict):
        raise _bad_row(row, f"the payload is a {type(payload).__name__}, not an object")
    return payload


def _validate(row: Row, cls: type[_Event], payload: Mapping[str, Any]) -> TrialEvent:
    data = dict(payload)
    for column in ("trial_id", "attempt", "worker_id"):
        if column in cls.model_fields:
            data[column] = getattr(row, column)
    try:
        return cls.model_validate(data)  # type: ignore[return-value]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'payload'}: {err['msg']}" for err in exc.errors()
        )
        raise _bad_row(row, problems) from None


class V1Decoder:
    """Decodes the rows of a schema-1 ledger (untyped payload dicts) into events.

    Stateful, because schema 1 did not say whether a requeue counted as a
    failure: it did exactly when its ``failures`` went up.
    """

    def __init__(self) -> None:
        self._failures: dict[str, int] = {}

    def decode(self, row: Row) -> TrialEvent:
        if row.kind not in _BY_KIND:
            raise _bad_row(row, "unknown event kind in a schema-1 ledger")
        payload = _payload(row)
        kind = EventKind(row.kind)
        tid = row.trial_id or ""
        if kind is EventKind.CREATED:
            event = _validate(row, TrialCreated, _pick(payload, "trial_state", "values"))
            self._failures[tid] = 0
            return event
        if kind is EventKind.REQUEUED:
            failures = payload.get("failures", self._failures.get(tid, 0))
            counted = isinstance(failures, int) and failures > self._failures.get(tid, 0)
            data = {
                "reason": payload.get("reason", ""),
                "failures": failures,
                "counted": counted,
                "front": payload.get("front", True),
            }
            event = _validate(row, TrialRequeued, data)
            self._failures[tid] = int(failures)
            return event
        if kind is EventKind.COMPLETED:
            state = payload.get("trial_state")
            if state is not None and not isinstance(state, dict):
                raise _bad_row(row, f"trial_state: expected an object, got {type(state).__name__}")
            data = {
                **_pick(payload, "metrics", "score", "best_step", "duration_s", "failures"),
                "hyperparameters": state.get("hyperparameters") if state else None,
            }
            data.setdefault("failures", self._failures.get(tid, 0))
            return _validate(row, TrialCompleted, data)
        if kind is EventKind.FAILED:
            data = _pick(payload, "error_message", "traceback_tail", "failures")
            data.setdefault("error_message", "")
            data.setdefault("failures", self._failures.get(tid, 0))
            return _validate(row, TrialFailed, data)
        if kind is EventKind.PROGRESS:
            return _validate(row, TrialProgress, _pick(payload, "epoch", "metrics"))
        if kind is EventKind.ASSIGNED:
            return _validate(row, TrialAssigned, _pick(payload, "token"))
        if kind is EventKind.SPACE:
            return _validate(row, SpaceChanged, _pick(payload, "hyperparameters"))
        return _validate(row, SearchChanged, _pick(payload, "state", "message"))


def _pick(payload: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {key: payload[key] for key in keys if key in payload}


def decoder_for(schema_version: Any, *, source: str) -> Any:
    """A callable Row -> TrialEvent for ``schema_version`` (LedgerError if unknown)."""
    if schema_version == SCHEMA_VERSION:
        return decode
    if schema_version == 1:
        return V1Decoder().decode
    raise LedgerError(
        f"{source}: ledger schema version {schema_version!r} is not one this ktcluster reads "
        f"(it reads {', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}); open it with the "
        "ktcluster version that wrote it"
    )
