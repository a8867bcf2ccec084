"""Rebuild a trial's model from the search directory and save it as one ``.keras`` file.

What a trial leaves behind (see ``orchestrator/chief/artifacts.py``): its
hyperparameters in the ledger (Keras Tuner's ``Trial.get_state()``), and under
``<search_dir>/trials/<trial_id>/`` the best epoch's weights
(``checkpoint.weights.h5``, written by Keras Tuner's ``SaveBestEpoch``) and the
model's ``build_config.json``. The model is rebuilt the way Keras Tuner's own
``Tuner.load_model`` does it: build from the hyperparameters, build the
weights from the build config when needed, load the checkpoint. The ledger
meta (:class:`~orchestrator.search_meta.SearchMeta`) names the hypermodel, and
its ``dataset_info`` (written by ``ktc submit``) gives the input shape, the
number of classes and the label form the hypermodel was built with.

TensorFlow and Keras are imported only when a model is rebuilt.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import ConfigError, InputError, KtClusterError
from orchestrator.protocol.trials import TrialStatus, TrialView, rank_trials
from orchestrator.search_dir import TRIALS_DIR
from orchestrator.search_meta import DatasetInfo
from orchestrator.status import OfflineSearch, read_search

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.weights.h5"
BUILD_CONFIG_FILE = "build_config.json"


@dataclass(frozen=True)
class ExportResult:
    """What ``export_model`` wrote."""

    trial_id: str
    score: float | None
    out_path: Path
    hyperparameters: dict[str, Any]


@dataclass(frozen=True)
class RetrainedExport:
    """What ``export_retrained`` wrote: the model ``ktc evaluate --retrain`` trained."""

    trial_id: str  # whose hyperparameters were retrained
    out_path: Path
    epochs: int
    seed: int
    test_metrics: dict[str, float]  # as ``ktc evaluate`` measured them


@dataclass(frozen=True)
class VerifyResult:
    """The exported model evaluated on the search's validation set."""

    metric: str  # the objective's name, e.g. val_accuracy
    evaluated: float
    recorded: float | None

    @property
    def difference(self) -> float | None:
        """``|evaluated - recorded|``, or None when no score was recorded."""
        return None if self.recorded is None else abs(self.evaluated - self.recorded)


def pick_trial(search: OfflineSearch, rank: int) -> TrialView:
    """The completed trial at ``rank`` (1 = best)."""
    if rank < 1:
        raise ConfigError(f"--rank: expected 1 (the best trial) or more, got {rank}")
    completed = [
        t
        for t in rank_trials(search.trials(), search.direction)
        if t.status is TrialStatus.COMPLETED
    ]
    if not completed:
        # Bad input (exit 2), as `ktc evaluate` says of the same search.
        raise InputError(
            f"{search.search_dir}: no completed trial to export; see `ktc status "
            f"{search.search_dir}`"
        )
    if rank > len(completed):
        raise ConfigError(
            f"--rank {rank}: the search has only {len(completed)} completed trial(s); "
            f"pick a rank from 1 to {len(completed)} (see `ktc results {search.search_dir}`)"
        )
    return completed[rank - 1]


def check_out_path(out_path: Path) -> Path:
    """The output path, checked to end in ``.keras`` (the format load_model reads)."""
    path = Path(out_path)
    if path.suffix != ".keras":
        raise ConfigError(
            f"--out {path}: the file name must end in .keras (Keras' native format, read by "
            f"keras.models.load_model); got {path.suffix or 'no extension'!r}, "
            f"e.g. --out {path.with_suffix('.keras').name}"
        )
    if path.is_dir():
        raise ConfigError(f"--out {path}: is a directory; give a file name ending in .keras")
    return path


def export_model(search_dir: Path | str, out_path: Path | str, rank: int = 1) -> ExportResult:
    """Rebuild the trial at ``rank`` (1 = best) and save it to ``out_path`` (``.keras``).

    The file loads with ``keras.models.load_model`` (compiled, with the best
    epoch's weights). Raises KtClusterError (ConfigError for bad arguments)
    naming what is missing and how to fix it.
    """
    out = check_out_path(Path(out_path))
    search = read_search(search_dir)
    if search.spec.hypermodel.name == "sleep":
        raise KtClusterError(
            f"{search.search_dir}: the sleep benchmark hypermodel has no model to export"
        )
    trial = pick_trial(search, rank)
    info = search.meta.dataset
    if info is None:
        raise KtClusterError(
            f"{search.search_dir}: the ledger has no dataset_info (input shape, classes), so the "
            "model cannot be rebuilt; the search was made before `ktc submit` recorded it. "
            "Re-run the search with this version to export its models."
        )
    trial_dir = search.search_dir / TRIALS_DIR / trial.trial_id
    checkpoint = trial_dir / CHECKPOINT_FILE
    if not checkpoint.is_file():
        raise KtClusterError(
            f"trial {trial.trial_id} has no checkpoint in {trial_dir}; it was run by an older "
            "version or its upload failed. Export another rank (--rank) or re-run the search."
        )
    hp_config = trial.trial_state.get("hyperparameters")
    if not isinstance(hp_config, dict):
        raise KtClusterError(
            f"trial {trial.trial_id}: the ledger holds no hyperparameters for it "
            f"(trial state keys: {sorted(trial.trial_state)}); the ledger may be damaged"
        )
    model = _rebuild(search, info, hp_config, trial_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target and rename, so a reader never sees half a model.
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("exported trial %s to %s", trial.trial_id, out)
    return ExportResult(
        trial_id=trial.trial_id,
        score=trial.score,
        out_path=out,
        hyperparameters=dict(trial.values),
    )


def export_retrained(search_dir: Path | str, out_path: Path | str) -> RetrainedExport:
    """Copy the retrained model (``DIR/evaluation/retrained/model.keras``) to ``out_path``.

    The model was trained by ``ktc evaluate --retrain`` on a worker and stored
    in the search directory as a ``.keras`` file; the copy is written next to
    the target and renamed, so a reader never sees half a model.
    """
    import shutil

    from orchestrator.evaluation import retrained_model_path
    from orchestrator.evaluation_results import load_results

    out = check_out_path(Path(out_path))
    source = retrained_model_path(search_dir)
    results = load_results(search_dir)
    if results is None or results.retrain is None:  # retrained_model_path checked it
        raise KtClusterError(f"{search_dir}: no retrained model")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.keras")
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    retrain = results.retrain
    log.info("exported the retrained model (trial %s) to %s", retrain.trial_id, out)
    return RetrainedExport(
        trial_id=retrain.trial_id,
        out_path=out,
        epochs=retrain.epochs,
        seed=retrain.seed,
        test_metrics=dict(retrain.metrics),
    )


def verify_retrained(search_dir: Path | str, result: RetrainedExport) -> VerifyResult:
    """Load the exported retrained model and evaluate it on the test split here.

    ``recorded`` is the test value ``ktc evaluate`` measured on its worker;
    the same weights on the same samples give the same value (up to float
    rounding across machines).
    """
    search = read_search(search_dir)
    values = _evaluate_file(search, result.out_path, test_split=True)
    metric = search.objective.removeprefix("val_")
    if metric not in values or metric not in result.test_metrics:
        metric = "loss"
    return VerifyResult(
        metric=metric,
        evaluated=float(values[metric]),
        recorded=result.test_metrics.get(metric),
    )


def _evaluate_file(search: OfflineSearch, path: Path, *, test_split: bool) -> dict[str, float]:
    """Load an exported model and evaluate it here on the search's validation
    split, or its test split."""
    import keras

    from workers.datasets import load_dataset

    if search.spec.dataset is None:
        raise KtClusterError(
            f"{search.search_dir}: the search names no dataset (its user code loads the data), "
            "so --verify cannot evaluate the model; evaluate it yourself with "
            "keras.models.load_model"
        )
    dataset = load_dataset(search.spec.dataset)
    if test_split and not dataset.has_test:
        raise KtClusterError(
            f"{search.search_dir}: the dataset has no test split here, so --verify cannot "
            "evaluate the retrained model"
        )
    x, y = (dataset.x_test, dataset.y_test) if test_split else (dataset.x_val, dataset.y_val)
    model = keras.models.load_model(path)
    values: dict[str, float] = model.evaluate(
        x, y, batch_size=search.spec.training.batch_size, return_dict=True, verbose=0
    )
    return values


def _rebuild(
    search: OfflineSearch, info: DatasetInfo, hp_config: dict[str, Any], trial_dir: Path
) -> Any:
    from workers.evaluate import rebuild_model
    from workers.hypermodels import resolve_hypermodel

    hypermodel = resolve_hypermodel(
        search.spec.hypermodel, info.input_shape, info.num_classes, label_mode=info.label_mode
    )
    build_config_file = trial_dir / BUILD_CONFIG_FILE
    build_config = (
        json.loads(build_config_file.read_text()) if build_config_file.is_file() else None
    )
    return rebuild_model(
        hypermodel,
        hp_config,
        trial_dir / CHECKPOINT_FILE,
        build_config,
        trial_id=trial_dir.name,
    )


def verify_export(search_dir: Path | str, result: ExportResult) -> VerifyResult:
    """Load the exported file and evaluate it on the search's validation set.

    The recorded score is the best epoch's value of the objective, and the
    checkpoint holds that epoch's weights, so a ``val_*`` objective evaluates
    to the recorded score (up to float rounding).
    """
    search = read_search(search_dir)
    values = _evaluate_file(search, result.out_path, test_split=False)
    objective = search.objective
    metric = objective.removeprefix("val_")
    if metric not in values:
        raise KtClusterError(
            f"the exported model reports {sorted(values)} on the validation set, not "
            f"{metric!r} (the objective {objective!r}); compare them with the recorded metrics "
            f"in `ktc results {search.search_dir} --json`"
        )
    return VerifyResult(metric=objective, evaluated=float(values[metric]), recorded=result.score)
