"""Worker identity over real gRPC (issue 12, item 5): a chief with a fleet hands
trials only to the workers its fleet registered, each worker acts only as itself
and on its own trials, and the search token keeps the control RPCs.

No Ray: the test registers workers with the chief's registry as the fleet does
(``chief.workers.register``) and dials with their credentials. Every refusal is
checked for its exact status code and message, the audit callback, and no
change in the ledger.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.registry import CREDENTIAL_PREFIX
from orchestrator.errors import AuthenticationError, PermissionDeniedError, StaleLeaseError
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, LeasedTrial, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import float_space, make_search


class StatusOnly:
    """A control handler (the session's role, without Ray)."""

    def status_document(self) -> dict[str, Any]:
        return {"state": "running"}

    def scale(self, request: pb.ScaleRequest) -> str:
        return "scaled"

    def cancel(self, now: bool) -> str:
        return "cancelled"


@dataclass
class Live:
    chief: Chief
    address: str
    token: str
    credentials: dict[str, str]
    clients: list[TrialClient] = field(default_factory=list)

    def client(self, secret: str, worker_id: str) -> TrialClient:
        client = TrialClient(self.address, secret, worker_id=worker_id, reconnect_timeout_s=2.0)
        self.clients.append(client)
        return client

    def worker(self, worker_id: str) -> TrialClient:
        return self.client(self.credentials[worker_id], worker_id)

    def rows(self) -> int:
        return int(self.chief.ledger.count())

    def audited(self) -> list[dict[str, Any]]:
        path = self.chief.search_dir / "audit.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def live(search_dir: Path) -> Iterator[Live]:
    """A started chief whose "fleet" registered w0 and w1, auditing refusals."""
    chief = Chief.create(
        make_search({"type": "random", "max_trials": 20, "seed": 1}),
        search_dir,
        initial_space=float_space(),
        long_poll_s=0.2,
    )
    chief.control.handler = StatusOnly()
    chief.workers.require()  # as SearchSession.start does before its fleet starts
    credentials = {wid: chief.workers.register(wid) for wid in ("w0", "w1")}
    endpoint = chief.start()
    state = Live(chief, endpoint.address, endpoint.token, credentials)
    try:
        yield state
    finally:
        for client in state.clients:
            client.close()
        with contextlib.suppress(Exception):
            chief.cancel(now=True)
        chief.close(grace_s=0.2)


def _trial(client: TrialClient) -> LeasedTrial:
    got = client.create_trial(wait_s=2.0)
    assert got.kind is AssignmentKind.TRIAL and got.trial is not None
    return got.trial


def _raw_code(live: Live, secret: str, call: str, request: Any) -> grpc.StatusCode:
    with grpc.insecure_channel(live.address) as channel:
        stub = pb_grpc.TrialServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            getattr(stub, call)(request, metadata=bearer(secret), timeout=10)
    code = refused.value.code()
    assert isinstance(code, grpc.StatusCode)
    return code


def test_an_invented_worker_id_gets_no_trial(live: Live) -> None:
    rows = live.rows()
    # The search token (what every worker held before) may not act as a worker.
    with pytest.raises(
        PermissionDeniedError,
        match=r"CreateTrial: the chief at .* refused this caller: this chief hands trials "
        r"only to the workers its fleet started",
    ):
        live.client(live.token, "invented-1").create_trial(wait_s=0.1)
    request = pb.CreateTrialRequest(worker_id="invented-2", wait_s=0.1)
    assert _raw_code(live, live.token, "CreateTrial", request) is grpc.StatusCode.PERMISSION_DENIED
    # A credential the registry never minted (even with the right prefix).
    with pytest.raises(AuthenticationError, match=r"refused the token"):
        live.client(CREDENTIAL_PREFIX + "guessed", "invented-3").create_trial(wait_s=0.1)
    # A real worker's credential claiming another id.
    with pytest.raises(
        PermissionDeniedError,
        match=r"worker_id 'invented-4' is not the worker this credential was issued to \(w0\)",
    ):
        live.client(live.credentials["w0"], "invented-4").create_trial(wait_s=0.1)
    assert live.rows() == rows  # nothing was created or assigned
    assert not live.chief.broker.leases.all()
    audited = live.audited()  # every refusal, never a secret
    assert [(e["method"], e["worker_id"], e["code"]) for e in audited] == [
        ("CreateTrial", "", "PERMISSION_DENIED"),
        ("CreateTrial", "", "PERMISSION_DENIED"),
        ("CreateTrial", "", "UNAUTHENTICATED"),
        ("CreateTrial", "w0", "PERMISSION_DENIED"),
    ]
    text = (live.chief.search_dir / "audit.jsonl").read_text()
    assert all(e["peer"].startswith("ipv") for e in audited)
    assert live.token not in text and live.credentials["w0"] not in text

    trial = _trial(live.worker("w0"))  # the registered worker is served
    assert live.chief.broker.leases.get(trial.trial_id).worker_id == "w0"


def test_a_worker_cannot_report_end_or_upload_another_workers_trial(
    live: Live, tmp_path: Path
) -> None:
    w0, w1 = live.worker("w0"), live.worker("w1")
    trial = _trial(w0)
    w0.report(trial, 0, {"score": 0.1})
    rows = live.rows()
    message = (
        rf"trial {trial.trial_id}(: attempt 1)? is leased to worker w0, not w1; a worker may "
        r"report, end and upload for its own trials only"
    )
    # w1 knows w0's trial id and even its lease token, and uses its own credential.
    with pytest.raises(PermissionDeniedError, match=message):
        w1.report(trial, 1, {"score": 0.9})
    with pytest.raises(PermissionDeniedError, match=message):
        w1.end_trial(trial, "COMPLETED", metrics={"score": 0.9})
    artifact = tmp_path / "weights.h5"
    artifact.write_bytes(b"not w1's")
    with pytest.raises(PermissionDeniedError, match=message):
        w1.upload_artifact(trial, "checkpoint.weights.h5", artifact)
    end = pb.EndTrialRequest(
        trial_id=trial.trial_id,
        lease_token=trial.token,
        status=pb.COMPLETED,
        metrics={"score": 0.9},
        worker_id="w1",
    )
    assert _raw_code(live, live.credentials["w1"], "EndTrial", end) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Claiming to be w0 with w1's credential is refused before the broker.
    end.worker_id = "w0"
    assert _raw_code(live, live.credentials["w1"], "EndTrial", end) is (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Nothing changed: no event, w0 still holds the attempt, no artifact stored.
    assert live.rows() == rows
    lease = live.chief.broker.leases.get(trial.trial_id)
    assert lease is not None and (lease.worker_id, lease.token) == ("w0", trial.token)
    view = live.chief.broker.get_trial(trial.trial_id)
    assert view.status is TrialStatus.RUNNING and view.current_epoch == 0
    assert live.chief.artifacts.list(trial.trial_id) == []

    # w0 itself is unaffected.
    w0.upload_artifact(trial, "checkpoint.weights.h5", artifact)
    assert w0.end_trial(trial, "COMPLETED", metrics={"score": 0.5}) is True


def test_a_stale_attempt_is_still_a_stale_lease(live: Live) -> None:
    """A worker's own old attempt keeps its FAILED_PRECONDITION (not a permission error)."""
    w0 = live.worker("w0")
    trial = _trial(w0)
    assert w0.end_trial(trial, "STOPPED", metrics={}) is True  # requeued
    with pytest.raises(StaleLeaseError, match=r"lease was revoked|result is ignored"):
        w0.report(trial, 1, {"score": 0.1})


def test_a_reregistered_or_revoked_worker_loses_its_old_credential(live: Live) -> None:
    old = live.credentials["w0"]
    fresh = live.chief.workers.register("w0")  # the fleet restarted the slot's process
    with pytest.raises(AuthenticationError, match=r"refused the token"):
        live.client(old, "w0").create_trial(wait_s=0.1)
    _trial(live.client(fresh, "w0"))
    live.chief.workers.revoke("w1")  # the fleet killed w1's process
    with pytest.raises(AuthenticationError, match=r"refused the token"):
        live.worker("w1").create_trial(wait_s=0.1)


def test_control_rpcs_need_the_search_token(live: Live) -> None:
    owner = live.client(live.token, "cli")
    assert owner.status() == {"state": "running"}
    assert owner.get_best_trials(1) == []  # reads work with the search token
    worker = live.worker("w0")
    assert worker.get_space()  # and with a worker credential
    with pytest.raises(
        PermissionDeniedError,
        match=r"Status: the chief at .* refused this caller: a worker's credential \(w0\) "
        r"may not call the control RPCs",
    ):
        worker.status()
    with pytest.raises(PermissionDeniedError, match=r"may not call the control RPCs"):
        worker.cancel(now=True)
    assert live.chief.broker.state is SearchState.RUNNING
    assert owner.cancel(now=True) == "cancelled"


def test_a_chief_without_a_fleet_serves_the_search_token(start_chief: Any) -> None:
    """Tests and RemoteOracle.attach: no registration, the search token as before."""
    chief, endpoint = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    assert not chief.workers.enforced
    with TrialClient(endpoint.address, endpoint.token, worker_id="kt-tuner-0") as client:
        trial = _trial(client)
        assert client.end_trial(trial, "COMPLETED", metrics={"score": 1.0}) is True
