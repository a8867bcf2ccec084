"""``ktc report DIR [--no-tensorboard]``: a search's pictures and summary as an
offline web page, and its TensorBoard summaries.

Read from the ledger (opened read-only), so it works while the search runs,
after it ended, and after its chief died. Writes ``DIR/report/index.html``
(with its PNG pictures beside it) and ``DIR/tensorboard/``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument

if TYPE_CHECKING:
    from orchestrator.report.data import ReportData


def register(subparsers: Any) -> None:
    """Add the ``report`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "report",
        help="write a search's report (DIR/report/index.html) and TensorBoard summaries",
        description=(
            "Write DIR/report/index.html: learning curves, best score so far, score against "
            "each hyperparameter, parallel coordinates, the trial table and the search space, "
            "all from the ledger; an offline page with PNG pictures beside it. Also write "
            "TensorBoard summaries under DIR/tensorboard (tensorboard --logdir DIR/tensorboard)."
        ),
    )
    add_search_argument(parser)
    add_cluster_argument(parser)
    parser.add_argument("--no-tensorboard", action="store_true", help="write the HTML report only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the report (and the summaries) and say where they are."""
    from orchestrator.report.build import build_report
    from orchestrator.report.data import read_report_data

    data = read_report_data(args.search_dir)
    for problem in data.damaged:
        print(f"warning: {problem}", file=sys.stderr)
    index = build_report(args.search_dir, data=data)
    print(f"report: {index}  ({len(data.trials)} trials)")
    if not args.no_tensorboard:
        from orchestrator.report.tensorboard import write_tensorboard

        written = write_tensorboard(data)
        pending = f", {not_ended_text(data)}" if written.not_ended else ""
        print(
            f"tensorboard: tensorboard --logdir {written.log_dir}  "
            f"({written.written} trial runs written, {written.already} already there{pending})"
        )
    return 0


def not_ended_text(data: ReportData) -> str:
    """The trials that have no TensorBoard run yet, by what they are doing: a
    live search's run or wait; with no live chief, nothing runs them."""
    from orchestrator.protocol.trials import SearchState, TrialStatus
    from orchestrator.status import live_chief

    counts = data.counts()
    running, pending = counts[TrialStatus.RUNNING], counts[TrialStatus.PENDING]
    if data.state is SearchState.RUNNING and live_chief(data.search_dir) is not None:
        parts = [f"{running} running" if running else "", f"{pending} pending" if pending else ""]
        return ", ".join(p for p in parts if p) + " (written as they end)"
    state = SearchState.INTERRUPTED if data.state is SearchState.RUNNING else data.state
    return f"{running + pending} not run (the search is {state.value}, with no live chief)"
