"""The Keras Tuner path of the worker (KtcTuner, workers/runner.py) under a
trial scheduler, against a real chief: a scheduler STOP ends the Keras fit
and the trial COMPLETED, marked stopped early, with its best epoch's score;
the user's own EarlyStopping callback ends a trial COMPLETED, not marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.ledger import Ledger
from orchestrator.errors import SearchFailedError
from orchestrator.protocol.client import AssignmentKind, TrialClient
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import parse_search

keras = pytest.importorskip("keras")
keras_tuner = pytest.importorskip("keras_tuner")
np = pytest.importorskip("numpy")

from orchestrator.protocol.oracle_client import RemoteOracle  # noqa: E402  (imports keras_tuner)
from workers.kt_tuner import ktc_tuner_class  # noqa: E402

StartChief = Callable[..., tuple[Chief, Any]]
EPOCHS = 4


def _search(name: str, max_trials: int) -> Any:
    return parse_search(
        {
            "name": name,
            "hypermodel": "mlp",
            "objective": {"name": "val_loss", "direction": "min"},
            "oracle": {"type": "random", "max_trials": max_trials, "seed": 1},
            "training": {"epochs": EPOCHS},
            # Rungs after 1 and 2 epochs (report epochs 0 and 1).
            "scheduler": {"type": "asha", "grace_epochs": 1, "reduction_factor": 2},
        }
    )


def _build(hp: Any) -> Any:
    model = keras.Sequential(
        [
            keras.layers.Input((4,)),
            keras.layers.Dense(hp.Int("units", 4, 16, step=4), activation="relu", name="hidden"),
            keras.layers.Dense(2, activation="softmax", name="out"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _tune(ep: Any, work: Path, callbacks: list[Any]) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    client = TrialClient(ep.address, ep.token, worker_id="kt")
    oracle = RemoteOracle(
        client, objective=keras_tuner.Objective("val_loss", "min"), max_trials=0, wait_s=1.0
    )
    tuner = ktc_tuner_class()(
        oracle=oracle, hypermodel=_build, directory=str(work), project_name="p", overwrite=True
    )
    tuner.search(x, y, validation_data=(x, y), epochs=EPOCHS, callbacks=callbacks, verbose=0)
    client.close()


def _progress(search_dir: Path, trial_id: str) -> list[float]:
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        return [
            e.event.metrics["val_loss"]
            for e in ledger.events()
            if e.kind.value == "progress" and e.trial_id == trial_id
        ]


def test_a_scheduler_stop_completes_a_keras_trial_with_its_best_epoch(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    chief, ep = start_chief(_search("kt-asha", 2), long_poll_s=1.0)
    # A first trial with a perfect loss at the first rung: any Keras trial that
    # reaches that rung after it is outside the top half there.
    with TrialClient(ep.address, ep.token, worker_id="raw") as client:
        assignment = client.create_trial(wait_s=1.0)
        assert assignment.kind is AssignmentKind.TRIAL and assignment.trial is not None
        seeded = assignment.trial
        for epoch in range(EPOCHS):
            client.report(seeded, epoch, {"val_loss": 0.0})
        client.end_trial(seeded, "COMPLETED", metrics={"val_loss": 0.0})
    _tune(ep, tmp_path / "work", callbacks=[])
    assert chief.wait(30) is SearchState.COMPLETED
    keras_trial = next(
        r for r in chief.broker.book.records.values() if r.trial_id != seeded.trial_id
    )
    assert keras_trial.status is TrialStatus.COMPLETED
    assert keras_trial.stopped_early
    losses = _progress(search_dir, keras_trial.trial_id)
    assert len(losses) == 1  # stopped at the first rung: one epoch trained
    assert keras_trial.score == pytest.approx(min(losses))
    chief.broker.apply_pending_ends()
    assert chief.broker.oracle_host.oracle.trials[keras_trial.trial_id].score == pytest.approx(
        min(losses)
    )


def test_the_users_early_stopping_completes_a_trial_not_marked(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    chief, ep = start_chief(_search("kt-es", 1), long_poll_s=1.0)
    # Alone at every rung, the scheduler never stops it; EarlyStopping does,
    # after 2 epochs (no improvement by 10 after the first).
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=0, min_delta=10.0)
    _tune(ep, tmp_path / "work", callbacks=[stop])
    assert chief.wait(30) is SearchState.COMPLETED
    (rec,) = chief.broker.book.records.values()
    assert rec.status is TrialStatus.COMPLETED and not rec.stopped_early
    assert len(_progress(search_dir, rec.trial_id)) == 2


def test_an_objective_the_model_does_not_log_fails_at_the_first_epoch_naming_the_logged_ones(
    start_chief: StartChief, search_dir: Path, tmp_path: Path
) -> None:
    search = parse_search(
        {
            "name": "kt-typo",
            "hypermodel": "mlp",
            "objective": {"name": "val_acc", "direction": "max"},
            "oracle": {"type": "random", "max_trials": 1, "seed": 1},
            "training": {"epochs": EPOCHS},
            "failure": {"retries_per_trial": 2},
        }
    )
    chief, ep = start_chief(search, long_poll_s=1.0)
    rng = np.random.default_rng(0)
    x = rng.random((32, 4)).astype("float32")
    y = (x[:, 0] > 0.5).astype("int32")
    with TrialClient(ep.address, ep.token, worker_id="kt") as client:
        oracle = RemoteOracle(
            client, objective=keras_tuner.Objective("val_acc", "max"), max_trials=0, wait_s=1.0
        )
        tuner = ktc_tuner_class()(
            oracle=oracle, hypermodel=_build, directory=str(tmp_path), project_name="p"
        )
        # The search's one trial failed: the chief ends it, and the tuner says why.
        with pytest.raises(SearchFailedError, match=r"ObjectiveNotLoggedError: the objective"):
            tuner.search(x, y, validation_data=(x, y), epochs=EPOCHS, verbose=0)
    assert chief.wait(30) is SearchState.FAILED
    (rec,) = chief.broker.book.records.values()
    # Deterministic: one attempt, stopped at its first epoch's end, not retried.
    assert rec.status is TrialStatus.FAILED and rec.attempt == 1
    assert _progress(search_dir, rec.trial_id) == []
    assert (rec.error_message or "").startswith(
        "ObjectiveNotLoggedError: the objective 'val_acc' is not among the metrics the model "
        "logged (loss, val_loss); set the search file's `objective:` to one of them"
    )
