"""Searches as Ray jobs: the chief submitted to a cluster's head through Ray's Jobs API.

A detached ``ktc submit`` runs the chief as a Ray job (the head's dashboard,
``ray.dashboard``, serves the Jobs API): the job's entrypoint makes the
storage root (``python -m orchestrator.storage``) and runs ``ktc submit
--no-progress --dir <storage>/<search id>`` on the head, as the KubeRay
``RayJob`` does (``deploy/render_kuberay_job.py``). The user's machine holds
nothing of the search; every later verb finds it by its id.

**The search id is the job's submission id**, ``<search name>-<UTC
YYYYmmdd-HHMMSS>`` (:func:`orchestrator.storage.search_dir_name`), with
``-2``, ``-3``... when a search of that name was submitted in the same
second; the search directory under ``storage`` has the same name. The job's
metadata names the search and its directory (:data:`META_SEARCH`,
:data:`META_SEARCH_DIR`, the keys the RayJob render writes too), which is how
:meth:`ClusterJobs.searches` tells searches from the cluster's other jobs.

**What the job ships and runs** is ``orchestrator/job_package.py``: one zip
(the user's ``ray.working_dir``, the search file, a cluster-file copy with
``ray.address: auto``) uploaded as the job's ``working_dir``, its size checked
against the Jobs API's limit before the upload.

**The head runs this ktcluster version**, or nothing is submitted: a tiny job
checks it first (``orchestrator/head_jobs.py``, which also runs the remote
verbs' short jobs on the head).

**Ray's token** is found where Ray looks (:func:`orchestrator.ray_dashboard.find_ray_token`;
the environment is passed in) and sent as ``Authorization: Bearer`` on every
request, whatever ``RAY_AUTH_MODE`` says on this machine; it is never logged.
Ray's client has no timeouts, so a bounded probe of ``/api/version`` runs first
and names what failed (no answer, no token, token refused, not Ray).

Ray is imported only inside these functions: the CLI imports verb modules at
start-up.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator import __version__
from orchestrator.config import ClusterSpec
from orchestrator.errors import ConfigError, JobsApiError, NotFoundError
from orchestrator.head_jobs import HeadJobs
from orchestrator.job_package import (
    CLUSTER_FILE,
    SEARCH_FILE,
    build_package,
    job_cluster_text,
    max_package_bytes,
    resume_entrypoint,
    search_dir_on_head,
    search_entrypoint,
)
from orchestrator.ray_dashboard import find_ray_token, probe_dashboard
from orchestrator.storage import search_dir_name

log = logging.getLogger(__name__)

META_SEARCH = "ktcluster-search"
META_SEARCH_DIR = "ktcluster-search-dir"
META_VERSION = "ktcluster-version"
META_CLUSTER = "ktcluster-cluster"
META_RESUME_OF = "ktcluster-resume-of"  # on a resume's job: the search id it continues
MAX_SAME_SECOND = 9
AGENT_WAIT_S = 30.0


class JobState(str, enum.Enum):
    """A search job's state, from Ray's job status."""

    STARTING = "starting"  # PENDING: the job's environment is being set up
    RUNNING = "running"  # the chief's process runs
    FINISHED = "finished"  # SUCCEEDED: the chief exited 0 (completed or cancelled)
    FAILED = "failed"  # the chief exited non-zero: the search failed, or its driver died
    STOPPED = "stopped"  # the job was stopped through the Jobs API

    @property
    def is_terminal(self) -> bool:
        """True once the chief's process is gone."""
        return self not in (JobState.STARTING, JobState.RUNNING)


_STATES = {
    "PENDING": JobState.STARTING,
    "RUNNING": JobState.RUNNING,
    "SUCCEEDED": JobState.FINISHED,
    "FAILED": JobState.FAILED,
    "STOPPED": JobState.STOPPED,
}


@dataclass(frozen=True)
class SearchJob:
    """One search on the cluster: its job, as the Jobs API describes it."""

    search_id: str
    search_name: str
    search_dir: str  # on the head
    state: JobState
    message: str  # Ray's status message
    start_time_s: float | None  # Unix time
    end_time_s: float | None
    driver_exit_code: int | None
    ktcluster_version: str | None
    ray_job_id: str | None  # the driver's Ray job id (hex), once it connected
    job_id: str = ""  # the submission id of the search's newest job (the search id, or a resume's)
    runs: int = 1  # its jobs: the submit, then one per resume

    @property
    def end_reason(self) -> str:
        """Why the job ended, in one line: Ray's own first line (its message carries
        the job's whole log tail after it) and the last error line of that tail."""
        return end_reason(self.message)

    def age_s(self, now_s: float) -> float | None:
        """Seconds since the job started."""
        return None if self.start_time_s is None else max(0.0, now_s - self.start_time_s)


@dataclass(frozen=True)
class SubmittedSearch:
    """A search submitted as a job."""

    search_id: str
    search_name: str
    search_dir: str  # on the head
    package_bytes: int


class ClusterJobs(HeadJobs):
    """The Jobs API of one cluster (``ray.dashboard``), with Ray's token.

    Each call is one or a few HTTP requests; nothing is cached but the connection.
    """

    def __init__(
        self, client: Any, url: str, ray_version: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._client = client
        self.url = url
        self.ray_version = ray_version  # the cluster's, from its dashboard
        self._headers = dict(headers or {})

    def auth_headers(self) -> dict[str, str]:
        """The headers that carry Ray's token (for the dashboard's other APIs); never log them."""
        return dict(self._headers)

    @classmethod
    def connect(
        cls, cluster: ClusterSpec, env: Mapping[str, str], *, timeout_s: float = 10.0
    ) -> ClusterJobs:
        """Reach the cluster's dashboard; JobsApiError naming what failed."""
        url = cluster.ray.dashboard_url
        if url is None:
            raise ConfigError(
                f"cluster {cluster.name!r}: ray.dashboard is not set; expected HOST:PORT of "
                "the head's Ray dashboard (its Jobs API), which searches submitted from this "
                "machine go through. Set ray.dashboard in the cluster file (8265 unless `ray "
                "start --dashboard-port` says otherwise)."
            )
        token = find_ray_token(env) if cluster.ray.auth else None
        probe = probe_dashboard(url, token=token, timeout_s=timeout_s)
        if not probe.ok:
            raise JobsApiError(probe.message())
        from ray.job_submission import JobSubmissionClient

        _quiet_ray_client()
        headers = {"Authorization": f"Bearer {token.value}"} if token else {}
        try:
            client = JobSubmissionClient(url, headers=headers)
        except (ConnectionError, RuntimeError) as exc:
            raise JobsApiError(f"ray.dashboard {url}: {exc}") from None
        return cls(client, url, probe.ray_version or "unknown", headers)

    # -- searches ---------------------------------------------------------

    def submit_search(
        self,
        *,
        cluster: ClusterSpec,
        search_name: str,
        search_file: Path,
        working_dir: Path | None,
        workers: int | None = None,
        now: datetime | None = None,
        max_bytes: int | None = None,
    ) -> SubmittedSearch:
        """Ship the files and submit the chief as a job; the caller checked them first."""
        storage = cluster.storage
        if storage is None:
            raise ConfigError(
                f"cluster {cluster.name!r}: storage is not set; expected storage: PATH, the "
                "folder on the head that holds search directories (a search submitted from "
                "this machine keeps its directory there). Set storage in the cluster file."
            )
        base = search_dir_name(search_name, now or datetime.now(timezone.utc))
        limit = max_package_bytes() if max_bytes is None else max_bytes
        with tempfile.TemporaryDirectory(prefix="ktc-job-") as tmp:
            files = {
                SEARCH_FILE: search_file.read_bytes(),
                CLUSTER_FILE: job_cluster_text(cluster, base).encode(),
            }
            package = build_package(working_dir, files, Path(tmp) / f"{base}.zip", max_bytes=limit)
            for attempt in range(1, MAX_SAME_SECOND + 1):
                search_id = base if attempt == 1 else f"{base}-{attempt}"
                search_dir = search_dir_on_head(storage, search_id)
                try:
                    self._submit_job(
                        entrypoint=search_entrypoint(
                            storage, search_id, workers=workers, keep_code=True
                        ),
                        submission_id=search_id,
                        runtime_env={"working_dir": str(package.path)},
                        metadata={
                            META_SEARCH: search_name,
                            META_SEARCH_DIR: search_dir,
                            META_VERSION: __version__,
                            META_CLUSTER: cluster.name,
                        },
                    )
                except RuntimeError as exc:
                    if "already exists" in str(exc) and attempt < MAX_SAME_SECOND:
                        continue
                    raise self._failed("submit the search", exc) from None
                return SubmittedSearch(search_id, search_name, search_dir, package.size_bytes)
        raise AssertionError("unreachable")  # pragma: no cover

    def searches(self) -> list[SearchJob]:
        """Every search on the cluster (jobs with our metadata), newest first; a resumed
        search is one entry, in the state of its newest job."""
        runs = self._search_runs()
        out = [_search_job(jobs[-1], search_id, len(jobs)) for search_id, jobs in runs.items()]
        return sorted(out, key=lambda job: -(job.start_time_s or 0.0))

    def search(self, search_id: str) -> SearchJob:
        """One search, as its newest job says; NotFoundError when the cluster has none."""
        return _search_job(*self._runs_of(search_id))

    def stop(self, search_id: str) -> bool:
        """Ask Ray to stop the search's newest job (SIGTERM to the chief: it requeues its
        running trials and exits; SIGKILL after Ray's grace period). False when it had
        already ended."""
        job = self.search(search_id)
        return bool(
            self._call(f"stop search {search_id}", lambda: self._client.stop_job(job.job_id))
        )

    def logs(self, search_id: str) -> str:
        """The output of the search's jobs so far, oldest first: the chief's log lines."""
        _, search_id, jobs_n = self._runs_of(search_id)
        return "".join(self._job_logs(search_id, n) for n in range(1, jobs_n + 1))

    def resume_search(
        self,
        *,
        search_id: str,
        cluster: ClusterSpec,
        working_dir: Path | None,
        workers: int | None = None,
        max_bytes: int | None = None,
    ) -> SearchJob:
        """Submit ``ktc resume <its directory>`` on the head as the search's next job.

        Its id is ``<search id>-r<n>``, its metadata the search's plus
        :data:`META_RESUME_OF`; the code ships again (the first job's package may be
        gone from the cluster). Refused while the search's newest job still runs.
        """
        job = self.search(search_id)
        if not job.state.is_terminal:
            raise JobsApiError(
                f"search {search_id}: its job {job.job_id} is still {job.state.value}; expected "
                f"an ended search to resume. Stop it first (`ray job stop {job.job_id}`), or "
                "let it end."
            )
        resume_id = _run_id(search_id, job.runs + 1)
        limit = max_package_bytes() if max_bytes is None else max_bytes
        with tempfile.TemporaryDirectory(prefix="ktc-job-") as tmp:
            files = {CLUSTER_FILE: job_cluster_text(cluster, search_id).encode()}
            package = build_package(
                working_dir, files, Path(tmp) / f"{resume_id}.zip", max_bytes=limit
            )
            try:
                self._submit_job(
                    entrypoint=resume_entrypoint(job.search_dir, workers=workers),
                    submission_id=resume_id,
                    runtime_env={"working_dir": str(package.path)},
                    metadata={
                        META_SEARCH: job.search_name,
                        META_SEARCH_DIR: job.search_dir,
                        META_VERSION: __version__,
                        META_CLUSTER: cluster.name,
                        META_RESUME_OF: search_id,
                    },
                )
            except RuntimeError as exc:
                raise self._failed(f"resume search {search_id}", exc) from None
        return self.search(search_id)

    def _search_runs(self) -> dict[str, list[Any]]:
        """Each search's jobs (Ray's job details), oldest first, by search id."""
        runs: dict[str, list[Any]] = {}
        for job in self._call("list the cluster's jobs", self._client.list_jobs):
            meta = job.metadata or {}
            if META_SEARCH in meta:
                runs.setdefault(meta.get(META_RESUME_OF) or str(job.submission_id), []).append(job)
        for jobs in runs.values():
            jobs.sort(key=lambda job: (job.start_time or 0, str(job.submission_id)))
        return runs

    def _runs_of(self, search_id: str) -> tuple[Any, str, int]:
        """The newest job of ``search_id``, the id, and how many jobs it has had."""
        jobs = self._search_runs().get(search_id)
        if jobs:
            return jobs[-1], search_id, len(jobs)
        try:
            self._client.get_job_info(search_id)
        except RuntimeError as exc:
            if "404" in str(exc) or "does not exist" in str(exc):
                raise NotFoundError(
                    f"search {search_id!r}: no such job on the cluster at {self.url}; expected "
                    "the id `ktc submit` printed. `ktc list` shows the cluster's searches."
                ) from None
            raise self._failed(f"read search {search_id}", exc) from None
        raise NotFoundError(
            f"search {search_id!r}: job {search_id} on {self.url} is not a ktcluster "
            "search (its metadata names none); expected a search id. `ktc list` shows "
            "the cluster's searches."
        )

    def _job_logs(self, search_id: str, run: int) -> str:
        job_id = _run_id(search_id, run)
        text = str(
            self._call(f"read the logs of {job_id}", lambda: self._client.get_job_logs(job_id))
        )
        return text if run == 1 else f"# ---- resumed: job {job_id} ----\n{text}"

    def follow_logs(
        self, search_id: str, on_text: Callable[[str], None], *, timeout_s: float | None = None
    ) -> None:
        """Call ``on_text`` with the output of the search's jobs so far, then each new
        piece of its newest job's, until that job ends."""
        _, search_id, runs = self._runs_of(search_id)
        for run in range(1, runs):
            on_text(self._job_logs(search_id, run))
        newest = _run_id(search_id, runs)
        if runs > 1:
            on_text(f"# ---- resumed: job {newest} ----\n")

        async def tail() -> None:
            async for text in self._client.tail_job_logs(newest):
                on_text(text)

        try:
            asyncio.run(asyncio.wait_for(tail(), timeout_s))
        except TimeoutError:
            raise JobsApiError(
                f"job {search_id}: still running after {timeout_s:g} s; expected it to end"
            ) from None
        except RuntimeError as exc:
            raise self._failed(f"follow the logs of {search_id}", exc) from None

    def wait(self, job_id: str, *, timeout_s: float) -> None:
        """Return once the job ended; JobsApiError after ``timeout_s``.

        The Jobs API has no call that blocks until a job ends, and its log stream
        notices the end late (the server checks the status between reads, one
        second apart: ``LOG_TAIL_SLEEP_S`` in Ray's ``job_manager.py``; the version
        check took 6 s that way, 1 s this way). So the status is asked, 50 ms
        apart at first, doubling up to 0.5 s.
        """
        deadline = time.monotonic() + timeout_s
        pause_s = 0.05
        while True:
            status = self._call(f"read job {job_id}", lambda: self._client.get_job_status(job_id))
            if status.is_terminal():
                return
            if time.monotonic() + pause_s > deadline:
                raise JobsApiError(
                    f"ray.dashboard {self.url}: job {job_id} is still {status} after "
                    f"{timeout_s:g} s; expected it to end. The cluster may be busy: see "
                    f"`ray job logs {job_id}` and try again."
                )
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.5)

    def _submit_job(self, **kwargs: Any) -> str:
        """``submit_job``, again while the head has no job agent yet.

        A head that has just started answers 500 "No available agent to submit
        job" until its dashboard agent registered (a second or two); that is
        not the user's error. Anything else is raised at once.
        """
        deadline = time.monotonic() + AGENT_WAIT_S
        pause_s = 0.2
        while True:
            try:
                return str(self._client.submit_job(**kwargs))
            except RuntimeError as exc:
                if "No available agent" not in str(exc) or time.monotonic() > deadline:
                    raise
                log.info("the head has no job agent yet; trying again in %.1f s", pause_s)
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 2.0)

    # -- errors -----------------------------------------------------------

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except RuntimeError as exc:
            raise self._failed(what, exc) from None

    def _failed(self, what: str, exc: Exception) -> JobsApiError:
        return JobsApiError(f"ray.dashboard {self.url}: could not {what}: {exc}")


# Ray's job client logs every upload, package and closed log stream at INFO,
# and importing Ray sets its loggers to INFO whatever ours say.
_RAY_CLIENT_LOGGERS = (
    "ray.dashboard.modules.dashboard_sdk",
    "ray.dashboard.modules.job.sdk",
    "ray._private.runtime_env.packaging",
)


def _quiet_ray_client() -> None:
    """Hold Ray's client loggers at ours (WARNING unless ``ktc -v``), never below INFO."""
    level = max(logging.getLogger().getEffectiveLevel(), logging.INFO)
    for name in _RAY_CLIENT_LOGGERS:
        logging.getLogger(name).setLevel(level)


def cluster_file_of(explicit: str | None, env: Mapping[str, str]) -> str:
    """The cluster file a remote verb names: ``--cluster``, else the file ``ktc use``
    remembered; ConfigError when there is neither."""
    from orchestrator.config.user_settings import cluster_file_for

    cluster_file = cluster_file_for(explicit, env)
    if cluster_file is None:
        raise ConfigError(
            "no cluster file: expected --cluster CLUSTER.yaml, or one remembered with `ktc "
            "use CLUSTER.yaml`, naming the cluster (its ray.dashboard) the search runs on. "
            "Pass --cluster, or run `ktc use CLUSTER.yaml` once."
        )
    return cluster_file


def cluster_jobs_for(explicit: str | None, env: Mapping[str, str]) -> ClusterJobs:
    """The Jobs API of the cluster a remote verb names (:func:`cluster_file_of`)."""
    from orchestrator.config.loader import load_cluster

    return ClusterJobs.connect(load_cluster(cluster_file_of(explicit, env)), env)


def _run_id(search_id: str, run: int) -> str:
    """The submission id of a search's ``run``-th job: the search id, then ``-r<n>``."""
    return search_id if run == 1 else f"{search_id}-r{run - 1}"


def _search_job(job: Any, search_id: str | None = None, runs: int = 1) -> SearchJob:
    meta = job.metadata or {}
    status = getattr(job.status, "value", str(job.status))
    return SearchJob(
        search_id=str(search_id or job.submission_id),
        search_name=meta.get(META_SEARCH, ""),
        search_dir=meta.get(META_SEARCH_DIR, ""),
        state=_STATES.get(str(status), JobState.FAILED),
        message=str(job.message or ""),
        start_time_s=job.start_time / 1000 if job.start_time else None,
        end_time_s=job.end_time / 1000 if job.end_time else None,
        driver_exit_code=getattr(job, "driver_exit_code", None),
        ktcluster_version=meta.get(META_VERSION),
        ray_job_id=getattr(job, "job_id", None),
        job_id=str(job.submission_id),
        runs=runs,
    )


# Ray's message for a failed job: "Job entrypoint command failed with exit code -9,
# last available logs (truncated to 20,000 chars):\n<the tail of the job's output>".
_LOGS_FOLLOW = re.compile(r",?\s*last available logs.*$", re.IGNORECASE)
_ERROR_LINE = re.compile(r"\b(\w*Error|\w*Exception|error:|Killed|Fatal|fatal)\b")
MAX_REASON_CHARS = 300


def end_reason(message: str) -> str:
    """A job's end in one line (:attr:`SearchJob.end_reason`)."""
    first, _, tail = message.strip().partition("\n")
    reason = _LOGS_FOLLOW.sub("", first).strip()
    lines = [line.strip() for line in tail.splitlines() if line.strip()]
    error = next((line for line in reversed(lines) if _ERROR_LINE.search(line)), None)
    if error and error not in reason:
        reason = f"{reason}: {error}" if reason else error
    reason = reason or "no reason given"
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 3] + "..."
    return reason


def now_s() -> float:
    """Wall-clock time for ages (a function, so tests may pass another)."""
    return time.time()
