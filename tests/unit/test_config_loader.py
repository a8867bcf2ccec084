"""The loader: kinds, examples, line numbers, and messages for wrong kinds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator.config import (
    ClusterSpec,
    SearchSpec,
    load_cluster,
    load_config,
    load_search,
    parse_search,
)
from orchestrator.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXPECTED_KINDS = {
    "local.yaml": ClusterSpec,
    "gpu-cluster.yaml": ClusterSpec,
    "mixed.yaml": ClusterSpec,
    "digits-cnn.yaml": SearchSpec,
    "mnist-cnn.yaml": SearchSpec,
    "fashion-mnist-cnn.yaml": SearchSpec,
    "cifar10-cnn.yaml": SearchSpec,
    "mnist-mlp.yaml": SearchSpec,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_KINDS))
def test_examples_load_as_their_kind(name: str) -> None:
    assert isinstance(load_config(REPO / "configs" / name), EXPECTED_KINDS[name])


def test_every_example_is_listed() -> None:
    assert {p.name for p in (REPO / "configs").glob("*.yaml")} == set(EXPECTED_KINDS)


def test_mnist_mlp_is_hyperband_with_patience_5() -> None:
    spec = load_search(REPO / "configs" / "mnist-mlp.yaml")
    assert spec.hypermodel.name == "mlp"
    assert spec.hypermodel.overrides["units"] == {"min": 16, "max": 512, "step": 16}
    assert spec.oracle.type == "hyperband"
    assert spec.objective.name == "val_accuracy"
    assert spec.training.early_stopping is not None
    assert spec.training.early_stopping.monitor == "val_loss"
    assert spec.training.early_stopping.patience == 5


def test_local_example_matches_default_layout() -> None:
    spec = load_cluster(REPO / "configs" / "local.yaml")
    assert spec.is_local and len(spec.worker_slots()) == 2


def test_kind_by_keys_without_kind(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text("fleet: {cpus_per_worker: 1}\n")
    (tmp_path / "s.yaml").write_text("training: {epochs: 2}\nhypermodel: sleep\n")
    assert isinstance(load_config(tmp_path / "c.yaml"), ClusterSpec)
    assert isinstance(load_config(tmp_path / "s.yaml"), SearchSpec)


def test_wrong_kind_for_the_loader() -> None:
    with pytest.raises(
        ConfigError, match=r"digits-cnn\.yaml:\d+: kind: this is a search file, but a cluster"
    ):
        load_cluster(REPO / "configs" / "digits-cnn.yaml")
    with pytest.raises(
        ConfigError, match=r"local\.yaml:\d+: kind: this is a cluster file, but a search"
    ):
        load_search(REPO / "configs" / "local.yaml")


def test_line_numbers_point_at_the_key(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "# comment\nhypermodel: cnn\n\noracle:\n  type: random\n  max_trials: 5\n"
        "  hyperband_iterations: 2\n"
    )
    with pytest.raises(ConfigError, match=r"s\.yaml:7: oracle\.hyperband_iterations: "):
        load_search(path)


def test_mapping_input_has_no_line_numbers() -> None:
    with pytest.raises(ConfigError, match=r"^<string>: training\.epochs: expected an integer"):
        parse_search({"hypermodel": "cnn", "training": {"epochs": "ten"}})


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("hypermodel: cnn\ntraining:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"x\.yaml:4:1: YAML syntax error"):
        load_config(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"is a directory, not a file; expected a readable YAML file"
    ):
        load_config(tmp_path)


def test_reference_doc_examples_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (REPO / "docs" / "config-reference.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, flags=re.DOTALL)
    assert len(blocks) == 2
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("chief.pem", "chief-key.pem", "ca.pem"):
        (certs / name).write_text("x")
    monkeypatch.chdir(tmp_path)
    kinds = []
    for i, block in enumerate(blocks):
        path = tmp_path / f"doc{i}.yaml"
        path.write_text(block)
        kinds.append(load_config(path).kind)
    assert kinds == ["cluster", "search"]
