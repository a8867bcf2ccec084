"""What a trial's (or a worker's setup's) exception means: one table.

The worker is the only place that holds the exception object, so it
classifies it here (:class:`~orchestrator.protocol.failures.FailureKind`) and
writes it in one line, with a hint when we know the fix. The chief decides what
follows: a FATAL error ends the search (the runner returns
``ExitReason.FATAL`` and the fleet fails the search with the message), a
DETERMINISTIC one is ended ``FAILED`` (no retry) unless the search file sets
``failure.retry_deterministic``, and a TRANSIENT one ``INVALID`` (retried up
to ``failure.retries_per_trial``).

Types are matched by class name along the MRO, so TensorFlow's and Keras
Tuner's errors are recognised without importing either.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from orchestrator.errors import (
    ChiefUnavailableError,
    DatasetUnavailableError,
    InputError,
)
from orchestrator.protocol.failures import FailureKind, format_error, objective_missing_message

# May pass on another try: memory, an unavailable service, a cancelled op.
_TRANSIENT_NAMES = frozenset(
    {
        "MemoryError",
        "ConnectionError",
        "TimeoutError",
        "ResourceExhaustedError",  # TF: out of (GPU) memory
        "UnavailableError",
        "AbortedError",
        "DeadlineExceededError",
        "CancelledError",
        "InternalError",  # TF: CUDA/driver trouble
        "ChiefUnavailableError",
        "StaleLeaseError",
    }
)
# Cannot depend on the hyperparameters: every trial would fail the same way.
_FATAL_NAMES = frozenset(
    {
        "ImportError",  # ModuleNotFoundError too (a subclass)
        "FatalError",  # Keras Tuner's "stop the search" errors
        "DatasetError",  # workers.datasets: a dataset that cannot be loaded
        "DatasetUnavailableError",
    }
)
# The same hyperparameters would fail the same way again.
_DETERMINISTIC_NAMES = frozenset(
    {
        "ValueError",
        "TypeError",
        "LookupError",  # KeyError, IndexError
        "AttributeError",
        "NameError",
        "ArithmeticError",  # ZeroDivisionError, OverflowError
        "AssertionError",
        "NotImplementedError",
        "FileNotFoundError",
        "IsADirectoryError",
        "NotADirectoryError",
        "PermissionError",
        "FailedTrialError",  # Keras Tuner: the user says "do not retry"
        "InvalidArgumentError",  # TF: shapes, dtypes, labels out of range
        "FailedPreconditionError",
        "OutOfRangeError",
        "UnimplementedError",
    }
)

# Keras 3 (keras/src/backend/tensorflow/nn.py, categorical_crossentropy): integer
# labels of shape (N,) or (N, 1) against a softmax of shape (N, classes).
_INTEGER_LABELS = re.compile(
    r"Arguments `target` and `output` must have the same (?:rank \(ndim\)|shape)\. "
    r"Received: target\.shape=\((?:None|\d+),(?: 1)?\), output\.shape=\((?:None|\d+), \d+\)"
)
ONE_HOT_HINT = (
    "labels are integers; use sparse_categorical_crossentropy or set `dataset.labels: one_hot`"
)


class ObjectiveNotLoggedError(LookupError):
    """The search's objective is not among the metrics the model logs (a typo
    in ``objective:``, or a metric the model's compile does not ask for).
    Deterministic: every attempt would log the same metrics, so it is raised at
    the first epoch's end instead of after the whole training."""

    def __init__(self, objective: str, logged: Iterable[str]) -> None:
        super().__init__(objective_missing_message(objective, logged))

    def __str__(self) -> str:
        # LookupError's str() would quote the message as KeyError does.
        return str(self.args[0])


@dataclass(frozen=True)
class Failure:
    """A classified exception: its kind and its one-line text (``Type: message``)."""

    kind: FailureKind
    message: str
    type_name: str

    @property
    def retryable(self) -> bool:
        return self.kind is FailureKind.TRANSIENT


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def kind_of(exc: BaseException) -> FailureKind:
    """The table above, first match wins: transient, fatal, deterministic; an
    error we cannot tell is transient (retried, as Keras Tuner does)."""
    if isinstance(exc, ChiefUnavailableError):
        return FailureKind.TRANSIENT
    if isinstance(exc, InputError | DatasetUnavailableError):
        # Our own config/input errors (missing weights, a bad option) hold for
        # every trial of the search.
        return FailureKind.FATAL
    names = _names(exc)
    if names & _TRANSIENT_NAMES:
        return FailureKind.TRANSIENT
    if names & _FATAL_NAMES:
        return FailureKind.FATAL
    if names & _DETERMINISTIC_NAMES:
        return FailureKind.DETERMINISTIC
    return FailureKind.TRANSIENT


def hint_for(exc: BaseException) -> str:
    """A known fix for this error, or ``""``."""
    if _INTEGER_LABELS.search(str(exc)):
        return ONE_HOT_HINT
    return ""


def classify(exc: BaseException) -> Failure:
    """``exc`` as a :class:`Failure`: kind, and ``Type: message — hint`` in one line."""
    type_name = type(exc).__name__
    return Failure(
        kind=kind_of(exc),
        message=format_error(type_name, str(exc), hint=hint_for(exc)),
        type_name=type_name,
    )


def classify_setup(exc: BaseException) -> Failure:
    """An exception before the first trial (dataset load, import of user code,
    building the hypermodel): it cannot depend on any trial's hyperparameters,
    so anything but a known transient error is fatal."""
    failure = classify(exc)
    if isinstance(exc, ChiefUnavailableError) or _names(exc) & _TRANSIENT_NAMES:
        return failure
    return Failure(FailureKind.FATAL, failure.message, failure.type_name)


class SpaceDeclarationFailed(Exception):
    """Keras Tuner's build of the model while declaring the search space raised
    ``cause``: it fails for the values Keras Tuner chose there (the defaults),
    which says nothing about the other hyperparameter values."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(str(cause))
        self.cause = cause


class SetupFailed(Exception):
    """The worker cannot run any trial of the search (raised before its first
    trial, with the search's end message): the runner returns ExitReason.FATAL."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def setup_failed(exc: Exception, worker_id: str) -> SetupFailed | None:
    """An exception before a worker's first trial as :class:`SetupFailed` (the
    search ends with its message), or None when it may pass on another try."""
    if isinstance(exc, SpaceDeclarationFailed):
        failure = classify(exc.cause)
        return SetupFailed(
            f"{failure.message} (worker {worker_id}, before its first trial, while Keras "
            "Tuner declared the search space: it builds the model with each hyperparameter's "
            "default, once per conditional branch, and this build raised; Keras Tuner's own "
            "search stops here too. Make build_model work for those values, e.g. by giving "
            "the hyperparameters defaults that build)"
        )
    failure = classify_setup(exc)
    if failure.kind is not FailureKind.FATAL:
        return None
    return SetupFailed(
        f"{failure.message} (worker {worker_id}, before its first trial: this error does not "
        "depend on the hyperparameters, so every trial would fail the same way)"
    )
