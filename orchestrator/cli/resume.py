"""``ktc resume DIR [--cluster CLUSTER.yaml]``: continue an interrupted,
cancelled or failed search from its ledger. Completed trials never run again;
trials that were in flight run again (or, if their worker is still alive and
reports back within its lease, their result is accepted once)."""

from __future__ import annotations

import argparse
from pathlib import Path

from orchestrator.cli.session_cli import (
    add_session_arguments,
    hide_gpus_from_chief,
    run_in_foreground,
)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("resume", help="continue an interrupted search", description=__doc__)
    parser.add_argument("dir", metavar="DIR", help="the search directory")
    add_session_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    hide_gpus_from_chief()
    from orchestrator.chief.chief import Chief
    from orchestrator.config import load_cluster
    from orchestrator.search_dir import require_search_dir

    search_dir = require_search_dir(Path(args.dir))
    cluster = load_cluster(args.cluster) if args.cluster else None
    print(f"search directory: {search_dir}", flush=True)
    chief = Chief.resume(search_dir, cluster=cluster)
    chief.start()
    print(f"resuming: {chief.broker.message}", flush=True)
    return run_in_foreground(chief, args)
