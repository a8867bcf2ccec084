"""The cluster file: where Ray is, the chief's endpoint, and the machines' workers.

Field checks live on each model (ranges in ``limits.py``, hosts in
``hosts.py``); checks that need several fields (a GPU used twice, CPUs that
don't fit, ``fleet.max_workers``, TLS beyond loopback) are ``cluster_checks.py``,
called from the model validators, and report the exact key path through
:class:`FieldProblems`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    StrictBool,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from orchestrator.config import limits
from orchestrator.config.cluster_checks import cluster_problems, node_problems
from orchestrator.config.errors_format import FieldProblems
from orchestrator.config.hosts import check_host, is_loopback, split_host_port
from orchestrator.config.layout import (
    WorkerSlot,
    node_slots,
    resolved_memory_cap_mb,
)
from orchestrator.config.local_paths import path_problem
from orchestrator.config.spec_base import NAME_PATTERN, FrozenModel
from orchestrator.errors import ConfigError

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

GpuIndex = Annotated[StrictInt, Field(ge=0, le=limits.MAX_GPU_INDEX)]
GpuList = Annotated[tuple[GpuIndex, ...], Field(max_length=limits.MAX_GPUS_PER_NODE)]
CpusPerWorker = Annotated[
    float, Field(ge=limits.MIN_CPUS_PER_WORKER, le=limits.MAX_CPUS_PER_WORKER)
]
MemoryMb = Annotated[StrictInt, Field(gt=0, le=limits.MAX_GPU_MEMORY_MB)]


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= limits.MAX_PORT:
        raise ValueError(f"{what} {port} is out of range; expected 0..65535. Use a valid port.")


_DASHBOARD_SCHEMES = ("http://", "https://")


def _split_dashboard(value: str) -> tuple[str, str]:
    """(scheme, HOST:PORT) of a ``ray.dashboard`` value; the scheme defaults to http."""
    for scheme in _DASHBOARD_SCHEMES:
        if value.startswith(scheme):
            return scheme, value[len(scheme) :].rstrip("/")
    return "http://", value


def check_dashboard(value: str) -> tuple[str, int]:
    """The (host, port) of a ``ray.dashboard`` value; ValueError saying what is wrong."""
    scheme, rest = _split_dashboard(value)
    if "://" in rest:
        raise ValueError(
            f"expected HOST:PORT of the Ray dashboard (Ray's Jobs API, an HTTP server; "
            f"optionally after http:// or https://), got {value!r}. Use the dashboard's "
            "address, e.g. 10.0.0.1:8265, not the Ray client's ray://HOST:10001."
        )
    split = split_host_port(rest)
    if split is None:
        raise ValueError(
            f"expected HOST:PORT of the Ray dashboard (Ray's Jobs API), e.g. 10.0.0.1:8265, "
            f"got {value!r}. Add the port: Ray's dashboard listens on 8265 unless "
            "`ray start --dashboard-port` said otherwise."
        )
    host, port = split
    check_host(host, "Ray dashboard's host")
    if not 1 <= port <= limits.MAX_PORT:
        raise ValueError(
            f"port {port} is out of range; expected 1..65535 (the port the dashboard "
            "listens on, 8265 by default). Use a valid port."
        )
    return host, port


def dashboard_url(value: str) -> str:
    """``http://HOST:PORT`` (or the https form given) for a checked ``ray.dashboard`` value."""
    scheme, rest = _split_dashboard(value)
    return scheme + rest


def _check_head_path(value: str, key: str, what: str) -> str:
    """An absolute (or ``~``) path on the head; relative paths have no stable base there."""
    if not value.strip():
        raise ValueError(
            f"expected an absolute path on the head for {key} ({what}), got an empty "
            f"string. Write a path such as /srv/ktcluster, or remove {key}."
        )
    if "\x00" in value:
        raise ValueError(
            f"expected a path on the head for {key}, got text with a NUL byte. Fix the path."
        )
    if len(value) > limits.MAX_PATH_CHARS:
        raise ValueError(
            f"expected a path of at most {limits.MAX_PATH_CHARS} characters for {key}, got "
            f"{len(value)}. Shorten the path."
        )
    if not (value.startswith("/") or value.startswith("~")):
        raise ValueError(
            f"expected an absolute path on the head for {key} ({what}), e.g. /srv/ktcluster "
            f"or ~/ktcluster, got {value!r}: a relative path would be relative to the "
            "working directory of the chief's Ray job, a temporary folder. Write an "
            "absolute path."
        )
    return value


class RaySpec(FrozenModel):
    """Where Ray runs: ``local`` (embedded), ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``;
    and where its dashboard (the Jobs API) answers, when a search runs as a Ray job."""

    address: str = "local"
    auth: bool = True
    working_dir: str | None = "."
    # HOST:PORT (http), or http:// / https:// HOST:PORT. Checked by spelling only:
    # `ktc validate --check-dashboard` is the one thing that dials it.
    dashboard: str | None = None

    @field_validator("dashboard")
    @classmethod
    def _dashboard(cls, value: str | None) -> str | None:
        if value is None:
            return None
        check_dashboard(value)
        return value

    @property
    def dashboard_url(self) -> str | None:
        """``ray.dashboard`` as the URL Ray's ``JobSubmissionClient`` takes, or None."""
        return None if self.dashboard is None else dashboard_url(self.dashboard)

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


class TlsSpec(FrozenModel):
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
        problem = path_problem(path, "file")
        if problem is not None:
            raise ValueError(
                f"TLS file {str(value)!r} {problem} (looked for {path}); expected an "
                "existing, readable PEM file. "
                "Create the files with `ktc cluster certs DIR` or fix the path "
                "(relative paths are relative to the cluster file's folder)."
            )
        return path


class ChiefSpec(FrozenModel):
    """The chief's gRPC endpoint: bind host/port, the address workers dial, TLS."""

    host: str = "127.0.0.1"
    port: StrictInt = 0
    advertise: str | None = None
    tls: TlsSpec | None = None
    insecure: bool = False
    # Prometheus (orchestrator/chief/prometheus.py): 0 is off.
    metrics_port: StrictInt = 0
    metrics_host: str = "127.0.0.1"

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return check_host(value, "chief's bind address")

    @field_validator("metrics_host")
    @classmethod
    def _metrics_host(cls, value: str) -> str:
        return check_host(value, "metrics endpoint's bind address")

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        _check_port(value, "port")
        return value

    @field_validator("metrics_port")
    @classmethod
    def _metrics_port(cls, value: int) -> int:
        _check_port(value, "metrics_port")
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


class FleetSpec(FrozenModel):
    """Defaults for every worker: CPUs each, and how often worker processes are recycled."""

    cpus_per_worker: CpusPerWorker = 1.0
    recycle_after_trials: StrictInt = Field(3, ge=0, le=limits.MAX_RECYCLE_AFTER_TRIALS)
    # A recycled worker's replacement is started (and imports TensorFlow)
    # while the old process runs its last trial: the swap is off the critical path.
    warm_spares: StrictBool = True
    startup_timeout_s: float = Field(120.0, gt=0, le=limits.MAX_STARTUP_TIMEOUT_S)
    max_workers: StrictInt = Field(limits.DEFAULT_MAX_WORKERS, ge=1, le=limits.MAX_MAX_WORKERS)


class WorkerEntry(FrozenModel):
    """One worker of an explicit ``workers`` list; no GPUs means a CPU-only worker.

    A bare list is a shorthand: ``- [2, 3]`` means ``- {gpus: [2, 3]}``.
    """

    gpus: GpuList = ()
    cpus: CpusPerWorker | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"gpus": data} if isinstance(data, list) else data


class NodeSpec(FrozenModel):
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
        problems = node_problems(self)
        if problems:
            raise FieldProblems(problems)
        return self


def _default_node() -> NodeSpec:
    return NodeSpec(name="local", host="127.0.0.1", cpus=max(2, os.cpu_count() or 1), cpu_workers=2)


def _is_local_host(host: str) -> bool:
    return host in LOCAL_HOSTS


class ClusterSpec(FrozenModel):
    """A whole cluster file. ``worker_slots()`` gives the resolved worker map."""

    kind: Literal["cluster"] = "cluster"
    name: str = Field("local", pattern=NAME_PATTERN, max_length=128)
    ray: RaySpec = RaySpec()
    chief: ChiefSpec = ChiefSpec()
    fleet: FleetSpec = FleetSpec()
    shared_path: str | None = None
    # Where search directories live: read and written by the chief only, on the
    # head (or storage the head mounts). A path there, never checked here.
    storage: str | None = None
    nodes: tuple[NodeSpec, ...] = Field(default_factory=lambda: (_default_node(),), min_length=1)

    @field_validator("storage")
    @classmethod
    def _storage(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return _check_head_path(value, "storage", "the folder that holds search directories")

    @model_validator(mode="after")
    def _cross_checks(self) -> ClusterSpec:
        problems = cluster_problems(self)
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

    @property
    def chief_paths(self) -> tuple[tuple[str, str], ...]:
        """(key, path) of every path the chief itself reads or writes: the TLS files
        and ``storage``. They are paths on the machine that runs the chief, the head
        when the search runs as a Ray job, not on the machine that validated the file."""
        out: list[tuple[str, str]] = []
        if self.chief.tls is not None:
            for key in ("cert", "key", "ca"):
                out.append((f"chief.tls.{key}", str(getattr(self.chief.tls, key))))
        if self.storage is not None:
            out.append(("storage", self.storage))
        return tuple(out)

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
        if self.ray.dashboard is not None:
            host, _ = check_dashboard(self.ray.dashboard)
            if dashboard_url(self.ray.dashboard).startswith("http://") and not is_loopback(host):
                out.append(
                    f"ray.dashboard {self.ray.dashboard!r} is plain HTTP beyond loopback: "
                    "Ray's token travels in clear to it. On a network you do not trust, "
                    "reach it through an SSH tunnel (ssh -L 8265:localhost:8265 HEAD, then "
                    "ray.dashboard: 127.0.0.1:8265) or an https:// proxy."
                )
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
