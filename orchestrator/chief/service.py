"""The gRPC servicers: protocol messages in, broker calls, protocol messages out.

This layer validates every request before the broker sees it (unknown ids,
NaN or inf metrics, bad names, oversized fields, disallowed statuses). Every
exception a handler raises is answered with the status code that the one table
in :mod:`orchestrator.protocol.error_codes` gives its type (InvalidRequestError
and ConfigError -> INVALID_ARGUMENT, StaleLeaseError -> FAILED_PRECONDITION,
...); an exception that is not a KtClusterError is a bug: INTERNAL, logged
with its traceback.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Mapping
from functools import wraps
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from orchestrator.chief.artifacts import ArtifactStore, check_artifact_name, check_trial_id
from orchestrator.chief.broker import TrialBroker
from orchestrator.errors import (
    InvalidRequestError,
    KtClusterError,
    NotFoundError,
    UnimplementedError,
)
from orchestrator.protocol.answers import Assignment, AssignmentKind
from orchestrator.protocol.error_codes import abort_with_error
from orchestrator.protocol.kt_state import canonical_hyperparameters, canonical_json
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus, TrialView

log = logging.getLogger(__name__)

MAX_ID_CHARS = 200
MAX_TEXT_BYTES = 64 * 1024
MAX_STATE_JSON_BYTES = 1024 * 1024
MAX_EPOCH = 1_000_000
MAX_METRICS = 256

_END_STATUSES = {
    pb.COMPLETED: AttemptStatus.COMPLETED,
    pb.INVALID: AttemptStatus.INVALID,
    pb.FAILED: AttemptStatus.FAILED,
    pb.STOPPED: AttemptStatus.STOPPED,
}
_TRIAL_STATUS_PB = {
    TrialStatus.PENDING: pb.PENDING,
    TrialStatus.RUNNING: pb.RUNNING,
    TrialStatus.COMPLETED: pb.COMPLETED,
    TrialStatus.FAILED: pb.FAILED,
}
_SEARCH_STATE_PB = {
    SearchState.RUNNING: pb.SEARCH_RUNNING,
    SearchState.COMPLETED: pb.SEARCH_COMPLETED,
    SearchState.FAILED: pb.SEARCH_FAILED,
    SearchState.CANCELLED: pb.SEARCH_CANCELLED,
    SearchState.INTERRUPTED: pb.SEARCH_INTERRUPTED,
}

F = TypeVar("F", bound=Callable[..., Any])


class _Unimplemented(UnimplementedError):
    """The chief has no handler for a control RPC (UNIMPLEMENTED)."""


def _answer_error(context: grpc.ServicerContext, exc: Exception, method: str) -> NoReturn:
    """Answer ``exc`` with its status from the error table; log the unexpected."""
    if not isinstance(exc, KtClusterError):
        log.exception("%s failed", method)
    abort_with_error(context, exc, method=method)


def _rpc(func: F) -> F:
    """Answer the handler's exceptions with their codes from the error table.
    Handlers raise; they never call ``context.abort`` themselves."""

    @wraps(func)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return func(self, request, context)
        except Exception as exc:
            _answer_error(context, exc, func.__name__)

    return wrapper  # type: ignore[return-value]


def _check_id(field: str, value: str, *, required: bool = True) -> None:
    if not value:
        if required:
            raise InvalidRequestError(f"{field} is required")
        return
    if len(value) > MAX_ID_CHARS or not value.isprintable():
        raise InvalidRequestError(
            f"{field}: expected a printable id of at most {MAX_ID_CHARS} characters"
        )


def _check_text(field: str, value: str, limit: int = MAX_TEXT_BYTES) -> None:
    size = len(value.encode())
    if size > limit:
        raise InvalidRequestError(
            f"{field}: {size} bytes is over the {limit}-byte cap; truncate it"
        )


def check_metrics(metrics: Mapping[str, float], *, max_metrics: int = MAX_METRICS) -> None:
    """Reject metric maps a well-behaved worker never sends (INVALID_ARGUMENT)."""
    if len(metrics) > max_metrics:
        raise InvalidRequestError(
            f"metrics: at most {max_metrics} entries are accepted, got {len(metrics)}"
        )
    for name, value in metrics.items():
        if not isinstance(name, str) or not name or len(name) > 200 or not name.isprintable():
            raise InvalidRequestError(
                f"metrics: metric names must be printable strings of 1-200 characters, got {name!r}"
            )
        if not isinstance(value, float | int) or not math.isfinite(value):
            raise InvalidRequestError(
                f"metrics[{name!r}]: expected a finite number, got {value!r}; "
                "drop NaN/inf metrics and end the attempt as INVALID instead"
            )


def _parse_json(field: str, text: str, what: str) -> object:
    try:
        return json.loads(text)
    except RecursionError as exc:
        raise InvalidRequestError(f"{field}: nested too deeply; expected {what}") from exc
    except ValueError as exc:
        raise InvalidRequestError(f"{field}: not JSON ({exc}); expected {what}") from exc


def parse_trial_hyperparameters(text: str) -> dict[str, object] | None:
    """EndTrial's ``trial_state_json``: Keras Tuner's ``Trial.get_state()`` (at least
    its ``hyperparameters``), parsed by Keras Tuner and returned canonical; None if empty."""
    if not text:
        return None
    what = "Keras Tuner's Trial.get_state() as JSON with a 'hyperparameters' object"
    state = _parse_json("trial_state_json", text, what)
    if not isinstance(state, dict) or "hyperparameters" not in state:
        raise InvalidRequestError(
            f"trial_state_json: expected {what}, got "
            + (f"keys {sorted(state)[:10]}" if isinstance(state, dict) else type(state).__name__)
        )
    return canonical_hyperparameters(
        state["hyperparameters"], where="trial_state_json.hyperparameters"
    )


def trial_info(view: TrialView) -> pb.TrialInfo:
    """A TrialView as the protocol's TrialInfo."""
    info = pb.TrialInfo(
        trial_id=view.trial_id,
        trial_state_json=json.dumps(view.trial_state),
        status=_TRIAL_STATUS_PB[view.status],
        attempts=view.attempts,
        worker_id=view.worker_id or "",
        duration_s=view.duration_s or 0.0,
        error_message=view.error_message or "",
        current_epoch=view.current_epoch if view.current_epoch is not None else -1,
    )
    if view.score is not None:
        info.score = view.score
        info.has_score = True
    return info


class TrialServicer(pb_grpc.TrialServiceServicer):
    """The worker-facing RPCs."""

    def __init__(self, broker: TrialBroker, artifacts: ArtifactStore) -> None:
        self.broker = broker
        self.artifacts = artifacts

    @_rpc
    def CreateTrial(
        self, request: pb.CreateTrialRequest, context: grpc.ServicerContext
    ) -> pb.CreateTrialResponse:
        _check_id("worker_id", request.worker_id)
        wait_s = request.wait_s if request.wait_s > 0 else None
        answer: Assignment = self.broker.create_trial(request.worker_id, wait_s)
        if answer.kind is AssignmentKind.TRIAL:
            return pb.CreateTrialResponse(
                kind=pb.CreateTrialResponse.TRIAL,
                trial=pb.Trial(
                    trial_id=answer.trial_id or "",
                    trial_state_json=json.dumps(answer.trial_state),
                    values_json=json.dumps(answer.values),
                    attempt=answer.attempt,
                    lease_token=answer.token,
                    lease_timeout_s=answer.lease_timeout_s,
                ),
            )
        kind = (
            pb.CreateTrialResponse.STOP
            if answer.kind is AssignmentKind.STOP
            else pb.CreateTrialResponse.WAIT
        )
        return pb.CreateTrialResponse(kind=kind, reason=answer.reason)

    @_rpc
    def Report(self, request: pb.ReportRequest, context: grpc.ServicerContext) -> pb.ReportResponse:
        _check_id("trial_id", request.trial_id)
        _check_id("lease_token", request.lease_token)
        _check_id("worker_id", request.worker_id, required=False)
        if not -1 <= request.epoch <= MAX_EPOCH:
            raise InvalidRequestError(
                f"epoch: expected -1 (a heartbeat) or 0..{MAX_EPOCH}, got {request.epoch}"
            )
        check_metrics(request.metrics)
        decision = self.broker.report(
            request.trial_id,
            request.lease_token,
            epoch=request.epoch,
            metrics=dict(request.metrics),
            worker_id=request.worker_id,
        )
        return pb.ReportResponse(
            action=pb.ReportResponse.STOP if decision.stop else pb.ReportResponse.CONTINUE,
            reason=decision.reason,
            lease_expires_in_s=decision.lease_expires_in_s,
        )

    @_rpc
    def EndTrial(
        self, request: pb.EndTrialRequest, context: grpc.ServicerContext
    ) -> pb.EndTrialResponse:
        _check_id("trial_id", request.trial_id)
        _check_id("lease_token", request.lease_token)
        _check_id("worker_id", request.worker_id, required=False)
        status = _END_STATUSES.get(request.status)
        if status is None:
            raise InvalidRequestError(
                f"status: expected COMPLETED, INVALID, FAILED or STOPPED, got "
                f"{pb.TrialStatus.Name(request.status) if request.status in pb.TrialStatus.values() else request.status}"
            )
        check_metrics(request.metrics)
        _check_text("error_message", request.error_message)
        _check_text("traceback_tail", request.traceback_tail)
        _check_text("trial_state_json", request.trial_state_json, MAX_STATE_JSON_BYTES)
        if not 0 <= request.best_step <= MAX_EPOCH:
            raise InvalidRequestError(
                f"best_step: expected 0..{MAX_EPOCH}, got {request.best_step}"
            )
        # Parsed by Keras Tuner before anything is committed: a state it cannot
        # read is refused here, not found by replay later.
        hp_config = parse_trial_hyperparameters(request.trial_state_json)
        outcome = self.broker.end_trial(
            request.trial_id,
            request.lease_token,
            status=status,
            metrics=dict(request.metrics),
            best_step=request.best_step,
            error_message=request.error_message,
            traceback_tail=request.traceback_tail,
            hyperparameters_config=hp_config,
            worker_id=request.worker_id,
        )
        return pb.EndTrialResponse(
            recorded=outcome.recorded, final_status=_TRIAL_STATUS_PB[outcome.final_status]
        )

    @_rpc
    def GetTrial(self, request: pb.GetTrialRequest, context: grpc.ServicerContext) -> pb.TrialInfo:
        _check_id("trial_id", request.trial_id)
        return trial_info(self.broker.get_trial(request.trial_id))

    @_rpc
    def GetBestTrials(
        self, request: pb.GetBestTrialsRequest, context: grpc.ServicerContext
    ) -> pb.TrialList:
        if request.num_trials < 0 or request.num_trials > 10_000:
            raise InvalidRequestError(f"num_trials: expected 0..10000, got {request.num_trials}")
        return pb.TrialList(
            trials=[trial_info(t) for t in self.broker.best_trials(request.num_trials)]
        )

    @_rpc
    def GetSpace(
        self, request: pb.GetSpaceRequest, context: grpc.ServicerContext
    ) -> pb.SpaceMessage:
        return pb.SpaceMessage(hyperparameters_json=canonical_json(self.broker.space_config()))

    @_rpc
    def UpdateSpace(
        self, request: pb.SpaceMessage, context: grpc.ServicerContext
    ) -> pb.UpdateSpaceResponse:
        _check_text("hyperparameters_json", request.hyperparameters_json, MAX_STATE_JSON_BYTES)
        what = "keras_tuner HyperParameters.get_config() as JSON"
        config = canonical_hyperparameters(
            _parse_json("hyperparameters_json", request.hyperparameters_json, what),
            where="hyperparameters_json",
        )
        self.broker.update_space(config)
        return pb.UpdateSpaceResponse()

    @_rpc
    def GetSearchState(
        self, request: pb.GetSearchStateRequest, context: grpc.ServicerContext
    ) -> pb.SearchStateResponse:
        summary = self.broker.summary()
        return pb.SearchStateResponse(
            state=_SEARCH_STATE_PB[summary.state],
            message=summary.message,
            trials_by_status=summary.trials_by_status,
            max_trials=summary.max_trials or 0,
            objective=summary.objective,
            direction=summary.direction,
        )

    def UploadArtifact(
        self, request_iterator: Iterator[pb.ArtifactChunk], context: grpc.ServicerContext
    ) -> pb.UploadArtifactResponse:
        try:
            first = next(request_iterator, None)
            if first is None:
                raise InvalidRequestError("empty upload; send at least one chunk")
            check_trial_id(first.trial_id)
            check_artifact_name(first.name)
            self.broker.check_lease(first.trial_id, first.lease_token)
            last_sha = [""]

            def chunks() -> Iterator[bytes]:
                yield first.data
                last_sha[0] = first.sha256
                for chunk in request_iterator:
                    last_sha[0] = chunk.sha256 or last_sha[0]
                    yield chunk.data

            size, sha = self.artifacts.write(first.trial_id, first.name, chunks())
            if last_sha[0] and last_sha[0] != sha:
                raise InvalidRequestError(
                    f"artifact {first.name!r}: checksum mismatch (sent {last_sha[0]}, got {sha}); upload again"
                )
        except Exception as exc:
            _answer_error(context, exc, "UploadArtifact")
        return pb.UploadArtifactResponse(size=size, sha256=sha)

    def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ArtifactChunk]:
        try:
            check_trial_id(request.trial_id)
            check_artifact_name(request.name)
            path = self.artifacts.path(request.trial_id, request.name)
            if not path.is_file():
                raise NotFoundError(f"trial {request.trial_id} has no artifact {request.name!r}")
            total = path.stat().st_size
            first = True
            for chunk in self.artifacts.read(request.trial_id, request.name):
                yield pb.ArtifactChunk(
                    trial_id=request.trial_id if first else "",
                    name=request.name if first else "",
                    data=chunk,
                    total_size=total if first else 0,
                )
                first = False
        except Exception as exc:
            _answer_error(context, exc, "DownloadArtifact")
        if first:  # empty file
            yield pb.ArtifactChunk(
                trial_id=request.trial_id, name=request.name, data=b"", total_size=0
            )

    @_rpc
    def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.ListArtifactsResponse:
        check_trial_id(request.trial_id)
        return pb.ListArtifactsResponse(names=self.artifacts.list(request.trial_id))


class ControlHandler(Protocol):
    """What the chief plugs into the control RPCs (status, scale, cancel)."""

    def status_document(self) -> dict[str, Any]: ...

    def scale(self, request: pb.ScaleRequest) -> str: ...

    def cancel(self, now: bool) -> str: ...


class ControlServicer(pb_grpc.ControlServiceServicer):
    """The CLI-facing RPCs. UNIMPLEMENTED until a handler is attached."""

    def __init__(self) -> None:
        self.handler: ControlHandler | None = None

    def _require(self, context: grpc.ServicerContext) -> ControlHandler:
        if self.handler is None:
            raise _Unimplemented(
                "this chief runs without a fleet (no control handler); status, scale and "
                "cancel need a search started by `ktc submit` or `ktc resume`"
            )
        return self.handler

    @_rpc
    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return pb.StatusResponse(status_json=json.dumps(self._require(context).status_document()))

    @_rpc
    def Scale(self, request: pb.ScaleRequest, context: grpc.ServicerContext) -> pb.ScaleResponse:
        _check_text("cluster_yaml", request.cluster_yaml, MAX_STATE_JSON_BYTES)
        return pb.ScaleResponse(summary=self._require(context).scale(request))

    @_rpc
    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        return pb.CancelResponse(summary=self._require(context).cancel(request.now))
