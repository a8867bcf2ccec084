"""The real cause reaches the user, end to end on real models (issue 14.6, 14.7, 14.11).

- A Keras-Tuner-style ``build_model`` compiled with categorical_crossentropy
  on digits' integer labels: both trials fail once each (no retries), and
  ``ktc submit`` exits 1 naming Keras's ValueError and the one-hot hint.
- The built-in ``transfer`` model without its ImageNet weights, and a
  ``build_model`` whose import fails inside it: the search stops at once
  with the real message, not after minutes of crash loops.

Each run also checks the terminal: no Ray header line, no ANSI codes, no
TensorFlow start-up noise on stderr, and one line per finished trial.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import RunKtc, WriteYaml, local_cluster

pytestmark = pytest.mark.slow

ONE_HOT_HINT = (
    "labels are integers; use sparse_categorical_crossentropy or set `dataset.labels: one_hot`"
)
KERAS_RANK_ERROR = (
    "ValueError: Arguments `target` and `output` must have the same rank (ndim). "
    "Received: target.shape=(None,), output.shape=(None, 10)"
)
NOISE = ("absl::InitializeLog", "oneDNN", "cuda drivers", "cuInit", "INFO worker.py")

SEED_MODEL = """\
import keras


def build_model(hp):
    model = keras.Sequential(
        [
            keras.layers.Flatten(),
            keras.layers.Dense(hp.Int("units", 16, 64, step=16), activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


_builds = [0]


def build_needing_a_package(hp):
    # Keras Tuner builds once when the tuner starts (to learn the space); the
    # import fails from the next build on, inside the first trial.
    _builds[0] += 1
    if _builds[0] > 1:
        import ktc_test_missing_package  # noqa: F401
    return build_model(hp)
"""


def _search(name: str, hypermodel: Any, max_trials: int) -> dict[str, Any]:
    return {
        "kind": "search",
        "name": name,
        "hypermodel": hypermodel,
        "dataset": {"source": "digits", "validation_split": 0.2, "seed": 0},
        "objective": "val_accuracy",
        "oracle": {"type": "random", "max_trials": max_trials, "seed": 1},
        "training": {"epochs": 1, "batch_size": 64},
        "failure": {"retries_per_trial": 2, "lease_timeout_s": 120},
    }


def _cluster(workers: int) -> dict[str, Any]:
    return local_cluster(
        f"local{workers}",
        [{"name": "local", "host": "127.0.0.1", "cpus": workers, "cpu_workers": workers}],
    )


def _submit(
    tmp_path: Path,
    run_ktc: RunKtc,
    write_yaml: WriteYaml,
    search: dict[str, Any],
    workers: int,
    env: dict[str, str] | None = None,
) -> tuple[Any, float, Path]:
    (tmp_path / "seed_model.py").write_text(SEED_MODEL)
    search_dir = tmp_path / "search"
    started = time.monotonic()
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", search),
        "--cluster",
        write_yaml("cluster.yaml", _cluster(workers)),
        "--dir",
        search_dir,
        timeout=240,
        # TensorFlow's most verbose level: ktc must quiet it itself (unless -v).
        env={"TF_CPP_MIN_LOG_LEVEL": "0", **(env or {})},
    )
    return proc, time.monotonic() - started, search_dir


def _check_terminal(proc: Any) -> None:
    output = proc.stdout + proc.stderr
    assert "ray::" not in output and "\x1b[" not in output, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    noisy = [word for word in NOISE if word in proc.stderr]
    assert noisy == [], proc.stderr[-4000:]


def test_integer_labels_fail_each_trial_once_and_the_search_exits_1(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    search = _search("ce-int", "seed_model:build_model", max_trials=2)
    proc, _, search_dir = _submit(tmp_path, run_ktc, write_yaml, search, workers=2)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    _check_terminal(proc)
    verdict = (
        f"search failed: 0 of 2 trials completed; the most common error (2 trials): "
        f"{KERAS_RANK_ERROR} — {ONE_HOT_HINT}"
    )
    assert verdict in proc.stdout, proc.stdout
    # --no-progress: one line per finished trial, as it ended, before the verdict.
    ended = [line for line in proc.stdout.splitlines() if line.startswith("trial ")]
    assert len(ended) == 2, proc.stdout
    assert all(f"FAILED  {KERAS_RANK_ERROR} — {ONE_HOT_HINT}" in line for line in ended), ended
    assert proc.stdout.index(ended[-1]) < proc.stdout.index("search failed")

    rows = json.loads(run_ktc("results", search_dir, "--json", timeout=120).stdout)
    assert [(r["status"], r["attempts"]) for r in rows] == [("FAILED", 1), ("FAILED", 1)]
    assert all(r["error"] == f"{KERAS_RANK_ERROR} — {ONE_HOT_HINT}" for r in rows), rows
    status = " ".join(run_ktc("status", search_dir, timeout=120).stdout.split())  # unwrapped
    assert "FAILED - 0 of 2 trials completed; the most common error (2 trials): " in status
    assert ONE_HOT_HINT in status, status
    assert f"last failure: trial {rows[-1]['trial_id']} {KERAS_RANK_ERROR}" in status or (
        f"last failure: trial {rows[0]['trial_id']} {KERAS_RANK_ERROR}" in status
    ), status

    # One log per worker in DIR/logs: its Python logging (with its id) and its stderr.
    logs = sorted(p.name for p in (search_dir / "logs").iterdir())
    assert logs == ["worker-local-w0.log", "worker-local-w1.log"]
    text = "".join(p.read_text() for p in (search_dir / "logs").iterdir())
    assert "failed (deterministic): ValueError" in text and "[local-w" in text


def test_missing_transfer_weights_stop_the_search_at_once(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    keras_home = tmp_path / "keras-home"  # no weights in this cache
    keras_home.mkdir()
    search = _search("ce-transfer", {"name": "transfer"}, max_trials=4)
    proc, elapsed_s, _ = _submit(
        tmp_path, run_ktc, write_yaml, search, workers=1, env={"KERAS_HOME": str(keras_home)}
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    _check_terminal(proc)
    assert elapsed_s < 60, elapsed_s
    verdict = next(line for line in proc.stdout.splitlines() if line.startswith("search failed"))
    assert verdict.startswith(
        "search failed: ConfigError: hypermodel 'transfer': weights: imagenet needs "
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_96_no_top.h5 in "
        f"{keras_home}/models"
    ), verdict
    assert "set hypermodel.options.weights: null" in verdict
    assert "crashed" not in proc.stdout + proc.stderr


def test_an_import_error_in_build_model_stops_the_search_at_once(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    search = _search("ce-import", "seed_model:build_needing_a_package", max_trials=5)
    proc, elapsed_s, search_dir = _submit(tmp_path, run_ktc, write_yaml, search, workers=1)
    assert proc.returncode == 1, proc.stdout + proc.stderr[-4000:]
    _check_terminal(proc)
    assert elapsed_s < 60, elapsed_s
    assert (
        "search failed: ModuleNotFoundError: No module named 'ktc_test_missing_package' "
        "(trial 0 on worker local-w0: this error does not depend on the hyperparameters"
    ) in proc.stdout, proc.stdout
    rows = json.loads(run_ktc("results", search_dir, "--json", timeout=120).stdout)
    failed = [r for r in rows if r["status"] == "FAILED"]
    assert [(r["trial_id"], r["attempts"]) for r in failed] == [("0", 1)], rows
    assert all(r["status"] != "COMPLETED" for r in rows)
