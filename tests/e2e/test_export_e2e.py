"""``ktc export`` after a real digits search through ``ktc submit``: the
written model loads with ``keras.models.load_model`` and scores, on the search's
validation split, what the search recorded (the best epoch's weights)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import DigitsRun, RunKtc, assert_ok, results_json

pytestmark = pytest.mark.slow

TOLERANCE = 1e-4


def _evaluate(model_path: Path, search_file: Path) -> float:
    """The exported model's accuracy on the search's validation split."""
    import keras
    import numpy as np

    from orchestrator.config import load_search
    from workers.datasets import load_dataset

    spec = load_search(search_file)
    assert spec.dataset is not None
    data = load_dataset(spec.dataset)
    model: Any = keras.models.load_model(model_path)
    probabilities = model.predict(data.x_val, verbose=0, batch_size=256)
    predicted = np.argmax(probabilities, axis=-1)
    labels = np.asarray(data.y_val)
    if labels.ndim > 1:
        labels = np.argmax(labels, axis=-1)
    return float(np.mean(predicted == labels.reshape(-1)))


@pytest.mark.parametrize("rank", [1, 2])
def test_export_matches_recorded_score(
    digits_run: DigitsRun, run_ktc: RunKtc, tmp_path: Path, rank: int
) -> None:
    assert_ok(digits_run.proc)
    rows = results_json(run_ktc, digits_run.search_dir)
    expected = rows[rank - 1]
    out = tmp_path / f"rank{rank}.keras"
    proc = run_ktc(
        "export", digits_run.search_dir, "--out", out, "--rank", str(rank), "--verify", timeout=180
    )
    assert_ok(proc)
    assert f"exported trial {expected['trial_id']} (rank {rank}" in proc.stdout
    assert out.is_file()

    accuracy = _evaluate(out, digits_run.search_file)
    assert accuracy == pytest.approx(expected["score"], abs=TOLERANCE), (
        f"exported rank {rank} ({expected['trial_id']}) evaluates to {accuracy}, "
        f"recorded {expected['score']}"
    )
