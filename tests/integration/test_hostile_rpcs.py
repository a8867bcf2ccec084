"""Hostile input over real gRPC (issue 12, the trial service): a corpus of
malformed and unauthorized RPCs, every RPC of both services and every field
family. Each gets its exact status code, changes nothing (the ledger rows and
``ktc status --json`` are the same before and after) and is written to the
audit log (never with the token).

One chief serves the whole module: a trial leased to a "real" worker, and a
completed trial with an artifact, so every refusal is checked next to state
that could have been changed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.chief.chief import Chief
from orchestrator.cli.main import main
from orchestrator.errors import FleetError
from orchestrator.fleet.session import live_document
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, LeasedTrial, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from tests.helpers import float_space, ledger_rows, make_search

CODE = grpc.StatusCode


@dataclass
class Live:
    """The module's chief and what the corpus refers to."""

    chief: Chief
    search_dir: Path
    address: str
    token: str
    leased: LeasedTrial  # held by worker "real-w0" for the whole module
    done: str  # a completed trial with the artifact "ckpt/model.bin"
    channel: grpc.Channel


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    search_dir = tmp_path_factory.mktemp("hostile") / "search"
    search = make_search(
        {"type": "random", "max_trials": 50, "seed": 1}, failure={"lease_timeout_s": 600}
    )
    chief = Chief.create(search, search_dir, initial_space=float_space(), long_poll_s=0)
    chief.control.handler = _Control(chief)
    endpoint = chief.start()
    client = TrialClient(endpoint.address, endpoint.token, worker_id="real-w0")
    first = client.create_trial(wait_s=0)
    assert first.kind is AssignmentKind.TRIAL and first.trial is not None
    src = search_dir.parent / "model.bin"
    src.write_bytes(b"weights" * 100)
    client.upload_artifact(first.trial, "ckpt/model.bin", src)
    client.end_trial(first.trial, "COMPLETED", metrics={"score": 0.5})
    second = client.create_trial(wait_s=0)
    assert second.trial is not None
    client.upload_artifact(second.trial, "dir/a.bin", src)  # a folder and a file to clash with
    channel = grpc.insecure_channel(endpoint.address)
    yield Live(
        chief=chief,
        search_dir=search_dir,
        address=endpoint.address,
        token=endpoint.token,
        leased=second.trial,
        done=first.trial.trial_id,
        channel=channel,
    )
    channel.close()
    client.close()
    with contextlib.suppress(Exception):
        chief.cancel(now=True)
    chief.close(grace_s=0.2)


class _Control:
    """The control RPCs of a chief without a fleet: the live status document;
    scale is refused (the corpus checks that validation comes first)."""

    def __init__(self, chief: Chief) -> None:
        self.chief = chief

    def status_document(self) -> dict[str, Any]:
        return live_document(
            self.chief.broker,
            search_dir=self.chief.search_dir,
            search_id=self.chief.search_id,
            workers=[],
            chief=None,
        ).to_json()

    def scale(self, request: pb.ScaleRequest) -> str:
        raise FleetError("this test chief has no fleet")

    def cancel(self, now: bool) -> str:
        self.chief.cancel(now=now)
        return "cancelled"


# ----------------------------------------------------------------- the corpus

Build = Callable[[Live], Any]
_FORGED = "0" * 32


def _report(live: Live, **fields: Any) -> pb.ReportRequest:
    base = {"trial_id": live.leased.trial_id, "lease_token": live.leased.token, "epoch": 0}
    return pb.ReportRequest(**{**base, **fields})


def _end(live: Live, **fields: Any) -> pb.EndTrialRequest:
    base = {
        "trial_id": live.leased.trial_id,
        "lease_token": live.leased.token,
        "status": pb.COMPLETED,
        "metrics": {"score": 0.9},
    }
    return pb.EndTrialRequest(**{**base, **fields})


def _chunks(live: Live, *extra: pb.ArtifactChunk, **first: Any) -> list[pb.ArtifactChunk]:
    base = {
        "trial_id": live.leased.trial_id,
        "lease_token": live.leased.token,
        "name": "up.bin",
        "data": b"x",
    }
    return [pb.ArtifactChunk(**{**base, **first}), *extra]


def _state(live: Live, values: dict[str, Any] | None = None, space: Any = None) -> str:
    """EndTrial's trial_state_json: the leased trial's own, with ``values``
    merged in, or with ``space`` (a list of hyperparameter configs) instead."""
    config = json.loads(json.dumps(live.leased.trial_state["hyperparameters"]))
    config["values"].update(values or {})
    if space is not None:
        config["space"] = space
    return json.dumps({**live.leased.trial_state, "hyperparameters": config})


def _hp(class_name: str, name: str = "y", **config: Any) -> dict[str, Any]:
    """One hyperparameter's entry in a HyperParameters config's 'space' list."""
    return {"class_name": class_name, "config": {"name": name, "conditions": [], **config}}


def _space(*hps: dict[str, Any], values: dict[str, Any] | None = None) -> pb.SpaceMessage:
    return pb.SpaceMessage(
        hyperparameters_json=json.dumps({"space": list(hps), "values": values or {}})
    )


def _other_x(live: Live) -> float:
    """A valid value of x that the oracle did not assign to the leased trial."""
    return 0.25 if live.leased.values["x"] != 0.25 else 0.75


_INT = {"min_value": 0, "max_value": 10, "step": 1, "sampling": "linear", "default": 0}
_FLOAT = {"min_value": 0.0, "max_value": 1.0, "step": None, "sampling": "linear", "default": 0.0}


@dataclass(frozen=True)
class Case:
    service: str
    method: str
    build: Build
    code: grpc.StatusCode
    details: str  # a substring of the status details
    metadata: str = "token"  # token | none | wrong


T, C = "TrialService", "ControlService"
INVALID, PRECONDITION = CODE.INVALID_ARGUMENT, CODE.FAILED_PRECONDITION

CORPUS: dict[str, Case] = {
    # --- path escapes and names (artifact RPCs)
    "list dotdot": Case(T, "ListArtifacts", lambda lv: pb.ListArtifactsRequest(trial_id=".."), INVALID, "trial_id"),
    "download token via dotdot": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id="..", name="token"), INVALID, "trial_id"),
    "download ledger via dotdot": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id="..", name="ledger.db"), INVALID, "trial_id"),
    "download name climbs": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id=lv.done, name="../../token"), INVALID, "name"),
    "download absolute name": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id=lv.done, name="/etc/passwd"), INVALID, "name"),
    "download hidden temp name": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id=lv.done, name=".model.bin.tmp"), INVALID, "name"),
    "download too many segments": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id=lv.done, name="a/" * 9 + "b"), INVALID, "name"),
    "download unknown trial": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id="nosuch", name="x.bin"), INVALID, "unknown trial id"),
    "download missing artifact": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id=lv.done, name="missing.bin"), CODE.NOT_FOUND, "no artifact"),
    "list slash id": Case(T, "ListArtifacts", lambda lv: pb.ListArtifactsRequest(trial_id="a/b"), INVALID, "trial_id"),
    "list unknown trial": Case(T, "ListArtifacts", lambda lv: pb.ListArtifactsRequest(trial_id="nosuch"), INVALID, "unknown trial id"),
    "get trial empty id": Case(T, "GetTrial", lambda lv: pb.GetTrialRequest(trial_id=""), INVALID, "trial_id"),
    "get trial long id": Case(T, "GetTrial", lambda lv: pb.GetTrialRequest(trial_id="7" * 129), INVALID, "trial_id"),
    "get trial newline id": Case(T, "GetTrial", lambda lv: pb.GetTrialRequest(trial_id="00\n"), INVALID, "trial_id"),
    "get trial unknown": Case(T, "GetTrial", lambda lv: pb.GetTrialRequest(trial_id="nosuch"), INVALID, "unknown trial id"),
    # --- uploads
    "upload name dotdot": Case(T, "UploadArtifact", lambda lv: _chunks(lv, name=".."), INVALID, "name"),
    "upload name climbs": Case(T, "UploadArtifact", lambda lv: _chunks(lv, name="x/../../token"), INVALID, "name"),
    "upload trial dotdot": Case(T, "UploadArtifact", lambda lv: _chunks(lv, trial_id=".."), INVALID, "trial_id"),
    "upload forged lease": Case(T, "UploadArtifact", lambda lv: _chunks(lv, lease_token=_FORGED), PRECONDITION, "not the current attempt"),
    "upload empty stream": Case(T, "UploadArtifact", lambda lv: [], INVALID, "empty upload"),
    "upload bad sha": Case(T, "UploadArtifact", lambda lv: _chunks(lv, sha256="nothex"), INVALID, "sha256"),
    "upload wrong sha": Case(T, "UploadArtifact", lambda lv: _chunks(lv, sha256="0" * 64), INVALID, "checksum mismatch"),
    "upload negative size": Case(T, "UploadArtifact", lambda lv: _chunks(lv, total_size=-1), INVALID, "total_size"),
    "upload second chunk elsewhere": Case(T, "UploadArtifact", lambda lv: _chunks(lv, pb.ArtifactChunk(name="other.bin", data=b"y")), INVALID, "one upload is one file"),
    # --- CreateTrial
    "wait nan": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9", wait_s=float("nan")), INVALID, "wait_s"),
    "wait negative": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9", wait_s=-1), INVALID, "wait_s"),
    "wait -1e308": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9", wait_s=-1e308), INVALID, "wait_s"),
    "wait inf": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9", wait_s=float("inf")), INVALID, "wait_s"),
    "wait 31 s": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9", wait_s=31), INVALID, "wait_s"),
    "worker id empty": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id=""), INVALID, "worker_id"),
    "worker id dotdot": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id=".."), INVALID, "worker_id"),
    "worker id space": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="w 0"), INVALID, "worker_id"),
    "worker id long": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="w" * 161), INVALID, "worker_id"),
    "worker id nul": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="w\x00"), INVALID, "worker_id"),
    # --- Report
    "report epoch -5": Case(T, "Report", lambda lv: _report(lv, epoch=-5), INVALID, "epoch"),
    "report epoch int32 max": Case(T, "Report", lambda lv: _report(lv, epoch=2**31 - 1), INVALID, "epoch"),
    "report nan metric": Case(T, "Report", lambda lv: _report(lv, metrics={"score": float("nan")}), INVALID, "finite"),
    "report inf metric": Case(T, "Report", lambda lv: _report(lv, metrics={"score": float("-inf")}), INVALID, "finite"),
    "report empty metric name": Case(T, "Report", lambda lv: _report(lv, metrics={"": 1.0}), INVALID, "metric names"),
    "report 257 metrics": Case(T, "Report", lambda lv: _report(lv, metrics={f"m{i}": 1.0 for i in range(257)}), INVALID, "at most 256"),
    "report no token": Case(T, "Report", lambda lv: _report(lv, lease_token=""), INVALID, "lease_token"),
    "report malformed token": Case(T, "Report", lambda lv: _report(lv, lease_token="a b"), INVALID, "lease_token"),
    "report forged token": Case(T, "Report", lambda lv: _report(lv, lease_token=_FORGED), PRECONDITION, "not the current attempt"),
    "report worker dotdot": Case(T, "Report", lambda lv: _report(lv, worker_id=".."), INVALID, "worker_id"),
    "report trial dotdot": Case(T, "Report", lambda lv: _report(lv, trial_id=".."), INVALID, "trial_id"),
    # --- EndTrial
    "end unspecified status": Case(T, "EndTrial", lambda lv: _end(lv, status=pb.TRIAL_STATUS_UNSPECIFIED), INVALID, "status"),
    "end unknown enum 99": Case(T, "EndTrial", lambda lv: _end(lv, status=99), INVALID, "got 99"),
    "end status pending": Case(T, "EndTrial", lambda lv: _end(lv, status=pb.PENDING), INVALID, "PENDING"),
    "end best_step -1": Case(T, "EndTrial", lambda lv: _end(lv, best_step=-1), INVALID, "best_step"),
    "end best_step int32 max": Case(T, "EndTrial", lambda lv: _end(lv, best_step=2**31 - 1), INVALID, "best_step"),
    "end nul in message": Case(T, "EndTrial", lambda lv: _end(lv, status=pb.INVALID, error_message="boom\x00"), INVALID, "error_message"),
    "end escape in traceback": Case(T, "EndTrial", lambda lv: _end(lv, status=pb.INVALID, traceback_tail="\x1b[31mred"), INVALID, "traceback_tail"),
    "end oversize message": Case(T, "EndTrial", lambda lv: _end(lv, status=pb.INVALID, error_message="x" * (64 * 1024 + 1)), INVALID, "byte cap"),
    "end deep state": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json='{"hyperparameters": ' + "[" * 5000 + "]" * 5000 + "}"), INVALID, "trial_state_json"),
    "end state not json": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json="{nope"), INVALID, "trial_state_json"),
    "end nan metric": Case(T, "EndTrial", lambda lv: _end(lv, metrics={"score": float("nan")}), INVALID, "finite"),
    "end forged token": Case(T, "EndTrial", lambda lv: _end(lv, lease_token=_FORGED), PRECONDITION, "not the current attempt"),
    "end unknown trial": Case(T, "EndTrial", lambda lv: _end(lv, trial_id="nosuch"), INVALID, "unknown trial id"),
    # --- EndTrial: hyperparameters Keras Tuner parses but its oracles cannot use
    "end value of the wrong type": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"x": "abc"})), INVALID, "values['x']: expected a number in [0.0, 1.0]"),
    "end value null": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"x": None})), INVALID, "values['x']"),
    "end value out of range": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"x": 1e308})), INVALID, "values['x']"),
    "end value not the assigned one": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"x": _other_x(lv)})), INVALID, "the oracle assigned"),
    "end new value a list": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"new": [1, 2]})), INVALID, "expected an int, float, str, bool or null"),
    "end escape in a value": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"new": "\x1b[2J"})), INVALID, "printable text"),
    "end escape in a name": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"\x1b]0;x\x07": 1})), INVALID, "hyperparameter name"),
    "end bidi override in a name": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, {"name\u202e": 1})), INVALID, "hyperparameter name"),
    "end space with a step 0": Case(T, "EndTrial", lambda lv: _end(lv, trial_state_json=_state(lv, space=[*lv.leased.trial_state["hyperparameters"]["space"], _hp("Int", **{**_INT, "step": 0})])), INVALID, "step of at least 1"),
    "end finished trial": Case(T, "EndTrial", lambda lv: _end(lv, trial_id=lv.done, lease_token=_FORGED), PRECONDITION, "already ended"),
    # --- reads and the space
    "best trials negative": Case(T, "GetBestTrials", lambda lv: pb.GetBestTrialsRequest(num_trials=-1), INVALID, "num_trials"),
    "best trials too many": Case(T, "GetBestTrials", lambda lv: pb.GetBestTrialsRequest(num_trials=10_001), INVALID, "num_trials"),
    "space deep": Case(T, "UpdateSpace", lambda lv: pb.SpaceMessage(hyperparameters_json="[" * 5000 + "]" * 5000), INVALID, "hyperparameters_json"),
    "space null": Case(T, "UpdateSpace", lambda lv: pb.SpaceMessage(hyperparameters_json="null"), INVALID, "hyperparameters_json"),
    "space oversize": Case(T, "UpdateSpace", lambda lv: pb.SpaceMessage(hyperparameters_json=" " * (1024 * 1024 + 1)), INVALID, "hyperparameters_json"),
    "space int step 0": Case(T, "UpdateSpace", lambda lv: _space(_hp("Int", **{**_INT, "step": 0})), INVALID, "step of at least 1"),
    "space int step negative": Case(T, "UpdateSpace", lambda lv: _space(_hp("Int", **{**_INT, "step": -2})), INVALID, "step"),
    "space int beyond 2**53": Case(T, "UpdateSpace", lambda lv: _space(_hp("Int", **{**_INT, "max_value": 10**18})), INVALID, "2**53"),
    "space float step 0": Case(T, "UpdateSpace", lambda lv: _space(_hp("Float", **{**_FLOAT, "step": 0.0})), INVALID, "step above 0"),
    "space float span overflows": Case(T, "UpdateSpace", lambda lv: _space(_hp("Float", **{**_FLOAT, "min_value": -1e308, "max_value": 1e308, "default": 0.0})), INVALID, "finite span"),
    "space unknown parent": Case(T, "UpdateSpace", lambda lv: _space(_hp("Int", **_INT) | {"config": {"name": "y", **_INT, "conditions": [{"class_name": "Parent", "config": {"name": "nosuch", "values": [1]}}]}}), INVALID, "parent 'nosuch'"),
    "space escape in a choice": Case(T, "UpdateSpace", lambda lv: _space(_hp("Choice", values=["relu", "\x1b[31mred"], ordered=False, default="relu")), INVALID, "printable text"),
    "space empty name": Case(T, "UpdateSpace", lambda lv: _space(_hp("Int", name="", **_INT)), INVALID, "hyperparameter name"),
    # --- uploads that would clash with what the trial keeps
    "upload onto a folder": Case(T, "UploadArtifact", lambda lv: _chunks(lv, name="dir"), INVALID, "is a folder"),
    "upload under a file": Case(T, "UploadArtifact", lambda lv: _chunks(lv, name="dir/a.bin/x"), INVALID, "is an artifact file"),
    "upload larger than declared": Case(T, "UploadArtifact", lambda lv: _chunks(lv, total_size=1, data=b"xyz"), INVALID, "total_size declared 1 bytes"),
    "upload smaller than declared": Case(T, "UploadArtifact", lambda lv: _chunks(lv, total_size=5, data=b"xyz"), INVALID, "only 3 bytes"),
    # --- control
    "scale -5": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=-5), INVALID, "0..1024"),
    "scale past max_workers": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=1025), INVALID, "fleet.max_workers"),
    "scale int32 max": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=2**31 - 1), INVALID, "fleet.max_workers"),
    "scale bad node name": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=-1, node_workers={"bad node!": 1}), INVALID, "node name"),
    "scale node negative": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=-1, node_workers={"local": -1}), INVALID, "--node local=-1"),
    "scale no target": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=-1), INVALID, "exactly one"),
    "scale two targets": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=2, node_workers={"local": 1}), INVALID, "exactly one"),
    "status wrong token": Case(C, "Status", lambda lv: pb.StatusRequest(), CODE.UNAUTHENTICATED, "token", "wrong"),
    # --- unauthenticated
    "create no token": Case(T, "CreateTrial", lambda lv: pb.CreateTrialRequest(worker_id="real-w9"), CODE.UNAUTHENTICATED, "token", "none"),
    "end wrong token": Case(T, "EndTrial", _end, CODE.UNAUTHENTICATED, "token", "wrong"),
    "download token no token": Case(T, "DownloadArtifact", lambda lv: pb.DownloadArtifactRequest(trial_id="..", name="token"), CODE.UNAUTHENTICATED, "token", "none"),
    "upload wrong token": Case(T, "UploadArtifact", _chunks, CODE.UNAUTHENTICATED, "token", "wrong"),
    "scale wrong token": Case(C, "Scale", lambda lv: pb.ScaleRequest(total_workers=0), CODE.UNAUTHENTICATED, "token", "wrong"),
    "cancel no token": Case(C, "Cancel", lambda lv: pb.CancelRequest(now=True), CODE.UNAUTHENTICATED, "token", "none"),
}  # fmt: skip


def _call(live: Live, case: Case) -> Any:
    stub: Any = (
        pb_grpc.TrialServiceStub(live.channel)
        if case.service == T
        else pb_grpc.ControlServiceStub(live.channel)
    )
    metadata = {
        "token": bearer(live.token),
        "none": (),
        "wrong": bearer("not-the-token"),
    }[case.metadata]
    request = case.build(live)
    if case.method == "UploadArtifact":
        return stub.UploadArtifact(iter(request), metadata=metadata, timeout=30)
    if case.method == "DownloadArtifact":
        return list(stub.DownloadArtifact(request, metadata=metadata, timeout=30))
    return getattr(stub, case.method)(request, metadata=metadata, timeout=30)


def observed(live: Live) -> tuple[Any, ...]:
    """What a refusal must not change: ledger rows, `ktc status --json` (minus
    times), the book, the leases and the trial directories on disk."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--json", str(live.search_dir)]) == 0
    status = _without_times(json.loads(out.getvalue()))
    files = sorted(
        str(p.relative_to(live.search_dir))
        for p in (live.search_dir / "trials").rglob("*")
        if p.is_file()
    )
    leases = sorted((lease.trial_id, lease.token) for lease in live.chief.broker.leases.all())
    return ledger_rows(live.search_dir / "ledger.db"), status, files, leases


def _without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _without_times(v)
            for k, v in value.items()
            if not any(t in k for t in ("_at", "elapsed", "age", "_s", "seen", "eta"))
        }
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


@pytest.mark.parametrize("name", CORPUS)
def test_a_hostile_rpc_gets_its_code_and_changes_nothing(live: Live, name: str) -> None:
    case = CORPUS[name]
    before = observed(live)
    audit = live.search_dir / "audit.jsonl"
    audit_lines = len(audit.read_text().splitlines())
    with pytest.raises(grpc.RpcError) as info:
        _call(live, case)
    error: Any = info.value
    assert (error.code(), case.details in (error.details() or "")) == (case.code, True), (
        error.code(),
        error.details(),
    )
    assert observed(live) == before
    if case.metadata == "token":  # the interceptor's refusals are audited by its hook
        lines = audit.read_text().splitlines()
        assert len(lines) == audit_lines + 1
        entry = json.loads(lines[-1])
        assert (entry["method"], entry["code"]) == (case.method, case.code.name)
        assert entry["peer"] and entry["reason"]
    assert live.token not in audit.read_text()


def test_the_corpus_is_large_and_covers_every_rpc() -> None:
    assert len(CORPUS) >= 40
    methods = {(c.service, c.method) for c in CORPUS.values()}
    for service in (pb.DESCRIPTOR.services_by_name[T], pb.DESCRIPTOR.services_by_name[C]):
        for method in service.methods:
            if method.name in ("GetSpace", "GetSearchState"):
                continue  # no fields to get wrong; fuzzed with raw bytes
            assert (service.name, method.name) in methods, method.name


def test_the_real_worker_still_ends_its_trial_after_the_corpus(live: Live) -> None:
    with TrialClient(live.address, live.token, worker_id="real-w0") as client:
        client.report(live.leased, 1, {"score": 0.7})
        client.end_trial(live.leased, "COMPLETED", metrics={"score": 0.7})
        assert client.download_artifact(live.done, "ckpt/model.bin", live.search_dir.parent / "d")
    assert (live.search_dir.parent / "d").read_bytes() == b"weights" * 100


def test_files_are_private(live: Live) -> None:
    for path in [live.search_dir / "audit.jsonl", *(live.search_dir / "trials").rglob("*")]:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))
