"""The cluster file's checks across fields, reported at the exact key.

One node on its own (:func:`node_problems`: a GPU used twice, a memory cap that
does not fit) and the whole cluster (:func:`cluster_problems`: duplicate node
names, ``fleet.max_workers``, CPU capacity, TLS). The models in ``cluster.py``
call them from their validators; each :class:`Problem` carries a key path
relative to the model, so the message names e.g. ``nodes[1].workers[0].gpus[1]``.
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from orchestrator.config import limits
from orchestrator.config.errors_format import Problem
from orchestrator.config.layout import default_cpu_workers, node_slots, node_worker_count

if TYPE_CHECKING:
    from orchestrator.config.cluster import ClusterSpec, NodeSpec


def node_problems(node: NodeSpec) -> list[Problem]:
    """Checks within one node that need no fleet defaults."""
    problems: list[Problem] = []
    seen: dict[int, int] = {}
    for i, gpu in enumerate(node.gpus):
        if gpu in seen:
            problems.append(
                Problem(
                    ("gpus", i),
                    f"GPU {gpu} is listed twice (also gpus[{seen[gpu]}]); expected each GPU "
                    f"index once. Remove the repeated {gpu}.",
                )
            )
        seen.setdefault(gpu, i)
    if node.workers is not None:
        for key in ("workers_per_gpu", "cpu_workers"):
            if key in node.model_fields_set and not (
                key == "workers_per_gpu" and node.workers_per_gpu == 1
            ):
                problems.append(
                    Problem(
                        (key,),
                        f"'{key}' cannot be combined with an explicit 'workers' list; expected "
                        f"either 'workers' or '{key}', got both. List every worker (CPU-only "
                        "workers have no gpus) or remove 'workers'.",
                    )
                )
        owner: dict[int, int] = {}
        for w, entry in enumerate(node.workers):
            for g, gpu in enumerate(entry.gpus):
                path = ("workers", w, "gpus", g)
                if gpu not in node.gpus:
                    problems.append(
                        Problem(
                            path,
                            f"GPU {gpu} is not in this node's gpus {list(node.gpus)}; "
                            "expected one of those. Add it to the node's gpus or use one of "
                            "those.",
                        )
                    )
                elif gpu in owner:
                    problems.append(
                        Problem(
                            path,
                            f"GPU {gpu} is already used by {{0}}; expected each GPU in one "
                            "worker only. Give this worker another of the node's gpus or "
                            "remove it here (to share GPUs, drop 'workers' and set "
                            "workers_per_gpu with a memory cap).",
                            refs=(("workers", owner[gpu]),),
                        )
                    )
                owner.setdefault(gpu, w)
    caps = [k for k in ("memory_cap_mb", "memory_cap_fraction") if getattr(node, k) is not None]
    if len(caps) == 2:
        problems.append(
            Problem(
                ("memory_cap_fraction",),
                "expected either memory_cap_mb or memory_cap_fraction, got both. "
                "Remove one of them.",
            )
        )
    if node.workers_per_gpu > 1 and not caps:
        problems.append(
            Problem(
                ("workers_per_gpu",),
                f"workers_per_gpu is {node.workers_per_gpu}, so the workers share each GPU and "
                "need a memory cap; expected memory_cap_mb or memory_cap_fraction, got neither. "
                "Add one of them.",
            )
        )
    if node.memory_cap_fraction is not None:
        if node.gpu_memory_mb is None:
            problems.append(
                Problem(
                    ("memory_cap_fraction",),
                    "memory_cap_fraction needs gpu_memory_mb (the memory of one GPU) to "
                    "compute the cap in MB; expected gpu_memory_mb next to it, got none. "
                    "Add gpu_memory_mb or use memory_cap_mb.",
                )
            )
        if node.memory_cap_fraction * node.workers_per_gpu > 1 + 1e-9:
            problems.append(
                Problem(
                    ("memory_cap_fraction",),
                    f"{node.workers_per_gpu} workers per GPU x {node.memory_cap_fraction} "
                    f"= {node.memory_cap_fraction * node.workers_per_gpu:g} of the GPU's "
                    f"memory; the caps must fit in one GPU (at most "
                    f"{1 / node.workers_per_gpu:.3g} each); expected a total of at most 1. "
                    "Lower the fraction or workers_per_gpu.",
                )
            )
    if (
        node.memory_cap_mb is not None
        and node.gpu_memory_mb is not None
        and node.memory_cap_mb * node.workers_per_gpu > node.gpu_memory_mb
    ):
        problems.append(
            Problem(
                ("memory_cap_mb",),
                f"{node.workers_per_gpu} workers per GPU x {node.memory_cap_mb} MB = "
                f"{node.memory_cap_mb * node.workers_per_gpu} MB does not fit in gpu_memory_mb "
                f"{node.gpu_memory_mb}; expected at most "
                f"{node.gpu_memory_mb // node.workers_per_gpu} MB per worker. "
                "Lower memory_cap_mb or workers_per_gpu.",
            )
        )
    if (node.memory_cap_mb is not None or node.memory_cap_fraction is not None) and not node.gpus:
        problems.append(
            Problem(
                tuple(caps[:1]) or ("memory_cap_mb",),
                "a GPU memory cap is set but the node has no gpus; expected a cap only on a "
                "node with gpus. Remove the cap or add gpus.",
            )
        )
    return problems


def cluster_problems(spec: ClusterSpec) -> list[Problem]:
    problems: list[Problem] = []
    first: dict[str, int] = {}
    for i, node in enumerate(spec.nodes):
        if node.name in first:
            problems.append(
                Problem(
                    ("nodes", i, "name"),
                    f"node name {node.name!r} is already used by nodes[{first[node.name]}]; "
                    "node names must be unique (expected a name no other node has). "
                    "Rename one of them.",
                )
            )
        first.setdefault(node.name, i)
    too_many = _worker_count_problem(spec)
    if too_many is not None:
        # The worker map is never built past the cap (it has one entry per worker).
        problems.append(too_many)
    else:
        for i, node in enumerate(spec.nodes):
            problems.extend(_capacity_problems(spec, i, node))
    overlap = _storage_overlap(spec)
    if overlap is not None:
        problems.append(overlap)
    refusal = spec.chief.plaintext_refusal()
    if refusal is not None:
        problems.append(Problem(("chief", "host"), refusal))
    elif spec.is_multi_machine and spec.chief.tls is None and not spec.chief.insecure:
        problems.append(
            Problem(
                ("chief",),
                f"the cluster spans several machines ({', '.join(spec.hosts)}) but the chief's "
                "endpoint has no TLS; expected chief.tls {cert, key, ca}, got none. "
                "Create certificates with `ktc cluster certs DIR` and set chief.tls, "
                "or set chief.insecure: true on a trusted network.",
            )
        )
    return problems


def _storage_overlap(spec: ClusterSpec) -> Problem | None:
    """``storage`` and ``shared_path`` must not be one folder, nor one inside the other.

    Workers write their Keras Tuner files to ``<shared_path>/<search id>``; the
    chief keeps private search directories (ledger, token; 0700) under
    ``storage``. Nested, a worker's folder could be, or sit in, a search
    directory that only the chief may write.
    """
    if spec.storage is None or spec.shared_path is None:
        return None
    storage = posixpath.normpath(spec.storage)
    shared = posixpath.normpath(spec.shared_path)
    if storage == shared:
        relation = "is the same folder as"
    elif storage.startswith(shared.rstrip("/") + "/"):
        relation = "lies inside"
    elif shared.startswith(storage.rstrip("/") + "/"):
        relation = "contains"
    else:
        return None
    return Problem(
        ("storage",),
        f"{spec.storage!r} {relation} shared_path {spec.shared_path!r}; expected "
        "two separate folders: every worker writes to shared_path, while storage holds "
        "search directories (ledger, token) that only the chief may write. Set storage to "
        "a folder outside shared_path (for example a sibling: /shared/ktc-searches next to "
        "/shared/ktc-scratch).",
    )


def _worker_count_problem(spec: ClusterSpec) -> Problem | None:
    """The node that takes the worker map past ``fleet.max_workers``, if one does."""
    cap = spec.fleet.max_workers
    counts = [node_worker_count(node, spec.fleet.cpus_per_worker) for node in spec.nodes]
    total = sum(counts)
    if total <= cap:
        return None
    running = 0
    i = 0
    while running + counts[i] <= cap:  # the node whose workers cross the cap
        running += counts[i]
        i += 1
    node, count = spec.nodes[i], counts[i]
    key: tuple[str | int, ...] = ("nodes", i)
    if node.workers is not None:
        key = (*key, "workers")
    elif node.cpu_workers is not None:
        key = (*key, "cpu_workers")
    elif node.workers_per_gpu > 1:
        key = (*key, "workers_per_gpu")
    elif node.cpus_per_worker is not None:
        key = (*key, "cpus_per_worker")
    return Problem(
        key,
        f"this node has {count:,} workers and the cluster {total:,} in all, but "
        f"fleet.max_workers is {cap:,}; expected at most {cap:,} workers. Lower cpu_workers, "
        "workers_per_gpu or the workers' CPUs, or raise fleet.max_workers (at most "
        f"{limits.MAX_MAX_WORKERS:,}).",
    )


def _capacity_problems(spec: ClusterSpec, i: int, node: NodeSpec) -> list[Problem]:
    cpw = node.cpus_per_worker if node.cpus_per_worker is not None else spec.fleet.cpus_per_worker
    slots = node_slots(node, spec.fleet.cpus_per_worker)
    base: tuple[str | int, ...] = ("nodes", i)
    if not slots:
        if node.workers is not None:
            return [
                Problem(
                    (*base, "workers"),
                    "the workers list is empty, so no worker is possible on this node; "
                    "expected at least one worker. List one or remove the node.",
                )
            ]
        return [
            Problem(
                base,
                f"no workers possible: the node has no gpus and {default_cpu_workers(node, cpw)} "
                f"CPU workers (cpus {node.cpus} / cpus_per_worker {cpw:g}); expected at least "
                "one worker. Add gpus, set cpu_workers, or lower cpus_per_worker.",
            )
        ]
    needed = sum(slot.cpus for slot in slots)
    if needed > node.cpus + 1e-9:
        fit = int(node.cpus // cpw)
        where = (
            (*base, "workers")
            if node.workers is not None
            else (*base, "cpu_workers")
            if node.cpu_workers
            else base
        )
        return [
            Problem(
                where,
                f"more workers than the node can hold: {len(slots)} workers need {needed:g} CPUs "
                f"but the node has cpus {node.cpus}; at most {fit} workers of {cpw:g} CPUs fit, "
                "expected no more. Lower cpus_per_worker, cpu_workers or workers_per_gpu, or "
                "raise cpus.",
            )
        ]
    return []
