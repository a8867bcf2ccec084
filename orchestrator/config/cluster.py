"""The cluster file: where Ray is, the chief's endpoint, and the machines' workers.

Field checks live on each model; checks that need several fields (a GPU used
twice, CPUs that don't fit, TLS for several machines) live in model validators
and report the exact key path through :class:`FieldProblems`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.config import limits
from orchestrator.config.errors_format import FieldProblems, Problem
from orchestrator.config.hosts import check_host, is_loopback, split_host_port
from orchestrator.config.layout import (
    WorkerSlot,
    default_cpu_workers,
    node_slots,
    node_worker_count,
    resolved_memory_cap_mb,
)
from orchestrator.errors import ConfigError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

GpuIndex = Annotated[StrictInt, Field(ge=0, le=limits.MAX_GPU_INDEX)]
GpuList = Annotated[tuple[GpuIndex, ...], Field(max_length=limits.MAX_GPUS_PER_NODE)]
CpusPerWorker = Annotated[
    float, Field(ge=limits.MIN_CPUS_PER_WORKER, le=limits.MAX_CPUS_PER_WORKER)
]
MemoryMb = Annotated[StrictInt, Field(gt=0, le=limits.MAX_GPU_MEMORY_MB)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 65535:
        raise ValueError(f"{what} {port} is out of range; expected 0..65535. Use a valid port.")


class RaySpec(_Model):
    """Where Ray runs: ``local`` (embedded), ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``."""

    address: str = "local"
    auth: bool = True
    working_dir: str | None = "."

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value in ("local", "auto"):
            return value
        split = split_host_port(value.removeprefix("ray://"))
        if split is None:
            raise ValueError(
                f"expected 'local', 'auto', 'HOST:PORT' or 'ray://HOST:PORT', got {value!r}. "
                "Use 'local' to start Ray in-process, or the address of your Ray head."
            )
        check_host(split[0], "Ray head's host")
        _check_port(split[1], "port")
        return value


class TlsSpec(_Model):
    """TLS files for the chief's endpoint; relative paths are resolved against the YAML's folder."""

    cert: Path
    key: Path
    ca: Path

    @field_validator("cert", "key", "ca")
    @classmethod
    def _exists(cls, value: Path, info: ValidationInfo) -> Path:
        base = Path((info.context or {}).get("base_dir") or Path.cwd())
        path = value.expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ValueError(
                f"TLS file {str(value)!r} does not exist (looked for {path}); expected an "
                "existing PEM file. "
                "Create the files with `ktc cluster certs DIR` or fix the path "
                "(relative paths are relative to the cluster file's folder)."
            )
        return path


class ChiefSpec(_Model):
    """The chief's gRPC endpoint: bind host/port, the address workers dial, TLS."""

    host: str = "127.0.0.1"
    port: StrictInt = 0
    advertise: str | None = None
    tls: TlsSpec | None = None
    insecure: bool = False

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, "chief's bind address")

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        _check_port(value, "port")
        return value

    @field_validator("advertise")
    @classmethod
    def _advertise(cls, value: str | None) -> str | None:
        if value is None:
            return None
        split = split_host_port(value)
        host = split[0] if split is not None else value
        if not host or (split is None and ":" in value and not value.startswith("[")):
            raise ValueError(
                f"expected HOST or HOST:PORT that workers can dial, got {value!r}. "
                "For example 10.0.0.1 or chief.example.com:50051."
            )
        check_host(host, "address workers dial")
        if split is not None:
            _check_port(split[1], "advertise port")
        return value

    def plaintext_refusal(self) -> str | None:
        """Why the chief must not serve with these settings, or None when it may.

        A chief bound beyond loopback without TLS serves the search token and
        every trial in clear to the network; that takes an explicit
        ``insecure: true``.
        """
        if self.tls is not None or self.insecure or is_loopback(self.host):
            return None
        return (
            f"the chief would bind {self.host!r}, beyond loopback, without TLS (anyone on the "
            "network could read its traffic and the search token); expected chief.tls "
            "{cert, key, ca} or chief.insecure: true, got neither. Create certificates with "
            "`ktc cluster certs DIR` and set chief.tls, set chief.insecure: true on a trusted "
            "network, or bind chief.host: 127.0.0.1."
        )


class FleetSpec(_Model):
    """Defaults for every worker: CPUs each, and how often worker processes are recycled."""

    cpus_per_worker: CpusPerWorker = 1.0
    recycle_after_trials: StrictInt = Field(3, ge=0, le=limits.MAX_RECYCLE_AFTER_TRIALS)
    startup_timeout_s: float = Field(120.0, gt=0, le=limits.MAX_STARTUP_TIMEOUT_S)
    max_workers: StrictInt = Field(limits.DEFAULT_MAX_WORKERS, ge=1, le=limits.MAX_MAX_WORKERS)


class WorkerEntry(_Model):
    """One worker of an explicit ``workers`` list; no GPUs means a CPU-only worker.

    A bare list is a shorthand: ``- [2, 3]`` means ``- {gpus: [2, 3]}``.
    """

    gpus: GpuList = ()
    cpus: CpusPerWorker | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"gpus": data} if isinstance(data, list) else data


class NodeSpec(_Model):
    """One machine: its host, the GPUs ktcluster may use, CPUs, and its worker layout."""

    name: str = Field(pattern=NAME_PATTERN, max_length=128)
    host: str = "127.0.0.1"
    gpus: GpuList = ()
    cpus: StrictInt = Field(ge=1, le=limits.MAX_NODE_CPUS)
    gpu_memory_mb: MemoryMb | None = None
    workers: tuple[WorkerEntry, ...] | None = Field(None, max_length=limits.MAX_MAX_WORKERS)
    workers_per_gpu: StrictInt = Field(1, ge=1, le=limits.MAX_WORKERS_PER_GPU)
    memory_cap_mb: MemoryMb | None = None
    memory_cap_fraction: float | None = Field(None, gt=0, le=1)
    cpu_workers: StrictInt | None = Field(None, ge=0, le=limits.MAX_MAX_WORKERS)
    cpus_per_worker: CpusPerWorker | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, "node's host")

    @model_validator(mode="after")
    def _layout(self) -> NodeSpec:
        problems = _node_problems(self)
        if problems:
            raise FieldProblems(problems)
        return self


def _node_problems(node: NodeSpec) -> list[Problem]:
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


def _default_node() -> NodeSpec:
    return NodeSpec(name="local", host="127.0.0.1", cpus=max(2, os.cpu_count() or 1), cpu_workers=2)


def _is_local_host(host: str) -> bool:
    return host in LOCAL_HOSTS


class ClusterSpec(_Model):
    """A whole cluster file. ``worker_slots()`` gives the resolved worker map."""

    kind: Literal["cluster"] = "cluster"
    name: str = Field("local", pattern=NAME_PATTERN, max_length=128)
    ray: RaySpec = RaySpec()
    chief: ChiefSpec = ChiefSpec()
    fleet: FleetSpec = FleetSpec()
    shared_path: str | None = None
    nodes: tuple[NodeSpec, ...] = Field(default_factory=lambda: (_default_node(),), min_length=1)

    @model_validator(mode="after")
    def _cross_checks(self) -> ClusterSpec:
        problems = _cluster_problems(self)
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def is_local(self) -> bool:
        """True when Ray is embedded in the ``ktc`` process (``ray.address: local``)."""
        return self.ray.address == "local"

    @property
    def hosts(self) -> tuple[str, ...]:
        """Distinct machines, in file order; 127.0.0.1, localhost and ::1 count as one."""
        out: list[str] = []
        for node in self.nodes:
            host = "127.0.0.1" if _is_local_host(node.host) else node.host
            if host not in out:
                out.append(host)
        return tuple(out)

    @property
    def is_multi_machine(self) -> bool:
        """True when the nodes name more than one distinct host."""
        return len(self.hosts) > 1

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``; ConfigError naming the known nodes otherwise."""
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(n.name for n in self.nodes)
        raise ConfigError(f"cluster {self.name!r} has no node {name!r}; known nodes: {known}.")

    def worker_slots(self) -> tuple[WorkerSlot, ...]:
        """Every worker slot: nodes in file order, then each node's workers in order."""
        return tuple(
            slot for node in self.nodes for slot in node_slots(node, self.fleet.cpus_per_worker)
        )

    def warnings(self) -> list[str]:
        """Things that are valid but worth telling the user (``ktc validate`` prints them)."""
        out: list[str] = []
        if self.chief.insecure and self.chief.tls is None:
            reach = (
                "this machine only (loopback)"
                if is_loopback(self.chief.host)
                else f"the network (chief.host {self.chief.host!r})"
            )
            out.append(
                "chief.insecure is true: the chief's endpoint is not encrypted and is open to "
                f"{reach}, search token included; use it only on a trusted network (add "
                "chief.tls, see `ktc cluster certs DIR`)."
            )
        if self.chief.insecure and self.chief.tls is not None:
            out.append("chief.insecure is ignored because chief.tls is set.")
        if self.is_local:
            for i, node in enumerate(self.nodes):
                if not _is_local_host(node.host):
                    out.append(
                        f"nodes[{i}].host is {node.host!r} but ray.address is 'local' "
                        "(embedded Ray on this machine): all workers will run here. "
                        "Set ray.address to your Ray head to use that machine."
                    )
        for i, node in enumerate(self.nodes):
            if node.workers is not None:
                used = {g for entry in node.workers for g in entry.gpus}
                idle = [g for g in node.gpus if g not in used]
                if idle:
                    out.append(f"nodes[{i}].gpus: GPUs {idle} are listed but no worker uses them.")
        return out


def _cluster_problems(spec: ClusterSpec) -> list[Problem]:
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


def default_cluster() -> ClusterSpec:
    """The cluster used without a cluster file: embedded Ray, one node ``local``, 2 CPU workers."""
    return ClusterSpec(nodes=(_default_node(),))


__all__ = [
    "ChiefSpec",
    "ClusterSpec",
    "FleetSpec",
    "NodeSpec",
    "RaySpec",
    "TlsSpec",
    "WorkerEntry",
    "resolved_memory_cap_mb",
]
