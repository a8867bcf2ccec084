"""SearchSpec: shorthands, defaults, objective direction, paths, user-code checks."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from orchestrator.config import (
    BUILTIN_DATASETS,
    BUILTIN_HYPERMODELS,
    ObjectiveSpec,
    SearchSpec,
    check_importable,
    load_search,
    parse_search,
)
from orchestrator.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_builtins() -> None:
    assert BUILTIN_HYPERMODELS == ("cnn", "mlp", "transfer", "sleep")
    assert BUILTIN_DATASETS == ("digits", "mnist", "fashion_mnist", "cifar10")


def test_shorthands_and_defaults() -> None:
    spec = parse_search("hypermodel: cnn\ndataset: digits\nobjective: val_loss\n")
    assert spec.kind == "search" and spec.name == "search"
    assert spec.hypermodel.name == "cnn" and spec.hypermodel.is_builtin
    assert spec.hypermodel.module is None
    assert spec.dataset is not None and spec.dataset.source == "digits"
    assert spec.objective.name == "val_loss" and spec.objective.resolved_direction == "min"
    assert spec.oracle.type == "random" and spec.oracle.max_trials == 10
    assert spec.training.epochs == 10 and spec.training.early_stopping is None
    assert spec.failure.heartbeat_interval_s == 15.0


@pytest.mark.parametrize(
    ("name", "direction", "expected"),
    [
        ("val_accuracy", None, "max"),
        ("val_loss", None, "min"),
        ("mean_squared_error", None, "min"),
        ("val_auc", None, "max"),
        ("val_recall", None, "max"),
        ("val_loss", "max", "max"),
    ],
)
def test_objective_direction(name: str, direction: str | None, expected: str) -> None:
    spec = ObjectiveSpec.model_validate({"name": name, "direction": direction})
    assert spec.resolved_direction == expected


def test_user_reference_parts() -> None:
    spec = parse_search("hypermodel: my_pkg.models:MyHyperModel\n")
    assert not spec.hypermodel.is_builtin
    assert spec.hypermodel.module == "my_pkg.models"
    assert spec.hypermodel.attribute == "MyHyperModel"


def test_resolve_directory() -> None:
    spec = parse_search("name: exp\nhypermodel: cnn\n")
    assert spec.resolve_directory(datetime(2024, 5, 6, 7, 8, 9)) == Path(
        "searches/exp-20240506-070809"
    )
    spec = parse_search("hypermodel: cnn\noutput: {directory: out/run1}\n")
    assert spec.resolve_directory() == Path("out/run1")


def test_dataset_paths_resolve_against_cwd_not_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "data.npz").write_bytes(b"")
    sub = tmp_path / "configs"
    sub.mkdir()
    (sub / "s.yaml").write_text("hypermodel: cnn\ndataset: {source: npz, path: data.npz}\n")
    monkeypatch.chdir(tmp_path)
    spec = load_search(sub / "s.yaml")
    assert spec.dataset is not None and spec.dataset.path == str(tmp_path / "data.npz")
    monkeypatch.chdir(sub)
    with pytest.raises(ConfigError, match=r"s\.yaml:2: dataset\.path: path 'data\.npz' does not"):
        load_search("s.yaml")
    assert load_search("s.yaml", check_paths=False).dataset is not None


def test_heartbeat_follows_lease() -> None:
    spec = parse_search("hypermodel: sleep\nfailure: {lease_timeout_s: 8}\n")
    assert spec.failure.heartbeat_interval_s == 2.0


def test_overrides_forms_are_accepted() -> None:
    spec = parse_search(
        "hypermodel:\n  name: cnn\n  overrides:\n"
        "    filters: {min: 16, max: 64, step: 16}\n"
        "    learning_rate: {min: 1.0e-4, max: 1.0e-2, sampling: log}\n"
        "    activation: {values: [relu, tanh]}\n"
        "    kernel_size: {value: 3}\n"
        "  options: {weights: null}\n"
    )
    assert spec.hypermodel.overrides["activation"] == {"values": ["relu", "tanh"]}
    assert spec.hypermodel.options == {"weights": None}


def test_override_needs_one_form() -> None:
    with pytest.raises(
        ConfigError, match=r"hypermodel\.overrides\.units: expected exactly one form"
    ):
        parse_search("hypermodel: {name: mlp, overrides: {units: {value: 3, values: [1]}}}\n")


def test_grid_allows_no_max_trials() -> None:
    spec = parse_search("hypermodel: cnn\noracle: {type: grid, max_trials: null}\n")
    assert spec.oracle.max_trials is None


def test_check_importable_accepts_a_user_module(tmp_path: Path) -> None:
    pkg = tmp_path / "ktc_user_pkg_search"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data.py").write_text("def load():\n    return None\nVALUE = 3\n")
    spec = parse_search("hypermodel: cnn\ndataset: ktc_user_pkg_search.data:load\n")
    check_importable(spec, [str(tmp_path)])
    assert spec.dataset is not None
    check_importable(spec.dataset, [str(tmp_path)])
    bad = parse_search("hypermodel: ktc_user_pkg_search.data:VALUE\n")
    with pytest.raises(
        ConfigError, match=r"'ktc_user_pkg_search\.data:VALUE' is a int, not callable"
    ):
        check_importable(bad, [str(tmp_path)])


def test_check_importable_accepts_a_hypermodel_instance(tmp_path: Path) -> None:
    """Keras Tuner takes a HyperModel instance, and so do the workers
    (resolve_hypermodel): the config check must not refuse it."""
    (tmp_path / "ktc_instance_mod.py").write_text(
        "import keras_tuner\n"
        "class Model(keras_tuner.HyperModel):\n"
        "    def build(self, hp):\n"
        "        return None\n"
        "model = Model()\n"
    )
    check_importable(parse_search("hypermodel: ktc_instance_mod:model\n"), [str(tmp_path)])


def test_check_importable_reports_the_module_error(tmp_path: Path) -> None:
    (tmp_path / "ktc_broken_mod.py").write_text("raise RuntimeError('boom at import')\n")
    spec = parse_search("hypermodel: ktc_broken_mod:build\n")
    with pytest.raises(
        ConfigError, match=r"cannot import module 'ktc_broken_mod'.*RuntimeError: boom"
    ):
        check_importable(spec, [str(tmp_path)], source="s.yaml")


def test_search_spec_requires_hypermodel() -> None:
    with pytest.raises(ConfigError, match=r"hypermodel: missing required key 'hypermodel'"):
        parse_search({"kind": "search"})
    assert isinstance(load_search(REPO / "configs" / "digits-cnn.yaml"), SearchSpec)


def test_grid_without_max_trials_runs_the_whole_grid() -> None:
    # Issue 14.8: no max_trials on a grid means every point (Keras Tuner's GridSearch).
    grid = parse_search("hypermodel: cnn\noracle: {type: grid}\n")
    assert grid.oracle.max_trials is None
    capped = parse_search("hypermodel: cnn\noracle: {type: grid, max_trials: 5}\n")
    assert capped.oracle.max_trials == 5
    assert parse_search("hypermodel: cnn\noracle: {type: random}\n").oracle.max_trials == 10
    # A stored grid spec reads back the same (spec_data keeps only what was given).
    from orchestrator.config import spec_data

    assert SearchSpec.model_validate(spec_data(grid)) == grid
    assert SearchSpec.model_validate(grid.model_dump(mode="json")) == grid


def test_dataset_labels_and_test_path() -> None:
    spec = parse_search("hypermodel: cnn\ndataset: {source: digits, labels: one_hot}\n")
    assert spec.dataset is not None and spec.dataset.labels == "one_hot"
    assert parse_search("hypermodel: cnn\ndataset: digits\n").dataset.labels is None  # type: ignore[union-attr]
    with pytest.raises(
        ConfigError,
        match=r":2: dataset\.labels: expected one of 'int' or 'one_hot', got 'onehot' \(str\)\. Use one",
    ):
        parse_search("hypermodel: cnn\ndataset: {source: digits, labels: onehot}\n")
    with pytest.raises(
        ConfigError, match=r"dataset\.test_path: test_path is only used by sources npz and image_"
    ):
        parse_search("hypermodel: cnn\ndataset: {source: mnist, test_path: /etc/passwd}\n")


@pytest.mark.parametrize(
    ("dataset", "definition", "present"),
    [
        ("digits", "digits:stratified-20%:seed=1797", True),
        ("mnist", "mnist:keras-test-set", True),
        ("{source: 'mod:load'}", "mod:load:third-split", None),
    ],
)
def test_dataset_test_split_definition(dataset: str, definition: str, present: bool | None) -> None:
    spec = parse_search(f"hypermodel: cnn\ndataset: {dataset}\n")
    assert spec.dataset is not None
    assert spec.dataset.test_split() == (definition, present)
