"""What the renderers can be asked for: the output format and its options."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from deploy.ray_start import DEFAULT_HEAD_PORT


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

    ``ray_auth`` None means "as the cluster YAML's ``ray.auth`` says".
    """

    ssh_user: str = "ubuntu"
    ssh_key: str = "~/.ssh/id_rsa"
    install: str = "pip install ktcluster"
    head_port: int = DEFAULT_HEAD_PORT
    ray_auth: bool | None = None
    image: str | None = None
    namespace: str | None = None
    # kuberay-job: the search file the RayJob runs, its name, and the render
    # time that names the job and its search directory (now, in UTC, if None).
    search_file: str | None = None
    job_name: str | None = None
    now: datetime | None = None
