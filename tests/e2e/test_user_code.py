"""User code through ``ktc submit``: a ``build_model(hp)`` and a HyperModel
subclass whose ``fit`` tunes ``batch_size``, in a module next to the search
file, written exactly as the Keras Tuner documentation writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import RunKtc, WriteYaml, assert_ok, ktc, local_cluster, results_json

pytestmark = pytest.mark.slow

MY_MODELS = """\
import keras
import keras_tuner


def build_model(hp):
    model = keras.Sequential()
    model.add(keras.layers.Flatten())
    model.add(
        keras.layers.Dense(
            units=hp.Int("units", min_value=32, max_value=128, step=32),
            activation=hp.Choice("activation", ["relu", "tanh"]),
        )
    )
    if hp.Boolean("dropout"):
        with hp.conditional_scope("dropout", [True]):
            model.add(keras.layers.Dropout(rate=hp.Float("rate", 0.1, 0.3, step=0.1)))
    model.add(keras.layers.Dense(10, activation="softmax"))
    learning_rate = hp.Float("lr", min_value=1e-3, max_value=1e-2, sampling="log")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


class MyHyperModel(keras_tuner.HyperModel):
    def build(self, hp):
        return build_model(hp)

    def fit(self, hp, model, *args, **kwargs):
        return model.fit(
            *args,
            batch_size=hp.Choice("batch_size", [16, 32]),
            **kwargs,
        )
"""


def _search(hypermodel: str) -> dict[str, Any]:
    return {
        "kind": "search",
        "name": "user-code",
        "hypermodel": hypermodel,
        "dataset": {"source": "digits", "validation_split": 0.2, "seed": 0},
        "objective": "val_accuracy",
        "oracle": {"type": "random", "max_trials": 3, "seed": 5},
        "training": {"epochs": 2, "batch_size": 64},
        "failure": {"retries_per_trial": 0, "lease_timeout_s": 120},
    }


def _run(tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml, hypermodel: str) -> list[Any]:
    (tmp_path / "my_models.py").write_text(MY_MODELS)
    cluster = local_cluster(
        "one", [{"name": "local", "host": "127.0.0.1", "cpus": 1, "cpu_workers": 1}]
    )
    search_dir = tmp_path / "search"
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", _search(hypermodel)),
        "--cluster",
        write_yaml("cluster.yaml", cluster),
        "--dir",
        search_dir,
        cwd=tmp_path,
        timeout=300,
    )
    assert_ok(proc)
    rows = results_json(run_ktc, search_dir)
    assert len(rows) == 3
    failed = [(r["trial_id"], r.get("error")) for r in rows if r["status"] != "COMPLETED"]
    assert not failed, failed
    return rows


@pytest.fixture(scope="module")
def build_model_rows(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The results of one ``my_models:build_model`` search (shared by the tests below)."""
    root = tmp_path_factory.mktemp("build_model")

    def run(
        *args: str | Path, cwd: Path | None = None, timeout: float = 300.0, env: Any = None
    ) -> Any:
        return ktc(*args, cwd=cwd or root, timeout=timeout, env=env)

    def write(name: str, data: Any) -> Path:
        path = root / name
        path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
        return path

    return _run(root, run, write, "my_models:build_model")


def test_build_model_function(build_model_rows: list[dict[str, Any]]) -> None:
    for row in build_model_rows:
        hp = row["hyperparameters"]
        assert {"units", "activation", "dropout", "lr"} <= set(hp), hp
        assert hp["units"] in (32, 64, 96, 128)
        assert hp["activation"] in ("relu", "tanh")
        assert 1e-3 <= hp["lr"] <= 1e-2
        # A conditional hyperparameter is set only when its parent is active.
        if "rate" in hp:
            assert hp["dropout"] is True, hp
        assert 0.0 < row["score"] <= 1.0


def test_results_show_every_hyperparameter_the_build_used(
    build_model_rows: list[dict[str, Any]],
) -> None:
    """As in Keras Tuner: a trial with ``dropout`` on reports its ``rate``."""
    assert any(row["hyperparameters"]["dropout"] for row in build_model_rows)
    for row in build_model_rows:
        hp = row["hyperparameters"]
        assert ("rate" in hp) == bool(hp["dropout"]), hp


def test_hypermodel_fit_tunes_batch_size(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    rows = _run(tmp_path, run_ktc, write_yaml, "my_models:MyHyperModel")
    for row in rows:
        assert row["hyperparameters"].get("batch_size") in (16, 32), row["hyperparameters"]
        assert 0.0 < row["score"] <= 1.0
