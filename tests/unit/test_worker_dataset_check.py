"""A worker checks the search's dataset paths on its own machine before its
first trial (issue 12.7): the config's own path checks, a typed error, and a
FATAL run summary that the fleet turns into a failed search."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import parse_search, spec_json
from orchestrator.errors import DatasetUnavailableError
from orchestrator.protocol.error_codes import ERROR_CODES
from workers.runner import ExitReason, TrialRunner, WorkerConfig, check_dataset_paths


def _config(dataset: dict[str, Any] | None, *, reconnect_timeout_s: float = 60.0) -> WorkerConfig:
    data: dict[str, Any] = {
        "name": "remote",
        "hypermodel": {"name": "sleep", "options": {"epoch_s": 0.01}},
        "objective": "val_accuracy",
        "oracle": {"type": "random", "max_trials": 2},
    }
    if dataset is not None:
        data["dataset"] = dataset
    # As `ktc submit` parses it for a remote cluster: the paths are the workers'.
    spec = parse_search(data, check_paths=False)
    # Port 9 (discard): nothing answers; the check must fail before any RPC.
    return WorkerConfig(
        worker_id="node-w0",
        chief_address="127.0.0.1:9",
        token="t",
        search_json=spec_json(spec),
        reconnect_timeout_s=reconnect_timeout_s,
    )


def test_missing_npz_names_the_worker_the_key_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone.npz"
    config = _config({"source": "npz", "path": str(missing)})
    assert config.search.dataset is not None  # parsing the spec does not check paths
    with pytest.raises(
        DatasetUnavailableError,
        match=rf"^worker node-w0 on \S+: dataset\.path: path '{missing}' does not exist; "
        r"expected an existing, readable file\. On a Ray cluster the dataset is read on each "
        r"worker's machine",
    ):
        check_dataset_paths(config)


def test_a_folder_given_as_npz_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailableError, match="is a directory, not a file"):
        check_dataset_paths(_config({"source": "npz", "path": str(tmp_path)}))


def test_a_file_given_as_image_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "images"
    path.write_text("not a folder")
    config = _config({"source": "image_directory", "path": str(path), "image_size": [8, 8]})
    with pytest.raises(DatasetUnavailableError, match="is a file, not a directory"):
        check_dataset_paths(config)


def test_readable_paths_and_no_dataset_pass(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"")
    check_dataset_paths(_config({"source": "npz", "path": str(data)}))
    check_dataset_paths(_config({"source": "digits"}))
    check_dataset_paths(_config(None))


def test_the_runner_returns_fatal_before_its_first_trial(tmp_path: Path) -> None:
    runner = TrialRunner(_config({"source": "npz", "path": str(tmp_path / "gone.npz")}))
    summary = runner.run()
    assert summary.reason is ExitReason.FATAL
    assert summary.trials_run == 0
    assert "dataset.path: path" in summary.detail and "does not exist" in summary.detail


def test_a_dataset_shipped_by_the_session_needs_no_path(tmp_path: Path) -> None:
    config = _config({"source": "npz", "path": str(tmp_path / "gone.npz")}, reconnect_timeout_s=0.2)
    # The data came through Ray's object store: the runner goes on to ask for a
    # trial (no chief answers here), instead of failing the search.
    summary = TrialRunner(config, dataset=object()).run()
    assert summary.reason is ExitReason.CHIEF_GONE


def test_the_error_has_a_status_code() -> None:
    assert any(row.error is DatasetUnavailableError for row in ERROR_CODES)
