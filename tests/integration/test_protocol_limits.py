"""No stalling (issue 12): one token holder flooding the chief with parked
long-polls and oversized uploads leaves the real workers served.

Real chief, real gRPC. The flood comes over its own connection (its own peer
address); the real workers use theirs.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.limits import GIB, ProtocolLimits
from orchestrator.errors import InvalidRequestError, LimitExceededError
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import float_space, ledger_rows, make_search, wait_until

StartChief = Callable[..., tuple[Chief, Any]]
MIB = 1024 * 1024


def _own_connection(address: str) -> grpc.Channel:
    # A local subchannel pool: this channel does not share a connection (and
    # so a peer address) with the test's other channels.
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def test_a_flood_of_parked_long_polls_leaves_the_workers_served(
    start_chief: StartChief, search_dir: Path
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 2, "seed": 1}, failure={"lease_timeout_s": 120}
    )
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=0)
    real = [TrialClient(ep.address, ep.token, worker_id=f"local-w{i}") for i in range(2)]
    trials = [client.create_trial(wait_s=0).trial for client in real]
    assert all(trials)  # both trials leased: every further CreateTrial parks
    flood = _own_connection(ep.address)
    stub = pb_grpc.TrialServiceStub(flood)
    calls = [
        stub.CreateTrial.future(
            pb.CreateTrialRequest(worker_id=f"invented-{i}", wait_s=30),
            metadata=bearer(ep.token),
            timeout=60,
        )
        for i in range(100)
    ]
    limits = chief.limits
    wait_until(
        lambda: sum(c.done() for c in calls) >= 100 - limits.max_long_polls_per_peer,
        20,
        what="the calls past the per-peer limit answered",
    )
    refused = [c for c in calls if c.done()]
    assert {c.code() for c in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
    assert "per connection" in (refused[0].details() or "")
    # The real workers: a third one parks (its own connection), the two
    # running ones report and end promptly, and the search completes.
    third = TrialClient(ep.address, ep.token, worker_id="local-w2")
    started = time.monotonic()
    for client, trial in zip(real, trials, strict=True):
        assert trial is not None
        client.report(trial, 0, {"score": 0.5})
        client.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
    assert time.monotonic() - started < 10  # generous on a loaded machine; unloaded ~50 ms
    assert third.create_trial(wait_s=5).kind is AssignmentKind.STOP
    assert chief.wait(10) is SearchState.COMPLETED
    # The parked flood is answered STOP too: no thread stays held.
    wait_until(lambda: all(c.done() for c in calls), 20, what="the parked flood answered")
    audit = [json.loads(line) for line in (search_dir / "audit.jsonl").read_text().splitlines()]
    assert sum(e["code"] == "RESOURCE_EXHAUSTED" for e in audit) == len(refused)
    flood.close()
    for client in [*real, third]:
        client.close()


def test_a_second_long_poll_from_one_worker_supersedes_its_first(
    start_chief: StartChief,
) -> None:
    search = make_search({"type": "random", "max_trials": 1, "seed": 1})
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=0)
    holder = TrialClient(ep.address, ep.token, worker_id="local-w0")
    trial = holder.create_trial(wait_s=0).trial
    assert trial is not None
    stub = pb_grpc.TrialServiceStub(_own_connection(ep.address))
    request = pb.CreateTrialRequest(worker_id="local-w1", wait_s=30)
    first = stub.CreateTrial.future(request, metadata=bearer(ep.token), timeout=60)
    wait_until(lambda: chief.broker._poll_generation.get("local-w1"), 10, what="first parked")
    second = stub.CreateTrial.future(request, metadata=bearer(ep.token), timeout=60)
    answer = first.result(timeout=10)
    assert (answer.kind, answer.reason) == (
        pb.CreateTrialResponse.WAIT,
        "superseded by a newer CreateTrial from this worker",
    )
    assert not second.done()
    holder.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
    assert second.result(timeout=10).kind == pb.CreateTrialResponse.STOP
    holder.close()


def test_an_upload_past_the_limit_is_refused_and_leaves_nothing(
    tmp_path: Path, search_dir: Path
) -> None:
    search = make_search({"type": "random", "max_trials": 3, "seed": 1})
    chief = Chief.create(search, search_dir, initial_space=float_space(), long_poll_s=0)
    chief.limits = ProtocolLimits(max_artifact_bytes=2 * MIB, max_trial_artifact_bytes=3 * MIB)
    ep = chief.start()
    try:
        with TrialClient(ep.address, ep.token, worker_id="local-w0") as client:
            trial = client.create_trial(wait_s=0).trial
            assert trial is not None
            big, small = tmp_path / "big.bin", tmp_path / "small.bin"
            big.write_bytes(b"x" * (5 * MIB))
            small.write_bytes(b"y" * int(1.6 * MIB))
            rows = ledger_rows(search_dir / "ledger.db")
            with pytest.raises(
                InvalidRequestError, match=r"total_size: expected 0..2097152 bytes, got 5242880"
            ):
                client.upload_artifact(trial, "big.bin", big)
            client.upload_artifact(trial, "a.bin", small)
            # The trial's total: 1.6 MiB kept + 1.6 MiB more passes 3 MiB.
            with pytest.raises(InvalidRequestError, match=r"more than"):
                client.upload_artifact(trial, "b.bin", small)
            assert client.list_artifacts(trial.trial_id) == ["a.bin"]
            assert ledger_rows(search_dir / "ledger.db") == rows
            # The worker is still served.
            client.report(trial, 0, {"score": 0.1})
            client.end_trial(trial, "COMPLETED", metrics={"score": 0.1})
        leftovers = [p.name for p in (search_dir / "trials").rglob("*") if p.is_file()]
        assert leftovers == ["a.bin"]
    finally:
        chief.cancel(now=True)
        chief.close(grace_s=0.2)


def test_an_upload_into_the_disk_reserve_is_refused_and_the_trial_still_ends(
    tmp_path: Path, search_dir: Path
) -> None:
    search = make_search({"type": "random", "max_trials": 3, "seed": 1})
    chief = Chief.create(search, search_dir, initial_space=float_space(), long_poll_s=0)
    # A reserve above what the disk has free: as if the disk were full.
    chief.limits = ProtocolLimits(min_free_disk_bytes=shutil.disk_usage(search_dir).free + GIB)
    ep = chief.start()
    try:
        with TrialClient(ep.address, ep.token, worker_id="local-w0") as client:
            trial = client.create_trial(wait_s=0).trial
            assert trial is not None
            weights = tmp_path / "checkpoint.weights.h5"
            weights.write_bytes(b"w" * 1024)
            rows = ledger_rows(search_dir / "ledger.db")
            with pytest.raises(LimitExceededError, match=r"for the search's ledger"):
                client.upload_artifact(trial, "checkpoint.weights.h5", weights)
            assert client.list_artifacts(trial.trial_id) == []
            assert not (search_dir / "trials" / trial.trial_id).exists()
            assert ledger_rows(search_dir / "ledger.db") == rows
            # The result is recorded all the same: the reserve is there for it.
            client.report(trial, 0, {"score": 0.3})
            client.end_trial(trial, "COMPLETED", metrics={"score": 0.3})
        assert chief.broker.get_trial(trial.trial_id).status is TrialStatus.COMPLETED
        assert not [p for p in (search_dir / "trials").rglob("*") if p.is_file()]
    finally:
        chief.cancel(now=True)
        chief.close(grace_s=0.2)
