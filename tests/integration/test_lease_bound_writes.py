"""What a lease holder can write, and when, over real gRPC (the hostile-input audit
of 2026-12-01):

- an upload lands only while its attempt still holds the lease: one that
  outlives it (the attempt ended, or the worker was lost and the trial went to
  another worker) keeps nothing, and the new attempt's file stays;
- a worker that asks for a trial while it holds one gets that attempt back, so
  one credential cannot hold every trial;
- one attempt's epoch reports have a ledger budget, so a leased worker cannot
  fill the chief's disk with reports;
- the half-written file of an upload that a killed chief left behind is removed
  when a chief starts, so it does not count against the trial's quota.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.errors import LimitExceededError
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, LeasedTrial, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from tests.helpers import float_space, ledger_rows, make_search


@pytest.fixture
def chief(tmp_path: Path) -> Iterator[tuple[Chief, str, str]]:
    search = make_search(
        {"type": "random", "max_trials": 20, "seed": 1}, failure={"lease_timeout_s": 600}
    )
    chief = Chief.create(search, tmp_path / "search", initial_space=float_space(), long_poll_s=0)
    chief.limits = dataclasses.replace(chief.limits, max_progress_bytes_per_attempt=2_000)
    endpoint = chief.start()
    yield chief, endpoint.address, endpoint.token
    chief.cancel(now=True)
    chief.close(grace_s=0.2)


def _lease(client: TrialClient) -> LeasedTrial:
    answer = client.create_trial(wait_s=0)
    assert answer.kind is AssignmentKind.TRIAL and answer.trial is not None
    return answer.trial


class _HeldUpload:
    """An upload whose first chunk is sent now and whose last chunk waits for
    :meth:`finish`; its outcome (the response or the RpcError) is ``result``."""

    def __init__(self, address: str, token: str, trial: LeasedTrial, name: str) -> None:
        self._go = threading.Event()
        self._sent_first = threading.Event()
        self.result: Any = None
        channel = grpc.insecure_channel(address)
        stub = pb_grpc.TrialServiceStub(channel)

        def chunks() -> Iterator[pb.ArtifactChunk]:
            yield pb.ArtifactChunk(
                trial_id=trial.trial_id, lease_token=trial.token, name=name, data=b"stale "
            )
            self._sent_first.set()
            self._go.wait(30)
            yield pb.ArtifactChunk(data=b"attempt's bytes")

        def run() -> None:
            try:
                self.result = stub.UploadArtifact(chunks(), metadata=bearer(token), timeout=60)
            except grpc.RpcError as exc:
                self.result = exc
            finally:
                channel.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert self._sent_first.wait(30)

    def finish(self) -> Any:
        self._go.set()
        self._thread.join(60)
        return self.result


def _code(result: Any) -> grpc.StatusCode | None:
    return result.code() if isinstance(result, grpc.RpcError) else None


def test_an_upload_that_outlives_its_attempt_keeps_nothing(
    chief: tuple[Chief, str, str], tmp_path: Path
) -> None:
    boss, address, token = chief
    with TrialClient(address, token, worker_id="w0") as w0:
        trial = _lease(w0)
        upload = _HeldUpload(address, token, trial, "late.bin")
        w0.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
        result = upload.finish()
        assert _code(result) is grpc.StatusCode.FAILED_PRECONDITION, result
        assert "already ended" in result.details()
        assert w0.list_artifacts(trial.trial_id) == []


def test_a_lost_attempts_upload_does_not_overwrite_the_next_attempts_file(
    chief: tuple[Chief, str, str], tmp_path: Path
) -> None:
    boss, address, token = chief
    good = tmp_path / "good.bin"
    good.write_bytes(b"the checkpoint of attempt 2")
    with (
        TrialClient(address, token, worker_id="w0") as w0,
        TrialClient(address, token, worker_id="w1") as w1,
    ):
        first = _lease(w0)
        upload = _HeldUpload(address, token, first, "ckpt.bin")
        boss.broker.worker_lost("w0", "killed by the test")  # the trial is requeued
        second = _lease(w1)
        assert (second.trial_id, second.attempt) == (first.trial_id, 2)
        w1.upload_artifact(second, "ckpt.bin", good)
        result = upload.finish()
        assert _code(result) is grpc.StatusCode.FAILED_PRECONDITION, result
        kept = w1.download_artifact(first.trial_id, "ckpt.bin", tmp_path / "kept.bin")
        assert kept.read_bytes() == b"the checkpoint of attempt 2"


def test_a_worker_holding_a_trial_gets_that_attempt_again(chief: tuple[Chief, str, str]) -> None:
    boss, address, token = chief
    ledger = boss.search_dir / "ledger.db"
    with (
        TrialClient(address, token, worker_id="w0") as w0,
        TrialClient(address, token, worker_id="w1") as w1,
    ):
        held = _lease(w0)
        rows = ledger_rows(ledger)
        again = [_lease(w0) for _ in range(4)]
        # The same attempt, token and hyperparameters; nothing committed.
        assert {(t.trial_id, t.attempt, t.token) for t in again} == {
            (held.trial_id, held.attempt, held.token)
        }
        assert all(t.values == held.values for t in again)
        assert ledger_rows(ledger) == rows
        assert [lease.trial_id for lease in boss.broker.leases.held_by("w0")] == [held.trial_id]
        other = _lease(w1)
        assert other.trial_id != held.trial_id
        # Once it ends, the worker gets a new trial.
        w0.end_trial(held, "COMPLETED", metrics={"score": 0.1})
        assert _lease(w0).trial_id not in (held.trial_id, other.trial_id)


def test_an_attempts_reports_have_a_ledger_budget(chief: tuple[Chief, str, str]) -> None:
    boss, address, token = chief
    ledger = boss.search_dir / "ledger.db"
    metrics = {f"metric_{i:02d}": 0.5 for i in range(10)}  # about 500 bytes a report
    with TrialClient(address, token, worker_id="w0") as w0:
        trial = _lease(w0)
        accepted = 0
        with pytest.raises(LimitExceededError, match="over the 2000-byte cap per attempt"):
            for epoch in range(100):
                w0.report(trial, epoch, metrics)
                accepted += 1
        assert 2 <= accepted <= 4
        rows = ledger_rows(ledger)
        assert sum(kind == "progress" for _, kind, _, _ in rows) == accepted
        # Refused: nothing committed. The lease is intact: a heartbeat and the end still work.
        with pytest.raises(LimitExceededError):
            w0.report(trial, 99, metrics)
        assert ledger_rows(ledger) == rows
        w0.heartbeat(trial)
        w0.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
        # The budget is per attempt: the next trial reports again.
        w0.report(_lease(w0), 0, metrics)


def test_a_starting_chief_removes_the_partial_uploads_a_killed_one_left(tmp_path: Path) -> None:
    search = make_search({"type": "random", "max_trials": 2, "seed": 1})
    boss = Chief.create(search, tmp_path / "search", initial_space=float_space())
    trial_dir = tmp_path / "search" / "trials" / "0" / "ckpt"
    trial_dir.mkdir(parents=True)
    partial = trial_dir / ".checkpoint.weights.h5.zh0oh3vj"
    partial.write_bytes(b"x" * 1000)
    kept = trial_dir / "checkpoint.weights.h5"
    kept.write_bytes(b"y" * 10)
    assert boss.artifacts.trial_bytes("0") == 1010
    boss.start()
    try:
        assert not partial.exists() and kept.exists()
        assert boss.artifacts.trial_bytes("0") == 10
    finally:
        boss.close(grace_s=0.2)
