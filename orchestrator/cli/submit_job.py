"""``ktc submit`` against a remote cluster: the search submitted as a Ray job, and back.

:func:`submit_detached` is what ``ktc submit`` calls first (unless
``--attach``): for a cluster file whose ``ray.address`` is a remote head
(``HOST:PORT`` or ``ray://HOST:PORT``) it checks the files here, checks that
the head runs this ktcluster, submits the chief as a Ray job
(``orchestrator/jobs.py``), prints the search id and the commands that follow,
and returns at once. For ``local`` or ``auto`` (the machine runs the chief
itself: ``make demo``, or the head) it returns None and the search runs in
the foreground as before.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from orchestrator.config import ClusterSpec
from orchestrator.errors import ConfigError

FOREGROUND_ADDRESSES = ("local", "auto")


def detaches(cluster: ClusterSpec) -> bool:
    """True when ``ktc submit`` submits this cluster's searches as Ray jobs: a remote
    head whose job server the file names (``ray.dashboard``). Without one there is
    nowhere to submit to, and the chief runs here in the foreground, as on the
    head itself before searches ran as jobs."""
    return cluster.ray.address not in FOREGROUND_ADDRESSES and cluster.ray.dashboard is not None


def submit_detached(args: argparse.Namespace) -> int | None:
    """Submit ``args.search`` as a Ray job when ``args.cluster`` names a remote head.

    Returns the exit code once submitted, or None when the search belongs in
    the foreground (no cluster file, ``ray.address`` local or auto). The
    cluster file is ``--cluster``, else the one ``ktc use`` remembered. Every
    check runs before anything reaches the cluster.
    """
    from orchestrator.config.loader import load_cluster, load_search_document
    from orchestrator.config.preflight import check_hypermodel_space, check_worker_count
    from orchestrator.config.user_code import check_importable
    from orchestrator.config.user_settings import cluster_file_for, read_choice

    env = dict(os.environ)
    cluster_file = cluster_file_for(args.cluster, env)
    if cluster_file is None:
        return None
    cluster = load_cluster(cluster_file)
    if not detaches(cluster):
        return None
    _refuse_foreground_options(args)
    search, doc = load_search_document(args.search, check_paths=False)
    working_dir = working_dir_of(cluster)
    if working_dir is not None:
        check_importable(search, [str(working_dir)], source=doc.source, doc=doc)
    check_hypermodel_space(search, doc)
    check_worker_count(
        args.workers,
        cluster,
        where=f"the cluster file {cluster_file}",
        raise_cap="raise fleet.max_workers in the cluster file",
    )
    from orchestrator.jobs import ClusterJobs

    jobs = ClusterJobs.connect(cluster, env)
    _warn_ray_version(jobs.ray_version)
    jobs.check_head()
    submitted = jobs.submit_search(
        cluster=cluster,
        search_name=search.name,
        search_file=Path(args.search),
        working_dir=working_dir,
        workers=args.workers,
    )
    chosen = read_choice(env)
    remembered = chosen is not None and chosen.path == Path(os.path.abspath(cluster_file))
    suffix = "" if remembered else f" --cluster {shlex.quote(cluster_file)}"
    sid = submitted.search_id
    print(f"submitted search {sid} to cluster {cluster.name!r} ({jobs.url})")
    print(f"its chief runs on the head; its directory there: {submitted.search_dir}")
    print("follow it with:")
    width = len(f"ktc logs {sid} --follow{suffix}")
    for command, what in (
        (f"ktc status {sid}{suffix}", "its state, trials and workers"),
        (f"ktc logs {sid} --follow{suffix}", "the chief's output"),
        (f"ktc cancel {sid}{suffix}", "stop it (every result is kept)"),
        (f"ktc list{suffix}", "the cluster's searches"),
    ):
        print(f"  {command.ljust(width)}  # {what}")
    return 0


def _warn_ray_version(cluster_version: str) -> None:
    import ray

    if cluster_version != ray.__version__:
        print(
            f"warning: the cluster runs Ray {cluster_version}, this machine Ray "
            f"{ray.__version__}; Ray's Jobs API expects one version on both sides. Install "
            f"Ray {cluster_version} here if the submit fails.",
            file=sys.stderr,
        )


def _refuse_foreground_options(args: argparse.Namespace) -> None:
    if getattr(args, "dir", None):
        raise ConfigError(
            f"--dir {args.dir}: a search submitted to a remote cluster keeps its directory "
            "on the head, under the cluster file's storage (<storage>/<search id>); expected "
            "no --dir. Drop --dir, or run in the foreground with --attach."
        )
    if getattr(args, "metrics_port", None) is not None:
        raise ConfigError(
            f"--metrics-port {args.metrics_port}: the chief of a search submitted to a remote "
            "cluster runs on the head; expected chief.metrics_port in the cluster file "
            "instead (it is copied to the head). Set it there, or use --attach."
        )
    if getattr(args, "on_interrupt", "requeue") != "requeue":
        raise ConfigError(
            f"--on-interrupt {args.on_interrupt}: a search submitted to a remote cluster "
            "is not tied to this terminal (stopping it requeues running trials); expected "
            "no --on-interrupt. Drop it, or use --attach."
        )


def working_dir_of(cluster: ClusterSpec) -> Path | None:
    """The folder the job ships (``ray.working_dir``, relative to this directory)."""
    value = cluster.ray.working_dir
    if value is None:
        return None
    if "://" in value:
        raise ConfigError(
            f"ray.working_dir {value!r}: a remote URI; expected a local folder for a search "
            "submitted from this machine (its zip carries the search and cluster files too). "
            "Point ray.working_dir at the folder, or submit with --attach on the head."
        )
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise ConfigError(
            f"ray.working_dir {value!r}: {path} is not a folder; expected the folder with "
            "your own code to ship to the cluster. Fix ray.working_dir, or set it to null."
        )
    return path
