"""``ktc evaluate`` after a real digits search through ``ktc submit``: the top two
trials and a retrain of the best are scored on the test split by a Ray actor (not
the CLI process), the results land in ``evaluation.json``, and ``ktc export
--retrained`` writes a model that scores the same on the test split. A failure
on the worker reaches the user as its own exception, exit 1."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.e2e.conftest import DigitsRun, RunKtc, assert_ok, results_json

pytestmark = pytest.mark.slow


def test_evaluate_top_two_and_retrain_then_export(
    digits_run: DigitsRun, run_ktc: RunKtc, tmp_path: Path
) -> None:
    assert_ok(digits_run.proc)
    search_dir = digits_run.search_dir
    ranked = results_json(run_ktc, search_dir)
    proc = run_ktc("evaluate", search_dir, "--top", "2", "--retrain", "--seed", "5", timeout=240)
    assert_ok(proc)
    assert "test accuracy" in proc.stdout and "retrained" in proc.stdout

    data = json.loads((search_dir / "evaluation.json").read_text())
    assert [t["trial_id"] for t in data["trials"]] == [r["trial_id"] for r in ranked[:2]]
    for trial in data["trials"]:
        assert 0.0 <= trial["test_metrics"]["accuracy"] <= 1.0
        assert trial["test_metrics"]["loss"] >= 0.0
        assert trial["test_examples"] == 360  # digits' fixed 20% hold-out
    retrain = data["retrain"]
    assert retrain["trial_id"] == ranked[0]["trial_id"]
    assert retrain["epochs"] == ranked[0]["best_step"] + 1
    assert retrain["seed"] == 5
    assert retrain["train_examples"] + retrain["val_examples"] + 360 == 1797
    assert 0.0 <= retrain["test_metrics"]["accuracy"] <= 1.0
    # It ran in a worker process of the embedded Ray, not in `ktc` itself.
    assert data["worker"]["worker_slot"] == "local-w0"
    assert isinstance(data["worker"]["pid"], int) and data["worker"]["hostname"]
    assert (search_dir / retrain["model_path"]).is_file()

    out = tmp_path / "retrained.keras"
    exported = run_ktc("export", search_dir, "--retrained", "--out", out, "--verify", timeout=180)
    assert_ok(exported)
    assert out.is_file()
    assert "verify: accuracy on the test split" in exported.stdout


def test_a_worker_failure_shows_the_real_exception(
    digits_run: DigitsRun, run_ktc: RunKtc, tmp_path: Path
) -> None:
    assert_ok(digits_run.proc)
    copy = tmp_path / "search"
    shutil.copytree(digits_run.search_dir, copy)
    best = results_json(run_ktc, copy)[0]["trial_id"]
    checkpoint = copy / "trials" / best / "checkpoint.weights.h5"
    checkpoint.write_bytes(b"not an HDF5 file")
    os.chmod(checkpoint, 0o600)
    proc = run_ktc("evaluate", copy, timeout=240)
    assert proc.returncode == 1, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert error, proc.stderr[-3000:]
    assert "Error: " in error[-1]  # the worker's own exception type, e.g. OSError: ...
    assert "ray::" not in proc.stderr and "\x1b[" not in error[-1]
    assert "RayTaskError" not in error[-1]
    # The worker's traceback (and TensorFlow's lines) went to DIR/logs, not the terminal.
    log = (copy / "logs" / "evaluate.log").read_text()
    assert "Traceback" in log and f"trial {best} failed" in log
