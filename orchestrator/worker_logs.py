"""A search's worker logs, read from the cluster through Ray's dashboard.

On a cluster a worker process writes to Ray's own log files on its node
(``DIR/logs`` holds worker logs only when the whole search runs on one
machine: ``_worker_log_dir`` in orchestrator/fleet/session.py). The head's
dashboard serves them, whatever node they are on, through Ray's State API,
the channel and the token of the Jobs API (:class:`orchestrator.jobs.ClusterJobs`):

1. the search's job names the Ray job id its driver (the chief) got;
2. ``/api/v0/actors`` lists that job's actors: each worker process is one,
   named ``ktc-<search id[:8]>-<nonce>-<worker id>-<incarnation>``
   (``actor_prefix`` in orchestrator/fleet/session.py; an incarnation is a
   process of the slot: recycled ones and warm spares count up);
3. ``/api/v0/logs/file`` (or ``/stream``) returns an actor's stdout
   (``out``: the user's prints) or stderr (``err``: Python's warnings and
   tracebacks, TensorFlow's lines).

Each call is one HTTP request with a timeout; Ray's token goes in its header
and nowhere else.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import ConfigError
from orchestrator.jobs import ClusterJobs, JobsApiError, SearchJob

REQUEST_TIMEOUT_S = 30.0
MAX_ACTORS = 10_000
# ktc-<chief's search id (uuid hex)[:8]>-<session nonce (hex)[:6]>-<worker id>-<n>
_NAME = re.compile(r"^ktc-[0-9a-f]{8}-[0-9a-f]{6}-(?P<worker>.+)-(?P<incarnation>\d+)$")


@dataclass(frozen=True)
class WorkerProcess:
    """One worker process of a search, as Ray's State API lists its actor."""

    worker_id: str
    incarnation: int
    actor_id: str
    state: str  # Ray's actor state: ALIVE, DEAD, PENDING_CREATION, ...
    pid: int | None
    node_id: str | None


def worker_processes(jobs: ClusterJobs, job: SearchJob) -> list[WorkerProcess]:
    """Every worker process the search's chief started, by worker id then incarnation."""
    if not job.ray_job_id:
        raise JobsApiError(
            f"search {job.search_id}: its chief has not connected to Ray yet (job "
            f"{job.state.value}), so it has no workers; expected a running search. Try "
            f"again, or see `ktc logs {job.search_id}`."
        )
    params = {
        "filter_keys": "job_id",
        "filter_predicates": "=",
        "filter_values": job.ray_job_id,
        "limit": str(MAX_ACTORS),
        "detail": "false",
    }
    data = _get_json(jobs, "/api/v0/actors", params)
    out: list[WorkerProcess] = []
    for row in data.get("data", {}).get("result", {}).get("result", []):
        match = _NAME.match(str(row.get("name") or ""))
        if match is None:
            continue
        out.append(
            WorkerProcess(
                worker_id=match["worker"],
                incarnation=int(match["incarnation"]),
                actor_id=str(row["actor_id"]),
                state=str(row.get("state", "")),
                pid=row.get("pid"),
                node_id=row.get("node_id"),
            )
        )
    return sorted(out, key=lambda p: (p.worker_id, p.incarnation))


def latest_process(processes: list[WorkerProcess], worker_id: str, search_id: str) -> WorkerProcess:
    """The newest process of ``worker_id``; ConfigError (bad input: an argument that
    names no worker of the search) naming the search's workers."""
    mine = [p for p in processes if p.worker_id == worker_id]
    if not mine:
        known = ", ".join(sorted({p.worker_id for p in processes})) or "none yet"
        raise ConfigError(
            f"--worker {worker_id}: search {search_id} has no such worker; expected one of "
            f"its workers ({known}). `ktc status {search_id}` lists them."
        )
    return mine[-1]


def worker_log(jobs: ClusterJobs, process: WorkerProcess, *, stream: str) -> str:
    """The whole of one worker process's stdout (``out``) or stderr (``err``)."""
    params = _log_params(process, stream)
    response = _request(jobs, "/api/v0/logs/file", params, stream=False)
    return bytes(response.content).decode("utf-8", errors="replace")


def follow_worker_log(
    jobs: ClusterJobs, process: WorkerProcess, *, stream: str, on_text: Callable[[str], None]
) -> None:
    """Call ``on_text`` with the log so far, then each new piece, until the connection
    ends (Ray keeps it open while the file may grow: Ctrl-C ends it)."""
    params = _log_params(process, stream)
    response = _request(jobs, "/api/v0/logs/stream", params, stream=True)
    with response:
        for chunk in response.iter_content(chunk_size=None):
            on_text(bytes(chunk).decode("utf-8", errors="replace"))


def _log_params(process: WorkerProcess, stream: str) -> dict[str, str]:
    return {
        "actor_id": process.actor_id,
        "suffix": stream,
        "lines": "-1",
        "timeout": str(int(REQUEST_TIMEOUT_S)),
    }


def _get_json(jobs: ClusterJobs, path: str, params: dict[str, str]) -> dict[str, Any]:
    response = _request(jobs, path, params, stream=False)
    try:
        data = response.json()
    except ValueError:
        raise JobsApiError(
            f"ray.dashboard {jobs.url}: {path} did not answer JSON; expected Ray's State API"
        ) from None
    return data if isinstance(data, dict) else {}


def _request(jobs: ClusterJobs, path: str, params: dict[str, str], *, stream: bool) -> Any:
    import requests

    url = f"{jobs.url}{path}?{urllib.parse.urlencode(params)}"
    try:
        response = requests.get(
            url,
            headers=jobs.auth_headers(),
            stream=stream,
            # Connect and read timeouts; a followed stream may stay quiet for long.
            timeout=(REQUEST_TIMEOUT_S, None if stream else REQUEST_TIMEOUT_S),
        )
    except requests.RequestException as exc:
        raise JobsApiError(f"ray.dashboard {jobs.url}: {path}: {type(exc).__name__}") from None
    if response.status_code != 200:
        text = response.text[:500]
        response.close()
        raise JobsApiError(
            f"ray.dashboard {jobs.url}: {path} answered HTTP {response.status_code}: {text}"
        )
    return response
