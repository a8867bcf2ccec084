"""The trial runner: pull a trial, build, fit, report every epoch, upload, end.

Two paths, one protocol:

- **Keras Tuner path** (every real hypermodel): a KtcTuner
  (:mod:`workers.kt_tuner`: a stock ``keras_tuner.Tuner`` with four hooks) runs each trial, its oracle swapped
  for a :class:`~orchestrator.protocol.oracle_client.RemoteOracle`. User code written for
  Keras Tuner (``build_model(hp)``, ``HyperModel.fit``, conditional scopes,
  Hyperband's ``tuner/*`` values) runs unchanged.
- **Light path** (the ``sleep`` benchmark hypermodel): no TensorFlow import at
  all, so many workers fit in memory.

This module imports neither TensorFlow nor Keras Tuner at import time.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from orchestrator.config import SearchSpec, WorkerSlot
from orchestrator.errors import (
    ChiefUnavailableError,
    DatasetUnavailableError,
    KtClusterError,
    StaleLeaseError,
)
from orchestrator.protocol.client import (
    AssignmentKind,
    LeasedTrial,
    ReportAction,
    TrialClient,
)
from orchestrator.protocol.failures import TRACEBACK_TAIL_CHARS, FailureKind, strip_ansi
from orchestrator.protocol.lease_keeper import LeaseKeeper
from orchestrator.protocol.trials import AttemptStatus
from workers.dataset_paths import require_dataset_paths
from workers.failures import (
    Failure,
    SetupFailed,
    SpaceDeclarationFailed,
    classify,
    setup_failed,
)

log = logging.getLogger(__name__)

ARTIFACT_CHECKPOINT = "checkpoint.weights.h5"
ARTIFACT_BUILD_CONFIG = "build_config.json"


class ExitReason(str, Enum):
    """Why a runner returned."""

    STOP = "stop"  # the chief said STOP (search over, or this worker drained)
    RECYCLE = "recycle"  # ran its quota of trials; the fleet starts a fresh process
    CHIEF_GONE = "chief_gone"  # the chief stopped answering
    # This machine cannot run any trial of the search (``detail`` says why, e.g. a
    # dataset path missing here): the fleet fails the search with ``detail``.
    FATAL = "fatal"


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs; plain data, so Ray can ship it."""

    worker_id: str
    chief_address: str
    # This worker's credential, minted by the chief's registry when the fleet
    # started this process (the search token only for a chief without a fleet).
    token: str
    search_json: str  # SearchSpec.model_dump_json()
    slot: WorkerSlot | None = None
    ca_pem: bytes | None = None
    tls_server_name: str | None = None
    max_trials: int = 0  # trials before recycling; 0 = never recycle
    wait_s: float = 5.0
    reconnect_timeout_s: float = 60.0
    shared_path: str | None = None
    search_id: str = ""
    # DIR/logs of the search when the worker shares the chief's machine: the
    # worker's logging and stderr go to DIR/logs/worker-<id>.log.
    log_dir: str | None = None

    @property
    def search(self) -> SearchSpec:
        # The spec was checked where it was submitted; its dataset paths are
        # this machine's business, checked once by check_dataset_paths.
        return SearchSpec.model_validate_json(self.search_json, context={"check_paths": False})


def check_dataset_paths(config: WorkerConfig) -> None:
    """Raise DatasetUnavailableError unless the search's dataset paths can be read here."""
    require_dataset_paths(config.search_json, who=f"worker {config.worker_id}")


@dataclass(frozen=True)
class RunSummary:
    """What a runner did before it returned."""

    worker_id: str
    trials_run: int
    reason: ExitReason
    detail: str = ""
    pid: int = field(default_factory=os.getpid)


class TrialRunner:
    """Runs trials for one worker until STOP, its recycle quota, or the chief is gone.

    A worker whose machine cannot run the search at all (a dataset path missing
    here) returns ExitReason.FATAL before its first trial instead.
    """

    def __init__(
        self,
        config: WorkerConfig,
        dataset: Any = None,
        on_trial_start: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        # Called with the number of trials started so far as each trial starts
        # (the fleet warms this process's replacement during its last ones).
        self.on_trial_start = on_trial_start
        self.search = config.search
        self.dataset = dataset
        self.client = TrialClient(
            config.chief_address,
            config.token,
            worker_id=config.worker_id,
            ca_pem=config.ca_pem,
            server_name=config.tls_server_name,
            reconnect_timeout_s=config.reconnect_timeout_s,
        )
        self.trials_run = 0
        self._private_workdir: Path | None = None
        # Set by a FATAL trial failure: the search's end message (see on_trial_failure).
        self._fatal: str | None = None

    def run(self) -> RunSummary:
        from workers.hypermodels import needs_tensorflow

        try:
            # Before the first trial: a dataset missing on this machine would fail
            # every trial, so it ends the search instead (the fleet fails it). A
            # dataset the session shipped through Ray's object store needs no path.
            if self.dataset is None:
                check_dataset_paths(self.config)
            if needs_tensorflow(self.search.hypermodel):
                return self._run_keras_tuner()
            return self._run_light()
        except DatasetUnavailableError as exc:
            log.error("worker %s: %s", self.config.worker_id, exc)
            return self._summary(ExitReason.FATAL, str(exc))
        except SetupFailed as exc:
            log.error("worker %s: %s", self.config.worker_id, exc.detail)
            return self._summary(ExitReason.FATAL, exc.detail)
        except ChiefUnavailableError as exc:
            log.warning("worker %s: %s", self.config.worker_id, exc)
            return self._summary(ExitReason.CHIEF_GONE, str(exc))
        finally:
            self.client.close()
            if self._private_workdir is not None:
                shutil.rmtree(self._private_workdir, ignore_errors=True)

    def _setup_failed(self, exc: Exception) -> SetupFailed | None:
        """An exception before the first trial as :class:`SetupFailed` (the search
        ends with its message), or None when it may pass on another try (it is
        raised on: the process crashes and the fleet restarts it)."""
        return setup_failed(exc, self.config.worker_id)

    def on_trial_failure(self, trial_id: str, failure: Failure) -> AttemptStatus:
        """Record a trial's exception; the attempt status to end it with.

        FATAL errors end the trial FAILED and make the runner return
        ``ExitReason.FATAL`` once the trial is ended (the fleet fails the
        search). DETERMINISTIC ones end it FAILED (no retry) unless the search
        asks for retries; TRANSIENT ones INVALID (retried).
        """
        log.warning(
            "trial %s on worker %s failed (%s): %s",
            trial_id,
            self.config.worker_id,
            failure.kind.value,
            failure.message,
        )
        if failure.kind is FailureKind.FATAL:
            if self._fatal is None:
                self._fatal = (
                    f"{failure.message} (trial {trial_id} on worker {self.config.worker_id}: "
                    "this error does not depend on the hyperparameters, so every trial would "
                    "fail the same way)"
                )
            return AttemptStatus.FAILED
        if failure.kind is FailureKind.DETERMINISTIC:
            if failure.type_name == "FailedTrialError":
                return AttemptStatus.FAILED  # Keras Tuner's "do not retry", whatever the policy
            if self.search.failure.retry_deterministic:
                return AttemptStatus.INVALID
            return AttemptStatus.FAILED
        return AttemptStatus.INVALID

    def _quota_reached(self) -> bool:
        return self.config.max_trials > 0 and self.trials_run >= self.config.max_trials

    def _trial_started(self) -> None:
        self.trials_run += 1
        if self.on_trial_start is not None:
            self.on_trial_start(self.trials_run)

    def _summary(self, reason: ExitReason, detail: str = "") -> RunSummary:
        return RunSummary(self.config.worker_id, self.trials_run, reason, detail)

    # ----------------------------------------------------------- light path

    def _run_light(self) -> RunSummary:
        from workers.hypermodels.sleep import SleepOptions, run_sleep_epoch

        try:
            options = SleepOptions.parse(self.search.hypermodel.options)
        except Exception as exc:
            if (failed := self._setup_failed(exc)) is None:
                raise
            raise failed from exc
        objective = self.search.objective.name
        maximize = self.search.objective.resolved_direction == "max"
        while not self._quota_reached():
            assignment = self.client.create_trial(self.config.wait_s)
            if assignment.kind is AssignmentKind.STOP:
                return self._summary(ExitReason.STOP, assignment.reason)
            if assignment.trial is None:
                continue
            trial = assignment.trial
            self._trial_started()
            first, last = _epoch_range(trial.values, self.search.training.epochs)
            best: tuple[float, int, dict[str, float]] | None = None
            with LeaseKeeper(self.client, trial) as keeper:
                try:
                    # A STOP requeues the trial; the scheduler's STOP_EARLY ends
                    # it COMPLETED with its best epoch so far (below).
                    stopped = False
                    for epoch in range(first, last):
                        metrics = run_sleep_epoch(
                            trial.values, epoch, options, attempt=trial.attempt
                        )
                        value = metrics.get(objective)
                        if value is not None and (
                            best is None or (value > best[0] if maximize else value < best[0])
                        ):
                            best = (value, epoch, metrics)
                        action = keeper.report(epoch, metrics)
                        if action is ReportAction.STOP_EARLY:
                            break
                        if action is ReportAction.STOP or keeper.stop_requested.is_set():
                            stopped = True
                            break
                except StaleLeaseError as exc:
                    log.warning("trial %s: %s", trial.trial_id, exc)
                    continue
                except Exception as exc:
                    failure = classify(exc)
                    self._end_safely(
                        trial,
                        self.on_trial_failure(trial.trial_id, failure).value,
                        error_message=failure.message,
                        traceback_tail=strip_ansi(traceback.format_exc())[-TRACEBACK_TAIL_CHARS:],
                    )
                    if self._fatal is not None:
                        return self._summary(ExitReason.FATAL, self._fatal)
                    continue
            if stopped:
                self._end_safely(trial, "STOPPED", error_message="stopped by the chief")
            elif best is None:
                self._end_safely(trial, "INVALID", error_message="no epoch reported the objective")
            else:
                self._end_safely(trial, "COMPLETED", metrics=best[2], best_step=best[1])
        return self._summary(ExitReason.RECYCLE)

    def _end_safely(self, trial: LeasedTrial, status: str, **kwargs: Any) -> None:
        self.client.end_attempt(trial, status, **kwargs)

    # ------------------------------------------------------ keras tuner path

    def _run_keras_tuner(self) -> RunSummary:
        started = time.monotonic()
        try:
            tuner, remote, fit_kwargs = self._set_up_keras_tuner()
        except (ChiefUnavailableError, DatasetUnavailableError):
            raise
        except Exception as exc:
            if (failed := self._setup_failed(exc)) is None:
                raise
            raise failed from exc
        import keras

        # Everything alive now (TensorFlow, Keras, the dataset, the tuner) lives
        # as long as the process: out of the collector's way. Each trial runs up
        # to three full collections (Keras Tuner's build runs clear_session and
        # gc.collect, and so does the end of a trial); over the ~400,000 objects
        # of TensorFlow's import, each took 0.25-1.1 s on 2 cores, frozen 3-40 ms.
        gc.freeze()
        log.info(
            "worker %s (pid %d): devices, dataset and tuner set up in %.2f s",
            self.config.worker_id,
            os.getpid(),
            time.monotonic() - started,
        )

        tuner.on_search_begin()
        while not self._quota_reached():
            trial = remote.create_trial(tuner.tuner_id)
            if trial.status == "STOPPED":
                return self._summary(ExitReason.STOP, remote.stop_reason)
            if trial.status == "IDLE":
                continue
            self._trial_started()
            tuner.on_trial_begin(trial)
            tuner._try_run_and_update_trial(trial, **fit_kwargs)
            uploaded = self._upload_artifacts(tuner, remote, trial.trial_id)
            tuner.on_trial_end(trial)
            if self._fatal is not None:
                return self._summary(ExitReason.FATAL, self._fatal)
            if uploaded and not self.config.shared_path:
                # The chief has the files now (a continuation downloads them again).
                trial_dir = Path(tuner._get_checkpoint_fname(trial.trial_id)).parent
                shutil.rmtree(trial_dir, ignore_errors=True)
            if self._quota_reached():
                # This process is recycled now: freeing memory for a next trial
                # would only delay its successor (seconds, on a busy machine).
                break
            # One collection (clear_session's own is skipped): the model's
            # cycles go, and malloc_trim hands their pages back to the OS.
            keras.backend.clear_session(free_memory=False)
            gc.collect()
            _release_free_memory()
        return self._summary(ExitReason.RECYCLE)

    def _set_up_keras_tuner(self) -> tuple[Any, Any, dict[str, Any]]:
        """TensorFlow, the dataset, the hypermodel and the tuner: everything
        before the first trial (its errors hold for every trial)."""
        from orchestrator.protocol.oracle_client import RemoteOracle
        from workers.devices import DevicePlan, apply_cuda_visibility, configure_tensorflow

        plan = DevicePlan.from_slot(self.config.slot) if self.config.slot else DevicePlan()
        if self.config.slot is not None:
            apply_cuda_visibility(plan)
        setup = configure_tensorflow(plan)

        import keras

        from workers.datasets import load_dataset
        from workers.hypermodels import resolve_hypermodel
        from workers.kt_tuner import ktc_tuner_class

        if self.dataset is None:
            if self.search.dataset is None:
                raise KtClusterError(
                    f"search {self.search.name}: hypermodel {self.search.hypermodel.name!r} "
                    "needs a dataset; add a `dataset:` section to the search file"
                )
            self.dataset = load_dataset(self.search.dataset)
        data = self.dataset
        hypermodel = resolve_hypermodel(
            self.search.hypermodel, data.input_shape, data.num_classes, label_mode=data.label_mode
        )
        workdir = self._workdir()
        # The runner reports why it stopped (RunSummary) instead of raising as
        # Keras Tuner's search() does when the chief ends the search FAILED.
        remote = RemoteOracle.for_search(
            self.client, self.search, wait_s=self.config.wait_s, raise_on_failed_search=False
        )
        try:
            tuner = ktc_tuner_class()(
                oracle=remote,
                hypermodel=hypermodel,
                directory=str(workdir),
                project_name="trials",
                overwrite=False,
                executions_per_trial=self.search.oracle.executions_per_trial,
                distribution_strategy=setup.strategy() if setup.visible_gpus > 1 else None,
            )
        except KtClusterError:  # ours (the chief gone, a refused request): as raised
            raise
        except Exception as exc:
            # Keras Tuner's constructor builds the model to declare the space:
            # with each hyperparameter's default, once per conditional branch.
            raise SpaceDeclarationFailed(exc) from exc
        tuner.runner = self
        training = self.search.training
        callbacks: list[Any] = []
        if training.early_stopping is not None:
            es = training.early_stopping
            callbacks.append(
                keras.callbacks.EarlyStopping(
                    monitor=es.monitor, patience=es.patience, min_delta=es.min_delta
                )
            )
        fit_kwargs: dict[str, Any] = {
            "x": data.x_train,
            "y": data.y_train,
            "validation_data": (data.x_val, data.y_val),
            "epochs": training.epochs,
            "callbacks": callbacks,
            "verbose": training.verbose,
        }
        if not _user_fit_owns_batch_size(self.search.hypermodel, hypermodel):
            fit_kwargs["batch_size"] = training.batch_size
        return tuner, remote, fit_kwargs

    def _workdir(self) -> Path:
        if self.config.shared_path:
            path = Path(self.config.shared_path) / (self.config.search_id or "search")
            path.mkdir(parents=True, exist_ok=True)
            return path
        path = Path(tempfile.mkdtemp(prefix=f"ktc-{self.config.worker_id}-"))
        self._private_workdir = path
        return path

    def _upload_artifacts(self, tuner: Any, remote: Any, trial_id: str) -> bool:
        """Send the best-epoch checkpoint and build config to the chief, while the
        lease is still ours (so no shared filesystem is needed). True when every
        file that exists was uploaded."""
        try:
            leased = remote.leased(trial_id)
        except KtClusterError:
            return False
        for name, path in (
            (ARTIFACT_CHECKPOINT, Path(tuner._get_checkpoint_fname(trial_id))),
            (ARTIFACT_BUILD_CONFIG, Path(tuner._get_build_config_fname(trial_id))),
        ):
            if not path.is_file():
                continue
            try:
                self.client.upload_artifact(leased, name, path)
            except StaleLeaseError as exc:
                log.warning("trial %s: upload refused: %s", trial_id, exc)
                return False
            except KtClusterError as exc:
                log.warning("trial %s: upload of %s failed: %s", trial_id, name, exc)
                return False
        return True

    def fetch_parent_checkpoint(self, tuner: Any, parent_trial_id: str) -> None:
        """Make a Hyperband continuation's parent files local (download if absent)."""
        for name, path in (
            (ARTIFACT_CHECKPOINT, Path(tuner._get_checkpoint_fname(parent_trial_id))),
            (ARTIFACT_BUILD_CONFIG, Path(tuner._get_build_config_fname(parent_trial_id))),
        ):
            if not path.is_file():
                self.client.download_artifact(parent_trial_id, name, path)


def _release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _user_fit_owns_batch_size(spec: Any, hypermodel: Any) -> bool:
    """A user HyperModel that overrides ``fit`` passes its own batch size (Keras
    Tuner's documented way to tune it), so it must not get ours as well. Built-ins
    and plain ``build_model(hp)`` functions use KT's default fit and get it."""
    if spec.is_builtin:
        return False
    import keras_tuner

    return type(hypermodel).fit is not keras_tuner.HyperModel.fit


def _epoch_range(values: dict[str, Any], default_epochs: int) -> tuple[int, int]:
    """Epochs [first, last) of a trial: Hyperband's tuner/* values when present."""
    if "tuner/epochs" in values:
        return int(values.get("tuner/initial_epoch", 0)), int(values["tuner/epochs"])
    return 0, default_epochs
