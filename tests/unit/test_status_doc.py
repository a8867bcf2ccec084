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
from orchestrator.protocol.client import TrialClient
from orchestrator.search_dir import ChiefInfo, read_chief_info, write_chief_info
from orchestrator.status import (
    WorkerState,
    WorkerStatus,
    build_status_document,
    document_from_broker,
    document_from_ledger,
    status_document,
)
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


def test_document_from_broker_has_the_schema(live_search: Any, search_dir: Path) -> None:
    chief, _, ids = live_search
    worker = WorkerStatus(
        worker_id="local-w0",
        node="local",
        gpus=[0, 1],
        state="running",
        trial_id=ids["running"],
        epoch=1,
    )
    doc = document_from_broker(
        chief.broker, search_dir=search_dir, search_id=chief.search_id, workers=[worker], chief=None
    )
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
            "worker_id": "local-w0",
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
        }
    ]


def test_offline_document_while_chief_lives_says_running(
    live_search: Any, search_dir: Path
) -> None:
    _, _, ids = live_search
    doc = document_from_ledger(search_dir)
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
    doc = document_from_ledger(search_dir)
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
    assert doc["state"] == "interrupted"
    assert doc["workers"] == []


def test_cancelled_search_reports_cancelled(live_search: Any, search_dir: Path) -> None:
    chief, _, _ = live_search
    chief.cancel(now=True)
    chief.close(grace_s=0.1)
    doc = document_from_ledger(search_dir)
    assert doc["state"] == "cancelled"
    assert doc["counts"]["RUNNING"] == 0  # requeued by the cancel


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
    live = document_from_broker(
        chief.broker,
        search_dir=search_dir,
        search_id=chief.search_id,
        workers=[WorkerStatus("local-w0", "local", [], WorkerState.IDLE)],
        chief={"address": chief.endpoint.address, "pid": 1},
    )
    chief.control.handler = _FakeHandler(live)
    doc = status_document(search_dir)
    assert doc == json.loads(json.dumps(live))
    assert doc["workers"][0]["state"] == "idle"


def test_status_document_of_a_non_search_dir(tmp_path: Path) -> None:
    with pytest.raises(ChiefUnavailableError, match="not a search directory"):
        status_document(tmp_path)


def test_worker_status_rejects_unknown_state() -> None:
    with pytest.raises(KtClusterError, match="state must be one of running, idle"):
        WorkerStatus("w", "n", [], "sleeping")


def test_build_status_document_min_direction_best() -> None:
    from orchestrator.protocol.trials import TrialStatus, TrialView

    def view(tid: str, score: float | None, status: TrialStatus) -> TrialView:
        return TrialView(tid, status, 1, score, {}, {"x": 1}, None, None, None, None, None, 0, {})

    trials = [
        view("a", 0.5, TrialStatus.COMPLETED),
        view("b", 0.1, TrialStatus.COMPLETED),
        view("c", None, TrialStatus.PENDING),
    ]
    doc = build_status_document(
        search_dir="d",
        search_id="s",
        state="completed",
        message="",
        trials=trials,
        objective="val_loss",
        direction="min",
        max_trials=3,
        workers=[],
        chief=None,
    )
    assert doc["best"] == {"trial_id": "b", "score": 0.1, "hyperparameters": {"x": 1}}
    assert doc["counts"]["PENDING"] == 1
    assert [t["epoch"] for t in doc["trials"]] == [None, None, None]


def test_chief_info_shape_unchanged() -> None:
    # status.live_chief relies on these fields of chief.json.
    fields = set(ChiefInfo.__dataclass_fields__)
    assert {"address", "pid", "running"} <= fields


@pytest.mark.parametrize(
    "oracle",
    [
        {"type": "random", "max_trials": 4, "seed": 1},
        {"type": "hyperband", "max_epochs": 9, "factor": 3},
        {"type": "bayesian", "max_trials": 4, "alpha": 0.01},
    ],
)
def test_stored_search_spec_reads_a_full_dump(oracle: dict[str, Any]) -> None:
    from orchestrator.status import stored_search_spec

    spec = make_search(oracle)
    # Chief.create stores model_dump(mode="json"): every default included.
    assert stored_search_spec({"search_spec": spec.model_dump(mode="json")}) == spec


def test_stored_search_spec_missing() -> None:
    from orchestrator.errors import LedgerError
    from orchestrator.status import stored_search_spec

    with pytest.raises(LedgerError, match="no search spec in the ledger meta"):
        stored_search_spec({})


def test_render_status_shows_workers_and_best() -> None:
    from rich.console import Console

    from orchestrator.cli.render import render_status

    doc = build_status_document(
        search_dir="/runs/s1",
        search_id="s",
        state="running",
        message="search started",
        trials=[],
        objective="val_accuracy",
        direction="max",
        max_trials=8,
        workers=[
            WorkerStatus("gpu-a-w0", "gpu-a", [0, 1], "running", trial_id="3", epoch=4),
            WorkerStatus(
                "gpu-b-w0", "gpu-b", [2], "pending", pending_reason="no node has 1 free GPU"
            ),
            WorkerStatus("local-w0", "local", [], "draining", trial_id="5", epoch=0),
        ],
        chief={"address": "127.0.0.1:5000", "pid": 1},
    )
    console = Console(record=True, width=160)
    console.print(render_status(doc))
    text = console.export_text()
    assert "RUNNING - search started" in text
    assert "0 completed" in text and "max_trials 8" in text
    for needle in ("gpu-a-w0", "0,1", "pending", "no node has 1 free GPU", "draining", "cpu"):
        assert needle in text
    assert "no completed trial yet" in text


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

    summary = broker.summary()
    common: dict[str, Any] = {
        "search_dir": "d",
        "search_id": "s",
        "state": summary.state.value,
        "message": summary.message,
        "objective": summary.objective,
        "direction": summary.direction,
        "max_trials": summary.max_trials,
        "workers": [],
        "chief": None,
    }
    full = build_status_document(trials=broker.trials(), **common)
    light = build_status_document(
        trials=[], totals=(summary.trials_by_status, summary.best), **common
    )
    assert light["trials"] == []
    assert {k: v for k, v in light.items() if k != "trials"} == {
        k: v for k, v in full.items() if k != "trials"
    }
    assert light["best"]["score"] == 0.8 and light["counts"]["RUNNING"] == 1
