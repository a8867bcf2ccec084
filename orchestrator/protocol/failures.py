"""Failure text both sides agree on: how an error is written in one line, and
when two errors are "the same".

A worker turns an exception into one line, ``Type: message[ — hint]``, with no
ANSI colour codes (Ray and Keras colour theirs) and no line breaks, so the
live display, the logs, ``ktc status`` and ``ktc results`` all show the real
cause as it was raised. The chief compares failures by
:func:`error_signature`: the same type and message once ids are normalised
(a layer's ``dense_3``, a worker's ``local-w0``, a trial or process number, an
address), so "the same error on 3 different hyperparameter sets" does not
depend on them. Plain numbers are kept: a shape, a size or a hyperparameter's
value in the message ("units 64 not supported", "(None, 4, 4, 32)") is what
makes an error depend on the hyperparameters, and such errors must not end
the search as if they did not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum

MAX_ERROR_CHARS = 2000
# The end of a failed trial's traceback that a worker sends with its error.
TRACEBACK_TAIL_CHARS = 4000
# A worker process that crashes raises RuntimeError("<error in one line>\n"
# + CRASH_TRACEBACK_MARK + "\n<traceback>"): the fleet keeps what is above it.
CRASH_TRACEBACK_MARK = "--- worker traceback ---"

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_HEX_ID = re.compile(r"\b(?:0x)?[0-9a-fA-F]{8,}\b")
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b")
# A number that counts something other than the model: a trial, an attempt, a process.
_COUNTER = re.compile(r"\b(trial|attempt|incarnation|pid|port|worker)(\s*[ =:#]\s*)\d+\b", re.I)
# A word with digits glued to letters: a layer (dense_3), a worker (local-w0), a node.
_NAME_WITH_DIGITS = re.compile(r"\b(?=\w*[A-Za-z])\w*\d\w*\b")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")


class FailureKind(str, Enum):
    """How a trial's exception is treated.

    - ``FATAL``: cannot depend on the hyperparameters (an import error, missing
      weights, a missing dataset, a config error): every trial would fail the
      same way, so the search stops at once with the message.
    - ``DETERMINISTIC``: the same hyperparameters would fail the same way (a
      shape mismatch, a ValueError or TypeError from the model): the trial
      fails without retries (unless ``failure.retry_deterministic``) and the
      search goes on.
    - ``TRANSIENT``: may pass on another try (out of memory, an unavailable
      service, a worker that died, and any error we cannot tell): retried up to
      ``failure.retries_per_trial``.
    """

    FATAL = "fatal"
    DETERMINISTIC = "deterministic"
    TRANSIENT = "transient"


def strip_ansi(text: str) -> str:
    """``text`` without terminal escape sequences (colours, cursor moves)."""
    return _ANSI.sub("", text)


def one_line(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` with ANSI codes removed and its lines joined by single spaces,
    cut to ``limit`` characters (with an ellipsis)."""
    flat = _SPACES.sub(" ", strip_ansi(text)).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def format_error(type_name: str, message: str, *, hint: str = "") -> str:
    """``Type: message — hint`` in one line (``Type`` alone for an empty message)."""
    text = f"{type_name}: {message}" if message.strip() else type_name
    if hint:
        text = f"{text} — {hint}"
    return one_line(text)


def objective_missing_message(objective: str, logged: Iterable[str]) -> str:
    """Why a trial has no score: its objective is not among the metrics it
    logged. Names them and the two fixes (the worker raises it at the first
    epoch; the chief says it of a result reported without the objective)."""
    names = ", ".join(sorted(logged)) or "none"
    return (
        f"the objective {objective!r} is not among the metrics the model logged ({names}); "
        "set the search file's `objective:` to one of them, or have the model log it "
        "(compile(metrics=[...]))"
    )


def error_signature(message: str) -> str:
    """What two failures must share to count as the same error: the text with
    ANSI codes and ids normalised (hex ids, addresses, trial/attempt/process
    numbers, digits inside names such as ``dense_3``), plain numbers kept, and
    the retry bookkeeping the chief appends ("(attempt 3; retry limit 2
    reached)") cut."""
    text = one_line(message, limit=10_000)
    text = re.sub(r" \(attempt \d+; retry limit \d+ reached\)$", "", text)
    text = _HEX_ID.sub("<id>", text)
    text = _ADDRESS.sub("<address>", text)
    text = _COUNTER.sub(lambda m: f"{m.group(1)}{m.group(2)}#", text)
    text = _NAME_WITH_DIGITS.sub(lambda m: _DIGITS.sub("#", m.group()), text)
    return text[:MAX_ERROR_CHARS]
