"""The error table over real gRPC: a chief on a free 127.0.0.1 port answers each
exception with its code and type name, and TrialClient rebuilds the exact type
with the chief's message (no Ray; the control handler is a test double that
raises what the fleet raises)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.config import parse_cluster
from orchestrator.errors import (
    AuthenticationError,
    ChiefInternalError,
    ConfigError,
    FleetError,
    InvalidRequestError,
    KtClusterError,
    NotFoundError,
    StaleLeaseError,
    UnimplementedError,
)
from orchestrator.protocol.auth import bearer
from orchestrator.protocol.client import TrialClient
from orchestrator.protocol.error_codes import ERROR_TYPE_KEY
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from tests.helpers import float_space, make_search


class RaisingControl:
    """A control handler whose scale raises what it is told to; an ``--apply``
    text goes through the real cluster parser, as the session's does."""

    def __init__(self) -> None:
        self.error: BaseException | None = None

    def status_document(self) -> dict[str, Any]:
        return {"state": "running"}

    def scale(self, request: pb.ScaleRequest) -> str:
        if request.cluster_yaml:
            parse_cluster(request.cluster_yaml, source=request.cluster_yaml_path or "<scale>")
        if self.error is not None:
            raise self.error
        return "scaled"

    def cancel(self, now: bool) -> str:
        return "cancelled"


@pytest.fixture
def live(start_chief: Any) -> tuple[Any, RaisingControl]:
    """(endpoint, control handler) of a started chief."""
    chief, endpoint = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    control = RaisingControl()
    chief.control.handler = control
    return endpoint, control


@pytest.fixture
def client(live: tuple[Any, RaisingControl]) -> Iterator[TrialClient]:
    endpoint, _ = live
    with TrialClient(endpoint.address, endpoint.token, worker_id="w0") as client:
        yield client


@pytest.mark.parametrize(
    "raised",
    [
        ConfigError("--node nosuch=1: no node named 'nosuch'"),
        InvalidRequestError("cluster_yaml: too big"),
        FleetError("the fleet is not running"),
        KtClusterError("the search is ending; scaling is refused"),
        StaleLeaseError("lease revoked"),
    ],
    ids=lambda raised: type(raised).__name__,
)
def test_control_errors_come_back_as_themselves(
    live: tuple[Any, RaisingControl], client: TrialClient, raised: KtClusterError
) -> None:
    live[1].error = raised
    with pytest.raises(type(raised), match=f"^{re.escape(str(raised))}$") as caught:
        client.scale(total_workers=1)
    assert type(caught.value) is type(raised)


def test_malformed_cluster_yaml_in_scale_is_config_error(client: TrialClient) -> None:
    with pytest.raises(ConfigError, match=r"^edited\.yaml:3: nodes: expected a list"):
        client.scale(
            cluster_yaml="kind: cluster\nname: x\nnodes: 5\n", cluster_yaml_path="edited.yaml"
        )


def test_code_and_type_name_on_the_wire(live: tuple[Any, RaisingControl]) -> None:
    endpoint, control = live
    control.error = ConfigError("--node nosuch=1: no node named 'nosuch'")
    with grpc.insecure_channel(endpoint.address) as channel:
        stub = pb_grpc.ControlServiceStub(channel)
        with pytest.raises(grpc.RpcError, match="no node named") as err:
            stub.Scale(
                pb.ScaleRequest(total_workers=1), metadata=bearer(endpoint.token), timeout=10
            )
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (ERROR_TYPE_KEY, "ConfigError") in tuple(err.value.trailing_metadata())


def test_unexpected_chief_error_is_internal_with_its_real_cause(
    live: tuple[Any, RaisingControl], client: TrialClient
) -> None:
    live[1].error = ZeroDivisionError("division by zero")
    with pytest.raises(
        ChiefInternalError, match=r"^Scale failed on the chief: ZeroDivisionError: division"
    ):
        client.scale(total_workers=1)


def test_worker_rpc_errors(client: TrialClient, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="^unknown trial id '999'"):
        client.get_trial("999")
    with pytest.raises(InvalidRequestError, match="^num_trials: expected 0..10000"):
        client.get_best_trials(-1)
    trial = client.create_trial(wait_s=1.0).trial
    assert trial is not None
    with pytest.raises(NotFoundError, match=rf"^trial {trial.trial_id} has no artifact 'x'"):
        client.download_artifact(trial.trial_id, "x", tmp_path / "x")
    assert client.end_trial(trial, "COMPLETED", metrics={"score": 0.5})
    with pytest.raises(StaleLeaseError, match="already ended as COMPLETED"):
        client.report(trial, 1, {"score": 0.5})


def test_without_handler_and_with_a_wrong_token(start_chief: Any) -> None:
    _, endpoint = start_chief(make_search(), initial_space=float_space(), long_poll_s=0.2)
    with (
        TrialClient(endpoint.address, endpoint.token) as client,
        pytest.raises(UnimplementedError, match="^this chief runs without a fleet"),
    ):
        client.cancel()
    # The token interceptor answers before any handler: a bare code, the client's message.
    with (
        TrialClient(endpoint.address, "wrong") as client,
        pytest.raises(AuthenticationError, match=r"^Status: the chief at .* refused the token"),
    ):
        client.status()
