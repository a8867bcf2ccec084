"""``ktc results``: JSON shape and best-first ordering, for max and min objectives."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.protocol.trials import AttemptStatus
from tests.helpers import float_space, make_search

RESULT_KEYS = {
    "trial_id",
    "status",
    "score",
    "hyperparameters",
    "metrics",
    "attempts",
    "worker",
    "duration_s",
}


@pytest.fixture
def make_finished_search(tmp_path: Path) -> Iterator[Any]:
    """``make(direction, scores) -> (dir, {score: trial_id})``: a search whose trials
    completed with ``scores`` (None = the trial failed), driven through the broker."""
    chiefs: list[Chief] = []

    def make(direction: str, scores: list[float | None]) -> tuple[Path, dict[Any, str]]:
        directory = tmp_path / f"search-{direction}"
        search = make_search(
            {"type": "random", "max_trials": len(scores) + 1, "seed": 3},
            objective={"name": "loss" if direction == "min" else "score", "direction": direction},
            failure={"retries_per_trial": 0},
        )
        chief = Chief.create(search, directory, initial_space=float_space(), long_poll_s=0.0)
        chiefs.append(chief)
        broker = chief.broker
        ids: dict[Any, str] = {}
        for i, score in enumerate(scores):
            assignment = broker.create_trial(f"w{i % 2}", wait_s=0.0)
            assert assignment.trial_id is not None
            tid = assignment.trial_id
            if score is None:
                broker.end_trial(
                    tid,
                    assignment.token,
                    status=AttemptStatus.FAILED,
                    metrics={},
                    error_message="RuntimeError: out of memory",
                )
                ids[f"failed{i}"] = tid
            else:
                broker.end_trial(
                    tid,
                    assignment.token,
                    status=AttemptStatus.COMPLETED,
                    metrics={search.objective.name: score, "other": 1.0},
                )
                ids[score] = tid
        # One trial left running: not ranked, listed after the completed ones.
        running = broker.create_trial("w9", wait_s=0.0)
        ids["running"] = running.trial_id or ""
        return directory, ids

    yield make
    for chief in chiefs:
        chief.close(grace_s=0.1)


def _results_json(capsys: pytest.CaptureFixture[str], *args: str) -> list[dict[str, Any]]:
    assert main(["results", *args, "--json"]) == 0
    return list(json.loads(capsys.readouterr().out))


def test_results_json_max_objective(make_finished_search: Any, capsys: Any) -> None:
    directory, ids = make_finished_search("max", [0.5, 0.9, None, 0.7])
    rows = _results_json(capsys, str(directory))
    assert all(set(row) >= RESULT_KEYS for row in rows)
    assert [row["trial_id"] for row in rows[:3]] == [ids[0.9], ids[0.7], ids[0.5]]
    assert [row["score"] for row in rows[:3]] == [0.9, 0.7, 0.5]
    assert {row["status"] for row in rows[3:]} == {"FAILED", "RUNNING"}
    best = rows[0]
    assert best["status"] == "COMPLETED"
    assert best["metrics"] == {"score": 0.9, "other": 1.0}
    assert set(best["hyperparameters"]) == {"x"}
    assert best["attempts"] == 1
    assert best["worker"] in ("w0", "w1")
    assert best["duration_s"] is not None and best["duration_s"] >= 0
    failed = next(row for row in rows if row["status"] == "FAILED")
    assert failed["score"] is None and failed["trial_id"] == ids["failed2"]


def test_results_json_min_objective(make_finished_search: Any, capsys: Any) -> None:
    directory, ids = make_finished_search("min", [0.5, 0.9, 0.1])
    rows = _results_json(capsys, str(directory))
    assert [row["score"] for row in rows[:3]] == [0.1, 0.5, 0.9]
    assert rows[0]["trial_id"] == ids[0.1]
    assert rows[-1]["status"] == "RUNNING"


def test_results_top(make_finished_search: Any, capsys: Any) -> None:
    directory, ids = make_finished_search("max", [0.5, 0.9, None, 0.7])
    rows = _results_json(capsys, str(directory), "--top", "2")
    assert [row["trial_id"] for row in rows] == [ids[0.9], ids[0.7]]


def test_results_top_header_describes_the_whole_search(
    make_finished_search: Any, capsys: Any
) -> None:
    directory, _ = make_finished_search("max", [0.5, 0.9, None, 0.7])
    assert main(["results", str(directory), "--top", "2"]) == 0
    out = capsys.readouterr().out
    # 5 trials (one still running), 3 completed; the table shows the best 2.
    assert "test: 5 trial(s), 3 completed, score (max); the top 2" in out
    assert main(["results", str(directory)]) == 0
    assert "the top" not in capsys.readouterr().out


def test_hyperparameters_are_cut_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from orchestrator.cli.render import TERMINAL_HP_CHARS, format_hyperparameters

    values = {f"units_{i}": 128 for i in range(20)}
    full = " ".join(f"units_{i}=128" for i in range(20))
    assert len(full) > TERMINAL_HP_CHARS
    # A pipe or a log (and pytest's capture): every value, as written.
    assert format_hyperparameters(values) == full
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cut = format_hyperparameters(values)
    assert len(cut) == TERMINAL_HP_CHARS and cut.endswith("…")
    assert format_hyperparameters(values, max_chars=400) == full


def test_results_table(make_finished_search: Any, capsys: Any) -> None:
    directory, ids = make_finished_search("max", [0.5, 0.9])
    assert main(["results", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "0.9000" in out and ids[0.9] in out
    assert out.index("0.9000") < out.index("0.5000")


def test_results_bad_top(make_finished_search: Any, capsys: Any) -> None:
    directory, _ = make_finished_search("max", [0.5])
    assert main(["results", str(directory), "--top", "0"]) == 2
    assert "--top: expected a number of trials >= 1, got 0" in capsys.readouterr().err


def test_results_not_a_search_dir(tmp_path: Path, capsys: Any) -> None:
    assert main(["results", str(tmp_path)]) == 2  # a wrong path is bad input
    assert "not a search directory" in capsys.readouterr().err


def test_status_cli_json_and_table(make_finished_search: Any, capsys: Any) -> None:
    directory, ids = make_finished_search("max", [0.5, 0.9])
    assert main(["status", str(directory), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # No chief.json (the chief never served): the ledger says running -> interrupted.
    assert doc["state"] == "interrupted"
    assert doc["best"]["trial_id"] == ids[0.9]
    assert main(["status", str(directory)]) == 0
    out = capsys.readouterr().out
    # Its in-flight trial has no chief to run it: resume re-runs it (U4).
    assert "INTERRUPTED" in out and "0.9000" in out
    assert "1 interrupted (to re-run on resume)" in out and "1 running" not in out


def test_status_watch_stops_at_a_final_state(make_finished_search: Any, capsys: Any) -> None:
    directory, _ = make_finished_search("max", [0.5])
    # Interrupted is final: one render, no waiting.
    assert main(["status", str(directory), "--watch", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["state"] == "interrupted"
    assert main(["status", str(directory), "--watch"]) == 0
    assert "INTERRUPTED" in capsys.readouterr().out


def test_results_and_status_show_the_test_split_results(
    make_finished_search: Any, capsys: Any
) -> None:
    from orchestrator.evaluation_results import (
        EvaluationResults,
        TrialEvaluation,
        write_results,
    )

    directory, ids = make_finished_search("max", [0.9, 0.7])
    best = ids[0.9]
    write_results(
        directory,
        EvaluationResults(
            search_id="s",
            evaluated_at=1.0,
            objective="score",
            test_split="digits:stratified-20%:seed=1797",
            worker={},
            batch_size=32,
            trials=(
                TrialEvaluation(
                    rank=1,
                    trial_id=best,
                    score=0.9,
                    best_step=0,
                    hyperparameters={},
                    metrics={"loss": 0.2, "accuracy": 0.875},
                    test_examples=360,
                ),
            ),
            retrain=None,
        ),
    )
    assert main(["results", str(directory)]) == 0
    assert f"test loss: trial {best} 0.2000" in capsys.readouterr().out
    assert main(["status", str(directory)]) == 0
    assert f"test loss: trial {best} 0.2000" in capsys.readouterr().out
    rows = _results_json(capsys, str(directory))
    by_id = {row["trial_id"]: row for row in rows}
    assert by_id[best]["test_metrics"] == {"loss": 0.2, "accuracy": 0.875}
    assert "test_metrics" not in by_id[ids[0.7]]
    # A damaged file is a warning: the trials are still shown.
    (directory / "evaluation.json").write_text("{")
    assert main(["results", str(directory)]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and best in captured.out
