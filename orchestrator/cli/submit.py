"""``ktc submit SEARCH.yaml [--cluster CLUSTER.yaml] [--dir DIR]``: run a search
in the foreground on the cluster (embedded local Ray by default)."""

from __future__ import annotations

import argparse
import os

from orchestrator.cli.session_cli import (
    add_session_arguments,
    hide_gpus_from_chief,
    run_in_foreground,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("submit", help="run a search on the cluster", description=__doc__)
    parser.add_argument("search", metavar="SEARCH.yaml")
    parser.add_argument(
        "--dir",
        metavar="DIR",
        help="search directory (default: the search file's output.directory, else ./searches/<name>-<timestamp>)",
    )
    add_session_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    hide_gpus_from_chief()
    from orchestrator.config.preflight import plan_submit

    # Every check that can run here runs before the chief, its folder or Ray exist.
    plan = plan_submit(
        args.search,
        args.cluster,
        dir_arg=args.dir,
        workers=args.workers,
        search_path=[os.getcwd()],
    )
    from orchestrator.chief.chief import Chief

    search, search_dir = plan.search, plan.search_dir
    print(f"search directory: {search_dir}", flush=True)
    chief = Chief.create(
        search, search_dir, cluster=plan.cluster, initial_space=_initial_space(search)
    )
    chief.start()
    return run_in_foreground(chief, args)


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
