"""What the renderers can be asked for: the output format and its options."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from deploy.ray_start import DEFAULT_HEAD_PORT
from orchestrator.config.cluster import ClusterSpec
from orchestrator.config.hosts import split_host_port
from orchestrator.errors import ConfigError


class RenderFormat(str, enum.Enum):
    """An output of ``ktc cluster render``."""

    RAY_UP = "ray-up"
    KUBERAY = "kuberay"
    KUBERAY_JOB = "kuberay-job"
    COMMANDS = "commands"


def default_ray_image() -> str:
    """The Ray GPU image matching the installed Ray version (KubeRay pods)."""
    try:
        version = metadata.version("ray")
    except metadata.PackageNotFoundError:  # pragma: no cover - ray is a dependency
        version = "latest"
    return f"rayproject/ray:{version}-gpu"


@dataclass(frozen=True)
class RenderOptions:
    """Options shared by the renderers; each uses the ones that apply to it.

    ``ray_auth`` None means "as the cluster YAML's ``ray.auth`` says";
    ``head_port`` None "the port of ``ray.address``, else 6379" (:func:`head_port`).
    """

    ssh_user: str = "ubuntu"
    ssh_key: str = "~/.ssh/id_rsa"
    install: str = "pip install ktcluster"
    head_port: int | None = None
    ray_auth: bool | None = None
    image: str | None = None
    namespace: str | None = None
    # kuberay-job: the search file the RayJob runs, its name, and the render
    # time that names the job and its search directory (now, in UTC, if None).
    search_file: str | None = None
    job_name: str | None = None
    now: datetime | None = None


def head_port(spec: ClusterSpec, options: RenderOptions) -> int:
    """The head's Ray (GCS) port: ``--head-port``, else the port of a ``HOST:PORT``
    ``ray.address``, else 6379. Both given and different: ConfigError naming both.

    A ``ray://HOST:PORT`` address names the Ray Client server, not the GCS port
    the nodes join by, so it sets nothing here.
    """
    address = spec.ray.address
    split = None if address.startswith("ray://") else split_host_port(address)
    from_address = None if split is None else split[1]
    if options.head_port is None:
        return DEFAULT_HEAD_PORT if from_address is None else from_address
    if from_address is not None and from_address != options.head_port:
        raise ConfigError(
            f"--head-port {options.head_port} conflicts with ray.address {address!r} "
            f"(port {from_address}) of cluster {spec.name!r}; expected one port. Drop "
            f"--head-port to use {from_address}, or set ray.address to "
            f"{split[0] if split else 'HOST'}:{options.head_port}."
        )
    return options.head_port
