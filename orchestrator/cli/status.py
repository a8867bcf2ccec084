"""``ktc status DIR [--json] [--watch]``: the state of a search, live or from its ledger.

With a live chief the document comes from its Control RPC ``Status`` (workers
included); otherwise from the ledger (a ``running`` ledger with no chief is
reported ``interrupted``). ``--watch`` re-renders every 2 s until the state is
final.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from rich.live import Live

from orchestrator.cli.render import make_console, render_status
from orchestrator.cli.results import read_evaluation
from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument
from orchestrator.evaluation_results import summary_line
from orchestrator.status import status_document

WATCH_INTERVAL_S = 2.0


def register(subparsers: Any) -> None:
    """Add the ``status`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "status",
        help="show a search's state, trials and workers",
        description=(
            "Show a search's state (running, completed, failed, cancelled, or interrupted "
            "when no chief is alive), its trials by status, its workers and the best so far."
        ),
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument(
        "--watch",
        action="store_true",
        help=f"re-render every {WATCH_INTERVAL_S:g} s until the search ends",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the status document once, or watch it."""
    document = status_document(args.search_dir)
    if args.json and not args.watch:
        print(json.dumps(document.to_json(), indent=2))
        return 0
    console = make_console()
    if not args.watch:
        console.print(render_status(document))
        evaluation = read_evaluation(args.search_dir)
        if evaluation is not None:
            console.print(summary_line(evaluation), markup=False, highlight=False)
        return 0
    if args.json:
        # JSON lines: one document per refresh, for scripts that follow a search.
        print(json.dumps(document.to_json()), flush=True)
        while not document.is_terminal:
            time.sleep(WATCH_INTERVAL_S)
            document = status_document(args.search_dir)
            print(json.dumps(document.to_json()), flush=True)
        return 0
    with Live(render_status(document), console=console, refresh_per_second=4) as live:
        while not document.is_terminal:
            time.sleep(WATCH_INTERVAL_S)
            document = status_document(args.search_dir)
            live.update(render_status(document))
    sys.stdout.flush()
    return 0
