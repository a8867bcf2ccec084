"""``ktc space FILE|DIR`` (issue 14.5) and the grid checks of ``ktc validate`` (14.8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.cli.main import main
from orchestrator.cli.validate import check_file
from orchestrator.search_space import grid_size, rows

SLEEP_GRID = """\
hypermodel:
  name: sleep
  overrides:
    x: {values: [0.1, 0.5]}
    y: {values: [0.3, 0.7]}
    units: {values: [64, 128, 256]}
objective: val_accuracy
oracle: {type: grid}
"""


def _conditional_space() -> Any:
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    blocks = hp.Int("blocks", 1, 3)
    hp.Choice("act", ["relu", "tanh"])
    for i in range(3):
        with hp.conditional_scope("blocks", list(range(i + 1, 4))):
            hp.Int(f"filters_{i}", 16, 32, step=16)
    del blocks
    return hp


def test_grid_size_matches_keras_tuners_grid_search(tmp_path: Path) -> None:
    """Count what KT's own GridSearchOracle hands out, conditions included."""
    import keras_tuner

    hp = _conditional_space()
    oracle = keras_tuner.oracles.GridSearchOracle(
        objective=keras_tuner.Objective("score", "max"), hyperparameters=hp
    )
    oracle._display.verbose = 0
    oracle._set_project_dir(str(tmp_path), "grid")
    points = 0
    while True:
        trial = oracle.create_trial("w")
        if trial.status != "RUNNING":
            break
        points += 1
        oracle.update_trial(trial.trial_id, {"score": 1.0})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    # blocks=1: 2 x 2, blocks=2: 2 x 2 x 2, blocks=3: 2 x 2 x 2 x 2.
    assert points == grid_size(hp) == 4 + 8 + 16
    table = {row.name: row for row in rows(hp)}
    assert table["filters_2"].conditions == (("blocks", (3,)),)
    assert table["filters_0"].step == 16 and table["act"].values == "relu, tanh"


def test_space_of_a_search_file_and_of_its_directory(tmp_path: Path, capsys: Any) -> None:
    import keras_tuner

    from orchestrator.chief.chief import Chief
    from orchestrator.config import parse_search
    from workers.hypermodels.sleep import declare_sleep_space

    search_file = tmp_path / "search.yaml"
    search_file.write_text(SLEEP_GRID)
    assert main(["space", str(search_file), "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["x"]["type"] == "Choice" and listed["x"]["values"] == [0.1, 0.5]
    # Structured, not display text: the values as a list, never "64, 128, 256".
    units = listed["units"]
    assert units["values"] == [64, 128, 256] and units["min"] is None
    assert listed["units"]["default"] == 64
    assert main(["space", str(search_file)]) == 0
    printed = capsys.readouterr().out
    assert "search space of search file" in printed and "optimizer" in printed
    assert "a grid over this space has" in printed
    # A search directory: the space its ledger holds.
    spec = parse_search(SLEEP_GRID)
    hp = keras_tuner.HyperParameters()
    declare_sleep_space(hp, spec.hypermodel.options, spec.hypermodel.overrides)
    chief = Chief.create(spec, tmp_path / "run", initial_space=hp)
    chief.close(grace_s=0.1)
    assert main(["space", str(tmp_path / "run"), "--json"]) == 0
    from_dir = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in from_dir] == list(listed)


def test_space_of_the_cnn_shows_its_conditions(tmp_path: Path, capsys: Any) -> None:
    search_file = tmp_path / "cnn.yaml"
    search_file.write_text(
        "hypermodel: {name: cnn, overrides: {conv_blocks: {min: 1, max: 2}}}\ndataset: digits\n"
    )
    assert main(["space", str(search_file), "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["filters_1"]["conditions"] == [{"parent": "conv_blocks", "values": [2]}]
    assert listed["conv_blocks"]["conditions"] == []


def test_a_stepped_float_lists_the_grid_keras_tuner_samples(tmp_path: Path, capsys: Any) -> None:
    search_file = tmp_path / "cnn.yaml"
    # Keras Tuner's rounding: 0.0 .. 0.3 step 0.1 is 0.0, 0.1, 0.2 (0.3 is never sampled).
    search_file.write_text(
        "hypermodel: {name: mlp, overrides: {dropout: {min: 0.0, max: 0.3, step: 0.1}}}\n"
        "dataset: digits\n"
    )
    assert main(["space", str(search_file), "--json"]) == 0
    dropout = {row["name"]: row for row in json.loads(capsys.readouterr().out)}["dropout"]
    assert dropout["values"] == [0.0, 0.1, 0.2]
    assert (dropout["min"], dropout["max"], dropout["step"]) == (0.0, 0.3, 0.1)
    assert main(["space", str(search_file)]) == 0
    assert "│ 0.0, 0.1, 0.2 " in capsys.readouterr().out


def test_space_errors(tmp_path: Path, capsys: Any) -> None:
    assert main(["space", str(tmp_path / "nothing.yaml")]) == 2
    assert "nothing.yaml" in capsys.readouterr().err


def test_validate_sizes_a_grid_and_warns_about_floats_without_step(tmp_path: Path) -> None:
    finite = tmp_path / "finite.yaml"
    finite.write_text(SLEEP_GRID)
    report = check_file(str(finite))
    assert report.valid and report.spec is not None
    assert report.spec.oracle.max_trials is None  # the whole grid
    # x: 2 values, y: 2, units: 3, and the sleep space's optimizer choice (3).
    assert report.grid_points == 2 * 2 * 3 * 3, report.warnings
    loose = tmp_path / "loose.yaml"
    loose.write_text(
        "hypermodel: {name: sleep, overrides: {x: {min: 0.0, max: 1.0}}}\n"
        "objective: val_accuracy\noracle: {type: grid, max_trials: 3}\n"
    )
    report = check_file(str(loose))
    assert report.valid and report.grid_points is None
    assert any(
        "grid over Float 'x', 'y' with no step" in w and "10 evenly spaced values" in w
        for w in report.warnings
    ), report.warnings
    assert any("oracle.max_trials: 3 stops the grid before its" in w for w in report.warnings)


def test_validate_warns_when_a_keras_dataset_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    search = tmp_path / "mnist.yaml"
    search.write_text("hypermodel: mlp\ndataset: mnist\n")
    report = check_file(str(search))
    assert report.valid
    assert any(
        f"'mnist' is not in the local Keras cache (missing {tmp_path}/keras/datasets/mnist.npz)"
        in w
        and "each worker downloads it on first use" in w
        for w in report.warnings
    ), report.warnings


def test_the_digits_demo_samples_every_dropout_it_declares(capsys: Any) -> None:
    config = Path(__file__).resolve().parents[2] / "configs" / "digits-cnn.yaml"
    assert main(["space", str(config), "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert listed["dropout"]["values"] == [0.0, 0.1, 0.2, 0.3]
