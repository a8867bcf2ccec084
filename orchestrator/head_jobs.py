"""ktcluster's own short jobs on a cluster's head: the version check and the verbs.

A mixin of :class:`orchestrator.jobs.ClusterJobs`, kept apart so each module
holds one concept: ``jobs.py`` runs searches as jobs; this runs the short jobs
around them.

**The head runs this ktcluster version**, or nothing is submitted:
:meth:`HeadJobs.head_environment` runs a tiny job first (no ``runtime_env``:
the head's own Python) that prints the head's ktcluster and Python versions
and where ``ktc`` is (Ray's ``/api/version`` knows only Ray's version). It
costs one short job, about 1 s.

**A verb by search id** (``ktc status ID``, ``results``, ``export``...) runs
as a short ``ktc`` job on the head (:meth:`HeadJobs.run_on_head`,
``orchestrator/remote_verbs.py``). Every helper job is deleted once it ended,
and the ones Ray brought back are swept by the next.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from orchestrator import __version__
from orchestrator.errors import JobsApiError

log = logging.getLogger(__name__)

META_CHECK = "ktcluster-check"  # a helper job's metadata key: what it is for
HEAD_CHECK_MARK = "ktcluster-head "
HEAD_CHECK_TIMEOUT_S = 120.0
HELPER_PREFIXES = ("ktc-check-", "ktc-verb-")  # the ids of ktcluster's own short jobs
HELPER_SWEEP_AFTER_S = 60.0  # a helper job this long over is deleted by the next one
# No `import ray` (a second of the check's one): the probe has Ray's version.
_HEAD_CHECK = (
    "import json, platform, shutil; import orchestrator; "
    f"print({HEAD_CHECK_MARK!r} + json.dumps({{'ktcluster': orchestrator.__version__, "
    "'python': platform.python_version(), 'ktc': shutil.which('ktc')}))"
)


@dataclass(frozen=True)
class HeadEnvironment:
    """What the head's own Python runs: the versions a search job will see."""

    ktcluster_version: str
    ray_version: str  # the dashboard's
    python_version: str
    ktc_path: str | None


class HeadJobs:
    """The version check and the verbs' jobs (see the module docstring)."""

    # Provided by ClusterJobs.
    _client: Any  # ray.job_submission.JobSubmissionClient
    url: str
    ray_version: str

    def _submit_job(self, **kwargs: Any) -> str:
        raise NotImplementedError  # ClusterJobs'

    def wait(self, job_id: str, *, timeout_s: float) -> None:
        raise NotImplementedError  # ClusterJobs'

    def _call(self, what: str, call: Callable[[], Any]) -> Any:
        raise NotImplementedError  # ClusterJobs'

    def _failed(self, what: str, exc: Exception) -> JobsApiError:
        raise NotImplementedError  # ClusterJobs'

    def head_environment(self, *, timeout_s: float = HEAD_CHECK_TIMEOUT_S) -> HeadEnvironment:
        """Run the tiny version job on the head and read what it printed."""
        info, logs = self._run_helper_job(
            HELPER_PREFIXES[0],
            f"python -c {shlex.quote(_HEAD_CHECK)}",
            kind="head-environment",
            what="the version check",
            timeout_s=timeout_s,
        )
        for line in str(logs).splitlines():
            if line.startswith(HEAD_CHECK_MARK):
                data = json.loads(line[len(HEAD_CHECK_MARK) :])
                return HeadEnvironment(
                    ktcluster_version=str(data["ktcluster"]),
                    ray_version=self.ray_version,
                    python_version=str(data["python"]),
                    ktc_path=data.get("ktc"),
                )
        tail = "\n".join(str(logs).strip().splitlines()[-5:])
        if "No module named 'orchestrator'" in str(logs):
            raise JobsApiError(
                f"ray.dashboard {self.url}: ktcluster is not installed in the head's Python "
                f"(`python -c 'import orchestrator'` failed there); expected ktcluster "
                f"{__version__}, as on this machine. Install it on the head (`pip install "
                f"ktcluster=={__version__}`, or in its image)."
            )
        raise JobsApiError(
            f"ray.dashboard {self.url}: the head's version check ended {info.status} without "
            f"an answer; expected its ktcluster and Ray versions. Its output:\n{tail}"
        )

    def check_head(self, *, timeout_s: float = HEAD_CHECK_TIMEOUT_S) -> HeadEnvironment:
        """:meth:`head_environment`, refused unless it runs this ktcluster with ``ktc``."""
        head = self.head_environment(timeout_s=timeout_s)
        if head.ktcluster_version != __version__:
            raise JobsApiError(
                f"ray.dashboard {self.url}: the head runs ktcluster {head.ktcluster_version}, "
                f"this machine {__version__}; expected the same version on both (the chief "
                "on the head and the verbs here speak one protocol and read one ledger). "
                f"Install ktcluster {__version__} on the head, or submit with the head's "
                "version from a machine that has it. Nothing was submitted."
            )
        if head.ktc_path is None:
            raise JobsApiError(
                f"ray.dashboard {self.url}: ktcluster {head.ktcluster_version} is installed "
                "on the head but `ktc` is not on the PATH its jobs run with; expected the "
                "`ktc` command there. Install ktcluster in the environment `ray start` ran "
                "from. Nothing was submitted."
            )
        return head

    def run_on_head(self, entrypoint: str, *, what: str, timeout_s: float = 900.0) -> Any:
        """Run a short ``ktc`` verb on the head as a job (the head's own Python, no
        runtime env) and return its :class:`~orchestrator.remote_verbs.Answer`,
        read from the job's output; the job is deleted after (stopped if it
        outlives ``timeout_s``)."""
        from orchestrator.remote_verbs import Answer

        _, logs = self._run_helper_job(
            HELPER_PREFIXES[1], entrypoint, kind="verb", what=what, timeout_s=timeout_s
        )
        return Answer.from_logs(str(logs), what=what)

    def _run_helper_job(
        self, prefix: str, entrypoint: str, *, kind: str, what: str, timeout_s: float
    ) -> tuple[Any, str]:
        """Run a short job of ktcluster's own (not a search) and return its info
        and output; it is deleted once it ended (stopped if it outlives
        ``timeout_s``), as are earlier ones that Ray brought back (below)."""
        from ray.job_submission import JobStatus

        job_id = f"{prefix}{datetime.now(timezone.utc):%Y%m%d-%H%M%S-%f}"
        try:
            self._submit_job(
                entrypoint=entrypoint, submission_id=job_id, metadata={META_CHECK: kind}
            )
        except RuntimeError as exc:
            raise self._failed(f"submit {what}", exc) from None
        try:
            self.wait(job_id, timeout_s=timeout_s)
            info = self._call(f"read {what}", lambda: self._client.get_job_info(job_id))
            logs = self._call(f"read {what}", lambda: self._client.get_job_logs(job_id))
        finally:
            status = self._call(f"read {what}", lambda: self._client.get_job_status(job_id))
            if status in (JobStatus.PENDING, JobStatus.RUNNING):
                self._call(f"stop {what}", lambda: self._client.stop_job(job_id))
            else:  # a finished helper is clutter in `ray job list`
                self._call(f"delete {what}", lambda: self._client.delete_job(job_id))
                self._sweep_helper_jobs(job_id)
        return info, str(logs)

    def _sweep_helper_jobs(self, current: str) -> None:
        """Delete ktcluster's helper jobs that ended a while ago.

        A helper deleted right after it ended can come back: Ray's job monitor
        notices the supervisor actor's exit on its next ping, finds no status
        (deleted), and writes one, FAILED ("Job supervisor actor died"). Each
        helper run sweeps those up; a failure here costs nothing but clutter.
        """
        cutoff_ms = (time.time() - HELPER_SWEEP_AFTER_S) * 1000
        try:
            for job in self._client.list_jobs():
                meta = job.metadata or {}
                # Brought back, it has lost its metadata (and its entrypoint): its id tells.
                ours = META_CHECK in meta or (
                    not meta and str(job.submission_id).startswith(HELPER_PREFIXES)
                )
                if (
                    ours
                    and job.submission_id != current
                    and job.status.is_terminal()
                    and (job.end_time or job.start_time or 0) < cutoff_ms
                ):
                    self._client.delete_job(job.submission_id)
        except Exception as exc:  # noqa: BLE001 - clutter only; the answer is in hand
            log.debug("could not sweep ktcluster's finished helper jobs: %s", exc)
