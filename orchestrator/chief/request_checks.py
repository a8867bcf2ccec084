"""Every field check of the trial and control protocols, before the broker sees a request.

A request that fails one of these gets INVALID_ARGUMENT (an
:class:`~orchestrator.errors.InvalidRequestError`) and changes nothing. The
bounds, one place each:

- ids and artifact names: the patterns of :mod:`orchestrator.protocol.names`;
- lease tokens: 1..128 characters of ``[A-Za-z0-9_-]`` (the chief issues 32 hex);
- ``wait_s``: finite, 0..30 s (0: the chief's default long-poll);
- ``epoch``: -1 (heartbeat) or 0..10^6; ``best_step``: 0..10^6;
  ``num_trials``: 0..10,000;
- metric maps: at most 256 entries, names printable 1..200 characters, values finite;
- free text (error message, traceback tail): at most 64 KiB, no control
  characters but tab, newline and carriage return; Keras Tuner state and
  space JSON: at most 1 MiB, parsed by Keras Tuner (deep nesting refused);
- ``Scale``: exactly one of a total, node counts or a cluster file; counts
  0..``fleet.max_workers``; node names as in the cluster file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping

from orchestrator.config.cluster import NAME_PATTERN
from orchestrator.errors import InvalidRequestError
from orchestrator.protocol.kt_state import canonical_hyperparameters
from orchestrator.protocol.names import (
    METRIC_NAME_RULE,
    check_worker_id,
    is_forbidden_control,
    is_metric_name,
    shown_name,
)
from orchestrator.protocol.protos import ktcluster_pb2 as pb

MAX_TEXT_BYTES = 64 * 1024
MAX_STATE_JSON_BYTES = 1024 * 1024
MAX_EPOCH = 1_000_000
MAX_METRICS = 256
MAX_WAIT_S = 30.0
MAX_NUM_TRIALS = 10_000
MAX_PATH_CHARS = 4096
LEASE_TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,128}$"

_LEASE_TOKEN = re.compile(LEASE_TOKEN_PATTERN)
_NODE_NAME = re.compile(NAME_PATTERN)


def check_lease_token(value: str, *, field: str = "lease_token") -> None:
    """The lease token CreateTrial gave (never echoed back in the message)."""
    if _LEASE_TOKEN.fullmatch(value) is None:
        raise InvalidRequestError(
            f"{field}: expected the lease token CreateTrial gave ({LEASE_TOKEN_PATTERN}), got "
            f"{len(value)} characters that do not match"
        )


def check_optional_worker_id(value: str) -> None:
    """Report and EndTrial may leave the worker id out; if given it must be well formed."""
    if value:
        check_worker_id(value)


def check_text(field: str, value: str, limit: int = MAX_TEXT_BYTES) -> None:
    """Free text: at most ``limit`` bytes of UTF-8, no control characters
    except tab, newline and carriage return."""
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise InvalidRequestError(
            f"{field}: {size} bytes is over the {limit}-byte cap; truncate it"
        )
    for i, char in enumerate(value):
        if is_forbidden_control(char):
            raise InvalidRequestError(
                f"{field}: expected printable text (tab, newline and carriage return allowed), "
                f"got the control character {char!r} at offset {i}; strip it"
            )


def check_wait_s(value: float) -> None:
    """CreateTrial's long-poll: finite seconds, 0 (the chief's default) to 30."""
    if not math.isfinite(value) or not 0.0 <= value <= MAX_WAIT_S:
        raise InvalidRequestError(
            f"wait_s: expected a finite number of seconds in 0..{MAX_WAIT_S:g} "
            f"(0: the chief's default), got {value!r}"
        )


def check_range(field: str, value: int, low: int, high: int, what: str = "") -> None:
    """``low <= value <= high``, else INVALID_ARGUMENT naming both."""
    if not low <= value <= high:
        raise InvalidRequestError(f"{field}: expected {what or f'{low}..{high}'}, got {value}")


def check_metrics(metrics: Mapping[str, float], *, max_metrics: int = MAX_METRICS) -> None:
    """Reject metric maps a well-behaved worker never sends (INVALID_ARGUMENT)."""
    if len(metrics) > max_metrics:
        raise InvalidRequestError(
            f"metrics: at most {max_metrics} entries are accepted, got {len(metrics)}"
        )
    for name, value in metrics.items():
        if not is_metric_name(name):
            raise InvalidRequestError(
                f"metrics: metric names must be {METRIC_NAME_RULE}, got "
                + (shown_name(name) if isinstance(name, str) else repr(name))
            )
        if not isinstance(value, float | int) or not math.isfinite(value):
            raise InvalidRequestError(
                f"metrics[{name!r}]: expected a finite number, got {value!r}; "
                "drop NaN/inf metrics and end the attempt as INVALID instead"
            )


def parse_json(field: str, text: str, what: str) -> object:
    """``text`` as JSON; INVALID_ARGUMENT naming ``field`` if it is not (or nests too deeply)."""
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise InvalidRequestError(f"{field}: nested too deeply; expected {what}") from exc
    except ValueError as exc:
        raise InvalidRequestError(f"{field}: not JSON ({exc}); expected {what}") from exc


def parse_trial_hyperparameters(text: str) -> dict[str, object] | None:
    """EndTrial's ``trial_state_json``: Keras Tuner's ``Trial.get_state()`` (at least
    its ``hyperparameters``), parsed by Keras Tuner and returned canonical; None if empty."""
    if not text:
        return None
    check_text("trial_state_json", text, MAX_STATE_JSON_BYTES)
    what = "Keras Tuner's Trial.get_state() as JSON with a 'hyperparameters' object"
    state = parse_json("trial_state_json", text, what)
    if not isinstance(state, dict) or "hyperparameters" not in state:
        raise InvalidRequestError(
            f"trial_state_json: expected {what}, got "
            + (f"keys {sorted(state)[:10]}" if isinstance(state, dict) else type(state).__name__)
        )
    return canonical_hyperparameters(
        state["hyperparameters"], where="trial_state_json.hyperparameters"
    )


def end_status_name(value: int) -> str:
    """An EndTrial status for a message: its enum name, or the bare number."""
    return pb.TrialStatus.Name(value) if value in pb.TrialStatus.values() else str(value)


def check_scale(request: pb.ScaleRequest, *, max_workers: int) -> None:
    """A Scale request: exactly one target, every count in 0..``max_workers``."""
    targets = [
        name
        for name, given in (
            ("total_workers", request.total_workers != -1),
            ("node_workers", bool(request.node_workers)),
            ("cluster_yaml", bool(request.cluster_yaml)),
        )
        if given
    ]
    if len(targets) != 1:
        raise InvalidRequestError(
            "scale: expected exactly one of --workers N, --node NAME=N or --apply CLUSTER.yaml, "
            f"got {', '.join(targets) if targets else 'none'}"
        )
    fix = "raise fleet.max_workers in the cluster file to go higher"
    if request.total_workers != -1:
        check_range(
            "--workers",
            request.total_workers,
            0,
            max_workers,
            f"a number of workers in 0..{max_workers} (fleet.max_workers); {fix}",
        )
    if len(request.node_workers) > max_workers:
        raise InvalidRequestError(
            f"--node: expected at most {max_workers} nodes, got {len(request.node_workers)}"
        )
    for node, count in request.node_workers.items():
        if len(node) > 128 or _NODE_NAME.fullmatch(node) is None:
            raise InvalidRequestError(
                f"--node {shown_name(node)}: expected a node name of the cluster file "
                f"({NAME_PATTERN}, at most 128 characters)"
            )
        check_range(
            f"--node {node}={count}",
            count,
            0,
            max_workers,
            f"a number of workers in 0..{max_workers} (fleet.max_workers); {fix}",
        )
    if request.cluster_yaml:
        check_text("cluster_yaml", request.cluster_yaml, MAX_STATE_JSON_BYTES)
    check_text("cluster_yaml_path", request.cluster_yaml_path, MAX_PATH_CHARS)


__all__ = [
    "LEASE_TOKEN_PATTERN",
    "MAX_EPOCH",
    "MAX_NUM_TRIALS",
    "MAX_STATE_JSON_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_WAIT_S",
    "check_lease_token",
    "check_metrics",
    "check_optional_worker_id",
    "check_range",
    "check_scale",
    "check_text",
    "check_wait_s",
    "end_status_name",
    "parse_json",
    "parse_trial_hyperparameters",
]
