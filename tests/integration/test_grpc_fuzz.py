"""Fuzz the chief's gRPC surface (issue 12): hypothesis-generated messages
with random values in every field of every RPC, and raw undecodable bytes,
against one live chief.

Checked for every call: never INTERNAL; a refusal changes nothing in the
ledger; the chief stays alive. At the end a real instant-trial worker runs
the search to COMPLETED. The budget is the ``ci`` hypothesis profile
(tests/conftest.py); ``KTC_HYPOTHESIS_PROFILE=long`` runs a longer search.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from orchestrator.chief.chief import Chief
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import AssignmentKind, TrialClient
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import float_space, ledger_rows, make_search

MAX_TRIALS = 6


@dataclass
class Live:
    chief: Chief
    search_dir: Path
    address: str
    token: str
    channel: grpc.Channel
    trial_id: str  # a real trial, so generated ids sometimes hit one


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    search_dir = tmp_path_factory.mktemp("fuzz") / "search"
    # Short leases and generous retries: a generated CreateTrial that is
    # well formed gets a real trial, whose lease then expires.
    search = make_search(
        {"type": "random", "max_trials": MAX_TRIALS, "seed": 1},
        failure={
            "lease_timeout_s": 1.0,
            "retries_per_trial": 1000,
            "max_consecutive_failed_trials": 1000,
        },
    )
    chief = Chief.create(search, search_dir, initial_space=float_space(), long_poll_s=0)
    endpoint = chief.start()
    with TrialClient(endpoint.address, endpoint.token, worker_id="local-w0") as client:
        first = client.create_trial(wait_s=0).trial
        assert first is not None
        client.end_trial(first, "INVALID", error_message="requeued for the fuzz")
    channel = grpc.insecure_channel(endpoint.address)
    yield Live(chief, search_dir, endpoint.address, endpoint.token, channel, first.trial_id)
    channel.close()
    with contextlib.suppress(Exception):
        chief.cancel(now=True)
    chief.close(grace_s=0.2)


# ------------------------------------------------------------- strategies

ints32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([-1, 0, 1, 10**6]))
ints64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-1, 0, 1]))
doubles = st.floats(allow_nan=True, allow_infinity=True)
texts = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "..", "../token", "00", "local-w0", "/etc/passwd", "a" * 300]),
)
ids = st.one_of(texts, st.just("00"), st.just("01"))
metrics = st.dictionaries(texts, doubles, max_size=5)
enums = st.one_of(st.sampled_from(list(pb.TrialStatus.values())), st.integers(-5, 2**31 - 1))
json_texts = st.one_of(
    texts,
    st.sampled_from(["null", "{}", '{"hyperparameters": {}}', "[" * 3000 + "]" * 3000]),
)

REQUESTS: dict[str, st.SearchStrategy[Any]] = {
    "CreateTrial": st.builds(pb.CreateTrialRequest, worker_id=texts, wait_s=doubles),
    "Report": st.builds(
        pb.ReportRequest,
        trial_id=ids,
        lease_token=texts,
        epoch=ints32,
        metrics=metrics,
        worker_id=texts,
    ),
    "EndTrial": st.builds(
        pb.EndTrialRequest,
        trial_id=ids,
        lease_token=texts,
        status=enums,
        metrics=metrics,
        best_step=ints32,
        error_message=texts,
        traceback_tail=texts,
        trial_state_json=json_texts,
        worker_id=texts,
    ),
    "GetTrial": st.builds(pb.GetTrialRequest, trial_id=ids),
    "GetBestTrials": st.builds(pb.GetBestTrialsRequest, num_trials=ints32),
    "GetSpace": st.just(pb.GetSpaceRequest()),
    "UpdateSpace": st.builds(pb.SpaceMessage, hyperparameters_json=json_texts),
    "GetSearchState": st.just(pb.GetSearchStateRequest()),
    "DownloadArtifact": st.builds(pb.DownloadArtifactRequest, trial_id=ids, name=texts),
    "ListArtifacts": st.builds(pb.ListArtifactsRequest, trial_id=ids),
    "UploadArtifact": st.lists(
        st.builds(
            pb.ArtifactChunk,
            trial_id=ids,
            lease_token=texts,
            name=texts,
            data=st.binary(max_size=64),
            total_size=ints64,
            sha256=texts,
        ),
        max_size=3,
    ),
    "Status": st.just(pb.StatusRequest()),
    "Scale": st.builds(
        pb.ScaleRequest,
        total_workers=ints32,
        node_workers=st.dictionaries(texts, ints32, max_size=3),
        cluster_yaml=texts,
        cluster_yaml_path=texts,
        now=st.booleans(),
    ),
    "Cancel": st.builds(pb.CancelRequest, now=st.booleans()),
}
CONTROL = {"Status", "Scale", "Cancel"}


def _call(live: Live, method: str, request: Any) -> grpc.StatusCode:
    """The status code of one call (OK when it succeeded)."""
    channel = live.channel
    stub: Any = (
        pb_grpc.ControlServiceStub(channel)
        if method in CONTROL
        else pb_grpc.TrialServiceStub(channel)
    )
    kwargs = {"metadata": bearer(live.token), "timeout": 60}
    try:
        if method == "UploadArtifact":
            stub.UploadArtifact(iter(request), **kwargs)
        elif method == "DownloadArtifact":
            list(stub.DownloadArtifact(request, **kwargs))
        elif method == "CreateTrial":
            # Keep the long-poll short: a valid generated call may park.
            if request.wait_s > 0.2:
                request.wait_s = 0.2
            stub.CreateTrial(request, **kwargs)
        else:
            getattr(stub, method)(request, **kwargs)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        return code
    return grpc.StatusCode.OK


def _check(live: Live, method: str, call: Any) -> None:
    before = ledger_rows(live.search_dir / "ledger.db")
    code = call()
    assert code is not grpc.StatusCode.INTERNAL, method
    assert code is not grpc.StatusCode.UNKNOWN, method
    if code is not grpc.StatusCode.OK:
        # Only a lease expiring in the background may have moved the ledger.
        after = ledger_rows(live.search_dir / "ledger.db")
        assert all(kind == "requeued" for _, kind, _, _ in after[len(before) :]), after
        assert after[: len(before)] == before


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_generated_requests_never_get_internal(live: Live, method: str) -> None:
    @given(request=REQUESTS[method])
    def run(request: Any) -> None:
        _check(live, method, lambda: _call(live, method, request))

    run()


@pytest.mark.parametrize("method", sorted(REQUESTS))
def test_undecodable_bytes_are_invalid_argument(live: Live, method: str) -> None:
    service = "ControlService" if method in CONTROL else "TrialService"
    path = f"/ktcluster.v1.{service}/{method}"

    @given(data=st.binary(min_size=1, max_size=64))
    @example(data=b"\x0a\xff")  # field 1, a length past the end: never decodes
    def run(data: bytes) -> None:
        def call() -> grpc.StatusCode:
            kwargs = {"metadata": bearer(live.token), "timeout": 30}
            try:
                if method == "UploadArtifact":
                    live.channel.stream_unary(path)(iter([data]), **kwargs)
                elif method == "DownloadArtifact":
                    list(live.channel.unary_stream(path)(data, **kwargs))
                else:
                    live.channel.unary_unary(path)(data, **kwargs)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
                return code
            return grpc.StatusCode.OK

        _check(live, method, call)
        if data == b"\x0a\xff":
            assert call() is grpc.StatusCode.INVALID_ARGUMENT

    run()


def test_the_search_still_completes_after_the_fuzz(live: Live) -> None:
    """Runs last in this module: a real worker ends every trial at once."""
    assert live.chief.broker.book.state is SearchState.RUNNING
    with TrialClient(live.address, live.token, worker_id="local-w1") as client:
        while (answer := client.create_trial(wait_s=2)).kind is not AssignmentKind.STOP:
            if answer.trial is not None:
                x = float(answer.trial.values.get("x", 0.5))
                client.end_trial(answer.trial, "COMPLETED", metrics={"score": x})
    assert live.chief.wait(30) is SearchState.COMPLETED
    finished = [v for v in live.chief.broker.trials() if v.status is TrialStatus.COMPLETED]
    assert len(finished) == MAX_TRIALS
