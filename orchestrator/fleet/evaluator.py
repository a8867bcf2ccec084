"""The evaluation worker: one Ray actor shaped like a search worker, for ``ktc evaluate``.

:func:`run_job` starts (or connects to) Ray the way a search session does
(:func:`~orchestrator.fleet.embedded_ray.connect_ray`), starts one
:class:`workers.evaluate.EvaluationProcess` actor with the options of a
worker slot (:func:`~orchestrator.fleet.placement.actor_options`: its CPUs,
GPU share and node pin; the first GPU slot of the cluster file, else its
first slot) and the worker process environment, runs the job and stops the
actor (and the embedded Ray, when it started one).

The job carries the trials' artifacts as bytes, so they reach a remote
worker through Ray's object store: no shared filesystem is needed. An actor
Ray cannot place is reported with the reason after ``start_timeout_s``
(never a silent pending ``ray.get``). A failure on the worker is raised here
as the worker's own exception, unwrapped from Ray's ``RayTaskError`` (no Ray
header line, no colour codes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from orchestrator.config import ClusterSpec, WorkerSlot
from orchestrator.errors import ConfigError, FleetError, KtClusterError
from orchestrator.protocol.failures import format_error, one_line, strip_ansi

if TYPE_CHECKING:
    from workers.evaluate import EvaluationJob, EvaluationOutcome

log = logging.getLogger(__name__)

ACTOR_START_TIMEOUT_S = 180.0


def pick_slot(cluster: ClusterSpec) -> WorkerSlot:
    """The slot whose shape the evaluation takes: the first GPU worker's, else the first."""
    slots = cluster.worker_slots()
    if not slots:
        raise ConfigError(
            f"cluster {cluster.name!r}: it defines no worker slot to evaluate on; add a node "
            "with gpus or cpu_workers"
        )
    return next((slot for slot in slots if slot.is_gpu), slots[0])


def run_job(
    cluster: ClusterSpec,
    job: EvaluationJob,
    *,
    name: str,
    user_code: bool,
    dataset: Any = None,
    log_dir: str | None = None,
    start_timeout_s: float = ACTOR_START_TIMEOUT_S,
) -> tuple[EvaluationOutcome, dict[str, Any]]:
    """Run ``job`` in an actor shaped like the cluster's evaluation slot; (outcome, where).

    Starts the embedded Ray for a local cluster (and stops it after), else
    connects to ``ray.address``. ``dataset`` is the search's DatasetSpec (None:
    user code loads the data); ``log_dir``, where the actor writes its log
    (``DIR/logs`` when it runs on this machine). Raises the worker's own KtClusterError, or
    FleetError when the actor cannot be placed or dies.
    """
    import ray

    from orchestrator.fleet.embedded_ray import connect_ray

    slot = pick_slot(cluster)
    started_ray = connect_ray(cluster, user_code=user_code)
    actor = None
    try:
        actor, where = start_actor(
            cluster,
            slot,
            name=name,
            env_from_raylet=started_ray,
            user_code=user_code,
            log_dir=log_dir,
            start_timeout_s=start_timeout_s,
        )
        log.info("evaluating on %s", where)
        dataset_ref = _dataset_ref(cluster, job, dataset)
        try:
            outcome: EvaluationOutcome = ray.get(actor.run.remote(job, dataset_ref))
        except ray.exceptions.RayTaskError as exc:
            raise worker_failure(exc, slot.worker_id) from None
        except ray.exceptions.RayActorError as exc:
            raise FleetError(
                f"the evaluation worker (shaped like {slot.worker_id}) died: "
                f"{_first_line(exc)}; out of memory? Try a smaller --top or batch size"
            ) from None
        return outcome, where
    finally:
        if actor is not None:
            try:
                ray.kill(actor)
            except Exception as exc:  # already dead, or Ray is gone
                log.debug("could not kill the evaluation actor: %s", exc)
        if started_ray:
            ray.shutdown()


def start_actor(
    cluster: ClusterSpec,
    slot: WorkerSlot,
    *,
    name: str,
    env_from_raylet: bool,
    user_code: bool,
    log_dir: str | None = None,
    start_timeout_s: float = ACTOR_START_TIMEOUT_S,
) -> tuple[Any, dict[str, Any]]:
    """An :class:`~workers.evaluate.EvaluationProcess` actor shaped like ``slot`` (its
    CPUs, GPU share, node pin and worker environment), up; (actor, where it runs).

    ``env_from_raylet``: our embedded Ray's raylet already carries the worker
    environment (as for the search's actors); otherwise the actor gets it as
    runtime-env vars. FleetError with the pending reason when Ray cannot place it.
    """
    import ray

    from orchestrator.fleet.embedded_ray import actor_working_dir, user_pythonpath
    from orchestrator.fleet.placement import (
        actor_options,
        holders_by_label,
        pending_reason,
        resources_by_label,
    )
    from workers.actor import WORKER_PROCESS_ENV
    from workers.evaluate import remote_evaluation_class

    runtime_env: dict[str, Any] = {}
    if not env_from_raylet:
        env = {**WORKER_PROCESS_ENV, "CUDA_VISIBLE_DEVICES": slot.cuda_visible_devices}
        runtime_env["env_vars"] = env
        if cluster.is_local:
            env["PYTHONPATH"] = user_pythonpath()
        elif actor_working_dir(cluster, user_code=user_code):
            # A local folder went with ray.init (connect_ray), for the whole job.
            runtime_env["working_dir"] = actor_working_dir(cluster, user_code=user_code)
    options = actor_options(slot, name=name, runtime_env=runtime_env)
    actor = remote_evaluation_class().options(**options).remote(slot, log_dir)
    try:
        info = ray.get(actor.info.remote(), timeout=start_timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.kill(actor)
        raise FleetError(
            f"the evaluation worker (shaped like {slot.worker_id}) did not start within "
            f"{start_timeout_s:g} s: {pending_reason(slot, resources_by_label(), holders_by_label())}"
        ) from None
    return actor, {
        "worker_slot": slot.worker_id,
        "node": slot.node,
        "gpus": list(slot.gpus),
        **info,
    }


def _dataset_ref(cluster: ClusterSpec, job: EvaluationJob, dataset: Any) -> Any:
    """Ship the dataset when workers run on other machines and it is readable here (as
    ``ktc submit`` does); otherwise the worker loads its own copy."""
    if dataset is None or (cluster.is_local and not cluster.is_multi_machine):
        return None
    from workers.dataset_paths import dataset_path_problems

    if dataset_path_problems(job.search_json):
        return None  # the paths are the workers'
    import ray

    from workers.datasets import load_dataset

    return ray.put(load_dataset(dataset))


def worker_failure(exc: BaseException, worker: str) -> KtClusterError:
    """The worker's own exception from Ray's wrapper: a KtClusterError as it was raised,
    anything else as ``Type: message`` (no Ray header, no colour codes)."""
    from workers.evaluate import WorkerEvaluationError

    cause = getattr(exc, "cause", None)
    if isinstance(cause, WorkerEvaluationError):
        log.debug("the worker's traceback:\n%s", cause.traceback_tail)
        return KtClusterError(f"evaluation failed on the worker (shaped like {worker}): {cause}")
    if isinstance(cause, KtClusterError):
        return cause  # a refusal or a missing dataset, already addressed to the user
    if cause is not None:
        return KtClusterError(
            f"evaluation failed on the worker (shaped like {worker}): "
            f"{format_error(type(cause).__name__, str(cause))}"
        )
    return KtClusterError(
        f"evaluation failed on the worker (shaped like {worker}): {_first_line(exc)}"
    )


def _first_line(exc: BaseException) -> str:
    """Ray's own errors: the type and the first line (its header; the rest is a traceback)."""
    lines = [line for line in strip_ansi(str(exc)).splitlines() if line.strip()]
    return one_line(f"{type(exc).__name__}: {lines[0] if lines else ''}", limit=500)
