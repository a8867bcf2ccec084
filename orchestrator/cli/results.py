"""``ktc results DIR [--json] [--top N]``: a search's trials, best first.

Read from the ledger (opened read-only), so it works the same while the
search runs, after it ended, and after its chief died. Completed trials come
first, ranked by the objective; then the rest (running, pending, failed) by id.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from orchestrator.cli.render import make_console, scheduler_line, trials_table
from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument
from orchestrator.errors import ConfigError
from orchestrator.evaluation_results import (
    EvaluationFileError,
    EvaluationResults,
    load_results,
    summary_line,
)
from orchestrator.protocol.trials import TrialStatus, rank_trials
from orchestrator.status import read_search


def register(subparsers: Any) -> None:
    """Add the ``results`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "results",
        help="list a search's trials, best first",
        description="List a search's trials, best first (completed, ranked by the objective).",
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list (trial_id, status, score, hyperparameters, metrics, attempts, "
        "worker, duration_s)",
    )
    parser.add_argument(
        "--top", type=int, default=None, metavar="N", help="only the N best completed trials"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the ranked trials as a table or JSON."""
    if args.top is not None and args.top < 1:
        raise ConfigError(f"--top: expected a number of trials >= 1, got {args.top}")
    search = read_search(args.search_dir)
    for problem in search.damaged:
        print(f"warning: {problem}", file=sys.stderr)
    every = rank_trials(search.trials(), search.direction)
    ranked = every
    if args.top is not None:
        ranked = [t for t in every if t.status is TrialStatus.COMPLETED][: args.top]
    evaluation = read_evaluation(args.search_dir)
    if args.json:
        tested = evaluation.test_metrics_by_trial() if evaluation is not None else {}
        rows = [t.to_json() for t in ranked]
        for row in rows:
            if row["trial_id"] in tested:
                row["test_metrics"] = tested[row["trial_id"]]
        print(json.dumps(rows, indent=2))
        return 0
    console = make_console()
    # The header describes the whole search; --top only picks which rows follow.
    done = sum(1 for t in every if t.status is TrialStatus.COMPLETED)
    title = (
        f"{search.spec.name}: {len(every)} trial(s), {done} completed, "
        f"{search.objective} ({search.direction})"
    )
    if args.top is not None:
        title += f"; the top {len(ranked)}"
    console.print(trials_table(ranked, objective=search.objective, title=title))
    if not ranked:
        console.print("no trials yet", style="dim")
    scheduled = scheduler_line(ranked, search.spec)
    if scheduled is not None and args.top is None:
        console.print(scheduled, markup=False, highlight=False)
    if evaluation is not None:
        console.print(summary_line(evaluation), markup=False, highlight=False)
    return 0


def read_evaluation(search_dir: Path) -> EvaluationResults | None:
    """``ktc evaluate``'s results for the search, if it ran; a damaged file is a
    warning here (the trials are still worth showing), not a failure."""
    try:
        return load_results(search_dir)
    except EvaluationFileError as exc:
        print(f"warning: {exc}", file=sys.stderr)
        return None
