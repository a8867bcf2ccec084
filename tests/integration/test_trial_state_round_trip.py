"""Keras Tuner trial state survives ledger -> replay -> CreateTrial -> worker,
with its conditions intact.

Issue 11, symptom 1: after a chief SIGKILL, the resumed chief could not send
its in-flight CNN trials again (``Object of type Parent is not JSON
serializable``): Keras Tuner's ``Trial.from_state`` had rewritten the stored
state in place. Each case here hands a trial to a worker over real gRPC,
"kills" the chief with the trial in flight, resumes from the ledger alone,
and checks that the worker receives the same state, which Keras Tuner parses
with the same conditions, values and active set.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras_tuner
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.oracle_client import RemoteOracle
from tests.helpers import make_search


def cnn_space() -> keras_tuner.HyperParameters:
    """The built-in cnn's full space (every conditional block), as the chief gets it."""
    from workers.hypermodels import resolve_hypermodel

    spec = make_search().hypermodel.model_copy(update={"name": "cnn"})
    hypermodel = resolve_hypermodel(spec, (8, 8), 10)
    tuner = keras_tuner.RandomSearch(
        hypermodel, objective="val_accuracy", max_trials=1, directory=None, overwrite=True
    )
    return tuner.oracle.get_space()


def user_space() -> keras_tuner.HyperParameters:
    """A user's nested conditional space with every hyperparameter kind."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("model", ["cnn", "mlp"])
    with hp.conditional_scope("model", ["cnn"]):
        hp.Int("conv_layers", 1, 3)
        with hp.conditional_scope("conv_layers", [2, 3]):
            hp.Choice("kernel", [3, 5])
            hp.Boolean("batch_norm")
    with hp.conditional_scope("model", ["mlp"]):
        hp.Int("units", 16, 256, step=16, sampling="log")
    hp.Float("learning_rate", 1e-5, 1e-1, sampling="log")
    hp.Float("dropout", 0.0, 0.5, step=0.1)
    hp.Fixed("optimizer", "adam")
    hp.Boolean("augment")
    return hp


CASES = {
    "cnn-random": ({"type": "random", "max_trials": 6, "seed": 4}, cnn_space),
    "user-random": ({"type": "random", "max_trials": 6, "seed": 7}, user_space),
    "user-hyperband": (
        {"type": "hyperband", "max_epochs": 4, "factor": 2, "seed": 2},
        user_space,
    ),
}


def _received(oracle: RemoteOracle) -> Any:
    trial = oracle.create_trial("w")
    assert trial.status == "RUNNING"
    return trial


def _shape(trial: Any) -> tuple[Any, ...]:
    hp = trial.hyperparameters
    conditions = {
        p.name: [(c.name, list(c.values)) for c in p.conditions]  # Parent objects, rebuilt
        for p in hp.space
    }
    active = sorted(p.name for p in hp.space if hp.is_active(p))
    return trial.trial_id, dict(hp.values), conditions, active


@pytest.mark.parametrize("case", CASES)
def test_trial_state_survives_replay_and_a_second_create(case: str, tmp_path: Path) -> None:
    oracle_spec, space = CASES[case]
    search = make_search(oracle_spec, objective="val_accuracy")
    directory = tmp_path / "search"
    chief = Chief.create(search, directory, initial_space=space(), long_poll_s=0)
    endpoint = chief.start()
    with TrialClient(endpoint.address, endpoint.token, worker_id="w0") as client:
        remote = RemoteOracle.for_search(client, search, wait_s=0)
        first = [_received(remote) for _ in range(2)]
        before = [_shape(t) for t in first]
        sent_states = [json.dumps(t.get_state(), sort_keys=True) for t in first]
    # The chief dies with both trials in flight (its in-memory state is lost).
    chief.close(grace_s=0)

    resumed = Chief.resume(directory, long_poll_s=0, keep_leases=False)
    endpoint = resumed.start()
    try:
        with TrialClient(endpoint.address, endpoint.token, worker_id="w1") as client:
            remote = RemoteOracle.for_search(client, search, wait_s=0)
            again = [_received(remote) for _ in range(2)]
        assert [_shape(t) for t in again] == before
        assert [json.dumps(t.get_state(), sort_keys=True) for t in again] == sent_states
        conditional = [p for p in again[0].hyperparameters.space if p.conditions]
        assert conditional, "the space must have conditions for this test to mean anything"
        if "hyperband" in case:
            assert {"tuner/epochs", "tuner/round"} <= set(again[0].hyperparameters.values)
        # The records the chief serves stay plain JSON after Keras Tuner read them.
        for view in resumed.broker.trials():
            json.dumps(view.trial_state)
    finally:
        resumed.cancel(now=True)
        resumed.close(grace_s=0)
