"""The chief over real gRPC on a free 127.0.0.1 port: concurrency, auth,
malformed requests, lifecycle, interrupt + resume, artifacts and the IDLE
long-poll. Workers here are raw TrialClients with instant trials (no TF)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.errors import AuthenticationError, StaleLeaseError
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, LeasedTrial, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import final_counts, float_space, ledger_rows, make_search, wait_until

StartChief = Callable[..., tuple[Chief, Any]]


def _random(max_trials: int, **failure: Any) -> Any:
    return make_search(
        {"type": "random", "max_trials": max_trials, "seed": 1},
        failure={"retries_per_trial": 1, **failure} if failure else None,
    )


def _run_worker(address: str, token: str, worker_id: str, stops: list[str]) -> None:
    """An instant-trial worker: create -> report -> end COMPLETED, until STOP."""
    with TrialClient(address, token, worker_id=worker_id) as client:
        while True:
            assignment = client.create_trial(wait_s=1.0)
            if assignment.kind is AssignmentKind.STOP:
                stops.append(worker_id)
                return
            if assignment.trial is None:
                continue
            trial = assignment.trial
            score = float(trial.values["x"])
            client.report(trial, 0, {"score": score})
            client.end_trial(trial, "COMPLETED", metrics={"score": score})


def test_16_threads_run_200_trials_without_loss_or_duplicates(
    start_chief: StartChief, search_dir: Path
) -> None:
    chief, ep = start_chief(_random(200), initial_space=float_space(), long_poll_s=1.0)
    stops: list[str] = []
    threads = [
        threading.Thread(target=_run_worker, args=(ep.address, ep.token, f"w{i}", stops))
        for i in range(16)
    ]
    for t in threads:
        t.start()
    assert chief.wait(120) is SearchState.COMPLETED
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a worker never got STOP"
    assert sorted(stops) == sorted(f"w{i}" for i in range(16))
    assert chief.broker.leases.all() == []

    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger)
    assert len(replayed.records) == 200
    assert {r.status for r in replayed.records.values()} == {TrialStatus.COMPLETED}
    assert replayed.in_flight == [] and list(replayed.queue) == []
    assert replayed.state is SearchState.COMPLETED
    finals = final_counts(search_dir / "ledger.db")
    assert len(finals) == 200 and set(finals.values()) == {1}
    assert all(kind == "completed" for _, kind in finals)
    # Each trial was handed out exactly once (no duplicate hyperparameters either).
    assigned = Counter(
        tid for _, k, tid, _ in ledger_rows(search_dir / "ledger.db") if k == "assigned"
    )
    assert set(assigned.values()) == {1}
    values = {r.values["x"] for r in replayed.records.values()}
    assert len(values) == 200


# ------------------------------------------------------------------- auth


def test_auth_missing_wrong_and_valid_token(start_chief: StartChief, search_dir: Path) -> None:
    chief, ep = start_chief(_random(3), initial_space=float_space())
    token_file = search_dir / "token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert token_file.read_text().strip() == ep.token
    info = json.loads((search_dir / "chief.json").read_text())
    assert info["address"] == ep.address and info["pid"] == os.getpid()
    assert info["token_file"] == str(token_file)

    n = chief.ledger.count()
    with grpc.insecure_channel(ep.address) as channel:
        stub = pb_grpc.TrialServiceStub(channel)
        with pytest.raises(grpc.RpcError) as missing:
            stub.CreateTrial(pb.CreateTrialRequest(worker_id="w0", wait_s=0.1), timeout=5)
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as streamed:
            list(
                stub.DownloadArtifact(
                    pb.DownloadArtifactRequest(trial_id="0", name="x"),
                    metadata=bearer("nope"),
                    timeout=5,
                )
            )
        assert streamed.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with (
        TrialClient(ep.address, "wrong-token", worker_id="w0") as client,
        pytest.raises(AuthenticationError, match="refused the token"),
    ):
        client.create_trial(wait_s=0.1)
    assert chief.ledger.count() == n

    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        assignment = client.create_trial(wait_s=0.1)
        assert assignment.kind is AssignmentKind.TRIAL
        assert client.search_state().state == pb.SEARCH_RUNNING


# ------------------------------------------------------- malformed requests


def _end(trial: LeasedTrial, **fields: Any) -> pb.EndTrialRequest:
    base: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "lease_token": trial.token,
        "status": pb.COMPLETED,
        "metrics": {"score": 0.5},
        "worker_id": "w0",
    }
    base.update(fields)
    return pb.EndTrialRequest(**base)


def _report(trial: LeasedTrial, **fields: Any) -> pb.ReportRequest:
    base: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "lease_token": trial.token,
        "epoch": 0,
        "metrics": {"score": 0.5},
        "worker_id": "w0",
    }
    base.update(fields)
    return pb.ReportRequest(**base)


MALFORMED: dict[str, tuple[str, Callable[[LeasedTrial], Any]]] = {
    "unknown trial id": ("EndTrial", lambda t: _end(t, trial_id="9999")),
    "unknown trial id in report": ("Report", lambda t: _report(t, trial_id="9999")),
    "NaN metric": ("EndTrial", lambda t: _end(t, metrics={"score": float("nan")})),
    "inf metric": ("Report", lambda t: _report(t, metrics={"score": float("inf")})),
    "-inf metric": ("EndTrial", lambda t: _end(t, metrics={"score": float("-inf")})),
    "empty metric name": ("EndTrial", lambda t: _end(t, metrics={"": 1.0})),
    "non-printable metric name": ("Report", lambda t: _report(t, metrics={"a\nb": 1.0})),
    "oversized error_message": (
        "EndTrial",
        lambda t: _end(t, status=pb.FAILED, metrics={}, error_message="e" * (64 * 1024 + 1)),
    ),
    "oversized traceback_tail": (
        "EndTrial",
        lambda t: _end(t, status=pb.FAILED, metrics={}, traceback_tail="t" * (64 * 1024 + 1)),
    ),
    "oversized trial_state_json": (
        "EndTrial",
        lambda t: _end(t, trial_state_json=json.dumps({"hyperparameters": "x" * (1024 * 1024)})),
    ),
    "trial_state_json without hyperparameters": (
        "EndTrial",
        lambda t: _end(t, trial_state_json='{"nope": 1}'),
    ),
    "status PENDING": ("EndTrial", lambda t: _end(t, status=pb.PENDING)),
    "status UNSPECIFIED": ("EndTrial", lambda t: _end(t, status=pb.TRIAL_STATUS_UNSPECIFIED)),
    "status RUNNING": ("EndTrial", lambda t: _end(t, status=pb.RUNNING)),
    "status out of range": ("EndTrial", lambda t: _end(t, status=99)),
    "missing worker_id": ("CreateTrial", lambda t: pb.CreateTrialRequest(worker_id="")),
    "non-printable worker_id": ("CreateTrial", lambda t: pb.CreateTrialRequest(worker_id="w\x01")),
    "missing lease token": ("EndTrial", lambda t: _end(t, lease_token="")),
    "malformed UpdateSpace json": (
        "UpdateSpace",
        lambda t: pb.SpaceMessage(hyperparameters_json="{not json"),
    ),
    "UpdateSpace not a config": (
        "UpdateSpace",
        lambda t: pb.SpaceMessage(hyperparameters_json='{"values": {}}'),
    ),
    "negative num_trials": ("GetBestTrials", lambda t: pb.GetBestTrialsRequest(num_trials=-1)),
}


@pytest.fixture
def held_trial(start_chief: StartChief) -> tuple[Chief, Any, LeasedTrial]:
    chief, ep = start_chief(_random(5), initial_space=float_space())
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        assignment = client.create_trial(wait_s=1.0)
    assert assignment.trial is not None
    return chief, ep, assignment.trial


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_request_is_invalid_and_changes_nothing(
    held_trial: tuple[Chief, Any, LeasedTrial], case: str
) -> None:
    chief, ep, trial = held_trial
    method, build = MALFORMED[case]
    before = chief.ledger.count()
    trials_before = chief.broker.trials()
    with grpc.insecure_channel(ep.address) as channel:
        stub = pb_grpc.TrialServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            getattr(stub, method)(build(trial), metadata=bearer(ep.token), timeout=10)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert chief.ledger.count() == before
    assert chief.broker.trials() == trials_before
    # The held lease still works afterwards: nothing was half-applied.
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        assert client.end_trial(trial, "COMPLETED", metrics={"score": 0.5})


def test_bad_artifact_name_is_invalid(held_trial: tuple[Chief, Any, LeasedTrial]) -> None:
    chief, ep, trial = held_trial
    before = chief.ledger.count()
    with grpc.insecure_channel(ep.address) as channel:
        stub = pb_grpc.TrialServiceStub(channel)
        for name in ("../x", "/etc/passwd", "a/../../b", ""):
            chunk = pb.ArtifactChunk(
                trial_id=trial.trial_id, lease_token=trial.token, name=name, data=b"x", sha256=""
            )
            with pytest.raises(grpc.RpcError) as err:
                stub.UploadArtifact(iter([chunk]), metadata=bearer(ep.token), timeout=10)
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
            with pytest.raises(grpc.RpcError) as down:
                list(
                    stub.DownloadArtifact(
                        pb.DownloadArtifactRequest(trial_id=trial.trial_id, name=name),
                        metadata=bearer(ep.token),
                        timeout=10,
                    )
                )
            assert down.value.code() is grpc.StatusCode.INVALID_ARGUMENT, name
    assert chief.ledger.count() == before
    assert not (chief.search_dir / "x").exists()


def test_stale_token_end_trial_is_failed_precondition(
    held_trial: tuple[Chief, Any, LeasedTrial],
) -> None:
    chief, ep, trial = held_trial
    before = chief.ledger.count()
    with grpc.insecure_channel(ep.address) as channel:
        stub = pb_grpc.TrialServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.EndTrial(_end(trial, lease_token="0" * 32), metadata=bearer(ep.token), timeout=10)
    assert err.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "its result is ignored" in (err.value.details() or "")
    assert chief.ledger.count() == before


# -------------------------------------------------------------- lifecycle


def test_search_completes_promptly_after_last_end_and_workers_get_stop(
    start_chief: StartChief,
) -> None:
    chief, ep = start_chief(_random(3), initial_space=float_space(), long_poll_s=1.0)
    workers = [TrialClient(ep.address, ep.token, worker_id=f"w{i}") for i in range(3)]
    with TrialClient(ep.address, ep.token, worker_id="idle") as client:
        held = [w.create_trial(wait_s=1.0).trial for w in workers]
        assert all(held)
        # The oracle is exhausted but trials are running: WAIT, not STOP.
        assert client.create_trial(wait_s=0.2).kind is AssignmentKind.WAIT
        assert chief.wait(0) is None
        for worker, trial in zip(workers[:-1], held[:-1], strict=True):
            assert trial is not None
            worker.end_trial(trial, "COMPLETED", metrics={"score": 0.1})
        last = held[-1]
        assert last is not None
        workers[-1].end_trial(last, "COMPLETED", metrics={"score": 0.2})
        for worker in workers:
            worker.close()
        ended = time.monotonic()
        assert chief.wait(5.0) is SearchState.COMPLETED
        elapsed = time.monotonic() - ended
        assert elapsed < 2.0, f"the chief took {elapsed:.2f} s to finish after the last EndTrial"
        stop = client.create_trial(wait_s=1.0)
        assert stop.kind is AssignmentKind.STOP
        assert "completed" in stop.reason
        assert client.search_state().state == pb.SEARCH_COMPLETED


def _interrupt_with_one_in_flight(
    start_chief: StartChief, search_dir: Path
) -> tuple[LeasedTrial, LeasedTrial]:
    """One trial done, one in flight, then Ctrl-C (requeue_running); returns both."""
    chief, ep = start_chief(_random(3), initial_space=float_space(), long_poll_s=1.0)
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        done = client.create_trial(wait_s=1.0).trial
        assert done is not None
        client.end_trial(done, "COMPLETED", metrics={"score": 0.3})
        flying = client.create_trial(wait_s=1.0).trial
        assert flying is not None
        chief.interrupt(requeue_running=True)
        assert chief.wait(2.0) is SearchState.INTERRUPTED
        before = chief.ledger.count()
        with pytest.raises(StaleLeaseError, match="revoked"):
            client.end_trial(flying, "COMPLETED", metrics={"score": 0.9})
        assert chief.ledger.count() == before
        assert client.create_trial(wait_s=0.5).kind is AssignmentKind.STOP
    chief.close(grace_s=0.2)
    kinds = [k for _, k, tid, _ in ledger_rows(search_dir / "ledger.db") if tid == flying.trial_id]
    assert kinds == ["created", "assigned", "requeued"]
    info = json.loads((search_dir / "chief.json").read_text())
    assert info["running"] is False
    return done, flying


def test_interrupt_requeues_running_and_refuses_its_late_result(
    start_chief: StartChief, search_dir: Path
) -> None:
    _, flying = _interrupt_with_one_in_flight(start_chief, search_dir)
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger)
    assert replayed.state is SearchState.INTERRUPTED
    assert list(replayed.queue) == [flying.trial_id]
    assert replayed.records[flying.trial_id].status is TrialStatus.PENDING


def test_resume_after_interrupt_reruns_the_trial_once(
    start_chief: StartChief, search_dir: Path
) -> None:
    done, flying = _interrupt_with_one_in_flight(start_chief, search_dir)
    resumed = Chief.resume(search_dir, long_poll_s=1.0)
    try:
        rep = resumed.start()
        with TrialClient(rep.address, rep.token, worker_id="w1") as client:
            again = client.create_trial(wait_s=1.0).trial
            assert again is not None
            assert (again.trial_id, again.attempt, again.values) == (
                flying.trial_id,
                flying.attempt + 1,
                flying.values,
            )
            client.end_trial(again, "COMPLETED", metrics={"score": 0.4})
            while (a := client.create_trial(wait_s=1.0)).kind is not AssignmentKind.STOP:
                if a.trial is not None:
                    assert a.trial.trial_id not in (done.trial_id, flying.trial_id)
                    client.end_trial(a.trial, "COMPLETED", metrics={"score": 0.5})
        assert resumed.wait(5.0) is SearchState.COMPLETED
    finally:
        resumed.close(grace_s=0.2)
    finals = final_counts(search_dir / "ledger.db")
    assert len(finals) == 3 and set(finals.values()) == {1}
    assert {kind for _, kind in finals} == {"completed"}


# -------------------------------------------------------------- artifacts


def test_artifact_round_trip_and_stale_upload(start_chief: StartChief, tmp_path: Path) -> None:
    chief, ep = start_chief(_random(3), initial_space=float_space())
    payload = os.urandom(3 * 1024 * 1024 + 123)
    src = tmp_path / "checkpoint.weights.h5"
    src.write_bytes(payload)
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        trial = client.create_trial(wait_s=1.0).trial
        assert trial is not None
        sha = client.upload_artifact(trial, "ckpt/checkpoint.weights.h5", src)
        assert sha == hashlib.sha256(payload).hexdigest()
        assert client.list_artifacts(trial.trial_id) == ["ckpt/checkpoint.weights.h5"]
        dest = client.download_artifact(
            trial.trial_id, "ckpt/checkpoint.weights.h5", tmp_path / "d"
        )
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == sha
        client.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
        # The attempt is over: its token may no longer write artifacts.
        with pytest.raises(StaleLeaseError, match="already ended as COMPLETED"):
            client.upload_artifact(trial, "late.bin", src)
        forged = LeasedTrial(trial.trial_id, trial.attempt, "f" * 32, {}, {}, 1.0)
        with pytest.raises(StaleLeaseError):
            client.upload_artifact(forged, "forged.bin", src)


# -------------------------------------------------------- no IDLE busy loop


def test_waiting_on_a_hyperband_round_is_a_long_poll_not_a_busy_loop(
    start_chief: StartChief,
) -> None:
    search = make_search({"type": "hyperband", "seed": 1, "max_epochs": 3, "factor": 3})
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=1.0)
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    class CountingClient(TrialClient):
        def create_trial(self, wait_s: float = 5.0) -> Any:
            with lock:
                calls[self.worker_id] += 1
            return super().create_trial(wait_s)

    # One holder per trial of the first round (a worker holding a trial gets it again).
    holders: list[TrialClient] = []
    round0 = []
    while True:
        holder = CountingClient(ep.address, ep.token, worker_id=f"holder{len(round0)}")
        if (a := holder.create_trial(wait_s=0.2)).kind is not AssignmentKind.TRIAL:
            holder.close()
            break
        holders.append(holder)
        round0.append(a.trial)
    assert a.kind is AssignmentKind.WAIT and len(round0) >= 2
    for holder, trial in zip(holders[:-1], round0[:-1], strict=True):
        assert trial is not None
        holder.end_trial(trial, "COMPLETED", metrics={"score": float(trial.values["x"])})
    holder, last = holders[-1], round0[-1]
    assert last is not None

    got: dict[str, list[str]] = {"w1": [], "w2": []}

    def waiter(worker_id: str) -> None:
        with CountingClient(ep.address, ep.token, worker_id=worker_id) as client:
            while (b := client.create_trial(wait_s=1.0)).kind is not AssignmentKind.STOP:
                if b.trial is not None:
                    got[worker_id].append(b.trial.trial_id)
                    client.end_trial(b.trial, "COMPLETED", metrics={"score": 0.5})

    threads = [threading.Thread(target=waiter, args=(w,)) for w in got]
    for t in threads:
        t.start()
    wait_until(lambda: calls["w1"] >= 1 and calls["w2"] >= 1, 10.0, what="waiters started")
    # Hold the round's last trial for ~3 s, heartbeating like a training worker.
    held_until = time.monotonic() + 3.0
    hold = threading.Event()
    while time.monotonic() < held_until:
        holder.heartbeat(last)
        hold.wait(0.25)
    during = {w: calls[w] for w in got}
    holder.end_trial(last, "COMPLETED", metrics={"score": float(last.values["x"])})
    assert chief.wait(60) is SearchState.COMPLETED
    for t in threads:
        t.join(10)
    for holder in holders:
        holder.close()
    # ~3 s of waiting at one call per 1 s long-poll: about 3-4 calls each. A busy
    # loop (Keras Tuner's own) makes hundreds.
    assert all(n <= 6 for n in during.values()), during
    assert got["w1"] or got["w2"], "the continuation trials never ran"
