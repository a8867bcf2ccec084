"""``ktc logs ID [--follow] [--worker W [--stdout]] [--cluster CLUSTER.yaml]``: a
search's logs, from the cluster.

The chief's output is its Ray job's log (the job's driver is the chief), read
through the cluster's Ray Jobs API (``ray.dashboard``) with Ray's token:
everything so far, or with ``--follow`` every new line until the search
ends. ``--worker W`` reads worker W's newest process instead, from Ray's own
log files on its node, through the same dashboard (Ray's State API): its
stderr (warnings, tracebacks), or its stdout with ``--stdout``; ``--follow``
then keeps printing until Ctrl-C. The cluster is ``--cluster``, else the file
``ktc use`` remembered.
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
        "--worker", metavar="W", help="a worker's log (its id, as `ktc status` shows it)"
    )
    parser.add_argument(
        "--stdout", action="store_true", help="with --worker: its stdout instead of its stderr"
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
    if args.worker is not None:
        return _worker(jobs, job, args)
    if not args.follow or job.state.is_terminal:
        _write(jobs.logs(job.search_id))
    else:
        jobs.follow_logs(job.search_id, _write)
        job = jobs.search(job.search_id)
    if job.state.value in ("failed", "stopped") and job.message:
        # Ray's own word on the end (a runtime env that failed to set up, a dead
        # driver) is not in the job's output.
        print(f"# search {job.search_id} {job.state.value}: {job.message}", file=sys.stderr)
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _worker(jobs: Any, job: Any, args: argparse.Namespace) -> int:
    from orchestrator.worker_logs import (
        follow_worker_log,
        latest_process,
        worker_log,
        worker_processes,
    )

    process = latest_process(worker_processes(jobs, job), args.worker, job.search_id)
    stream = "out" if args.stdout else "err"
    print(
        f"# worker {process.worker_id}, process {process.incarnation} (pid {process.pid}, "
        f"{process.state.lower()}): {'stdout' if args.stdout else 'stderr'}",
        file=sys.stderr,
    )
    if args.follow and process.state == "ALIVE":
        follow_worker_log(jobs, process, stream=stream, on_text=_write)
    else:
        _write(worker_log(jobs, process, stream=stream))
    return 0
