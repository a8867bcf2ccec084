"""``ktc export``: a real trial (stock Keras Tuner Tuner against an in-process
chief, no fleet), exported, reloaded with ``keras.models.load_model`` and
evaluated: its accuracy must equal the recorded score."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.main import main
from orchestrator.config import parse_search
from orchestrator.errors import ConfigError, KtClusterError
from orchestrator.export import BUILD_CONFIG_FILE, CHECKPOINT_FILE, export_model
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.trials import TrialStatus
from orchestrator.search_dir import TRIALS_DIR

pytestmark = pytest.mark.slow

SEARCH = {
    "name": "export-test",
    "hypermodel": {
        "name": "cnn",
        "overrides": {
            "conv_blocks": {"value": 1},
            "filters": {"value": 16},
            "kernel_size": {"value": 3},
            "pool_size": {"value": 2},
            "dense_layers": {"value": 1},
            "units": {"value": 32},
            "dropout": {"value": 0.1},
            "activation": {"value": "relu"},
            "optimizer": {"value": "adam"},
            "learning_rate": {"value": 0.005},
        },
    },
    "dataset": {"source": "digits", "validation_split": 0.2, "seed": 0},
    "objective": "val_accuracy",
    "oracle": {"type": "random", "max_trials": 1, "seed": 7},
    "training": {"epochs": 3, "batch_size": 32},
}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A search directory with one completed cnn-on-digits trial and its artifacts."""
    import keras_tuner

    from orchestrator.chief.chief import Chief
    from orchestrator.protocol.oracle_client import RemoteOracle
    from workers.datasets import load_dataset
    from workers.hypermodels import resolve_hypermodel

    root = tmp_path_factory.mktemp("export")
    directory = root / "search"
    spec = parse_search(SEARCH)
    assert spec.dataset is not None
    data = load_dataset(spec.dataset)
    chief = Chief.create(spec, directory, long_poll_s=0.5)
    chief.start()
    try:
        # ktc submit records this; here the test plays submit.
        chief.ledger.set_meta(
            {
                "dataset_info": {
                    "input_shape": list(data.input_shape),
                    "num_classes": data.num_classes,
                    "label_mode": data.label_mode,
                }
            }
        )
        hypermodel = resolve_hypermodel(
            spec.hypermodel, data.input_shape, data.num_classes, label_mode=data.label_mode
        )
        tuner = keras_tuner.RandomSearch(
            hypermodel,
            objective=keras_tuner.Objective("val_accuracy", "max"),
            max_trials=1,
            directory=str(root / "kt"),
            project_name="p",
            overwrite=True,
        )
        client = TrialClient(chief.endpoint.address, chief.endpoint.token, worker_id="w0")
        RemoteOracle.attach(tuner, client, wait_s=0.5)
        tuner.search(
            data.x_train,
            data.y_train,
            validation_data=(data.x_val, data.y_val),
            epochs=3,
            batch_size=32,
            verbose=0,
        )
        (trial,) = chief.broker.trials()
        assert trial.status is TrialStatus.COMPLETED
        # The runner uploads these through the chief; copying them into the
        # ArtifactStore layout is the same result on disk.
        trial_dir = directory / TRIALS_DIR / trial.trial_id
        trial_dir.mkdir(parents=True)
        for name in (CHECKPOINT_FILE, BUILD_CONFIG_FILE):
            shutil.copy(Path(tuner.get_trial_dir(trial.trial_id)) / name, trial_dir / name)
        client.close()
    finally:
        chief.cancel(now=True)
        chief.close(grace_s=0.2)
    return directory, trial, data


def test_export_loads_and_matches_the_recorded_score(finished_search: Any, tmp_path: Path) -> None:
    import keras

    directory, trial, data = finished_search
    out = tmp_path / "models" / "best.keras"
    result = export_model(directory, out)
    assert result.trial_id == trial.trial_id
    assert result.score == pytest.approx(trial.score)
    assert result.out_path == out and out.is_file()
    model = keras.models.load_model(out)
    values = model.evaluate(data.x_val, data.y_val, batch_size=32, return_dict=True, verbose=0)
    # The score is the best epoch's val_accuracy and the checkpoint (SaveBestEpoch)
    # holds that epoch's weights; dropout is off in evaluation, so only float
    # summation order can differ. One sample of 288 would be 0.0035.
    assert values["accuracy"] == pytest.approx(trial.score, abs=1e-6)


def test_export_cli_verify(finished_search: Any, tmp_path: Path, capsys: Any) -> None:
    directory, trial, _ = finished_search
    out = tmp_path / "cli.keras"
    assert main(["export", str(directory), "--out", str(out), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert f"exported trial {trial.trial_id} (rank 1" in printed
    assert "verify: val_accuracy on the validation set = " in printed
    assert out.is_file()


def test_export_errors(finished_search: Any, tmp_path: Path, capsys: Any) -> None:
    directory, trial, _ = finished_search
    with pytest.raises(ConfigError, match=r"must end in \.keras"):
        export_model(directory, tmp_path / "best.h5")
    with pytest.raises(ConfigError, match="--rank: expected 1"):
        export_model(directory, tmp_path / "x.keras", rank=0)
    with pytest.raises(KtClusterError, match="only 1 completed trial"):
        export_model(directory, tmp_path / "x.keras", rank=2)
    assert main(["export", str(directory), "--out", str(tmp_path / "m.txt")]) == 2
    assert "must end in .keras" in capsys.readouterr().err


def test_export_missing_checkpoint(finished_search: Any, tmp_path: Path) -> None:
    directory, trial, _ = finished_search
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    (copy / TRIALS_DIR / trial.trial_id / CHECKPOINT_FILE).unlink()
    with pytest.raises(KtClusterError, match=f"trial {trial.trial_id} has no checkpoint in"):
        export_model(copy, tmp_path / "x.keras")


def test_export_needs_dataset_info(finished_search: Any, tmp_path: Path) -> None:
    import sqlite3

    directory, _, _ = finished_search
    copy = tmp_path / "copy"
    shutil.copytree(directory, copy)
    with sqlite3.connect(copy / "ledger.db") as conn:
        conn.execute("DELETE FROM meta WHERE key = 'dataset_info'")
    with pytest.raises(KtClusterError, match="the ledger has no dataset_info"):
        export_model(copy, tmp_path / "x.keras")


def test_export_sleep_hypermodel(tmp_path: Path) -> None:
    from orchestrator.chief.chief import Chief

    spec = parse_search({**SEARCH, "hypermodel": "sleep", "dataset": None, "objective": "score"})
    chief = Chief.create(spec, tmp_path / "s")
    chief.close(grace_s=0.1)
    with pytest.raises(KtClusterError, match="the sleep benchmark hypermodel has no model"):
        export_model(tmp_path / "s", tmp_path / "x.keras")
    json.dumps(spec.model_dump(mode="json"))


USER_MODULE = """
from workers.hypermodels.cnn import CNNHyperModel

OVERRIDES = {overrides!r}


def build_model(hp):
    return CNNHyperModel((8, 8, 1), 10, overrides=OVERRIDES).build(hp)
"""


def test_export_finds_user_code_in_the_working_directory(
    finished_search: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """Issue 14.9: `ktc export` imports `mymod:build_model` from the cwd, as submit does,
    with no PYTHONPATH."""
    import sqlite3
    import sys

    directory, trial, _ = finished_search
    copy = tmp_path / "search"
    shutil.copytree(directory, copy)
    with sqlite3.connect(copy / "ledger.db") as conn:
        (stored,) = conn.execute("SELECT value FROM meta WHERE key = 'search_spec'").fetchone()
        spec = json.loads(stored)
        spec["hypermodel"] = {"name": "mymod:build_model"}
        conn.execute("UPDATE meta SET value = ? WHERE key = 'search_spec'", (json.dumps(spec),))
    project = tmp_path / "project"
    project.mkdir()
    (project / "mymod.py").write_text(
        USER_MODULE.format(overrides=SEARCH["hypermodel"]["overrides"])  # type: ignore[index]
    )
    monkeypatch.chdir(project)
    monkeypatch.delenv("PYTHONPATH", raising=False)
    monkeypatch.delitem(sys.modules, "mymod", raising=False)
    assert str(project) not in sys.path and "" not in sys.path
    try:
        assert main(["export", str(copy), "--out", str(tmp_path / "user.keras")]) == 0
    finally:
        sys.modules.pop("mymod", None)
    assert f"exported trial {trial.trial_id}" in capsys.readouterr().out
    assert (tmp_path / "user.keras").is_file()
    assert str(project) not in sys.path  # taken away again
