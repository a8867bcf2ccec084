"""``ktc resume DIR [--cluster CLUSTER.yaml]``: continue an interrupted,
cancelled or failed search from its ledger. Completed trials never run again;
trials that were in flight run again (or, if their worker is still alive and
reports back within its lease, their result is accepted once)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.cli.search_arg import add_search_argument
from orchestrator.cli.session_cli import (
    add_session_arguments,
    hide_gpus_from_chief,
    run_in_foreground,
)

if TYPE_CHECKING:
    from orchestrator.config import ClusterSpec


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("resume", help="continue an interrupted search", description=__doc__)
    add_search_argument(parser, dest="dir")
    add_session_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    hide_gpus_from_chief()
    from orchestrator.chief.chief import Chief
    from orchestrator.chief.prometheus import check_metrics_port
    from orchestrator.config import load_cluster
    from orchestrator.config.preflight import check_worker_count
    from orchestrator.search_dir import require_search_dir

    search_dir = require_search_dir(Path(args.dir))
    cluster = load_cluster(args.cluster) if args.cluster else None
    # Before the chief or Ray starts: a refused --workers leaves the search as it was.
    if cluster is not None:
        check_worker_count(
            args.workers,
            cluster,
            where=f"the cluster file {args.cluster}",
            raise_cap="raise fleet.max_workers in the cluster file",
        )
    elif args.workers is not None:
        check_worker_count(
            args.workers,
            _stored_cluster(search_dir),
            where=f"the cluster {search_dir} was submitted with",
            raise_cap="resume with --cluster FILE whose fleet.max_workers is higher",
        )
    chief_spec = (cluster or _stored_cluster(search_dir)).chief
    check_metrics_port(chief_spec.metrics_host, chief_spec.metrics_port)
    chief = Chief.resume(search_dir, cluster=cluster)  # refuses a completed search: only the error
    print(f"search directory: {search_dir}", flush=True)
    chief.start()
    print(f"resuming: {chief.broker.message}", flush=True)
    return run_in_foreground(chief, args)


def _stored_cluster(search_dir: Path) -> ClusterSpec:
    """The cluster spec the search was submitted with (what a resume without --cluster runs on)."""
    from orchestrator.chief.ledger import Ledger
    from orchestrator.search_dir import LEDGER_FILE
    from orchestrator.search_meta import SearchMeta

    with Ledger(search_dir / LEDGER_FILE, read_only=True) as ledger:
        meta = ledger.meta()
    return SearchMeta.parse(meta, source=search_dir / LEDGER_FILE).cluster()
