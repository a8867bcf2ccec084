"""Metric registration: the directions Keras Tuner's own ``update_trial`` gives,
computed once per metric name instead of once per trial."""

from __future__ import annotations

from typing import Any

import pytest

from orchestrator.protocol import metrics as oracles
from orchestrator.protocol.metrics import register_metrics

keras_tuner = pytest.importorskip("keras_tuner")

NAMES = ["val_accuracy", "accuracy", "loss", "val_loss", "mse", "auc", "my_custom_score"]


def _trial() -> Any:
    from keras_tuner.src.engine import trial as kt_trial

    return kt_trial.Trial(keras_tuner.HyperParameters(), trial_id="t")


@pytest.mark.parametrize("objective", ["val_accuracy", "my_custom_score", "val_loss"])
def test_directions_match_keras_tuners_update_trial(objective: str) -> None:
    direction = "max" if objective != "val_loss" else "min"
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective(objective, direction), max_trials=1
    )
    theirs = _trial()
    oracle.trials[theirs.trial_id] = theirs
    oracle._save_trial = lambda *a, **k: None
    oracle.update_trial(theirs.trial_id, dict.fromkeys(NAMES, 0.5))

    ours = _trial()
    register_metrics(ours, oracle.objective, NAMES)
    for name in NAMES:
        assert ours.metrics.metrics[name].direction == theirs.metrics.metrics[name].direction, name


def test_inference_runs_once_per_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from keras_tuner.src.engine import metrics_tracking

    calls: list[str] = []
    real = metrics_tracking.infer_metric_direction

    def counting(name: str) -> Any:
        calls.append(name)
        return real(name)

    monkeypatch.setattr(metrics_tracking, "infer_metric_direction", counting)
    oracles._inferred_direction.cache_clear()
    objective = keras_tuner.Objective("val_accuracy", "max")
    for _ in range(5):
        register_metrics(_trial(), objective, ["val_accuracy", "accuracy", "auc"])
    assert sorted(calls) == ["accuracy", "auc"]  # the objective needs none
