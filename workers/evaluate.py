"""What ``ktc evaluate`` runs on a worker: test-split scores of trained trials, and a retrain.

The driver (``orchestrator/evaluation.py``) sends one :class:`EvaluationJob`
to an :class:`EvaluationProcess` actor that has a search worker's resources
and environment. The job carries everything the worker needs as plain data:
the search spec, the shape the hypermodel was built for, and each trial's
hyperparameters and artifact *bytes* (its best epoch's checkpoint and build
config), so no shared filesystem is needed. The worker loads the dataset
itself (or gets it through Ray's object store), and:

1. rebuilds each trial's model from its hyperparameters and checkpoint, the
   way Keras Tuner's ``Tuner.load_model`` does, and evaluates it on the test
   split (``model.evaluate``: the loss and every compiled metric);
2. with a retrain request, seeds everything (``keras.utils.set_random_seed``),
   builds a fresh model from the best hyperparameters, trains it on train and
   validation merged for the requested number of epochs, evaluates it on the
   test split and returns the saved ``.keras`` file's bytes.

Failures come back as :class:`KtClusterError` subclasses, which survive Ray's
pickling and name the real exception: :class:`NoTestSplitError` (bad input,
``ktc`` exits 2) or :class:`WorkerEvaluationError` (``"ValueError: ..."``).

This module imports neither TensorFlow nor Keras at import time.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import SearchSpec, WorkerSlot
from orchestrator.errors import InputError, KtClusterError

CHECKPOINT_FILE = "checkpoint.weights.h5"
BUILD_CONFIG_FILE = "build_config.json"
TRACEBACK_TAIL_CHARS = 3000
EVALUATION_LOG = "evaluate.log"  # in DIR/logs when the worker runs on this machine


class NoTestSplitError(InputError):
    """The dataset, as loaded on the worker, has no test split to evaluate on."""


class WorkerEvaluationError(KtClusterError):
    """The evaluation failed on the worker. The message starts with the real
    exception's type (``ValueError: ...``); ``traceback_tail`` has its traceback."""

    def __init__(self, message: str, traceback_tail: str = "") -> None:
        super().__init__(message, traceback_tail)
        self.traceback_tail = traceback_tail

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class TrialModel:
    """A trained trial, as the worker needs it: its hyperparameters and artifact bytes."""

    trial_id: str
    hp_config: dict[str, Any]  # Keras Tuner's HyperParameters.get_config()
    checkpoint: bytes  # checkpoint.weights.h5 (the best epoch's weights)
    build_config: bytes | None  # build_config.json, when the trial uploaded one


@dataclass(frozen=True)
class RetrainRequest:
    """Train ``hp_config`` from scratch on train+validation for ``epochs``, seeded."""

    trial_id: str  # the trial whose hyperparameters are retrained
    hp_config: dict[str, Any]
    epochs: int
    seed: int


@dataclass(frozen=True)
class EvaluationJob:
    """Everything one evaluation needs; plain data, so Ray can ship it."""

    search_json: str  # SearchSpec.model_dump_json()
    input_shape: tuple[int, ...]  # what the search's models were built for (dataset_info)
    num_classes: int
    label_mode: str
    trials: tuple[TrialModel, ...]
    retrain: RetrainRequest | None
    batch_size: int

    @property
    def search(self) -> SearchSpec:
        # Dataset paths are this machine's business; they are checked on load.
        return SearchSpec.model_validate_json(self.search_json, context={"check_paths": False})


@dataclass(frozen=True)
class TestScores:
    """One model's scores on the test split."""

    __test__ = False  # not a pytest class

    trial_id: str
    metrics: dict[str, float]  # "loss" and every compiled metric ("accuracy", ...)
    test_examples: int


@dataclass(frozen=True)
class RetrainOutcome:
    """The retrained model: how it was trained, its test scores and its ``.keras`` bytes."""

    trial_id: str
    seed: int
    epochs: int
    train_examples: int
    val_examples: int
    test_examples: int
    metrics: dict[str, float]
    duration_s: float
    model_bytes: bytes


@dataclass(frozen=True)
class EvaluationOutcome:
    """What the worker did, and where it ran."""

    hostname: str
    pid: int
    cuda_visible_devices: str
    trials: tuple[TestScores, ...]
    retrain: RetrainOutcome | None


def evaluate(job: EvaluationJob, dataset: Any = None) -> EvaluationOutcome:
    """Run ``job`` in this process (the actor calls it; tests call it directly).

    ``dataset`` is a loaded :class:`workers.datasets.Dataset`, or None to load
    the search's dataset here. TensorFlow is imported on the first call.
    """
    from workers.datasets import load_dataset

    search = job.search
    if dataset is None:
        if search.dataset is None:
            raise NoTestSplitError(
                f"search {search.name}: it names no dataset (its user code loads the data), so "
                "there is no test split to evaluate on; add a `dataset:` section with a test split"
            )
        with failing_as("loading the dataset"):
            dataset = load_dataset(search.dataset)
    _check_dataset(job, search, dataset)
    import keras

    scores = []
    for trial in job.trials:
        with failing_as(f"trial {trial.trial_id}"):
            model = _rebuild(job, search, trial)
            metrics = _test_metrics(model, dataset, job)
        scores.append(TestScores(trial.trial_id, metrics, len(dataset.x_test)))
        keras.backend.clear_session()
    retrained = None
    if job.retrain is not None:
        with failing_as(f"retraining trial {job.retrain.trial_id}'s hyperparameters"):
            retrained = _retrain(job, search, dataset)
    return EvaluationOutcome(
        hostname=socket.gethostname(),
        pid=os.getpid(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        trials=tuple(scores),
        retrain=retrained,
    )


@contextlib.contextmanager
def failing_as(what: str) -> Iterator[None]:
    """Turn any non-ktcluster exception into a WorkerEvaluationError saying ``what``
    failed, with the real exception's type and message (``Type: message[ — hint]``,
    as :func:`workers.failures.classify` writes it) and its traceback tail."""
    try:
        yield
    except KtClusterError:
        raise
    except Exception as exc:
        from workers.failures import classify

        logging.getLogger(__name__).exception("%s failed", what)
        # One line, no colour codes, a known fix appended (the one-hot hint),
        # as a search's failed trial is written.
        raise WorkerEvaluationError(
            f"{what}: {classify(exc).message}", traceback.format_exc()[-TRACEBACK_TAIL_CHARS:]
        ) from None


def no_test_split_hint(source: str) -> str:
    """How to give a dataset source a test split."""
    if source == "npz":
        return "add x_test and y_test arrays to the .npz file"
    if source == "image_directory":
        return "set dataset.test_path to a folder of class subfolders"
    if ":" in source:
        return (
            f"make {source} return a third split: "
            "((x_train, y_train), (x_val, y_val), (x_test, y_test))"
        )
    return "use a dataset source with a test split"


def _check_dataset(job: EvaluationJob, search: SearchSpec, dataset: Any) -> None:
    source = search.dataset.source if search.dataset is not None else "<user code>"
    if not dataset.has_test:
        raise NoTestSplitError(
            f"dataset {source!r}: it has no test split, so there is nothing held out to "
            f"evaluate on; {no_test_split_hint(source)}, then run a new search (a test split "
            "added now was not held out of this search's training) and evaluate that"
        )
    loaded = (tuple(dataset.input_shape), int(dataset.num_classes), str(dataset.label_mode))
    recorded = (tuple(job.input_shape), int(job.num_classes), str(job.label_mode))
    if loaded != recorded:
        raise WorkerEvaluationError(
            f"dataset {source!r}: loaded with (input_shape, classes, labels) = {loaded}, but the "
            f"search's models were built for {recorded}; the data changed since the search ran. "
            "Restore it, or run a new search"
        )


def _hypermodel(job: EvaluationJob, search: SearchSpec) -> Any:
    from workers.hypermodels import resolve_hypermodel

    return resolve_hypermodel(
        search.hypermodel, job.input_shape, job.num_classes, label_mode=job.label_mode
    )


def _rebuild(job: EvaluationJob, search: SearchSpec, trial: TrialModel) -> Any:
    """The trial's model with its best epoch's weights, from the bytes in the job."""
    import json

    build_config = None if trial.build_config is None else json.loads(trial.build_config)
    with tempfile.TemporaryDirectory(prefix="ktc-eval-") as tmp:
        path = Path(tmp) / CHECKPOINT_FILE
        path.write_bytes(trial.checkpoint)
        return rebuild_model(
            _hypermodel(job, search), trial.hp_config, path, build_config, trial_id=trial.trial_id
        )


def rebuild_model(
    hypermodel: Any,
    hp_config: dict[str, Any],
    checkpoint: Path,
    build_config: dict[str, Any] | None,
    *,
    trial_id: str,
) -> Any:
    """A trial's model as Keras Tuner's ``Tuner.load_model`` builds it: build from the
    hyperparameters, build the weights from the build config when needed, load the
    checkpoint (optimizer slots included). ``ktc export`` uses it too."""
    from orchestrator.protocol.kt_state import hyperparameters_from_config

    hp = hyperparameters_from_config(hp_config)
    model = hypermodel.build(hp)
    if not model.built:
        if build_config is None:
            raise WorkerEvaluationError(
                f"trial {trial_id} has no {BUILD_CONFIG_FILE} and its model is not built by "
                "its hypermodel; it was run by an older version or its upload failed"
            )
        model.build_from_config(build_config)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        # The checkpoint holds the optimizer's slots too; build them so they
        # load (and the model can resume training) instead of being skipped.
        optimizer.build(model.trainable_variables)
    try:
        model.load_weights(checkpoint)
    except ValueError as exc:
        raise WorkerEvaluationError(
            f"trial {trial_id}: {CHECKPOINT_FILE} does not fit the model rebuilt from its "
            f"hyperparameters (ValueError: {exc}); was the hypermodel's code changed since "
            "the search ran?"
        ) from None
    return model


def _test_metrics(model: Any, dataset: Any, job: EvaluationJob) -> dict[str, float]:
    values = model.evaluate(
        dataset.x_test, dataset.y_test, batch_size=job.batch_size, return_dict=True, verbose=0
    )
    return {str(name): float(value) for name, value in values.items()}


def _retrain(job: EvaluationJob, search: SearchSpec, dataset: Any) -> RetrainOutcome:
    import keras
    import numpy as np

    from orchestrator.protocol.kt_state import hyperparameters_from_config

    request = job.retrain
    if request is None:  # pragma: no cover - the caller checks
        raise WorkerEvaluationError("no retrain request")
    started = time.monotonic()
    keras.utils.set_random_seed(request.seed)
    hp = hyperparameters_from_config(request.hp_config)
    hypermodel = _hypermodel(job, search)
    model = hypermodel.build(hp)
    x = np.concatenate([dataset.x_train, dataset.x_val])
    y = np.concatenate([dataset.y_train, dataset.y_val])
    fit_kwargs: dict[str, Any] = {"epochs": request.epochs, "verbose": 0, "shuffle": True}
    if not _user_fit_owns_batch_size(search, hypermodel):
        fit_kwargs["batch_size"] = job.batch_size
    # HyperModel.fit, as Keras Tuner's run_trial calls it: a hypermodel that
    # tunes its own batch size (or preprocesses in fit) trains the same way.
    hypermodel.fit(hp, model, x, y, **fit_kwargs)
    metrics = _test_metrics(model, dataset, job)
    with tempfile.TemporaryDirectory(prefix="ktc-retrain-") as tmp:
        path = Path(tmp) / "model.keras"
        model.save(path)
        model_bytes = path.read_bytes()
    return RetrainOutcome(
        trial_id=request.trial_id,
        seed=request.seed,
        epochs=request.epochs,
        train_examples=len(dataset.x_train),
        val_examples=len(dataset.x_val),
        test_examples=len(dataset.x_test),
        metrics=metrics,
        duration_s=time.monotonic() - started,
        model_bytes=model_bytes,
    )


def _user_fit_owns_batch_size(search: SearchSpec, hypermodel: Any) -> bool:
    from workers.runner import _user_fit_owns_batch_size as owns

    return owns(search.hypermodel, hypermodel)


class EvaluationProcess:
    """The actor's body: a search worker's slot, one evaluation at a time.

    ``__init__`` pins ``CUDA_VISIBLE_DEVICES`` to the slot's physical GPUs
    before anything imports TensorFlow, as :class:`workers.actor.WorkerProcess`
    does, and ``run`` configures TensorFlow for the slot the same way.
    """

    def __init__(self, slot: WorkerSlot | None, log_dir: str | None = None) -> None:
        os.environ["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices if slot is not None else ""
        self.slot = slot
        if log_dir:
            from workers.actor import log_to_file

            # TensorFlow's lines and the traceback of a failure, beside the workers'.
            log_to_file(Path(log_dir) / EVALUATION_LOG, "evaluate")

    def info(self) -> dict[str, Any]:
        """Where the actor runs (it is up once this answers)."""
        return {
            "pid": os.getpid(),
            "hostname": socket.gethostname(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }

    def run(self, job: EvaluationJob, dataset: Any = None) -> EvaluationOutcome:
        """:func:`evaluate` on this slot's devices; failures as picklable KtClusterErrors."""
        from workers.devices import DevicePlan, apply_cuda_visibility, configure_tensorflow

        # TF's and pydantic's exceptions do not always survive Ray's pickling;
        # the driver must still see the real type and message.
        with failing_as("the evaluation"):
            if dataset is not None and type(dataset).__name__ == "ObjectRef":
                import ray

                dataset = ray.get(dataset, timeout=600)
            plan = DevicePlan.from_slot(self.slot) if self.slot is not None else DevicePlan()
            if self.slot is not None:
                apply_cuda_visibility(plan)
            configure_tensorflow(plan)
            if dataset is None:
                from workers.dataset_paths import require_dataset_paths

                require_dataset_paths(job.search_json, who="evaluation worker")
            outcome = evaluate(job, dataset)
        return outcome


_REMOTE: list[Any] = []


def remote_evaluation_class() -> Any:
    """``ray.remote(EvaluationProcess)``, created once (needs ray imported)."""
    if not _REMOTE:
        import ray

        decorator: Any = ray.remote(max_restarts=0, max_concurrency=2)  # type: ignore[call-overload]
        _REMOTE.append(decorator(EvaluationProcess))
    return _REMOTE[0]
