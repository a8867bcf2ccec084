"""The names the trial protocol accepts: trial ids, worker ids and artifact names.

Each is one pattern, defined here once and checked by the chief on every RPC
(a name that does not match is INVALID_ARGUMENT and changes nothing); a
client may check the same patterns before it sends. The patterns are plain
ASCII, start with a letter or digit, and cannot spell ``..`` or an absolute
path, so a name can never leave the directory the chief joins it to.

- **Trial ids** (``TRIAL_ID_PATTERN``): Keras Tuner's ids are zero-padded
  counters (``00``, ``01``, ... ``1000``); older KT versions used hex digests.
  1 to 128 characters of letters, digits, ``.``, ``_`` and ``-``.
- **Worker ids** (``WORKER_ID_PATTERN``): the fleet names workers
  ``<node>-w<index>`` (``local-w0``, ``gpu-node-1-w3``), where a node name has
  at most 128 characters; ``ktc`` itself calls as ``cli``. 1 to 160 characters
  of the same alphabet.
- **Artifact names** (``ARTIFACT_SEGMENT_PATTERN``): a relative path of at most
  8 segments joined by ``/`` and 255 characters in all; each segment is a
  letter, digit or ``_`` followed by up to 127 letters, digits, ``.``, ``_``
  and ``-`` (no segment starts with ``.``: the chief keeps its temporary files
  there, and ``..`` cannot be spelled).
- **Metric names** (:func:`is_metric_name`): printable text (``str.isprintable``:
  no control, format or separator characters but the space) of 1 to
  ``MAX_METRIC_NAME_CHARS`` characters. The chief refuses any other in a
  report, and the search file's ``objective`` and ``early_stopping.monitor``
  are checked by this same rule, so a search cannot name a metric no worker
  may ever report.
- **Free text** (error messages, tracebacks): no control characters but tab,
  newline and carriage return (:func:`is_forbidden_control`); the chief refuses
  them and the client strips them before it sends.
"""

from __future__ import annotations

import re
import unicodedata

from orchestrator.errors import InvalidRequestError

TRIAL_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
WORKER_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,159}$"
ARTIFACT_SEGMENT_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"
MAX_ARTIFACT_NAME_CHARS = 255
MAX_ARTIFACT_SEGMENTS = 8
MAX_METRIC_NAME_CHARS = 200
METRIC_NAME_RULE = f"printable text of 1-{MAX_METRIC_NAME_CHARS} characters"

_TEXT_CONTROLS_ALLOWED = frozenset("\t\n\r")

_TRIAL_ID = re.compile(TRIAL_ID_PATTERN)
_WORKER_ID = re.compile(WORKER_ID_PATTERN)
_SEGMENT = re.compile(ARTIFACT_SEGMENT_PATTERN)


def is_forbidden_control(char: str) -> bool:
    """True for a character free text may not hold: a control character (or a
    lone surrogate) other than tab, newline and carriage return."""
    return char not in _TEXT_CONTROLS_ALLOWED and unicodedata.category(char) in ("Cc", "Cs")


def is_metric_name(value: object) -> bool:
    """True if ``value`` may name a metric: :data:`METRIC_NAME_RULE`."""
    return (
        isinstance(value, str) and 0 < len(value) <= MAX_METRIC_NAME_CHARS and value.isprintable()
    )


def shown_name(value: str) -> str:
    """A name for a message: quoted with control characters escaped (``repr``), and
    cut so a 1 MB name stays a short line."""
    return repr(value) if len(value) <= 80 else f"{value[:60]!r}... ({len(value)} characters)"


def _matches(pattern: re.Pattern[str], value: object) -> bool:
    # fullmatch, not match: '$' alone also matches before a final newline.
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def is_trial_id(value: object) -> bool:
    """True if ``value`` is a well-formed trial id."""
    return _matches(_TRIAL_ID, value) and ".." not in str(value)


def is_worker_id(value: object) -> bool:
    """True if ``value`` is a well-formed worker id."""
    return _matches(_WORKER_ID, value) and ".." not in str(value)


def is_artifact_name(value: object) -> bool:
    """True if ``value`` is a well-formed artifact name (a safe relative path)."""
    if not isinstance(value, str) or not value or len(value) > MAX_ARTIFACT_NAME_CHARS:
        return False
    segments = value.split("/")
    return len(segments) <= MAX_ARTIFACT_SEGMENTS and all(
        _matches(_SEGMENT, s) and ".." not in s for s in segments
    )


def check_trial_id(value: str, *, field: str = "trial_id") -> None:
    """Raise InvalidRequestError unless ``value`` is a well-formed trial id."""
    if not is_trial_id(value):
        raise InvalidRequestError(
            f"{field}: expected a trial id matching {TRIAL_ID_PATTERN} (no '..'), got "
            f"{shown_name(value)}; use the trial id CreateTrial gave"
        )


def check_worker_id(value: str, *, field: str = "worker_id") -> None:
    """Raise InvalidRequestError unless ``value`` is a well-formed worker id."""
    if not is_worker_id(value):
        raise InvalidRequestError(
            f"{field}: expected a worker id matching {WORKER_ID_PATTERN} (no '..'), got "
            f"{shown_name(value)}; workers are named like 'local-w0'"
        )


def check_artifact_name(value: str, *, field: str = "name") -> None:
    """Raise InvalidRequestError unless ``value`` is a well-formed artifact name."""
    if not is_artifact_name(value):
        raise InvalidRequestError(
            f"{field}: expected an artifact name: a relative path of at most "
            f"{MAX_ARTIFACT_SEGMENTS} segments and {MAX_ARTIFACT_NAME_CHARS} characters, each "
            f"segment matching {ARTIFACT_SEGMENT_PATTERN} (no '..', not absolute), got "
            f"{shown_name(value)}"
        )


__all__ = [
    "ARTIFACT_SEGMENT_PATTERN",
    "MAX_ARTIFACT_NAME_CHARS",
    "MAX_ARTIFACT_SEGMENTS",
    "MAX_METRIC_NAME_CHARS",
    "METRIC_NAME_RULE",
    "TRIAL_ID_PATTERN",
    "WORKER_ID_PATTERN",
    "check_artifact_name",
    "check_trial_id",
    "check_worker_id",
    "is_artifact_name",
    "is_metric_name",
    "is_trial_id",
    "is_worker_id",
    "shown_name",
]
