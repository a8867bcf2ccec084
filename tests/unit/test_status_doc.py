"""The status document: built from a real broker and ledger, live and offline."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import ChiefUnavailableError, KtClusterError
from orchestrator.fleet.session import live_document
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.status_document import (
    BestTrial,
    ChiefProcess,
    StatusDocument,
    TrialEntry,
    WorkerState,
    WorkerStatus,
    count_trials,
)
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView
from orchestrator.search_dir import ChiefInfo, read_chief_info, write_chief_info
from orchestrator.status import document_from_ledger, status_document
from tests.helpers import float_space, make_search

DOC_KEYS = {
    "state",
    "message",
    "search_dir",
    "objective",
    "direction",
    "max_trials",
    "counts",
    "trials",
    "workers",
    "best",
    "chief",
}


def _run_three_trials(client: TrialClient) -> dict[str, str]:
    """One COMPLETED (score 0.7), one FAILED, one left RUNNING at epoch 1."""
    ids: dict[str, str] = {}
    first = client.create_trial(wait_s=2.0).trial
    assert first is not None
    client.report(first, 0, {"score": 0.5})
    client.end_trial(first, "COMPLETED", metrics={"score": 0.7})
    ids["completed"] = first.trial_id
    second = client.create_trial(wait_s=2.0).trial
    assert second is not None
    client.end_trial(second, "FAILED", error_message="ValueError: boom")
    ids["failed"] = second.trial_id
    third = client.create_trial(wait_s=2.0).trial
    assert third is not None
    client.report(third, 1, {"score": 0.2})
    ids["running"] = third.trial_id
    return ids


@pytest.fixture
def live_search(
    start_chief: Any, search_dir: Path
) -> Iterator[tuple[Any, TrialClient, dict[str, str]]]:
    search = make_search({"type": "random", "max_trials": 5, "seed": 1})
    chief, endpoint = start_chief(search, initial_space=float_space(), long_poll_s=0.2)
    client = TrialClient(endpoint.address, endpoint.token, worker_id="w0", reconnect_timeout_s=2.0)
    ids = _run_three_trials(client)
    yield chief, client, ids
    client.close()


def test_live_document_has_the_schema(live_search: Any, search_dir: Path) -> None:
    chief, _, ids = live_search
    # The fleet publishes alive workers as idle with no trial; the leases decide.
    w0 = WorkerStatus(worker_id="w0", node="local", gpus=(0, 1), state=WorkerState.IDLE)
    stale = WorkerStatus(worker_id="w1", node="local", gpus=(), state=WorkerState.RUNNING)
    document = live_document(
        chief.broker,
        search_dir=search_dir,
        search_id=chief.search_id,
        workers=[w0, stale],
        chief=None,
    )
    doc = document.to_json()
    assert set(doc) >= DOC_KEYS
    json.dumps(doc)  # serialisable as is
    assert doc["state"] == "running"
    assert doc["objective"] == "score" and doc["direction"] == "max" and doc["max_trials"] == 5
    assert doc["counts"] == {"PENDING": 0, "RUNNING": 1, "COMPLETED": 1, "FAILED": 1}
    by_id = {t["trial_id"]: t for t in doc["trials"]}
    assert by_id[ids["completed"]]["status"] == "COMPLETED"
    assert by_id[ids["completed"]]["score"] == pytest.approx(0.7)
    assert by_id[ids["completed"]]["attempts"] == 1
    assert by_id[ids["completed"]]["worker"] == "w0"
    assert by_id[ids["failed"]]["status"] == "FAILED"
    assert by_id[ids["running"]]["epoch"] == 1
    assert doc["best"]["trial_id"] == ids["completed"]
    assert set(doc["best"]["hyperparameters"]) >= {"x"}
    assert doc["workers"] == [
        {
            "worker_id": "w0",
            "node": "local",
            "gpus": [0, 1],
            "state": "running",
            "trial_id": ids["running"],
            "epoch": 1,
            "pending_reason": None,
            "pid": None,
            "incarnation": 0,
            "trials_run": 0,
            "cuda_visible_devices": None,
            "ray_node_id": None,
            "spare": None,
        },
        {
            "worker_id": "w1",
            "node": "local",
            "gpus": [],
            "state": "idle",
            "trial_id": None,
            "epoch": None,
            "pending_reason": None,
            "pid": None,
            "incarnation": 0,
            "trials_run": 0,
            "cuda_visible_devices": None,
            "ray_node_id": None,
            "spare": None,
        },
    ]
    assert StatusDocument.from_json(json.loads(json.dumps(doc))) == document


def test_offline_document_while_chief_lives_says_running(
    live_search: Any, search_dir: Path
) -> None:
    _, _, ids = live_search
    doc = document_from_ledger(search_dir).to_json()
    assert doc["state"] == "running"
    assert doc["workers"] == []
    assert doc["chief"]["pid"] == read_chief_info(search_dir).pid
    assert doc["counts"]["RUNNING"] == 1
    assert doc["best"]["trial_id"] == ids["completed"]


def test_closed_chief_without_final_state_is_interrupted(
    live_search: Any, search_dir: Path
) -> None:
    chief, _, ids = live_search
    chief.close(grace_s=0.1)  # chief.json now says running=False; the ledger still says running
    doc = document_from_ledger(search_dir).to_json()
    assert doc["state"] == "interrupted"
    assert f"ktc resume {search_dir}" in doc["message"]
    assert doc["chief"] is None
    by_id = {t["trial_id"]: t for t in doc["trials"]}
    assert by_id[ids["running"]]["status"] == "RUNNING"  # in flight when the chief stopped
    assert doc["counts"] == {"PENDING": 0, "RUNNING": 1, "COMPLETED": 1, "FAILED": 1}


def test_chief_json_with_dead_pid_is_interrupted(live_search: Any, search_dir: Path) -> None:
    chief, _, _ = live_search
    info = read_chief_info(search_dir)
    chief.close(grace_s=0.1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    # A chief killed with SIGKILL leaves chief.json saying running, with its old pid.
    write_chief_info(search_dir, replace(info, pid=dead.pid, running=True))
    doc = status_document(search_dir)
    assert doc.state is SearchState.INTERRUPTED
    assert doc.workers == ()


def test_cancelled_search_reports_cancelled(live_search: Any, search_dir: Path) -> None:
    chief, _, _ = live_search
    chief.cancel(now=True)
    chief.close(grace_s=0.1)
    doc = document_from_ledger(search_dir)
    assert doc.state is SearchState.CANCELLED
    assert doc.counts[TrialStatus.RUNNING] == 0  # requeued by the cancel


class _FakeHandler:
    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def status_document(self) -> dict[str, Any]:
        return self.document

    def scale(self, request: Any) -> str:
        return "scaled"

    def cancel(self, now: bool) -> str:
        return "cancelled"


def test_status_document_asks_the_live_chief(live_search: Any, search_dir: Path) -> None:
    chief, _, _ = live_search
    live = live_document(
        chief.broker,
        search_dir=search_dir,
        search_id=chief.search_id,
        workers=[WorkerStatus("local-w0", "local", (), WorkerState.IDLE)],
        chief=ChiefProcess(chief.endpoint.address, 1),
    )
    chief.control.handler = _FakeHandler(live.to_json())
    doc = status_document(search_dir)
    assert doc == live  # typed, through the Control RPC's JSON and back
    assert doc.workers[0].state is WorkerState.IDLE


def test_status_document_of_a_non_search_dir(tmp_path: Path) -> None:
    with pytest.raises(ChiefUnavailableError, match="not a search directory"):
        status_document(tmp_path)


def test_worker_status_rejects_unknown_state() -> None:
    with pytest.raises(KtClusterError, match="worker w: state must be one of running, idle"):
        WorkerStatus.from_json({"worker_id": "w", "node": "n", "gpus": [], "state": "sleeping"})


def test_status_document_names_a_missing_key() -> None:
    with pytest.raises(KtClusterError, match="status document has no 'objective'"):
        StatusDocument.from_json({"state": "running", "search_dir": "d", "direction": "max"})


@pytest.mark.parametrize(
    ("state", "trial_id", "expected"),
    [
        (WorkerState.IDLE, "3", WorkerState.RUNNING),
        (WorkerState.RUNNING, None, WorkerState.IDLE),
        (WorkerState.IDLE, None, WorkerState.IDLE),
        (WorkerState.DRAINING, "3", WorkerState.DRAINING),
        (WorkerState.PENDING, None, WorkerState.PENDING),
        (WorkerState.DEAD, None, WorkerState.DEAD),
    ],
)
def test_worker_running_or_idle_is_decided_by_its_lease(
    state: WorkerState, trial_id: str | None, expected: WorkerState
) -> None:
    row = WorkerStatus("w", "n", (), state).holding(trial_id, 2 if trial_id else None)
    assert (row.state, row.trial_id) == (expected, trial_id)


def _view(
    tid: str, score: float | None, status: TrialStatus, epoch: int | None = None
) -> TrialView:
    return TrialView(tid, status, 1, score, {}, {"x": 1}, None, None, None, None, epoch, 0, {})


def test_best_trial_by_direction_and_entries() -> None:
    trials = [
        _view("a", 0.5, TrialStatus.COMPLETED),
        _view("b", 0.1, TrialStatus.COMPLETED),
        _view("c", None, TrialStatus.PENDING, epoch=3),
        _view("d", None, TrialStatus.RUNNING, epoch=2),
    ]
    best = BestTrial.among(trials, "min")
    assert best is not None and best.to_json() == {
        "trial_id": "b",
        "score": 0.1,
        "hyperparameters": {"x": 1},
    }
    assert BestTrial.among(trials, "max") == BestTrial("a", 0.5, {"x": 1})
    assert BestTrial.among(trials[2:], "max") is None
    assert count_trials(t.status for t in trials)[TrialStatus.COMPLETED] == 2
    # Only a running attempt shows its epoch.
    assert [TrialEntry.of(t).epoch for t in trials] == [None, None, None, 2]


def _sample_document() -> StatusDocument:
    return StatusDocument(
        state=SearchState.RUNNING,
        message="search started",
        search_dir=Path("/runs/s1"),
        search_id="s",
        objective="val_accuracy",
        direction="max",
        max_trials=8,
        counts=count_trials([TrialStatus.RUNNING, TrialStatus.COMPLETED]),
        trials=(
            TrialEntry("0", TrialStatus.COMPLETED, 1, 0.8, "gpu-a-w0", None, None),
            TrialEntry("3", TrialStatus.RUNNING, 2, None, "gpu-a-w0", 4, "lost its lease"),
        ),
        workers=(
            WorkerStatus(
                "gpu-a-w0",
                "gpu-a",
                (0, 1),
                WorkerState.RUNNING,
                trial_id="3",
                epoch=4,
                spare="warm",
            ),
            WorkerStatus(
                "gpu-b-w0",
                "gpu-b",
                (2,),
                WorkerState.PENDING,
                pending_reason="no node has 1 free GPU",
            ),
            WorkerStatus("local-w0", "local", (), WorkerState.DRAINING, trial_id="5", epoch=0),
        ),
        best=BestTrial("0", 0.8, {"lr": 0.01}),
        chief=ChiefProcess("127.0.0.1:5000", 1),
        workers_wanted=2,
    )


def test_status_document_json_round_trip() -> None:
    document = _sample_document()
    data = json.loads(json.dumps(document.to_json()))
    assert StatusDocument.from_json(data) == document
    # A newer chief may add keys: they are ignored.
    data["added_later"] = 1
    data["workers"][0]["added_later"] = 1
    assert StatusDocument.from_json(data) == document
    # A spare is null, "warming" or "warm"; anything else is named.
    data["workers"][0]["spare"] = "hot"
    with pytest.raises(KtClusterError, match="worker gpu-a-w0: spare: expected null"):
        StatusDocument.from_json(data)


def test_chief_info_shape_unchanged() -> None:
    # status.live_chief relies on these fields of chief.json.
    fields = set(ChiefInfo.__dataclass_fields__)
    assert {"address", "pid", "running"} <= fields


def test_render_status_shows_workers_and_best() -> None:
    from rich.console import Console

    from orchestrator.cli.render import render_status

    document = replace(_sample_document(), best=None)
    console = Console(record=True, width=160)
    console.print(render_status(document))
    text = console.export_text()
    assert "RUNNING - search started" in text
    assert "1 completed" in text and "max_trials 8" in text
    for needle in ("gpu-a-w0", "0,1", "pending", "no node has 1 free GPU", "draining", "cpu"):
        assert needle in text
    assert "no completed trial yet" in text
    assert "spare" in text and "warm" in text
    # No slot has a spare: no spare column.
    workers = tuple(replace(w, spare=None) for w in document.workers)
    console = Console(record=True, width=160)
    console.print(render_status(replace(document, workers=workers)))
    assert "spare" not in console.export_text()


def test_status_says_a_fleet_scaled_to_zero_makes_no_progress() -> None:
    from rich.console import Console

    from orchestrator.cli.render import render_status

    def shown(document: StatusDocument) -> str:
        console = Console(record=True, width=160)
        console.print(render_status(document))
        return console.export_text()

    # `ktc scale DIR --workers 0`: a worker still drains, none is wanted.
    paused = replace(_sample_document(), workers_wanted=0)
    assert "0 workers wanted: no progress until `ktc scale /runs/s1 --workers N`" in shown(paused)
    assert StatusDocument.from_json(paused.to_json()).workers_wanted == 0
    drained = replace(paused, workers=())
    assert "0 workers wanted: no progress until" in shown(drained)
    for document in (_sample_document(), replace(paused, state=SearchState.COMPLETED)):
        assert "0 workers wanted" not in shown(document)


def test_the_progress_displays_document_agrees_with_the_full_one(make_broker: Any) -> None:
    """The live display builds its document from the broker's summary (no trial
    list); everything it shows must equal the full document's."""
    from orchestrator.protocol.trials import AttemptStatus

    search = make_search({"type": "random", "max_trials": 8, "seed": 2})
    broker = make_broker(search, initial_space=float_space())
    for i, score in enumerate([0.3, 0.8, 0.5]):
        a = broker.create_trial(f"w{i}", wait_s=0)
        broker.end_trial(
            a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": score}
        )
    running = broker.create_trial("w9", wait_s=0)
    broker.report(running.trial_id, running.token, epoch=3, metrics={"score": 0.1})
    assert broker.current_epochs([running.trial_id, "no-such-trial"]) == {running.trial_id: 3}

    workers = [WorkerStatus("w9", "local", (), WorkerState.IDLE)]
    common: dict[str, Any] = {
        "search_dir": Path("d"),
        "search_id": "s",
        "workers": workers,
        "chief": None,
    }
    full = live_document(broker, with_trials=True, **common).to_json()
    light = live_document(broker, with_trials=False, **common).to_json()
    assert light["trials"] == []
    assert {k: v for k, v in light.items() if k != "trials"} == {
        k: v for k, v in full.items() if k != "trials"
    }
    assert light["best"]["score"] == 0.8 and light["counts"]["RUNNING"] == 1
    assert light["workers"][0]["state"] == "running" and light["workers"][0]["epoch"] == 3


def test_status_document_names_a_malformed_value() -> None:
    data = _sample_document().to_json()
    data["workers"][0]["gpus"] = ["zero"]
    with pytest.raises(KtClusterError, match="status document: malformed .ValueError"):
        StatusDocument.from_json(data)


def test_the_workers_table_counts_epochs_from_one_as_keras_prints_them() -> None:
    from rich.console import Console

    from orchestrator.cli.render import workers_table
    from orchestrator.protocol.status_document import WorkerState, WorkerStatus

    # After its first epoch a trial's epoch index is 0; Keras printed "Epoch 1/N".
    rows = [
        WorkerStatus("w0", "local", (), WorkerState.RUNNING, trial_id="07", epoch=0),
        WorkerStatus("w1", "local", (), WorkerState.RUNNING, trial_id="08", epoch=5),
        WorkerStatus("w2", "local", (), WorkerState.IDLE),
    ]
    console = Console(width=120, record=True)
    console.print(workers_table(rows))
    cells = {
        line.split("│")[1].strip(): line.split("│")[6].strip()
        for line in console.export_text().splitlines()
        if line.startswith("│")
    }
    assert cells == {"w0": "1", "w1": "6", "w2": "-"}


def test_the_final_table_is_skipped_when_no_trial_completed() -> None:
    from rich.console import Console

    from orchestrator.cli.render import top_trials_table

    def shown(trials: list[TrialView]) -> str:
        console = Console(record=True, width=160)
        console.print(top_trials_table(trials, objective="score", direction="max"))
        return console.export_text()

    failed = [_view("0", None, TrialStatus.FAILED), _view("1", None, TrialStatus.PENDING)]
    text = shown(failed)
    assert "no trial completed (1 failed): there is no best trial to show" in text
    assert "top 0 trials" not in text and "┏" not in text
    assert "top 1 trials" in shown([*failed, _view("2", 0.5, TrialStatus.COMPLETED)])
