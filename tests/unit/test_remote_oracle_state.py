"""RemoteOracle's local state, with a stand-in client (no chief): the
oracle.json it writes reloads into every Keras Tuner oracle class, and what
attach carries over. The same behaviours over real gRPC are in
``tests/integration/test_remote_oracle_compat.py``."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from keras_tuner.src.engine.trial import Trial  # noqa: E402

from orchestrator.errors import ChiefUnavailableError  # noqa: E402
from orchestrator.protocol.oracle_client import RemoteOracle  # noqa: E402


class StandInClient:
    """Answers the calls attach/save/remaining_trials make; records UpdateSpace."""

    address = "stand-in"

    def __init__(self, *, reachable: bool = True) -> None:
        self.reachable = reachable
        self.spaces: list[dict[str, Any]] = []

    def update_space(self, config: dict[str, Any]) -> None:
        self.spaces.append(config)

    def search_state(self) -> Any:
        if not self.reachable:
            raise ChiefUnavailableError("GetSearchState: no chief answers at stand-in")
        return SimpleNamespace(trials_by_status={"COMPLETED": 2, "RUNNING": 1})


def _objective() -> Any:
    return keras_tuner.Objective("score", "max")


ORACLES = {
    "random": lambda: keras_tuner.oracles.RandomSearchOracle(objective=_objective(), max_trials=5),
    "grid": lambda: keras_tuner.oracles.GridSearchOracle(objective=_objective(), max_trials=5),
    "bayesian": lambda: keras_tuner.oracles.BayesianOptimizationOracle(
        objective=_objective(), max_trials=5
    ),
    "hyperband": lambda: keras_tuner.oracles.HyperbandOracle(objective=_objective(), max_epochs=4),
}


def _attached(local: Any, directory: Path, client: Any) -> RemoteOracle:
    local._set_project_dir(str(directory), "p")
    tuner = SimpleNamespace(oracle=local, directory=str(directory), project_name="p")
    return RemoteOracle.attach(tuner, client)


@pytest.mark.parametrize("kind", ORACLES)
def test_save_writes_an_oracle_json_the_replaced_class_reloads(kind: str, tmp_path: Path) -> None:
    local = ORACLES[kind]()
    local.hyperparameters.Int("x", 0, 10)
    remote = _attached(local, tmp_path, StandInClient())
    remote.hyperparameters.Boolean("late")  # the space grew while trials ran
    remote.save()
    path = tmp_path / "p" / "oracle.json"
    assert not list(path.parent.glob(".oracle.json.*"))  # written through a temp file
    if kind == "hyperband":  # the replaced class's own keys are kept
        assert "brackets" in json.loads(path.read_text())

    reloaded = ORACLES[kind]()
    reloaded._set_project_dir(str(tmp_path), "p")
    reloaded.reload()
    assert {hp.name for hp in reloaded.hyperparameters.space} == {"x", "late"}


def test_attach_carries_the_space_its_checks_and_reloaded_trials(tmp_path: Path) -> None:
    space = keras_tuner.HyperParameters()
    space.Int("x", 0, 10)
    local = keras_tuner.oracles.RandomSearchOracle(
        objective=_objective(), max_trials=5, hyperparameters=space, allow_new_entries=False
    )
    local.trials["7"] = Trial(space.copy(), trial_id="7")
    client = StandInClient()
    remote = _attached(local, tmp_path, client)
    assert remote.hyperparameters is space  # KT's oracle keeps the user's object
    assert [hp["config"]["name"] for hp in client.spaces[0]["space"]] == ["x"]
    assert list(remote.trials) == ["7"]
    assert remote.trials["7"] is not local.trials["7"]  # a copy: the local one may live on
    grown = space.copy()
    grown.Boolean("late")
    with pytest.raises(RuntimeError, match="`allow_new_entries` is `False`"):
        remote.update_space(grown)
    assert len(client.spaces) == 1  # refused before the chief saw it


def test_remaining_trials_falls_back_to_local_trials_without_a_chief(tmp_path: Path) -> None:
    remote = _attached(
        keras_tuner.oracles.RandomSearchOracle(objective=_objective(), max_trials=5),
        tmp_path,
        StandInClient(),
    )
    assert remote.remaining_trials() == 2  # 5 - the chief's 3 trials
    remote.client = StandInClient(reachable=False)
    remote.trials["0"] = Trial(remote.hyperparameters.copy(), trial_id="0")
    assert remote.remaining_trials() == 4
