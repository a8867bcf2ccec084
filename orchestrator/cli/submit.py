"""``ktc submit SEARCH.yaml [--cluster CLUSTER.yaml] [--dir DIR] [--attach]``: run a
search on the cluster (embedded local Ray by default).

The cluster file is ``--cluster``, else the one ``ktc use`` remembered. When
its ``ray.address`` is a remote head (``HOST:PORT``), the chief is submitted
as a Ray job and the command returns with the search id
(``orchestrator/cli/submit_job.py``); ``--attach`` runs it here in the
foreground instead, as ``local`` and ``auto`` always do."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from orchestrator.config import ClusterSpec

from orchestrator.cli.session_cli import (
    add_session_arguments,
    connect_ray_while_importing,
    hide_gpus_from_chief,
    run_in_foreground,
    stop_ray,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("submit", help="run a search on the cluster", description=__doc__)
    parser.add_argument("search", metavar="SEARCH.yaml")
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="search directory (default: the search file's output.directory, else ./searches/<name>-<timestamp>)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve metrics for Prometheus on 127.0.0.1:PORT (the cluster file's "
        "chief.metrics_host); overrides chief.metrics_port, 0 turns it off",
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help="run the chief here in the foreground (live display, Ctrl-C) even when the "
        "cluster's ray.address is a remote head (default there: submit it as a Ray job "
        "on the head and return)",
    )
    add_session_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    hide_gpus_from_chief()
    from orchestrator.config.user_settings import cluster_file_for

    args.cluster = cluster_file_for(args.cluster, dict(os.environ))
    if not args.attach:
        from orchestrator.cli.submit_job import submit_detached

        code = submit_detached(args)
        if code is not None:
            return code
    from orchestrator.config.preflight import plan_submit

    # Every check that can run here runs before the chief, its folder or Ray exist.
    plan = plan_submit(
        args.search,
        args.cluster,
        dir_arg=args.dir,
        workers=args.workers,
        search_path=[os.getcwd()],
    )
    from orchestrator.chief.prometheus import check_metrics_port

    cluster = plan.cluster
    if args.metrics_port is not None:
        cluster = with_metrics_port(cluster, args.metrics_port)
    check_metrics_port(cluster.chief.metrics_host, cluster.chief.metrics_port)
    search, search_dir = plan.search, plan.search_dir
    # Ray starts while the chief's imports (TensorFlow among them) run in a thread.
    ray_started = connect_ray_while_importing(cluster, search)
    try:
        from orchestrator.chief.chief import Chief

        print(f"search directory: {search_dir}", flush=True)
        chief = Chief.create(
            search, search_dir, cluster=cluster, initial_space=_initial_space(search)
        )
        chief.start()
    except BaseException:
        stop_ray(ray_started)
        raise
    return run_in_foreground(chief, args, ray_started=ray_started)


def with_metrics_port(cluster: ClusterSpec, port: int) -> ClusterSpec:
    """``cluster`` with ``chief.metrics_port`` set to ``port`` (checked as the file's is)."""
    from orchestrator.config import ChiefSpec

    if not 0 <= port <= 65535:
        raise ConfigError(
            f"--metrics-port: expected a port 0..65535 (0 turns the endpoint off), got {port}"
        )
    chief = ChiefSpec.model_validate({**cluster.chief.model_dump(), "metrics_port": port})
    return cluster.model_copy(update={"chief": chief})


def _initial_space(search: object) -> object:
    """Hypermodels that declare their space without TensorFlow (the sleep
    benchmark) have the chief declare it; the others declare it from the first
    worker's build, as in Keras Tuner."""
    from workers.hypermodels import needs_tensorflow

    spec = search.hypermodel  # type: ignore[attr-defined]
    if needs_tensorflow(spec):
        return None
    import keras_tuner

    from workers.hypermodels.sleep import declare_sleep_space

    hp = keras_tuner.HyperParameters()
    declare_sleep_space(hp, spec.options, spec.overrides)
    return hp
