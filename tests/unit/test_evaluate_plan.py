"""``ktc evaluate``'s driver without Ray or TensorFlow training: what it refuses and
why, which trials and epochs it picks, what it stores, and how a worker's failure
reaches the user."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.config import parse_search
from orchestrator.errors import ConfigError, InputError, KtClusterError
from orchestrator.evaluation import plan_evaluation, record, retrained_model_path
from orchestrator.evaluation_results import (
    EvaluationFileError,
    load_results,
    summary_line,
)
from orchestrator.fleet.evaluator import worker_failure
from orchestrator.protocol.trials import AttemptStatus
from orchestrator.search_dir import ChiefInfo, write_chief_info
from orchestrator.search_meta import DatasetInfo
from tests.helpers import float_space
from workers.evaluate import (
    EvaluationOutcome,
    NoTestSplitError,
    RetrainOutcome,
    TestScores,
    WorkerEvaluationError,
)

# (score, best_step) per trial, in creation order: the best is the second.
TRIALS = [(0.90, 2), (0.97, 4), (0.93, 0)]


def _digits_search(hypermodel: str = "mlp") -> Any:
    return parse_search(
        {
            "name": "evaltest",
            "hypermodel": hypermodel,
            "dataset": {"source": "digits", "validation_split": 0.2, "seed": 0},
            "objective": {"name": "val_accuracy", "direction": "max"},
            "oracle": {"type": "random", "max_trials": 10, "seed": 1},
            "training": {"epochs": 6, "batch_size": 8},
        }
    )


@pytest.fixture
def finished(tmp_path: Path) -> Iterator[Path]:
    """A closed digits search with 3 completed trials (TRIALS) and fake artifacts."""
    directory = tmp_path / "search"
    chief = Chief.create(_digits_search(), directory, initial_space=float_space())
    try:
        broker = chief.broker
        for i, (score, best_step) in enumerate(TRIALS):
            assignment = broker.create_trial(f"w{i}", wait_s=0.0)
            assert assignment.trial_id is not None
            broker.end_trial(
                assignment.trial_id,
                assignment.token,
                status=AttemptStatus.COMPLETED,
                metrics={"val_accuracy": score},
                best_step=best_step,
            )
            trial_dir = directory / "trials" / assignment.trial_id
            trial_dir.mkdir(parents=True)
            (trial_dir / "checkpoint.weights.h5").write_bytes(f"weights-{i}".encode())
        chief.ledger.set_meta(DatasetInfo((64,), 10, "int", 1149, 288, 360).to_meta())
    finally:
        chief.close(grace_s=0.1)
    yield directory


def _trial_ids(directory: Path) -> list[str]:
    """Trial ids best first (by TRIALS' scores)."""
    from orchestrator.status import read_search

    ranked = sorted(read_search(directory).trials(), key=lambda t: -(t.score or 0))
    return [t.trial_id for t in ranked]


def _set_meta(directory: Path, key: str, value: Any) -> None:
    with sqlite3.connect(directory / "ledger.db") as conn:
        if value is None:
            conn.execute("DELETE FROM meta WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, json.dumps(value))
            )


def test_plan_takes_the_top_trials_best_first_with_their_bytes(finished: Path) -> None:
    plan = plan_evaluation(finished, top=2, retrain=True, seed=7)
    best, second, _ = _trial_ids(finished)
    assert [t.trial_id for t in plan.trials] == [best, second]
    assert [m.trial_id for m in plan.job.trials] == [best, second]
    assert plan.job.trials[0].checkpoint == b"weights-1"
    assert plan.job.trials[0].build_config is None
    assert plan.job.input_shape == (64,)
    assert plan.job.batch_size == 8
    # The best trial peaked at epoch index 4: retrain for 5 epochs, with the seed given.
    assert plan.retrain_epochs == 5
    assert plan.job.retrain is not None
    assert (plan.job.retrain.trial_id, plan.job.retrain.epochs, plan.job.retrain.seed) == (
        best,
        5,
        7,
    )
    assert plan.job.retrain.hp_config["values"] == plan.trials[0].values


def test_no_retrain_unless_asked(finished: Path) -> None:
    plan = plan_evaluation(finished)
    assert len(plan.trials) == 1 and plan.job.retrain is None and plan.retrain_epochs is None


def test_a_running_search_is_refused(finished: Path) -> None:
    info = ChiefInfo("127.0.0.1:1", "127.0.0.1:1", os.getpid(), "token", "id", 0.0)
    write_chief_info(finished, info)
    with pytest.raises(KtClusterError, match=r"the search is running \(chief pid") as caught:
        plan_evaluation(finished)
    assert not isinstance(caught.value, InputError)  # exit 1: wait, or cancel it


def test_a_search_from_before_test_splits_is_refused(finished: Path) -> None:
    _set_meta(finished, "test_split", None)
    with pytest.raises(InputError, match="may include today's test samples.*Run a new search"):
        plan_evaluation(finished)


def test_a_changed_test_split_definition_is_refused(finished: Path) -> None:
    _set_meta(finished, "test_split", {"definition": "digits:stratified-10%", "present": True})
    with pytest.raises(
        InputError, match=r"recorded the test split 'digits:stratified-10%'.*may include today's"
    ):
        plan_evaluation(finished)


def test_a_dataset_without_a_test_split_is_refused_with_the_fix(finished: Path) -> None:
    from orchestrator.search_meta import TestSplitInfo
    from orchestrator.status import read_search

    today = TestSplitInfo.of(read_search(finished).spec)
    _set_meta(finished, "test_split", {"definition": today.definition, "present": False})
    with pytest.raises(InputError, match="has no test split"):
        plan_evaluation(finished)


@pytest.mark.parametrize(
    ("source", "hint"),
    [
        ("npz", "x_test and y_test arrays"),
        ("image_directory", "dataset.test_path"),
        ("mymod:load", "third split"),
    ],
)
def test_no_test_split_on_the_worker_says_how_to_add_one(source: str, hint: str) -> None:
    from types import SimpleNamespace

    from workers.evaluate import EvaluationJob, _check_dataset

    job = EvaluationJob("{}", (4,), 2, "int", (), None, 8)
    search = SimpleNamespace(dataset=SimpleNamespace(source=source))
    dataset = SimpleNamespace(has_test=False)
    with pytest.raises(NoTestSplitError, match=f"has no test split.*{hint}"):
        _check_dataset(job, search, dataset)  # type: ignore[arg-type]


def test_top_beyond_the_completed_trials_is_bad_input(finished: Path) -> None:
    with pytest.raises(ConfigError, match=r"--top 5: the search has only 3 completed"):
        plan_evaluation(finished, top=5)
    with pytest.raises(ConfigError, match=r"--top: expected a number of trials >= 1, got 0"):
        plan_evaluation(finished, top=0)


def test_a_missing_checkpoint_names_the_trial(finished: Path) -> None:
    best = _trial_ids(finished)[0]
    (finished / "trials" / best / "checkpoint.weights.h5").unlink()
    with pytest.raises(InputError, match=f"trial {best} has no checkpoint.weights.h5"):
        plan_evaluation(finished)


def test_a_search_without_dataset_info_is_refused(finished: Path) -> None:
    _set_meta(finished, "dataset_info", None)
    with pytest.raises(InputError, match="no dataset_info"):
        plan_evaluation(finished)


def test_exit_codes(finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", str(finished), "--top", "9"]) == 2
    assert "only 3 completed trial(s)" in capsys.readouterr().err
    # export's --rank past the completed trials is bad input too, like evaluate's --top.
    out = str(finished.parent / "x.keras")
    assert main(["export", str(finished), "--out", out, "--rank", "9"]) == 2
    assert "--rank 9: the search has only 3 completed trial(s)" in capsys.readouterr().err
    assert main(["evaluate", str(finished.parent / "nowhere")]) == 2
    _set_meta(finished, "test_split", None)
    assert main(["evaluate", str(finished)]) == 2
    assert "today's test samples" in capsys.readouterr().err


def test_worker_failure_shows_the_real_exception() -> None:
    class FakeRayTaskError(Exception):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("\x1b[36mray::EvaluationProcess.run()\x1b[39m (pid=1) ...")
            self.cause = cause

    plain = worker_failure(FakeRayTaskError(ValueError("shapes \x1b[31m(3,)\x1b[0m differ")), "w0")
    assert str(plain).endswith("ValueError: shapes (3,) differ")
    assert "ray::" not in str(plain) and "\x1b" not in str(plain)
    ours = WorkerEvaluationError("trial 3: OSError: unable to open file", "tb")
    failure = worker_failure(FakeRayTaskError(ours), "w0")
    assert str(failure) == (
        "evaluation failed on the worker (shaped like w0): trial 3: OSError: unable to open file"
    )
    refusal = NoTestSplitError("dataset 'npz': it has no test split")
    assert worker_failure(FakeRayTaskError(refusal), "w0") is refusal  # exit 2, as raised
    # No cause: the first line, without colour codes.
    bare = worker_failure(RuntimeError("\x1b[31mboom\x1b[0m\nmore"), "w0")
    assert str(bare).endswith("RuntimeError: boom")


def test_failing_as_names_the_step_and_the_real_exception() -> None:
    from workers.evaluate import failing_as

    expected = pytest.raises(WorkerEvaluationError, match=r"^trial 7: KeyError: 'dense'$")
    with expected as caught, failing_as("trial 7"):
        raise KeyError("dense")
    assert "KeyError" in caught.value.traceback_tail
    with pytest.raises(NoTestSplitError, match="as is"), failing_as("trial 7"):
        raise NoTestSplitError("as is")


def test_worker_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(WorkerEvaluationError("ValueError: x", "tail")))
    assert str(error) == "ValueError: x" and error.traceback_tail == "tail"
    refusal = pickle.loads(pickle.dumps(NoTestSplitError("no test split")))
    assert isinstance(refusal, InputError)


def _outcome(plan: Any, *, retrain: bool) -> EvaluationOutcome:
    scores = tuple(
        TestScores(t.trial_id, {"loss": 0.1 * i, "accuracy": 0.9 - 0.01 * i}, 360)
        for i, t in enumerate(plan.trials)
    )
    retrained = None
    if retrain:
        retrained = RetrainOutcome(
            trial_id=plan.trials[0].trial_id,
            seed=plan.seed,
            epochs=plan.retrain_epochs,
            train_examples=1149,
            val_examples=288,
            test_examples=360,
            metrics={"loss": 0.05, "accuracy": 0.975},
            duration_s=1.5,
            model_bytes=b"keras-zip",
        )
    return EvaluationOutcome("host", 123, "", scores, retrained)


def test_record_writes_private_results_and_model(finished: Path) -> None:
    plan = plan_evaluation(finished, top=2, retrain=True, seed=3)
    results = record(plan, _outcome(plan, retrain=True), {"worker_slot": "local-w0"}, now=10.0)
    path = finished / "evaluation.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert [t["trial_id"] for t in data["trials"]] == [t.trial_id for t in plan.trials]
    assert data["trials"][0]["test_metrics"] == {"loss": 0.0, "accuracy": 0.9}
    assert data["trials"][0]["hyperparameters"] == plan.trials[0].values
    assert data["retrain"]["seed"] == 3 and data["retrain"]["epochs"] == 5
    assert data["worker"]["worker_slot"] == "local-w0" and data["worker"]["pid"] == 123
    model = retrained_model_path(finished)
    assert model.read_bytes() == b"keras-zip"
    assert stat.S_IMODE(model.stat().st_mode) == 0o600
    assert stat.S_IMODE(model.parent.stat().st_mode) == 0o700
    assert load_results(finished) == results
    assert results.test_metrics_by_trial()[plan.trials[0].trial_id] == {
        "loss": 0.0,
        "accuracy": 0.9,
    }
    line = summary_line(results)
    assert line.startswith("test accuracy: retrained 0.9750")
    assert f"trial {plan.trials[1].trial_id} 0.8900" in line


def test_a_run_without_retrain_keeps_the_earlier_retrain(finished: Path) -> None:
    plan = plan_evaluation(finished, top=1, retrain=True)
    first = record(plan, _outcome(plan, retrain=True), {}, now=10.0)
    plan = plan_evaluation(finished, top=3)
    second = record(plan, _outcome(plan, retrain=False), {}, now=20.0)
    assert len(second.trials) == 3 and second.retrain == first.retrain


def test_no_results_and_damaged_results(finished: Path) -> None:
    assert load_results(finished) is None
    with pytest.raises(InputError, match="no retrained model; run `ktc evaluate .* --retrain`"):
        retrained_model_path(finished)
    (finished / "evaluation.json").write_text('{"schema_version": 1}')
    with pytest.raises(EvaluationFileError, match="unreadable .*run `ktc evaluate`"):
        load_results(finished)


def test_the_report_shows_the_results(finished: Path) -> None:
    from types import SimpleNamespace

    from orchestrator.report.html import _evaluation

    page = SimpleNamespace(search_dir=finished)
    assert _evaluation(page) == ""  # type: ignore[arg-type]
    plan = plan_evaluation(finished, top=2, retrain=True)
    record(plan, _outcome(plan, retrain=True), {}, now=10.0)
    html = _evaluation(page)  # type: ignore[arg-type]
    assert "<h2>Test split</h2>" in html and "<th>test accuracy</th>" in html
    assert html.count("<tr>") == 1 + 2 + 1  # header, two trials, the retrain
    assert '<td class="num">0.975</td>' in html and "evaluation/retrained/model.keras" in html
    (finished / "evaluation.json").write_text("{")
    assert "not JSON" in _evaluation(page)  # type: ignore[arg-type]


def test_the_worker_refuses_a_loaded_dataset_without_test_split_or_of_another_shape() -> None:
    import numpy as np

    from workers.datasets import Dataset
    from workers.evaluate import EvaluationJob, evaluate

    search = _digits_search().model_dump_json()
    x, y = np.zeros((4, 8), np.float32), np.array([0, 1, 0, 1])
    no_test = Dataset(x, y, x, y, 2, (8,), "int")
    job = EvaluationJob(search, (8,), 2, "int", (), None, 8)
    with pytest.raises(NoTestSplitError, match="'digits': it has no test split"):
        evaluate(job, no_test)
    other = Dataset(x, y, x, y, 2, (8,), "int", x_test=x, y_test=y)
    job = EvaluationJob(search, (64,), 10, "int", (), None, 8)
    with pytest.raises(WorkerEvaluationError, match=r"built for \(\(64,\), 10, 'int'\); the data"):
        evaluate(job, other)


def test_the_export_hint_names_the_search_directory() -> None:
    from orchestrator.cli.evaluate import retrain_text
    from orchestrator.evaluation_results import EvaluationResults, RetrainEvaluation

    retrain = RetrainEvaluation(
        trial_id="2",
        hyperparameters={},
        seed=0,
        epochs=5,
        train_examples=1149,
        val_examples=288,
        test_examples=360,
        metrics={"accuracy": 0.98},
        duration_s=1.0,
        model_path="evaluation/retrained/model.keras",
        evaluated_at=1.0,
    )
    results = EvaluationResults(
        search_id="s",
        evaluated_at=1.0,
        objective="val_accuracy",
        test_split="digits",
        worker={},
        batch_size=32,
        trials=(),
        retrain=retrain,
    )
    text = retrain_text(results, Path("/tmp/evaldemo"))
    assert text.endswith("export it with `ktc export /tmp/evaldemo --retrained --out model.keras`")
