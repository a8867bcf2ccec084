"""Validate first, commit second: a request that fails any check gets
INVALID_ARGUMENT and changes nothing, in memory or in the ledger.

Issue 11, symptom 2: an EndTrial whose trial state had ``"hyperparameters":
"x"`` committed its COMPLETED event, then failed with INTERNAL; from then on
status, results and resume crashed in replay. Each request here goes over
real gRPC to a real chief.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import TrialStatus
from tests.helpers import float_space, ledger_rows, make_search

StartChief = Callable[..., tuple[Chief, Any]]

BAD_STATES = {
    "hyperparameters is a string": '{"hyperparameters": "x"}',
    "unknown hyperparameter class": json.dumps(
        {"hyperparameters": {"space": [{"class_name": "Nope", "config": {}}], "values": {}}}
    ),
    "hyperparameter without its fields": json.dumps(
        {
            "hyperparameters": {
                "space": [{"class_name": "Int", "config": {"name": "a"}}],
                "values": {},
            }
        }
    ),
    "values is a list": '{"hyperparameters": {"space": [], "values": [1]}}',
    "not an object": "[1, 2]",
    "not JSON": "{hyperparameters",
    "5000 levels deep": '{"hyperparameters": ' + "[" * 5000 + "]" * 5000 + "}",
}


@pytest.fixture
def chief_and_stub(start_chief: StartChief) -> Any:
    search = make_search({"type": "random", "max_trials": 4, "seed": 1})
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=0)
    channel = grpc.insecure_channel(ep.address)
    yield chief, ep, pb_grpc.TrialServiceStub(channel), bearer(ep.token)
    channel.close()


def _state(chief: Chief) -> tuple[Any, ...]:
    book = chief.broker.book
    records = {
        tid: (r.status, r.attempt, r.score, dict(r.values)) for tid, r in book.records.items()
    }
    return records, list(book.queue), [lease.token for lease in chief.broker.leases.all()]


@pytest.mark.parametrize("case", BAD_STATES)
def test_a_bad_trial_state_is_refused_and_changes_nothing(
    chief_and_stub: Any, search_dir: Path, case: str
) -> None:
    chief, ep, stub, metadata = chief_and_stub
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        assignment = client.create_trial(wait_s=0)
    assert assignment.kind is AssignmentKind.TRIAL and assignment.trial is not None
    trial = assignment.trial
    before_rows, before = ledger_rows(search_dir / "ledger.db"), _state(chief)
    request = pb.EndTrialRequest(
        trial_id=trial.trial_id,
        lease_token=trial.token,
        status=pb.COMPLETED,
        metrics={"score": 0.5},
        trial_state_json=BAD_STATES[case],
    )
    with pytest.raises(grpc.RpcError) as info:
        stub.EndTrial(request, metadata=metadata)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "trial_state_json" in (info.value.details() or "")
    assert (ledger_rows(search_dir / "ledger.db"), _state(chief)) == (before_rows, before)
    # The same attempt can still end properly.
    good = json.dumps({"hyperparameters": trial.trial_state["hyperparameters"]})
    answer = stub.EndTrial(
        request.__class__(**{**_fields(request), "trial_state_json": good}), metadata=metadata
    )
    assert answer.recorded and answer.final_status == pb.COMPLETED
    assert chief.broker.get_trial(trial.trial_id).status is TrialStatus.COMPLETED


def _fields(request: Any) -> dict[str, Any]:
    return {field.name: value for field, value in request.ListFields()}


@pytest.mark.parametrize(
    "text",
    [
        '{"space": "x"}',
        "[" * 5000 + "]" * 5000,
        "null",
        '{"space": [{"class_name": "Nope"}], "values": {}}',
    ],
)
def test_a_bad_space_update_is_refused_and_changes_nothing(
    chief_and_stub: Any, search_dir: Path, text: str
) -> None:
    chief, _, stub, metadata = chief_and_stub
    before_rows = ledger_rows(search_dir / "ledger.db")
    before_space = chief.broker.space_config()
    with pytest.raises(grpc.RpcError) as info:
        stub.UpdateSpace(pb.SpaceMessage(hyperparameters_json=text), metadata=metadata)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "hyperparameters_json" in (info.value.details() or "")
    assert ledger_rows(search_dir / "ledger.db") == before_rows
    assert chief.broker.space_config() == before_space


@pytest.mark.parametrize("epoch", [-5, -2, 1_000_001, 2_147_483_647])
def test_a_report_with_an_impossible_epoch_is_refused(
    chief_and_stub: Any, search_dir: Path, epoch: int
) -> None:
    chief, ep, stub, metadata = chief_and_stub
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = client.create_trial(wait_s=0).trial
    assert trial is not None
    before_rows, before = ledger_rows(search_dir / "ledger.db"), _state(chief)
    with pytest.raises(grpc.RpcError) as info:
        stub.Report(
            pb.ReportRequest(trial_id=trial.trial_id, lease_token=trial.token, epoch=epoch),
            metadata=metadata,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "epoch" in (info.value.details() or "")
    assert (ledger_rows(search_dir / "ledger.db"), _state(chief)) == (before_rows, before)


def test_after_a_refused_end_every_verb_still_reads_the_search(
    chief_and_stub: Any, search_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chief, ep, stub, metadata = chief_and_stub
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = client.create_trial(wait_s=0).trial
    assert trial is not None
    with pytest.raises(grpc.RpcError):
        stub.EndTrial(
            pb.EndTrialRequest(
                trial_id=trial.trial_id,
                lease_token=trial.token,
                status=pb.COMPLETED,
                metrics={"score": 0.5},
                trial_state_json='{"hyperparameters": "x"}',
            ),
            metadata=metadata,
        )
    chief.cancel(now=True)
    chief.close(grace_s=0)
    assert main(["results", str(search_dir)]) == 0
    assert main(["status", str(search_dir)]) == 0
    resumed = Chief.resume(search_dir, long_poll_s=0)
    try:
        assert resumed.broker.get_trial(trial.trial_id).status is TrialStatus.PENDING
    finally:
        resumed.close(grace_s=0)
    assert "error" not in capsys.readouterr().err


def test_a_worker_whose_result_is_refused_ends_the_attempt_with_the_chiefs_reason(
    chief_and_stub: Any,
) -> None:
    """The worker does not crash on INVALID_ARGUMENT: the attempt ends INVALID
    with the chief's own message, so the trial shows the real cause and retries."""
    chief, ep, _, _ = chief_and_stub
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = client.create_trial(wait_s=0).trial
        assert trial is not None
        recorded = client.end_attempt(
            trial, "COMPLETED", metrics={"score": 0.5}, trial_state={"hyperparameters": "x"}
        )
    assert recorded is False
    view = chief.broker.get_trial(trial.trial_id)
    assert view.status is TrialStatus.PENDING
    assert view.error_message is not None
    assert view.error_message.startswith("the chief refused this attempt's result: ")
    assert "trial_state_json.hyperparameters" in view.error_message


def test_a_coloured_traceback_reaches_the_chief_as_plain_text(chief_and_stub: Any) -> None:
    """Ray colours its task errors; the chief refuses control characters in free
    text, so the client strips them and the user reads the message."""
    chief, ep, _, _ = chief_and_stub
    coloured = "\x1b[36mray::WorkerProcess.run()\x1b[39m ValueError: boom\x07"
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = client.create_trial(wait_s=0).trial
        assert trial is not None
        assert client.end_attempt(
            trial, "INVALID", error_message=coloured, traceback_tail="Traceback\n" + coloured
        )
    view = chief.broker.get_trial(trial.trial_id)
    assert view.error_message == "ray::WorkerProcess.run() ValueError: boom?"
    assert view.traceback_tail == "Traceback\nray::WorkerProcess.run() ValueError: boom?"


def test_a_lease_keeper_stops_quietly_when_its_client_is_closed(
    chief_and_stub: Any, recwarn: pytest.WarningsRecorder
) -> None:
    """A worker shutting down closes its channel while a heartbeat thread runs;
    the thread ends without an unhandled exception."""
    import threading

    from orchestrator.protocol.lease_keeper import LeaseKeeper

    _, ep, _, _ = chief_and_stub
    client = TrialClient(ep.address, ep.token, worker_id="w0")
    trial = client.create_trial(wait_s=0).trial
    assert trial is not None
    errors: list[BaseException] = []
    previous = threading.excepthook
    threading.excepthook = lambda args: errors.append(args.exc_value)  # type: ignore[assignment]
    try:
        keeper = LeaseKeeper(client, trial, 0.05).__enter__()
        client.close()
        keeper._thread.join(5)
    finally:
        threading.excepthook = previous
    assert not keeper._thread.is_alive()
    assert errors == []
