"""``DIR/evaluation.json``: what ``ktc evaluate`` measured on a search's test split.

One file per search directory, rewritten whole (atomically, mode 0600 like
the rest of the directory) by each ``ktc evaluate``. It holds the test scores
of the top trials evaluated last and, when a retrain was ever run, the
retrained model's (a later run without ``--retrain`` keeps the earlier
retrain, which still describes ``DIR/evaluation/retrained/model.keras``).

Readers (``ktc results``, ``ktc status``, ``ktc report``, ``ktc export
--retrained``) call :func:`load_results`; :func:`summary_line` is the one-line
form for a terminal. This module imports neither Ray nor TensorFlow.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import KtClusterError
from orchestrator.search_dir import write_json_atomic

EVALUATION_FILE = "evaluation.json"
EVALUATION_DIR = "evaluation"
RETRAINED_MODEL = f"{EVALUATION_DIR}/retrained/model.keras"  # relative to the search dir
FILE_MODE = 0o600
SCHEMA_VERSION = 1


class EvaluationFileError(KtClusterError):
    """``evaluation.json`` exists but does not parse; the message names the file and the fix."""


@dataclass(frozen=True)
class TrialEvaluation:
    """One trial's trained model (its best epoch's weights) on the test split."""

    rank: int  # 1 = the best trial by the objective
    trial_id: str
    score: float | None  # the objective's recorded (validation) value
    best_step: int
    hyperparameters: dict[str, Any]
    metrics: dict[str, float]  # test loss and every compiled metric
    test_examples: int

    def to_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "trial_id": self.trial_id,
            "score": self.score,
            "best_step": self.best_step,
            "hyperparameters": self.hyperparameters,
            "test_metrics": self.metrics,
            "test_examples": self.test_examples,
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> TrialEvaluation:
        score = data.get("score")
        return cls(
            rank=int(data["rank"]),
            trial_id=str(data["trial_id"]),
            score=None if score is None else float(score),
            best_step=int(data["best_step"]),
            hyperparameters=dict(data["hyperparameters"]),
            metrics={str(k): float(v) for k, v in dict(data["test_metrics"]).items()},
            test_examples=int(data["test_examples"]),
        )


@dataclass(frozen=True)
class RetrainEvaluation:
    """The best hyperparameters retrained on train+validation, then scored on the test split."""

    trial_id: str  # whose hyperparameters
    hyperparameters: dict[str, Any]
    seed: int  # keras.utils.set_random_seed
    epochs: int  # the trial's best_step + 1
    train_examples: int
    val_examples: int
    test_examples: int
    metrics: dict[str, float]
    duration_s: float
    model_path: str  # relative to the search directory
    evaluated_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "trial_id": self.trial_id,
            "hyperparameters": self.hyperparameters,
            "seed": self.seed,
            "epochs": self.epochs,
            "train_examples": self.train_examples,
            "val_examples": self.val_examples,
            "test_examples": self.test_examples,
            "test_metrics": self.metrics,
            "duration_s": self.duration_s,
            "model_path": self.model_path,
            "evaluated_at": self.evaluated_at,
        }

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> RetrainEvaluation:
        return cls(
            trial_id=str(data["trial_id"]),
            hyperparameters=dict(data["hyperparameters"]),
            seed=int(data["seed"]),
            epochs=int(data["epochs"]),
            train_examples=int(data["train_examples"]),
            val_examples=int(data["val_examples"]),
            test_examples=int(data["test_examples"]),
            metrics={str(k): float(v) for k, v in dict(data["test_metrics"]).items()},
            duration_s=float(data["duration_s"]),
            model_path=str(data["model_path"]),
            evaluated_at=float(data["evaluated_at"]),
        )


@dataclass(frozen=True)
class EvaluationResults:
    """The whole of ``evaluation.json``."""

    search_id: str
    evaluated_at: float
    objective: str
    test_split: str | None  # the test split's definition (SearchMeta.test_split)
    worker: dict[str, Any]  # where it ran: worker slot, node, hostname, pid, GPUs
    batch_size: int
    trials: tuple[TrialEvaluation, ...]  # best first
    retrain: RetrainEvaluation | None

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "search_id": self.search_id,
            "evaluated_at": self.evaluated_at,
            "objective": self.objective,
            "test_split": self.test_split,
            "worker": self.worker,
            "batch_size": self.batch_size,
            "trials": [t.to_json() for t in self.trials],
            "retrain": None if self.retrain is None else self.retrain.to_json(),
        }

    @classmethod
    def parse(cls, data: Any, *, source: Path | str) -> EvaluationResults:
        """Parse the JSON document; EvaluationFileError naming ``source`` when malformed."""
        try:
            if not isinstance(data, Mapping):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            version = data.get("schema_version")
            if version != SCHEMA_VERSION:
                raise ValueError(f"schema_version {version!r}; this ktc reads {SCHEMA_VERSION}")
            retrain = data.get("retrain")
            split = data.get("test_split")
            return cls(
                search_id=str(data["search_id"]),
                evaluated_at=float(data["evaluated_at"]),
                objective=str(data["objective"]),
                test_split=None if split is None else str(split),
                worker=dict(data.get("worker") or {}),
                batch_size=int(data["batch_size"]),
                trials=tuple(TrialEvaluation.parse(t) for t in data["trials"]),
                retrain=None if retrain is None else RetrainEvaluation.parse(retrain),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise EvaluationFileError(
                f"{source}: unreadable ({type(exc).__name__}: {exc}); run `ktc evaluate` on the "
                "search directory again to rewrite it"
            ) from exc

    def test_metrics_by_trial(self) -> dict[str, dict[str, float]]:
        """Each evaluated trial's test metrics by trial id (``ktc results --json`` may add
        them to its rows as ``test_metrics``)."""
        return {t.trial_id: dict(t.metrics) for t in self.trials}

    def primary_metric(self) -> str:
        """The metric to show first: the objective's (``val_accuracy`` -> ``accuracy``), else loss."""
        name = self.objective.removeprefix("val_")
        metrics = (
            self.retrain.metrics
            if self.retrain
            else (self.trials[0].metrics if self.trials else {})
        )
        return name if name in metrics else "loss"


def results_path(search_dir: Path | str) -> Path:
    """Where a search's evaluation results live."""
    return Path(search_dir) / EVALUATION_FILE


def load_results(search_dir: Path | str) -> EvaluationResults | None:
    """The search's evaluation results, or None when ``ktc evaluate`` never ran on it.

    Raises EvaluationFileError when the file exists but is damaged.
    """
    path = results_path(search_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise EvaluationFileError(
            f"{path}: not JSON ({exc}); run `ktc evaluate` on the search directory again"
        ) from exc
    return EvaluationResults.parse(data, source=path)


def write_results(search_dir: Path | str, results: EvaluationResults) -> Path:
    """Write ``evaluation.json`` atomically (0600); returns its path."""
    path = results_path(search_dir)
    write_json_atomic(path, results.to_json(), mode=FILE_MODE)
    return path


def summary_line(results: EvaluationResults) -> str:
    """One line for a terminal, e.g. ``test accuracy: retrained 0.9750 (trial 2, 5 epochs,
    seed 0); trial 2 0.9694, trial 0 0.9667``."""
    metric = results.primary_metric()
    parts = []
    if results.retrain is not None:
        r = results.retrain
        value = r.metrics.get(metric)
        parts.append(
            f"retrained {_fmt(value)} (trial {r.trial_id}'s hyperparameters, {r.epochs} epochs, "
            f"seed {r.seed})"
        )
    trials = ", ".join(f"trial {t.trial_id} {_fmt(t.metrics.get(metric))}" for t in results.trials)
    if trials:
        parts.append(trials)
    return f"test {metric}: " + "; ".join(parts) if parts else "test: nothing evaluated"


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
