"""What ``ktc resume`` says: a search whose chief died while running resumes
"after interrupted", as ``ktc status`` calls it; a completed search is refused
with the error alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.protocol.trials import AttemptStatus, SearchState
from tests.helpers import float_space, make_search


@pytest.fixture(autouse=True)
def _restore_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # resume hides the GPUs from this process; undo it after each test.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")


def test_a_chief_that_died_running_resumes_after_interrupted(tmp_path: Path) -> None:
    directory = tmp_path / "killed"
    chief = Chief.create(make_search(), directory, initial_space=float_space())
    chief.close(grace_s=0.1)  # no final state in the ledger: as after kill -9
    again = Chief.resume(directory)
    try:
        again.start()
        assert again.broker.message.startswith("resumed after interrupted with 0 finished")
    finally:
        again.interrupt(requeue_running=True)
        again.close()


def test_resuming_a_completed_search_prints_only_the_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "done"
    search = make_search({"type": "random", "max_trials": 1, "seed": 1})
    chief = Chief.create(search, directory, initial_space=float_space(), long_poll_s=0.0)
    try:
        assignment = chief.broker.create_trial("w0", wait_s=0.0)
        assert assignment.trial_id is not None
        chief.broker.end_trial(
            assignment.trial_id,
            assignment.token,
            status=AttemptStatus.COMPLETED,
            metrics={"score": 0.5},
        )
        chief.broker.create_trial("w0", wait_s=0.0)  # the oracle has no more: completed
        assert chief.broker.state is SearchState.COMPLETED
    finally:
        chief.close(grace_s=0.1)
    assert main(["resume", str(directory), "--no-progress"]) == 2  # bad input: NothingToResumeError
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"error: {directory}: the search already completed; nothing to resume. "
        f"See the results with `ktc results {directory}`.\n"
    )
