"""``ktc logs DIR|ID [--follow] [--worker W [--stdout]] [--cluster CLUSTER.yaml]``: a
search's logs.

A search directory here: the chief's log (``DIR/chief.log``), or with
``--worker W`` that worker's log when its workers ran on this machine
(``DIR/logs/worker-W.log``); ``--follow`` keeps printing the chief's log
until no chief serves the search.

A search id (``orchestrator/cli/search_arg.py``): the chief's output is its
Ray job's log (the job's driver is the chief), read through the cluster's
Ray Jobs API (``ray.dashboard``) with Ray's token: everything so far, or
with ``--follow`` every new line until the search ends. ``--worker W`` reads
worker W's newest process instead, from Ray's own log files on its node,
through the same dashboard (Ray's State API): its stderr (warnings,
tracebacks), or its stdout with ``--stdout``; ``--follow`` then keeps
printing until Ctrl-C. The cluster is ``--cluster``, else the file ``ktc
use`` remembered.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from orchestrator.cli.search_arg import add_cluster_argument, add_search_argument

# A file being written has no event to wait on: its end is read again this often.
FOLLOW_INTERVAL_S = 0.5
WORKER_LOGS_DIR = "logs"


def register(subparsers: Any) -> None:
    """Add the ``logs`` verb to the ``ktc`` parser."""
    parser = subparsers.add_parser(
        "logs",
        help="a search's log (the chief's output), here or from the cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_search_argument(parser, dest="search_id")
    parser.add_argument(
        "--follow", "-f", action="store_true", help="keep printing new lines until the search ends"
    )
    parser.add_argument(
        "--worker", metavar="W", help="a worker's log (its id, as `ktc status` shows it)"
    )
    parser.add_argument(
        "--stdout", action="store_true", help="with --worker: its stdout instead of its stderr"
    )
    add_cluster_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the chief's log (or a worker's), once or following it."""
    from orchestrator.jobs import cluster_jobs_for
    from orchestrator.remote_verbs import remote_search_id
    from orchestrator.search_dir import require_search_dir

    search_id = remote_search_id(args)
    if search_id is None:
        return _local(args, require_search_dir(Path(args.search_id)))
    jobs = cluster_jobs_for(args.cluster, dict(os.environ))
    job = jobs.search(search_id)
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
        print(f"# search {job.search_id} {job.state.value}: {job.end_reason}", file=sys.stderr)
    return 0


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _local(args: argparse.Namespace, search_dir: Path) -> int:
    """A search directory on this machine: its chief's log, or a worker's from DIR/logs."""
    from orchestrator.errors import ConfigError, SearchDirError
    from orchestrator.search_dir import LOG_FILE

    worker_logs = sorted((search_dir / WORKER_LOGS_DIR).glob("worker-*.log"))
    known = [path.name[len("worker-") : -len(".log")] for path in worker_logs]
    if args.worker is not None:
        if args.worker not in known:
            raise ConfigError(
                f"--worker {args.worker}: search {search_dir} has no log of such a worker "
                f"here; expected one of ({', '.join(known) or 'none'}), the workers whose "
                f"logs are in {search_dir / WORKER_LOGS_DIR}. Workers on other machines log "
                "there, in Ray's log folder."
            )
        path = search_dir / WORKER_LOGS_DIR / f"worker-{args.worker}.log"
    else:
        path = search_dir / LOG_FILE
        if not path.is_file():
            raise SearchDirError(
                f"{path}: no chief's log; expected the one `ktc submit` writes beside the "
                f"ledger. Its output went to the terminal that ran the chief."
            )
        where = (
            f"{search_dir / WORKER_LOGS_DIR}/worker-*.log (`ktc logs {search_dir} --worker W`, "
            f"W one of {', '.join(known)})"
            if known
            else "on the machines that ran them, in Ray's log folder"
        )
        print(f"# {path}; the workers' logs: {where}", file=sys.stderr)
    if args.follow:
        _follow(path, search_dir)
    else:
        _write(path.read_text(errors="replace"))
    return 0


def _follow(path: Path, search_dir: Path) -> None:
    """Print ``path`` and what is appended to it, until no chief serves the search."""
    from orchestrator.status import live_chief

    with path.open(errors="replace") as log:
        while True:
            text = log.read()
            if text:
                _write(text)
                continue
            if live_chief(search_dir) is None:
                _write(log.read())  # what the chief wrote before it went
                return
            time.sleep(FOLLOW_INTERVAL_S)


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
