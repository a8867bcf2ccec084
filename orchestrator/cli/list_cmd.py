"""``ktc list [--cluster CLUSTER.yaml] [--json]``: the searches on a cluster.

Every search submitted to the cluster as a Ray job (``ktc submit`` from
another machine, or the KubeRay ``RayJob`` render), newest first: its id,
state, age, and its directory on the head. The cluster is ``--cluster``, else
the file ``ktc use`` remembered; it is asked through its Ray Jobs API
(``ray.dashboard``) with Ray's token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from orchestrator.errors import KtClusterError


def register(subparsers: Any) -> None:
    """Add the ``list`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "list",
        help="the searches on a cluster (submitted as Ray jobs)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--cluster",
        metavar="CLUSTER.yaml",
        help="cluster file (default: the one `ktc use` remembered)",
    )
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the cluster's searches."""
    from orchestrator.jobs import cluster_jobs_for, now_s

    jobs = cluster_jobs_for(args.cluster, dict(os.environ))
    searches = jobs.searches()
    now = now_s()
    progress = _progress(jobs, [job.search_dir for job in searches])
    if args.json:
        rows = [
            {
                "search_id": job.search_id,
                "search": job.search_name,
                "state": job.state.value,
                "age_s": job.age_s(now),
                "start_time": job.start_time_s,
                "end_time": job.end_time_s,
                "search_dir": job.search_dir,
                "message": job.message,
                "progress": progress.get(job.search_dir),
            }
            for job in searches
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not searches:
        print(f"no searches on the cluster at {jobs.url}; submit one with `ktc submit`.")
        return 0
    table = [("SEARCH ID", "STATE", "AGE", "RAN", "TRIALS", "BEST", "DIRECTORY ON THE HEAD")]
    for job in searches:
        ran = None
        if job.start_time_s is not None:
            ran = (job.end_time_s or now) - job.start_time_s
        table.append(
            (
                job.search_id,
                job.state.value,
                _duration(job.age_s(now)),
                _duration(ran),
                *_trials_and_best(progress.get(job.search_dir)),
                job.search_dir,
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
            + "  "
            + row[-1]
        )
    return 0


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _progress(jobs: Any, search_dirs: list[str]) -> dict[str, dict[str, Any]]:
    """Each search's trials and best score, read on the head in one short job
    (the Jobs API knows only the chief's job); {} with a warning when it fails."""
    if not search_dirs:
        return {}
    from orchestrator.remote_verbs import summaries_request, verb_entrypoint

    try:
        answer = jobs.run_on_head(verb_entrypoint(summaries_request(search_dirs)), what="ktc list")
        return dict(json.loads(answer.stdout))
    except (KtClusterError, ValueError) as exc:
        print(f"warning: the searches' progress is not shown: {exc}", file=sys.stderr)
        return {}


def _trials_and_best(summary: dict[str, Any] | None) -> tuple[str, str]:
    if not summary or "error" in summary:
        return "-", "-"
    total = summary.get("max_trials")
    trials = f"{summary['completed']}/{total}" if total else str(summary["completed"])
    if summary.get("running"):
        # In flight with no live chief (a dead job): resume re-runs them.
        live = summary.get("state") == "running"
        trials += f" ({summary['running']} {'running' if live else 'interrupted'})"
    best = summary.get("best")
    return trials, "-" if best is None else f"{summary['objective']} {best:.4f}"
