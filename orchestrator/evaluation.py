"""``ktc evaluate``'s driver: check the search, run the evaluation on a worker, store the results.

Three steps, each testable on its own:

1. :func:`plan_evaluation` reads the search directory (no Ray, no
   TensorFlow) and refuses what cannot be evaluated honestly: a running
   search, a search made before its dataset had a test split, a search whose
   recorded test split differs from the one its dataset defines today, a
   dataset with no test split, trials without checkpoints. The plan holds the
   top K completed trials, each with its artifact bytes, and the retrain
   request (the best trial's hyperparameters for ``best_step + 1`` epochs).
2. :func:`run_on_cluster` runs the job on the cluster in one actor shaped
   like a search worker (``orchestrator/fleet/evaluator.py``). The artifacts
   travel in the job, through Ray's object store: no shared filesystem is
   needed. A failure on the worker is raised here as the worker's own
   exception.
3. :func:`record` writes ``DIR/evaluation.json`` and the retrained model
   (``DIR/evaluation/retrained/model.keras``, which ``ktc export --retrained``
   copies out).

Why a running search is refused: its ranking can still change, and its
workers hold the GPUs the evaluation would use.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.config import ClusterSpec, default_cluster, load_cluster, spec_json
from orchestrator.errors import ConfigError, InputError, KtClusterError
from orchestrator.evaluation_results import (
    EVALUATION_DIR,
    FILE_MODE,
    RETRAINED_MODEL,
    EvaluationResults,
    RetrainEvaluation,
    TrialEvaluation,
    load_results,
    write_results,
)
from orchestrator.protocol.trials import TrialStatus, TrialView, rank_trials
from orchestrator.search_dir import SEARCH_DIR_MODE, TRIALS_DIR
from orchestrator.search_meta import TestSplitInfo
from orchestrator.status import OfflineSearch, live_chief, read_search

if TYPE_CHECKING:
    from workers.evaluate import EvaluationJob, EvaluationOutcome

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.weights.h5"
BUILD_CONFIG_FILE = "build_config.json"
DEFAULT_SEED = 0


@dataclass(frozen=True)
class EvaluationPlan:
    """What one ``ktc evaluate`` will do (built by :func:`plan_evaluation`)."""

    search: OfflineSearch
    trials: tuple[TrialView, ...]  # the top K completed trials, best first
    retrain_epochs: int | None  # the best trial's best_step + 1; None: no retrain
    seed: int
    job: EvaluationJob

    @property
    def search_dir(self) -> Path:
        return self.search.search_dir


def plan_evaluation(
    search_dir: Path | str, *, top: int = 1, retrain: bool = False, seed: int = DEFAULT_SEED
) -> EvaluationPlan:
    """Check the search and build the job; KtClusterError (InputError for bad input) otherwise."""
    from workers.evaluate import EvaluationJob, RetrainRequest, TrialModel

    if top < 1:
        raise ConfigError(f"--top: expected a number of trials >= 1, got {top}")
    if not 0 <= seed < 2**32:
        raise ConfigError(f"--seed: expected an integer from 0 to 2**32 - 1, got {seed}")
    search = read_search(search_dir)
    path = search.search_dir
    chief = live_chief(path)
    if chief is not None:
        raise KtClusterError(
            f"{path}: the search is running (chief pid {chief.pid} at {chief.address}); its "
            "ranking can still change and its workers hold the GPUs. Evaluate after it ends, "
            f"or stop it first with `ktc cancel {path}`"
        )
    if search.spec.hypermodel.name == "sleep":
        raise InputError(
            f"{path}: the sleep benchmark hypermodel trains no model, so there is nothing to "
            "evaluate"
        )
    check_test_split(search)
    info = search.meta.dataset
    if info is None:
        raise InputError(
            f"{path}: the ledger has no dataset_info (input shape, classes), so the models "
            "cannot be rebuilt; the search was made before `ktc submit` recorded it, or its "
            "dataset was loaded only on remote workers. Run a new search with this version"
        )
    completed = [
        t
        for t in rank_trials(search.trials(), search.direction)
        if t.status is TrialStatus.COMPLETED
    ]
    if not completed:
        raise InputError(f"{path}: no completed trial to evaluate; see `ktc status {path}`")
    if top > len(completed):
        raise ConfigError(
            f"--top {top}: the search has only {len(completed)} completed trial(s); use --top "
            f"{len(completed)} or less (see `ktc results {path}`)"
        )
    chosen = tuple(completed[:top])
    models = tuple(
        TrialModel(
            trial_id=t.trial_id,
            hp_config=_hp_config(t),
            checkpoint=_artifact(path, t, CHECKPOINT_FILE, required=True) or b"",
            build_config=_artifact(path, t, BUILD_CONFIG_FILE, required=False),
        )
        for t in chosen
    )
    best = completed[0]
    retrain_request = None
    epochs = None
    if retrain:
        epochs = retrain_epochs(best)
        retrain_request = RetrainRequest(
            trial_id=best.trial_id, hp_config=_hp_config(best), epochs=epochs, seed=seed
        )
    job = EvaluationJob(
        search_json=spec_json(search.spec),
        input_shape=tuple(info.input_shape),
        num_classes=info.num_classes,
        label_mode=info.label_mode,
        trials=models,
        retrain=retrain_request,
        batch_size=search.spec.training.batch_size,
    )
    return EvaluationPlan(search=search, trials=chosen, retrain_epochs=epochs, seed=seed, job=job)


def retrain_epochs(trial: TrialView) -> int:
    """Epochs to retrain for: up to the epoch where the trial's objective peaked.

    ``best_step`` is the 0-based epoch Keras Tuner recorded as the objective's
    best (Hyperband continuations count from the first bracket's epoch 0), so
    training from scratch for ``best_step + 1`` epochs reaches that epoch.
    """
    if trial.best_step < 0:
        raise KtClusterError(
            f"trial {trial.trial_id}: its best_step is {trial.best_step}; expected an epoch "
            "index >= 0. The ledger may be damaged"
        )
    return trial.best_step + 1


def check_test_split(search: OfflineSearch) -> None:
    """Refuse a search whose training may have seen today's test samples, or that has none.

    A dataset whose split only loading tells (an npz, a user function) passes
    here and is checked on the worker (``Dataset.has_test``).
    """
    from workers.evaluate import no_test_split_hint

    path = search.search_dir
    recorded = search.meta.test_split
    spec = search.spec.dataset
    if spec is None:
        raise InputError(
            f"{path}: the search names no dataset (its user code loads the data), so ktcluster "
            "has no test split to evaluate on; add a `dataset:` section with a test split "
            "(for example a user function returning a third split) and run a new search"
        )
    if recorded is None:
        raise InputError(
            f"{path}: the search was made before ktcluster recorded test splits (its ledger has "
            "no test_split), so its training data may include today's test samples (digits, for "
            "one, then split all 1,797 samples into train and validation). Run a new search with "
            "this version (`ktc submit`) and evaluate that"
        )
    today = TestSplitInfo.of(search.spec)
    if recorded.definition != today.definition:
        raise InputError(
            f"{path}: the search recorded the test split {recorded.definition!r}, but its "
            f"dataset defines {today.definition!r} today, so its training data may include "
            "today's test samples. Run a new search with this version and evaluate that"
        )
    if recorded.present is False:
        raise InputError(
            f"{path}: dataset {spec.source!r} has no test split, so nothing was held out to "
            f"evaluate on; {no_test_split_hint(spec.source)}, then run a new search and "
            "evaluate that"
        )


def _hp_config(trial: TrialView) -> dict[str, Any]:
    config = trial.trial_state.get("hyperparameters")
    if not isinstance(config, dict):
        raise KtClusterError(
            f"trial {trial.trial_id}: the ledger holds no hyperparameters for it (trial state "
            f"keys: {sorted(trial.trial_state)}); the ledger may be damaged"
        )
    return config


def _artifact(search_dir: Path, trial: TrialView, name: str, *, required: bool) -> bytes | None:
    path = search_dir / TRIALS_DIR / trial.trial_id / name
    try:
        return path.read_bytes()
    except FileNotFoundError:
        if not required:
            return None
        raise InputError(
            f"trial {trial.trial_id} has no {name} in {path.parent}; it was run by an older "
            "version or its upload failed. Evaluate fewer trials (--top) or run a new search"
        ) from None


# ------------------------------------------------------------------ the cluster


def resolve_cluster(search: OfflineSearch, cluster_file: Path | str | None) -> ClusterSpec:
    """Where to run: ``--cluster``, else the cluster the search ran on, else the default."""
    if cluster_file is not None:
        return load_cluster(cluster_file)
    if search.meta.cluster_data is not None:
        return search.meta.cluster()
    return default_cluster()


def uses_user_code(search: OfflineSearch) -> bool:
    """Whether the search's hypermodel or dataset is the user's own ``module:attr``."""
    spec = search.spec
    return not spec.hypermodel.is_builtin or (
        spec.dataset is not None and spec.dataset.is_user_function
    )


def run_on_cluster(
    plan: EvaluationPlan, cluster: ClusterSpec
) -> tuple[EvaluationOutcome, dict[str, Any]]:
    """Run the plan's job on a worker-shaped actor of ``cluster`` (see
    :func:`orchestrator.fleet.evaluator.run_job`); (outcome, where it ran)."""
    from orchestrator.fleet.evaluator import run_job

    spec = plan.search.spec
    return run_job(
        cluster,
        plan.job,
        name=f"ktc-eval-{plan.search.meta.search_id[:8]}-{os.getpid()}",
        user_code=uses_user_code(plan.search),
        dataset=spec.dataset,
        # DIR/logs/evaluate.log when the worker runs on this machine, as the
        # search's workers' logs (orchestrator/fleet/session.py).
        log_dir=(
            str((plan.search_dir / "logs").resolve())
            if cluster.is_local and not cluster.is_multi_machine
            else None
        ),
    )


# ------------------------------------------------------------------ the results


def record(
    plan: EvaluationPlan,
    outcome: EvaluationOutcome,
    where: dict[str, Any],
    *,
    now: float | None = None,
) -> EvaluationResults:
    """Write ``evaluation.json`` (and the retrained model); returns what was written."""
    path = plan.search_dir
    evaluated_at = time.time() if now is None else now
    by_id = {t.trial_id: t for t in plan.trials}
    trials = []
    for rank, scores in enumerate(outcome.trials, start=1):
        view = by_id[scores.trial_id]
        trials.append(
            TrialEvaluation(
                rank=rank,
                trial_id=scores.trial_id,
                score=view.score,
                best_step=view.best_step,
                hyperparameters=dict(view.values),
                metrics=dict(scores.metrics),
                test_examples=scores.test_examples,
            )
        )
    retrain: RetrainEvaluation | None = None
    if outcome.retrain is not None:
        r = outcome.retrain
        _write_model(path / RETRAINED_MODEL, r.model_bytes)
        best = plan.search.trials()
        values = next((t.values for t in best if t.trial_id == r.trial_id), {})
        retrain = RetrainEvaluation(
            trial_id=r.trial_id,
            hyperparameters=dict(values),
            seed=r.seed,
            epochs=r.epochs,
            train_examples=r.train_examples,
            val_examples=r.val_examples,
            test_examples=r.test_examples,
            metrics=dict(r.metrics),
            duration_s=r.duration_s,
            model_path=RETRAINED_MODEL,
            evaluated_at=evaluated_at,
        )
    else:
        retrain = _earlier_retrain(path)
    split = plan.search.meta.test_split
    results = EvaluationResults(
        search_id=plan.search.meta.search_id,
        evaluated_at=evaluated_at,
        objective=plan.search.objective,
        test_split=None if split is None else split.definition,
        worker={
            **where,
            "hostname": outcome.hostname,
            "pid": outcome.pid,
            "cuda_visible_devices": outcome.cuda_visible_devices,
        },
        batch_size=plan.job.batch_size,
        trials=tuple(trials),
        retrain=retrain,
    )
    write_results(path, results)
    return results


def _earlier_retrain(search_dir: Path) -> RetrainEvaluation | None:
    """The retrain an earlier run recorded, while its model file is still there."""
    try:
        earlier = load_results(search_dir)
    except KtClusterError as exc:
        log.warning("ignoring the earlier evaluation results: %s", exc)
        return None
    if earlier is None or earlier.retrain is None:
        return None
    if not (search_dir / earlier.retrain.model_path).is_file():
        return None
    return earlier.retrain


def _write_model(path: Path, data: bytes) -> None:
    """Write the model file atomically, 0600 in 0700 folders like the rest of the directory."""
    for folder in (path.parent.parent, path.parent):
        folder.mkdir(mode=SEARCH_DIR_MODE, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def retrained_model_path(search_dir: Path | str) -> Path:
    """The retrained model of a search, checked to exist (``ktc export --retrained``)."""
    path = Path(search_dir)
    results = load_results(path)
    if results is None or results.retrain is None:
        raise InputError(f"{path}: no retrained model; run `ktc evaluate {path} --retrain` first")
    model = path / results.retrain.model_path
    if not model.is_file():
        raise InputError(
            f"{model}: the retrained model recorded in {path / 'evaluation.json'} is missing; "
            f"run `ktc evaluate {path} --retrain` again"
        )
    return model


__all__ = [
    "EVALUATION_DIR",
    "EvaluationPlan",
    "check_test_split",
    "load_results",
    "plan_evaluation",
    "record",
    "retrain_epochs",
    "retrained_model_path",
    "run_on_cluster",
]
