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
import time
from collections.abc import Callable, Iterator
from functools import wraps
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from orchestrator.chief.artifacts import ArtifactStore
from orchestrator.chief.audit import AuditLog
from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.limits import PeerSlots, ProtocolLimits, UploadThrottle
from orchestrator.chief.request_checks import (
    MAX_EPOCH,
    MAX_NUM_TRIALS,
    MAX_STATE_JSON_BYTES,
    check_lease_token,
    check_metrics,
    check_optional_worker_id,
    check_range,
    check_scale,
    check_text,
    check_wait_s,
    end_status_name,
    parse_json,
    parse_trial_hyperparameters,
)
from orchestrator.config.limits import DEFAULT_MAX_WORKERS
from orchestrator.errors import (
    InvalidRequestError,
    KtClusterError,
    LimitExceededError,
    UnimplementedError,
)
from orchestrator.protocol.answers import Assignment, AssignmentKind
from orchestrator.protocol.auth import caller_worker_id
from orchestrator.protocol.error_codes import abort_with_error, wire_error
from orchestrator.protocol.kt_state import canonical_hyperparameters, canonical_json
from orchestrator.protocol.names import check_artifact_name, check_trial_id, check_worker_id
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.protocol.trials import AttemptStatus, SearchState, TrialStatus, TrialView

log = logging.getLogger(__name__)

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


class Undecodable:
    """A request whose bytes did not decode as its message. gRPC would answer
    INTERNAL ("Exception deserializing request"); the servicers answer
    INVALID_ARGUMENT instead (and audit it). ``worker_id`` is empty, as an
    unset field, for code that reads it before the handler."""

    def __init__(self, error: str) -> None:
        self.error = error
        self.worker_id = ""

    def refuse(self) -> NoReturn:
        raise InvalidRequestError(
            f"the request's bytes are not a valid protocol message ({self.error}); "
            "send the message ktcluster.proto defines for this RPC"
        )


def _lenient(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:  # protobuf's DecodeError, or anything else on bad bytes
            return Undecodable(f"{type(exc).__name__}: {exc}")

    return parse


class _HandlerCapture:
    """Stands in for a grpc.Server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the registered handlers below carry the same methods

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers[service] = handlers


def add_servicers_to_server(
    server: grpc.Server, trials: TrialServicer, control: ControlServicer
) -> None:
    """Register both services on ``server``, with request deserializers that
    never raise: undecodable bytes reach the handler as :class:`Undecodable`
    and are answered INVALID_ARGUMENT, not INTERNAL."""
    capture = _HandlerCapture()
    pb_grpc.add_TrialServiceServicer_to_server(trials, capture)
    pb_grpc.add_ControlServiceServicer_to_server(control, capture)
    for service, handlers in capture.handlers.items():
        lenient = {
            name: handler._replace(request_deserializer=_lenient(handler.request_deserializer))
            for name, handler in handlers.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, lenient),))


class _Unimplemented(UnimplementedError):
    """The chief has no handler for a control RPC (UNIMPLEMENTED)."""


def _answer_error(
    context: grpc.ServicerContext,
    exc: Exception,
    method: str,
    *,
    audit: AuditLog | None = None,
    worker_id: str = "",
) -> NoReturn:
    """Answer ``exc`` with its status from the error table; log the unexpected;
    record the refusal in the audit log."""
    if not isinstance(exc, KtClusterError):
        log.exception("%s failed", method)
    if audit is not None:
        wire = wire_error(exc, method=method)
        audit.record(method, context.peer() or "", worker_id, wire.details, code=wire.code.name)
    abort_with_error(context, exc, method=method)


def _rpc(func: F) -> F:
    """Answer the handler's exceptions with their codes from the error table, and
    record each refusal in the servicer's ``audit`` log (if it has one).
    Handlers raise; they never call ``context.abort`` themselves."""

    @wraps(func)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if isinstance(request, Undecodable):
                request.refuse()
            return func(self, request, context)
        except Exception as exc:
            _answer_error(
                context,
                exc,
                func.__name__,
                audit=getattr(self, "audit", None),
                worker_id=str(getattr(request, "worker_id", "")) or caller_worker_id(context),
            )

    return wrapper  # type: ignore[return-value]


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
    """The worker-facing RPCs.

    ``limits`` bounds what one peer may hold (parked long-polls, uploads; see
    :mod:`orchestrator.chief.limits`); ``audit`` records every refused request.
    """

    def __init__(
        self,
        broker: TrialBroker,
        artifacts: ArtifactStore,
        *,
        limits: ProtocolLimits | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        self.broker = broker
        self.artifacts = artifacts
        self.limits = limits or ProtocolLimits()
        self.audit = audit
        self.long_polls = PeerSlots(
            per_peer=self.limits.max_long_polls_per_peer,
            total=self.limits.max_long_polls,
            what="parked CreateTrial calls",
        )
        self.uploads = PeerSlots(
            per_peer=self.limits.max_uploads_per_peer,
            total=self.limits.max_uploads,
            what="concurrent uploads",
        )
        self.throttle = UploadThrottle(self.limits.upload_bytes_per_s_per_peer)

    @_rpc
    def CreateTrial(
        self, request: pb.CreateTrialRequest, context: grpc.ServicerContext
    ) -> pb.CreateTrialResponse:
        check_worker_id(request.worker_id)
        check_wait_s(request.wait_s)
        with self.long_polls.hold(context.peer() or "") as may_park:
            # Past the overall bound the call is served at once, never parked:
            # the pool keeps threads for Report and EndTrial.
            wait_s = (request.wait_s or None) if may_park else 0.0
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
        check_trial_id(request.trial_id)
        check_lease_token(request.lease_token)
        check_optional_worker_id(request.worker_id)
        check_range("epoch", request.epoch, -1, MAX_EPOCH, f"-1 (a heartbeat) or 0..{MAX_EPOCH}")
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
        check_trial_id(request.trial_id)
        check_lease_token(request.lease_token)
        check_optional_worker_id(request.worker_id)
        status = _END_STATUSES.get(request.status)
        if status is None:
            raise InvalidRequestError(
                "status: expected COMPLETED, INVALID, FAILED or STOPPED, got "
                + end_status_name(request.status)
            )
        check_metrics(request.metrics)
        check_text("error_message", request.error_message)
        check_text("traceback_tail", request.traceback_tail)
        check_range("best_step", request.best_step, 0, MAX_EPOCH)
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
        check_trial_id(request.trial_id)
        return trial_info(self.broker.get_trial(request.trial_id))

    @_rpc
    def GetBestTrials(
        self, request: pb.GetBestTrialsRequest, context: grpc.ServicerContext
    ) -> pb.TrialList:
        check_range("num_trials", request.num_trials, 0, MAX_NUM_TRIALS)
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
        check_text("hyperparameters_json", request.hyperparameters_json, MAX_STATE_JSON_BYTES)
        what = "keras_tuner HyperParameters.get_config() as JSON"
        config = canonical_hyperparameters(
            parse_json("hyperparameters_json", request.hyperparameters_json, what),
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
        peer = context.peer() or ""
        try:
            with self.uploads.hold(peer, over_total=self._uploads_busy):
                size, sha = self._upload(request_iterator, peer, context)
        except Exception as exc:
            _answer_error(context, exc, "UploadArtifact", audit=self.audit)
        return pb.UploadArtifactResponse(size=size, sha256=sha)

    @staticmethod
    def _uploads_busy() -> None:
        raise LimitExceededError(
            "concurrent uploads: the chief is receiving as many uploads as it takes at once; "
            "upload again shortly"
        )

    def _upload(
        self,
        request_iterator: Iterator[pb.ArtifactChunk],
        peer: str,
        context: grpc.ServicerContext,
    ) -> tuple[int, str]:
        first = next(request_iterator, None)
        if first is None:
            raise InvalidRequestError("empty upload; send at least one chunk")
        if isinstance(first, Undecodable):
            first.refuse()
        trial_id, name = first.trial_id, first.name
        check_trial_id(trial_id)
        check_artifact_name(name)
        check_lease_token(first.lease_token)
        limit = self.limits.max_artifact_bytes
        check_range("total_size", first.total_size, 0, limit, f"0..{limit} bytes")
        self.broker.check_lease(trial_id, first.lease_token)
        room = self.limits.max_trial_artifact_bytes - self.artifacts.trial_bytes(
            trial_id, excluding=name
        )
        last_sha = [""]

        def check_chunk(chunk: pb.ArtifactChunk) -> None:
            if chunk.trial_id not in ("", trial_id) or chunk.name not in ("", name):
                raise InvalidRequestError(
                    f"artifact {name!r}: a later chunk names another trial or file "
                    f"({chunk.trial_id!r}, {chunk.name!r}); one upload is one file"
                )
            if chunk.sha256:
                if len(chunk.sha256) != 64 or not all(
                    c in "0123456789abcdef" for c in chunk.sha256
                ):
                    raise InvalidRequestError(
                        f"artifact {name!r}: sha256 is not 64 lowercase hex digits"
                    )
                last_sha[0] = chunk.sha256

        def chunks() -> Iterator[bytes]:
            chunk: pb.ArtifactChunk | None = first
            rest = iter(request_iterator)
            while chunk is not None:
                if isinstance(chunk, Undecodable):
                    chunk.refuse()
                check_chunk(chunk)
                delay_s = self.throttle.delay_s(peer, len(chunk.data))
                if delay_s > 0:
                    time.sleep(delay_s)  # throttled: this peer sends faster than its rate
                yield chunk.data
                chunk = next(rest, None)

        # The sha256 comes with the last chunk: checked before the file is renamed.
        return self.artifacts.write(
            trial_id,
            name,
            chunks(),
            expected_sha256=lambda: last_sha[0],
            max_bytes=min(limit, max(room, 0)),
        )

    def DownloadArtifact(
        self, request: pb.DownloadArtifactRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ArtifactChunk]:
        try:
            if isinstance(request, Undecodable):
                request.refuse()
            check_trial_id(request.trial_id)
            check_artifact_name(request.name)
            self.broker.get_trial(request.trial_id)  # an id the chief never made is refused
            total, chunks = self.artifacts.open(request.trial_id, request.name)
            first = True
            for chunk in chunks:
                yield pb.ArtifactChunk(
                    trial_id=request.trial_id if first else "",
                    name=request.name if first else "",
                    data=chunk,
                    total_size=total if first else 0,
                )
                first = False
        except Exception as exc:
            _answer_error(context, exc, "DownloadArtifact", audit=self.audit)
        if first:  # empty file
            yield pb.ArtifactChunk(
                trial_id=request.trial_id, name=request.name, data=b"", total_size=0
            )

    @_rpc
    def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.ServicerContext
    ) -> pb.ListArtifactsResponse:
        check_trial_id(request.trial_id)
        self.broker.get_trial(request.trial_id)  # an id the chief never made is refused
        return pb.ListArtifactsResponse(names=self.artifacts.list(request.trial_id))


class ControlHandler(Protocol):
    """What the chief plugs into the control RPCs (status, scale, cancel)."""

    def status_document(self) -> dict[str, Any]: ...

    def scale(self, request: pb.ScaleRequest) -> str: ...

    def cancel(self, now: bool) -> str: ...


class ControlServicer(pb_grpc.ControlServiceServicer):
    """The CLI-facing RPCs. UNIMPLEMENTED until a handler is attached.

    ``max_workers`` is the cluster's ``fleet.max_workers``: a Scale past it is
    refused here (INVALID_ARGUMENT), before the fleet sees it."""

    def __init__(
        self, *, max_workers: int = DEFAULT_MAX_WORKERS, audit: AuditLog | None = None
    ) -> None:
        self.handler: ControlHandler | None = None
        self.max_workers = max_workers
        self.audit = audit

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
        check_scale(request, max_workers=self.max_workers)
        return pb.ScaleResponse(summary=self._require(context).scale(request))

    @_rpc
    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        return pb.CancelResponse(summary=self._require(context).cancel(request.now))
