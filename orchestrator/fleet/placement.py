"""Where a worker's Ray actor may run, and why it does not run yet.

Each slot's actor asks Ray for the slot's CPUs and GPU share plus a sliver of
its node's label resource (``ktc_node_<name>``), which pins it to that node.
An actor Ray cannot place is reported with a reason computed from the alive
nodes' resources; on an autoscaling cluster the fleet asks for the missing
resources instead of waiting. Every function here that talks to Ray is called
from the fleet's monitor thread only.
"""

from __future__ import annotations

import logging
from typing import Any

from orchestrator.config import WorkerSlot, node_resource_name

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


def pending_reason(slot: WorkerSlot, by_label: dict[str, dict[str, float]]) -> str:
    """Why the slot's actor is not placed, from :func:`resources_by_label`."""
    node = by_label.get(slot.node_resource)
    if node is None:
        return (
            f"no Ray node carries the label {slot.node_resource} (node {slot.node!r} of the "
            "cluster file is not in the Ray cluster); start it with `ktc cluster up` or wait for it to join"
        )
    want = f"{slot.cpus:g} CPU" + (f", {slot.gpu_share:g} GPU" if slot.gpu_share else "")
    total = f"{node.get('CPU', 0):g} CPU, {node.get('GPU', 0):g} GPU"
    return (
        f"waiting for resources on node {slot.node!r}: the worker needs {want}; the node has "
        f"{total} in total and the rest is in use"
    )


def death_reason(exc: BaseException) -> str:
    """An actor's death, in one line: the exception type and its first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
