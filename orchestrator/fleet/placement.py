"""Where a worker's Ray actor may run, and why it does not run yet.

A worker slot reserves the slot's CPUs and GPU share plus a sliver of its
node's label resource (``ktc_node_<name>``, which pins it to that node) in a
one-bundle placement group, held for as long as the slot is wanted. Its
worker processes are actors inside that bundle that reserve nothing
themselves: a process and its warm spare fit side by side, and the slot's
resources stay reserved while one process hands over to the next. (The
evaluation worker, a single process, asks for the same resources directly:
:func:`actor_options`.)
An actor Ray cannot place is reported with a reason computed from the alive
nodes' resources; on an autoscaling cluster the fleet asks for the missing
resources instead of waiting. Every function here that talks to Ray is called
from the fleet's monitor thread only.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from orchestrator.config import WorkerSlot, node_resource_name
from orchestrator.protocol.failures import (
    CRASH_TRACEBACK_MARK,
    MAX_ERROR_CHARS,
    format_error,
    one_line,
    strip_ansi,
)

log = logging.getLogger(__name__)

NODE_LABEL_PREFIX = node_resource_name("")
NODE_LABEL_SHARE = 0.001  # of the node's label resource: pins the actor, never exhausts it


def actor_options(slot: WorkerSlot, *, name: str, runtime_env: dict[str, Any]) -> dict[str, Any]:
    """The ``.options(...)`` of the slot's actor: its resources, node pin and name."""
    return {
        "num_cpus": slot.cpus,
        "num_gpus": slot.gpu_share,
        "resources": {slot.node_resource: NODE_LABEL_SHARE},
        "runtime_env": runtime_env,
        "name": name,
        "namespace": "ktcluster",
    }


def reservation_bundle(slot: WorkerSlot) -> dict[str, float]:
    """The slot's resources as a placement-group bundle (Ray refuses zero entries)."""
    bundle = {"CPU": slot.cpus, "GPU": slot.gpu_share, slot.node_resource: NODE_LABEL_SHARE}
    return {name: amount for name, amount in bundle.items() if amount > 0}


def reserve_slot(slot: WorkerSlot, *, name: str) -> Any:
    """Create the slot's placement group (asynchronous: its actors wait until Ray places it)."""
    from ray.util.placement_group import placement_group

    return placement_group([reservation_bundle(slot)], strategy="STRICT_PACK", name=name)


def release_slot(group: Any) -> None:
    """Remove a slot's placement group; Ray kills any actor still inside it."""
    from ray.util.placement_group import remove_placement_group

    try:
        remove_placement_group(group)
    except Exception as exc:  # already removed, or Ray is going away
        log.info("could not remove placement group %s: %s", getattr(group, "id", group), exc)


def process_options(group: Any, *, name: str, runtime_env: dict[str, Any]) -> dict[str, Any]:
    """The ``.options(...)`` of a worker process inside its slot's placement group.

    ``num_cpus=0`` is explicit: an actor that names no CPU would still hold one
    for scheduling. Its GPUs are the cluster file's, set in ``__init__``.
    """
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return {
        "num_cpus": 0,
        "num_gpus": 0,
        "scheduling_strategy": PlacementGroupSchedulingStrategy(
            placement_group=group,
            placement_group_bundle_index=0,
            placement_group_capture_child_tasks=False,
        ),
        "runtime_env": runtime_env,
        "name": name,
        "namespace": "ktcluster",
    }


def request_resources(slots: list[WorkerSlot]) -> None:
    """Ask an autoscaling cluster for room for these slots' actors."""
    try:
        from ray.autoscaler.sdk import request_resources as ray_request_resources

        bundles = [
            {"CPU": slot.cpus, "GPU": slot.gpu_share, slot.node_resource: NODE_LABEL_SHARE}
            for slot in slots
        ]
        ray_request_resources(bundles=bundles)
    except Exception as exc:  # not an autoscaling cluster
        log.info("request_resources unavailable: %s", exc)


def resources_by_label() -> dict[str, dict[str, float]]:
    """Per node label: total resources of the alive Ray node that carries it."""
    import ray

    out: dict[str, dict[str, float]] = {}
    try:
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            resources = node.get("Resources", {})
            for name in resources:
                if name.startswith(NODE_LABEL_PREFIX):
                    out[name] = dict(resources)
    except Exception:
        pass
    return out


def holders_by_label() -> dict[str, dict[str, dict[str, float]]]:
    """Per node label: the CPUs and GPUs that ktcluster slots' placement groups
    hold there, by search: the group name's ``ktc-<search id[:8]>`` prefix, with
    the search's readable name when the group carries one (:func:`group_name`)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    try:
        from ray.util import placement_group_table

        groups = placement_group_table().values()
    except Exception:  # Ray going away: the reason goes without holders
        return out
    for group in groups:
        name = str(group.get("name") or "")
        if group.get("state") != "CREATED" or not name.startswith(GROUP_PREFIX):
            continue
        search = holder_key(name)
        for bundle in (group.get("bundles") or {}).values():
            label = next((r for r in bundle if r.startswith(NODE_LABEL_PREFIX)), None)
            if label is None:
                continue
            held = out.setdefault(label, {}).setdefault(search, {"CPU": 0.0, "GPU": 0.0})
            held["CPU"] += float(bundle.get("CPU", 0.0))
            held["GPU"] += float(bundle.get("GPU", 0.0))
    return out


GROUP_PREFIX = "ktc-"
LABEL_MARK = "@"  # in a group name: what follows is the search's readable name
_LABEL_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


def group_name(prefix: str, worker_id: str, launched: int, label: str = "") -> str:
    """A slot's placement-group name: ``<prefix>-<worker>-slot<n>[@<label>]``.

    ``label`` is the search's readable name (its directory's name, which is the
    search id of a detached search): another search's pending reason names it,
    where the ``ktc-<search id[:8]>`` prefix alone means nothing to its user.
    """
    name = f"{prefix}-{worker_id}-slot{launched}"
    label = _LABEL_CHARS.sub("_", label)[:64]
    return f"{name}{LABEL_MARK}{label}" if label else name


def search_tag(name: str) -> str:
    """``ktc-<search id[:8]>``: the search an actor or placement-group name belongs to."""
    return "-".join(name.split("-")[:2])


def holder_key(name: str) -> str:
    """Whose a group is: its search tag, and its readable name when it has one."""
    tag = search_tag(name)
    return f"{tag}{LABEL_MARK}{name.rsplit(LABEL_MARK, 1)[1]}" if LABEL_MARK in name else tag


def pending_reason(
    slot: WorkerSlot,
    by_label: dict[str, dict[str, float]],
    holders: dict[str, dict[str, dict[str, float]]] | None = None,
    own: str | None = None,
) -> str:
    """Why the slot's actor is not placed, from :func:`resources_by_label` and,
    when given, :func:`holders_by_label` (``own``: this search's tag)."""
    node = by_label.get(slot.node_resource)
    if node is None:
        return (
            f"no Ray node carries the label {slot.node_resource} (node {slot.node!r} of the "
            "cluster file is not in the Ray cluster); start it with `ktc cluster up` or wait for it to join"
        )
    want = f"{slot.cpus:g} CPU" + (f", {slot.gpu_share:g} GPU" if slot.gpu_share else "")
    total = f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU"
    held = []
    for search, amounts in sorted((holders or {}).get(slot.node_resource, {}).items()):
        tag, _, label = search.partition(LABEL_MARK)
        short = tag.removeprefix(GROUP_PREFIX)
        if tag == own:
            who = "this search's other workers"
        else:
            who = f"ktcluster search {label} ({short})" if label else f"ktcluster search {short}"
        what = f"{amounts['CPU']:g} CPU" + (f", {amounts['GPU']:g} GPU" if amounts["GPU"] else "")
        held.append(f"{what} by {who}")
    in_use = f"held: {'; '.join(held)}" if held else "the rest is in use"
    return (
        f"waiting for resources on node {slot.node!r}: the worker needs {want}; the node has "
        f"{total} in total, {in_use}"
    )


def death_reason(exc: BaseException) -> str:
    """An actor's death, in one line: the real cause's type and message.

    Ray wraps what the worker raised. ``ray.get`` raises a ``RayTaskError``
    (as an instance of the cause's class too: ``RayTaskError(RuntimeError)``),
    whose own text starts with a coloured header (``ray::WorkerProcess.run()
    (pid=..., ip=...)``) and Ray's traceback; its ``cause`` is the exception
    the actor raised. An ``ActorDiedError`` carries its cause only as text:
    the creation task's ``RayTaskError`` text, or the system's reason (the
    process was killed, its node died). The worker's own crash (workers/actor.py)
    writes the real cause on its first line, above ``CRASH_TRACEBACK_MARK``.
    """
    cause: BaseException = exc
    seen: set[int] = set()
    while id(cause) not in seen:
        seen.add(id(cause))
        inner = getattr(cause, "cause", None)
        if not isinstance(inner, BaseException):
            break
        cause = inner
    if _is_ray_error(cause):
        return f"{type(cause).__name__}: {_ray_error_text(str(cause))}"[:MAX_ERROR_CHARS]
    raw = strip_ansi(str(cause))
    if CRASH_TRACEBACK_MARK in raw:
        # The worker's own crash: its first part is already "Type: message".
        return one_line(raw.split(CRASH_TRACEBACK_MARK, 1)[0])
    return format_error(type(cause).__name__, raw)


def _is_ray_error(exc: BaseException) -> bool:
    return any(
        cls.__module__.startswith("ray.") and cls.__name__ == "RayError"
        for cls in type(exc).__mro__
    )


_TRACEBACK_LAST = re.compile(
    r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): (?P<msg>.*)$"
)


def _ray_error_text(text: str) -> str:
    """The useful part of a Ray error's text: the final ``Type: message`` of an
    embedded traceback (an actor whose creation task raised), else its lines
    joined, without colour codes or Ray's ``ray::...`` header lines."""
    lines = [line for line in strip_ansi(text).split(CRASH_TRACEBACK_MARK, 1)[0].splitlines()]
    for line in reversed(lines):
        match = _TRACEBACK_LAST.match(line.strip())
        if match and "ray::" not in line:
            return one_line(f"{match['type'].rsplit('.', 1)[-1]}: {match['msg']}")
    # ActorDiedError's context lines ("\tpid: 123", "\tactor_id: ...") only
    # identify the process; the lines around them say what happened.
    kept = [
        line
        for line in lines
        if line.strip() and "ray::" not in line and not _CONTEXT_LINE.match(line)
    ]
    return one_line(" ".join(kept))


_CONTEXT_LINE = re.compile(r"^\s+(class_name|actor_id|pid|name|namespace|ip): ")
