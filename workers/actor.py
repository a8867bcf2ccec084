"""The Ray worker actor: one per worker slot, pinned to its node and GPUs.

The fleet creates it with ``num_cpus`` always set (an actor that names any
resource would otherwise hold a hidden CPU for life), ``num_gpus`` = the slot's
GPU share and a tiny share of the node's label resource. ``__init__`` pins
``CUDA_VISIBLE_DEVICES`` to the cluster file's physical GPUs before anything
imports TensorFlow. Ray would set it to the GPU ids *it* picked; the process
environment (``WORKER_PROCESS_ENV``) tells it not to
(``RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES``) because the YAML, not Ray,
decides which physical GPU each worker owns. CPU-only workers get ``""``: Ray
does not mask GPUs for ``num_gpus=0`` actors.

That environment reaches the process in one of two ways. On a cluster, each
actor carries it as runtime-env vars (:func:`actor_env`, which also sets
``CUDA_VISIBLE_DEVICES``). On the embedded Ray that ``ktc submit`` starts, the
raylet was started with it and every worker process inherits it, so actors
carry no runtime env and Ray can start them from its worker pool.
"""

from __future__ import annotations

import logging
import os
import socket
import traceback
from pathlib import Path
from typing import Any

from orchestrator.protocol.failures import CRASH_TRACEBACK_MARK, strip_ansi
from workers.failures import classify
from workers.runner import RunSummary, TrialRunner, WorkerConfig

log = logging.getLogger(__name__)


class WorkerProcess:
    """The actor's body (``ray.remote`` is applied by :func:`remote_worker_class`)."""

    def __init__(self, config: WorkerConfig, dataset: Any = None) -> None:
        # Before anything imports TensorFlow: this process sees exactly its GPUs
        # (none for a CPU worker). On our embedded Ray this is the only place
        # it is set: the process came from the raylet's pool with no env vars.
        os.environ["CUDA_VISIBLE_DEVICES"] = (
            config.slot.cuda_visible_devices if config.slot is not None else ""
        )
        self.config = config
        self.dataset = dataset
        if config.log_dir:
            log_to_file(Path(config.log_dir) / f"worker-{config.worker_id}.log", config.worker_id)

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it sees (placement checks, status)."""
        import ray

        context = ray.get_runtime_context()
        return {
            "worker_id": self.config.worker_id,
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "node_id": context.get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            # The worker process settings as this process got them (placement audit).
            "process_env": {name: os.environ.get(name) for name in WORKER_PROCESS_ENV},
            "node_resources": sorted(
                name for name in ray.available_resources() if name.startswith("ktc_node_")
            ),
        }

    def run(self) -> RunSummary:
        """Run trials until STOP or the recycle quota (then the fleet starts a fresh process)."""
        dataset = self.dataset
        if dataset is not None and type(dataset).__name__ == "ObjectRef":
            import ray

            dataset = ray.get(dataset, timeout=600)
        try:
            return TrialRunner(self.config, dataset=dataset).run()
        except Exception as exc:
            # Re-raise as a plain RuntimeError: some exceptions (pydantic's, TF's)
            # do not survive Ray's pickling. Its first line is the real cause in
            # one line (what the fleet shows: placement.death_reason); the
            # traceback follows after CRASH_TRACEBACK_MARK.
            log.exception("worker %s crashed", self.config.worker_id)
            tail = strip_ansi(traceback.format_exc())[-3000:]
            failure = classify(exc)
            raise RuntimeError(f"{failure.message}\n{CRASH_TRACEBACK_MARK}\n{tail}") from None


def log_to_file(path: Path, worker_id: str) -> None:
    """Send this process's Python logging and its stdout/stderr (TensorFlow's
    C++ lines included) to ``path``, appended: one file per worker slot, kept
    in the search directory (``DIR/logs/``) instead of Ray's session logs.

    A folder that cannot be made (the search directory is on another machine)
    leaves Ray's own log files in charge.
    """
    try:
        # 0700 like the search directory it sits in (docs/security.md).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    except OSError as exc:
        log.warning("worker %s: cannot write its log to %s: %s", worker_id, path, exc)
        return
    # Native code writes to fds 1 and 2 directly; Python's streams follow them.
    for stream_fd in (1, 2):
        os.dup2(fd, stream_fd)
    os.close(fd)
    handler = logging.StreamHandler(open(path, "a", buffering=1, encoding="utf-8"))  # noqa: SIM115
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s [{worker_id}] %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)


_REMOTE: list[Any] = []


def remote_worker_class() -> Any:
    """``ray.remote(WorkerProcess)``, created once (needs ray imported)."""
    if not _REMOTE:
        import ray

        # max_concurrency=2: info() answers while run() is busy.
        decorator: Any = ray.remote(max_restarts=0, max_concurrency=2)  # type: ignore[call-overload]
        _REMOTE.append(decorator(WorkerProcess))
    return _REMOTE[0]


# Every worker process runs with these (plus its CUDA_VISIBLE_DEVICES).
WORKER_PROCESS_ENV: dict[str, str] = {
    "RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    # glibc gives each thread its own malloc arena; TF's many threads then
    # fragment memory that is never returned. Two arenas keep RSS near the live
    # heap (see BENCHMARKS.md, worker memory).
    "MALLOC_ARENA_MAX": "2",
}


def actor_env(config: WorkerConfig, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for the actor's process."""
    env = {
        **WORKER_PROCESS_ENV,
        "CUDA_VISIBLE_DEVICES": config.slot.cuda_visible_devices if config.slot else "",
    }
    env.update(extra or {})
    return env
