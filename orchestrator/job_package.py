"""What a search job ships and runs: its package, its cluster file, its entrypoint.

A detached ``ktc submit`` (``orchestrator/jobs.py``) ships one zip as the
job's ``working_dir``: the folder ``ray.working_dir`` names (the user's
``build_model``; Ray's own rules leave out ``.git``, ``.venv``,
``__pycache__`` and what ``.gitignore`` and ``.rayignore`` list) and
:data:`JOB_FILES_DIR` with the search file, byte for byte, and a copy of the
cluster file with ``ray.address: auto`` (the Ray cluster the job runs in), no
``ray.dashboard`` and ``ray.working_dir: null``: the worker actors the chief
starts inherit the job's ``working_dir``, so the code is uploaded once.

Building the zip here gives its exact size before anything is uploaded: the
dashboard refuses a request body over ``DASHBOARD_CLIENT_MAX_SIZE`` (100 MiB,
``ray/_private/ray_constants.py``) and the GCS a package over
``GCS_STORAGE_MAX_SIZE`` (512 MiB, ``ray/_private/runtime_env/packaging.py``);
the smaller one is the limit.

The entrypoint makes the storage root (``python -m orchestrator.storage``),
keeps the unpacked package as the search's code (``python -m
orchestrator.search_code``: the later verbs import the user's code from
there), and runs ``ktc submit --no-progress --dir <storage>/<search id>`` on the head,
as the KubeRay ``RayJob`` does (``deploy/render_kuberay_job.py``).
"""

from __future__ import annotations

import posixpath
import shlex
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.config import ClusterSpec, spec_data
from orchestrator.config.loader import parse_cluster
from orchestrator.errors import ConfigError

JOB_FILES_DIR = ".ktcluster-job"
SEARCH_FILE = "search.yaml"
CLUSTER_FILE = "cluster.yaml"


@dataclass(frozen=True)
class JobPackage:
    """The zip a search job ships as its ``working_dir``."""

    path: Path
    size_bytes: int


def max_package_bytes() -> int:
    """The largest package the Jobs API accepts: the dashboard's request limit or
    the GCS's, whichever is smaller (the module docstring)."""
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE

    return min(int(ray_constants.DASHBOARD_CLIENT_MAX_SIZE), int(GCS_STORAGE_MAX_SIZE))


def build_package(
    working_dir: Path | None,
    files: Mapping[str, bytes],
    target: Path,
    *,
    max_bytes: int,
    include_gitignore: bool = True,
) -> JobPackage:
    """Zip ``working_dir`` (Ray's rules, as for any ``working_dir``) and ``files``
    (under :data:`JOB_FILES_DIR`) into ``target``; ConfigError past ``max_bytes``."""
    from ray._private import ray_constants
    from ray._private.runtime_env.packaging import create_package

    if working_dir is not None:
        excludes = [*ray_constants.get_runtime_env_default_excludes(), JOB_FILES_DIR]
        create_package(
            str(working_dir), target, include_gitignore=include_gitignore, excludes=excludes
        )
    with zipfile.ZipFile(target, "a" if target.exists() else "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(f"{JOB_FILES_DIR}/{name}", data)
    size = target.stat().st_size
    if size >= max_bytes:
        raise ConfigError(_too_big(working_dir, target, size, max_bytes))
    return JobPackage(target, size)


def _too_big(working_dir: Path | None, package: Path, size: int, max_bytes: int) -> str:
    by_top: dict[str, int] = {}
    with zipfile.ZipFile(package) as zf:
        for info in zf.infolist():
            top = info.filename.split("/", 1)[0]
            by_top[top] = by_top.get(top, 0) + info.compress_size
    largest = sorted(by_top.items(), key=lambda item: -item[1])[:3]
    named = ", ".join(f"{name} ({_mib(n)})" for name, n in largest)
    return (
        f"ray.working_dir {working_dir}: the job's package is {_mib(size)} zipped; expected "
        f"less than {_mib(max_bytes)}, the most Ray's Jobs API accepts (the dashboard's "
        "DASHBOARD_CLIENT_MAX_SIZE, 100 MiB, and the GCS's GCS_STORAGE_MAX_SIZE, 512 MiB). "
        f"Largest entries: {named}. Leave data and outputs out: list them in a .rayignore "
        "(or .gitignore) file in that folder (Ray reads both; .git, .venv and __pycache__ "
        "are left out already), point ray.working_dir at a smaller folder, or give "
        "datasets as absolute paths on the cluster."
    )


def _mib(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB"


def job_cluster_text(spec: ClusterSpec, search_id: str, *, working_dir: str | None = None) -> str:
    """The cluster file the chief reads on the head (the module docstring); a verb's job
    on the head ships its own folder to the workers it starts (``working_dir``)."""
    data = spec_data(spec)
    ray = dict(data.get("ray", {}))
    ray["address"] = "auto"
    ray.pop("dashboard", None)
    ray["working_dir"] = working_dir  # None: the workers inherit the job's working_dir
    data["ray"] = ray
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
    parse_cluster(text, f"{CLUSTER_FILE} of search {search_id}")  # it must load on the head
    shipped = working_dir or "null (the workers inherit the job's)"
    return (
        f"# The cluster file of search {search_id}, copied by `ktc submit` from cluster "
        f"{spec.name!r}: ray.address auto (the chief runs as a Ray job on the head), no "
        f"ray.dashboard, ray.working_dir {shipped}.\n" + text
    )


def _shell_path(path: str) -> str:
    """``path`` for a POSIX shell; a leading ``~`` becomes ``"$HOME"`` (quoted, ``~``
    would not expand, and ``--dir`` takes its path as it is)."""
    if path == "~" or path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"' + (f"/{shlex.quote(rest)}" if rest else "")
    return shlex.quote(path)


def search_entrypoint(
    storage: str,
    search_id: str,
    *,
    workers: int | None = None,
    files_dir: str = JOB_FILES_DIR,
    keep_code: bool = False,
) -> str:
    """The job's shell command: make the storage root, then run the chief in it
    (``files_dir``: where the job finds the search and cluster files; the KubeRay
    ``RayJob`` mounts them elsewhere). ``keep_code``: first copy the folder the job
    runs in (its shipped package) into the search directory, for the verbs that
    import the user's code later (``orchestrator/search_code.py``)."""
    root = storage.rstrip("/") or "/"
    search_dir = _shell_path(posixpath.join(root, search_id))
    words = ["python -m orchestrator.storage", _shell_path(root)]
    if keep_code:
        words += ["&& python -m orchestrator.search_code", search_dir]
    words += [
        "&& ktc submit",
        f"{files_dir}/{SEARCH_FILE}",
        "--cluster",
        f"{files_dir}/{CLUSTER_FILE}",
        "--no-progress",
        "--dir",
        search_dir,
    ]
    if workers is not None:
        words += ["--workers", str(workers)]
    return " ".join(words)


def resume_entrypoint(search_dir: str, *, workers: int | None = None) -> str:
    """The shell command of a job that resumes the search in ``search_dir`` (on the head)."""
    words = [
        "ktc resume",
        _shell_path(search_dir),
        "--cluster",
        f"{JOB_FILES_DIR}/{CLUSTER_FILE}",
        "--no-progress",
    ]
    if workers is not None:
        words += ["--workers", str(workers)]
    return " ".join(words)


def search_dir_on_head(storage: str, search_id: str) -> str:
    """``<storage>/<search id>``, as the job's metadata records it."""
    return posixpath.join(storage.rstrip("/") or "/", search_id)
