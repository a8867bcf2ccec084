"""``ktc cancel DIR [--drain]``: stop a running search and keep every result.

By default the running trials are stopped at once and requeued (they run again
on resume); ``--drain`` lets them finish first. The ledger keeps every
completed trial, and ``ktc resume DIR`` continues the search.
"""

from __future__ import annotations

import argparse
from typing import Any

from orchestrator.cli.scale import connect
from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument


def register(subparsers: Any) -> None:
    """Add the ``cancel`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "cancel",
        help="stop a running search (every result is kept)",
        description=(
            "Stop a running search. Running trials are requeued at once, or finish "
            "first with --drain. Every result is kept; continue with `ktc resume DIR`."
        ),
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument(
        "--drain", action="store_true", help="let running trials finish before stopping"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Send Cancel to the live chief and print its summary."""
    with connect(
        args.search_dir,
        "nothing to cancel: the search is not running and its results are kept "
        "(see `ktc status {dir}`)",
    ) as client:
        summary = client.cancel(now=not args.drain)
    print(summary)
    print(f"every result is kept; continue with `ktc resume {args.search_dir}`")
    return 0
