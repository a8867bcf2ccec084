"""``ktc logs ID [--follow] [--cluster CLUSTER.yaml]``: a search's log, from the cluster.

The chief's output is its Ray job's log (the job's driver is the chief), read
through the cluster's Ray Jobs API (``ray.dashboard``) with Ray's token:
everything so far, or with ``--follow`` every new line until the search
ends. The cluster is ``--cluster``, else the file ``ktc use`` remembered.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``logs`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "logs",
        help="a search's log (the chief's output), from the cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("search_id", metavar="ID", help="the search id `ktc submit` printed")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the search ends"
    )
    parser.add_argument(
        "--cluster",
        metavar="CLUSTER.yaml",
        help="cluster file (default: the one `ktc use` remembered)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the chief's log, once or following it."""
    from orchestrator.jobs import cluster_jobs_for

    jobs = cluster_jobs_for(args.cluster, dict(os.environ))
    job = jobs.search(args.search_id)
    if not args.follow or job.state.is_terminal:
        sys.stdout.write(jobs.logs(job.search_id))
        sys.stdout.flush()
        return 0

    def write(text: str) -> None:
        sys.stdout.write(text)
        sys.stdout.flush()

    jobs.follow_logs(job.search_id, write)
    return 0
