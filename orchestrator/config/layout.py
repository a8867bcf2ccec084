"""Worker slots: the resolved placement of every worker a cluster file describes.

A node's layout is one of: one worker per GPU (the default), ``workers_per_gpu``
workers packed on each GPU with a memory cap, an explicit ``workers`` list (a
worker may own several GPUs), plus CPU-only workers. This module turns those
into :class:`WorkerSlot` values the fleet places on Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.config.cluster import NodeSpec


def node_resource_name(node: str) -> str:
    """The custom Ray resource that pins a worker to ``node`` (``ktc_node_<node>``)."""
    return f"ktc_node_{node}"


@dataclass(frozen=True)
class WorkerSlot:
    """One worker position: where it runs, which GPUs it sees, and its share of them.

    ``gpu_share`` is the Ray ``num_gpus`` of the actor: ``len(gpus)`` for a
    dedicated worker, ``1 / workers_per_gpu`` when packed, 0.0 for CPU workers.
    ``gpus`` are physical indices on the node's machine.
    """

    worker_id: str
    node: str
    host: str
    index: int
    gpus: tuple[int, ...]
    gpu_share: float
    memory_cap_mb: int | None
    cpus: float

    @property
    def is_gpu(self) -> bool:
        """True when the worker owns (a share of) at least one GPU."""
        return bool(self.gpus)

    @property
    def is_multi_gpu(self) -> bool:
        """True when the worker trains on several GPUs (MirroredStrategy)."""
        return len(self.gpus) > 1

    @property
    def cuda_visible_devices(self) -> str:
        """The ``CUDA_VISIBLE_DEVICES`` value for this worker (``"2,3"``, or ``""`` for CPU)."""
        return ",".join(str(g) for g in self.gpus)

    @property
    def node_resource(self) -> str:
        """The custom Ray resource naming this worker's node."""
        return node_resource_name(self.node)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready view (used by ``ktc validate --json``)."""
        return {
            "worker_id": self.worker_id,
            "node": self.node,
            "host": self.host,
            "index": self.index,
            "gpus": list(self.gpus),
            "gpu_share": self.gpu_share,
            "memory_cap_mb": self.memory_cap_mb,
            "cpus": self.cpus,
            "cuda_visible_devices": self.cuda_visible_devices,
            "node_resource": self.node_resource,
        }


def resolved_memory_cap_mb(node: NodeSpec) -> int | None:
    """The per-worker GPU memory cap of ``node`` in MB (from MB, or fraction x gpu_memory_mb)."""
    if node.memory_cap_mb is not None:
        return node.memory_cap_mb
    if node.memory_cap_fraction is not None and node.gpu_memory_mb is not None:
        return int(node.memory_cap_fraction * node.gpu_memory_mb)
    return None


def default_cpu_workers(node: NodeSpec, cpus_per_worker: float) -> int:
    """CPU-only workers when ``cpu_workers`` is not set: none on GPU nodes, else what fits."""
    if node.cpu_workers is not None:
        return node.cpu_workers
    if node.gpus:
        return 0
    return int(node.cpus // cpus_per_worker)


def node_worker_count(node: NodeSpec, fleet_cpus_per_worker: float) -> int:
    """How many slots :func:`node_slots` would build, computed without building them.

    The cluster checks this against ``fleet.max_workers`` first: a node with
    ``cpus_per_worker: 0.001`` on 65,536 CPUs must not allocate 65 million slots.
    """
    if node.workers is not None:
        return len(node.workers)
    cpw = node.cpus_per_worker if node.cpus_per_worker is not None else fleet_cpus_per_worker
    return len(node.gpus) * node.workers_per_gpu + default_cpu_workers(node, cpw)


def node_slots(node: NodeSpec, fleet_cpus_per_worker: float) -> tuple[WorkerSlot, ...]:
    """The worker slots of one node, in a deterministic order (GPU workers, then CPU)."""
    cpw = node.cpus_per_worker if node.cpus_per_worker is not None else fleet_cpus_per_worker
    cap = resolved_memory_cap_mb(node)
    # (gpus, gpu_share, cpus) per slot, then numbered in order.
    shapes: list[tuple[tuple[int, ...], float, float]] = []
    if node.workers is not None:
        for entry in node.workers:
            cpus = entry.cpus if entry.cpus is not None else cpw
            shapes.append((tuple(entry.gpus), float(len(entry.gpus)), cpus))
    else:
        per_gpu = node.workers_per_gpu
        share = 1.0 if per_gpu == 1 else 1.0 / per_gpu
        for gpu in node.gpus:
            shapes.extend(((gpu,), share, cpw) for _ in range(per_gpu))
        shapes.extend(((), 0.0, cpw) for _ in range(default_cpu_workers(node, cpw)))
    return tuple(
        WorkerSlot(
            worker_id=f"{node.name}-w{i}",
            node=node.name,
            host=node.host,
            index=i,
            gpus=gpus,
            gpu_share=share,
            memory_cap_mb=cap if gpus else None,
            cpus=cpus,
        )
        for i, (gpus, share, cpus) in enumerate(shapes)
    )
