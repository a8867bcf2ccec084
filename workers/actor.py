"""The Ray worker actor: one process of a worker slot, pinned to its node and GPUs.

The slot's CPUs, GPU share and a sliver of its node's label resource are
reserved by the slot's placement group (``orchestrator/fleet/placement.py``),
for as long as the slot is wanted. Each worker process is an actor inside that
group's bundle that reserves nothing itself (``num_cpus=0``, ``num_gpus=0``),
so a recycled process's replacement (a *warm spare*) can start beside it on a
full node, import TensorFlow during the old process's last trial and take over
the moment it exits, while no other search can take the slot's GPUs in
between. ``__init__`` pins
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
import math
import os
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from orchestrator.config import WorkerSlot
from orchestrator.protocol.failures import CRASH_TRACEBACK_MARK, strip_ansi
from workers.failures import classify
from workers.runner import RunSummary, TrialRunner, WorkerConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessSetup:
    """What a worker process needs before it knows its trial protocol settings:
    its slot (GPUs, CPUs) and where it logs. A warm spare is created from this
    alone; the :class:`WorkerConfig` (with the credential) comes when it runs."""

    worker_id: str
    slot: WorkerSlot | None = None
    log_dir: str | None = None

    @classmethod
    def of(cls, config: WorkerConfig) -> ProcessSetup:
        return cls(worker_id=config.worker_id, slot=config.slot, log_dir=config.log_dir)


class WorkerProcess:
    """The actor's body (``ray.remote`` is applied by :func:`remote_worker_class`).

    Its life: ``info()`` once it is placed, optionally ``warm()`` (a spare
    waiting to take over its slot), then one ``run(config)``. ``recycle_due()``
    returns once ``run`` has started the last trial of its recycle quota, so the
    fleet can warm this process's replacement during that trial.
    """

    def __init__(self, setup: ProcessSetup) -> None:
        # Before anything imports TensorFlow: this process sees exactly its GPUs
        # (none for a CPU worker). On our embedded Ray this is the only place
        # it is set: the process came from the raylet's pool with no env vars.
        os.environ["CUDA_VISIBLE_DEVICES"] = (
            setup.slot.cuda_visible_devices if setup.slot is not None else ""
        )
        if setup.slot is not None:
            # The actor reserves no CPU itself (its slot's placement group
            # does), so Ray set OMP_NUM_THREADS=1; the slot's CPUs are the right count.
            os.environ["OMP_NUM_THREADS"] = str(max(1, math.floor(setup.slot.cpus)))
        self.setup = setup
        self._dataset: Any = None
        self._warm_lock = threading.Lock()  # run() waits for a warm() in progress
        self._quota = QuotaProgress()  # what recycle_due() waits on
        self._runner: TrialRunner | None = None
        if setup.log_dir:
            log_to_file(Path(setup.log_dir) / f"worker-{setup.worker_id}.log", setup.worker_id)
        else:
            # Ray's own log file of this process (its stderr): what `ktc logs ID
            # --worker W` reads, trial by trial, not only the warnings.
            log_info_to(sys.stderr, setup.worker_id)

    def info(self) -> dict[str, Any]:
        """Where this worker runs and what it sees (placement checks, status)."""
        import ray

        context = ray.get_runtime_context()
        return {
            "worker_id": self.setup.worker_id,
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

    def warm(self, needs_tensorflow: bool, dataset_box: list[Any] | None = None) -> float:
        """Do what a worker does before its first trial, short of touching a
        device: import TensorFlow, Keras, Keras Tuner and our runner's modules,
        and fetch the dataset from Ray's object store. Returns the seconds it
        took. No tensor, model or device listing happens here, so TensorFlow
        creates no CUDA context and takes no GPU memory (``devices_touched``
        tells); that waits for :meth:`run`, when this process owns the slot.
        """
        started = time.monotonic()
        with self._warm_lock:
            if needs_tensorflow:
                import keras  # noqa: F401
                import keras_tuner  # noqa: F401
                import tensorflow  # noqa: F401

                import orchestrator.protocol.oracle_client  # noqa: F401
                import workers.datasets  # noqa: F401
                import workers.devices  # noqa: F401
                import workers.hypermodels  # noqa: F401
                from workers.kt_tuner import ktc_tuner_class

                ktc_tuner_class()
            if dataset_box:
                self._dataset = _fetch_dataset(dataset_box[0])
        log.info(
            "worker %s: spare process %d warm in %.1f s",
            self.setup.worker_id,
            os.getpid(),
            time.monotonic() - started,
        )
        return time.monotonic() - started

    def devices_touched(self) -> bool:
        """Whether TensorFlow in this process has listed or initialised its
        devices (the CPU stand-in for "holds a CUDA context")."""
        import sys

        if "tensorflow" not in sys.modules:
            return False
        from tensorflow.python.eager import context

        ctx = context.context()
        return bool(ctx._initialized or ctx._physical_devices is not None)

    def run(
        self,
        config: WorkerConfig,
        dataset_box: list[Any] | None = None,
        predecessor_pid: int | None = None,
    ) -> RunSummary:
        """Run trials until STOP or the recycle quota (then the fleet starts a fresh process).

        ``predecessor_pid`` is the slot's previous process on this node: a GPU
        worker waits for it to exit before TensorFlow touches the GPU, so two
        processes never hold one GPU's memory.
        """
        try:
            if predecessor_pid is not None and config.slot is not None and config.slot.gpus:
                wait_for_exit(predecessor_pid, PREDECESSOR_EXIT_TIMEOUT_S, config.worker_id)
            with self._warm_lock:  # a spare's warm() finishes first
                dataset = self._dataset
                if dataset is None and dataset_box:
                    dataset = _fetch_dataset(dataset_box[0])
            self._quota.begin(config.max_trials)
            self._runner = TrialRunner(
                config, dataset=dataset, on_trial_start=self._quota.trial_started
            )
            return self._runner.run()
        except Exception as exc:
            # Re-raise as a plain RuntimeError: some exceptions (pydantic's, TF's)
            # do not survive Ray's pickling. Its first line is the real cause in
            # one line (what the fleet shows: placement.death_reason); the
            # traceback follows after CRASH_TRACEBACK_MARK.
            log.exception("worker %s crashed", config.worker_id)
            tail = strip_ansi(traceback.format_exc())[-3000:]
            failure = classify(exc)
            raise RuntimeError(f"{failure.message}\n{CRASH_TRACEBACK_MARK}\n{tail}") from None
        finally:
            self._quota.end()

    def recycle_due(self, lead: int = 1) -> bool:
        """Block until :meth:`run` starts one of the last ``lead`` trials of its
        recycle quota (True: time to warm the successor), or returns first (False)."""
        return self._quota.due(lead)


class QuotaProgress:
    """A worker process's way through its recycle quota, for another thread to wait on."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._quota = 0  # trials before recycling; 0 = never
        self._started = 0
        self._over = False

    def begin(self, quota: int) -> None:
        with self._cond:
            self._quota = quota
            self._cond.notify_all()

    def trial_started(self, trials_started: int) -> None:
        with self._cond:
            self._started = trials_started
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._over = True
            self._cond.notify_all()

    def due(self, lead: int) -> bool:
        """Block until one of the last ``lead`` trials of the quota started (True)
        or the run ended first (False; always so without a quota)."""
        with self._cond:
            while not self._over:
                if self._quota > 0 and self._started >= max(1, self._quota - lead + 1):
                    return True
                self._cond.wait()
            return False


PREDECESSOR_EXIT_TIMEOUT_S = 60.0


def wait_for_exit(pid: int, timeout_s: float, worker_id: str) -> bool:
    """Wait until process ``pid`` (on this machine) is gone; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return True  # someone else's process under a reused pid: ours is gone
        if time.monotonic() >= deadline:
            log.warning(
                "worker %s: its previous process %d is still alive after %.0f s; "
                "using the GPU anyway",
                worker_id,
                pid,
                timeout_s,
            )
            return False
        time.sleep(0.05)


def _fetch_dataset(dataset: Any) -> Any:
    if dataset is not None and type(dataset).__name__ == "ObjectRef":
        import ray

        return ray.get(dataset, timeout=600)
    return dataset


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
    log_info_to(open(path, "a", buffering=1, encoding="utf-8"), worker_id)  # noqa: SIM115


def log_info_to(stream: TextIO, worker_id: str) -> None:
    """This process's Python logging, INFO and up, to ``stream``, each line
    naming the worker."""
    handler = logging.StreamHandler(stream)
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

        # max_concurrency=4: info() and recycle_due() answer while run() is busy.
        decorator: Any = ray.remote(max_restarts=0, max_concurrency=4)  # type: ignore[call-overload]
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


def actor_env(slot: WorkerSlot | None, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables for the actor's process."""
    env = {
        **WORKER_PROCESS_ENV,
        "CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices if slot else "",
    }
    env.update(extra or {})
    return env
