"""The chief's gRPC servicers: protocol messages in, broker calls, protocol messages out.

Served on the chief's asyncio event loop (:mod:`orchestrator.chief.rpc` says
what runs where). This layer validates every request before the broker sees it
(unknown ids, NaN or inf metrics, bad names, oversized fields, disallowed
statuses); the broker's own calls run in a thread pool, and a parked
CreateTrial long-poll awaits a future, holding no thread at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import time
from typing import Any, Protocol

import grpc

from orchestrator.chief.artifact_rpcs import ArtifactRpcs
from orchestrator.chief.artifacts import ArtifactStore
from orchestrator.chief.audit import AuditLog
from orchestrator.chief.broker import TrialBroker
from orchestrator.chief.limits import PeerSlots, ProtocolLimits, UploadThrottle
from orchestrator.chief.long_poll import AskOracle, Step
from orchestrator.chief.parking import AsyncWaiter
from orchestrator.chief.prometheus import ChiefMetrics
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
from orchestrator.chief.rpc import RpcPools, rpc, run_in
from orchestrator.config.limits import DEFAULT_MAX_WORKERS
from orchestrator.errors import InvalidRequestError, UnimplementedError
from orchestrator.protocol.answers import Assignment, AssignmentKind
from orchestrator.protocol.kt_state import canonical_hyperparameters, canonical_json
from orchestrator.protocol.names import check_trial_id, check_worker_id
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


class TrialServicer(ArtifactRpcs, pb_grpc.TrialServiceServicer):
    """The worker-facing RPCs (the artifact ones in :class:`ArtifactRpcs`).

    ``limits`` bounds what one peer may hold (parked long-polls, uploads; see
    :mod:`orchestrator.chief.limits`); ``audit`` records every refused request;
    ``pools`` are the thread pools blocking work goes to (:mod:`orchestrator.chief.rpc`).
    """

    def __init__(
        self,
        broker: TrialBroker,
        artifacts: ArtifactStore,
        *,
        pools: RpcPools,
        limits: ProtocolLimits | None = None,
        audit: AuditLog | None = None,
        metrics: ChiefMetrics | None = None,
    ) -> None:
        self.broker = broker
        self.artifacts = artifacts
        self.pools = pools
        self.metrics = metrics  # RPC latency for Prometheus (prometheus.py)
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

    @rpc
    async def CreateTrial(
        self, request: pb.CreateTrialRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateTrialResponse:
        check_worker_id(request.worker_id)
        check_wait_s(request.wait_s)
        with self.long_polls.hold(context.peer() or "") as may_park:
            # Past the overall bound the call is served at once, never parked.
            wait_s = (request.wait_s or None) if may_park else 0.0
            answer = await self._long_poll(request.worker_id, wait_s)
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
                    reports_async=answer.reports_async,
                ),
            )
        kind = (
            pb.CreateTrialResponse.STOP
            if answer.kind is AssignmentKind.STOP
            else pb.CreateTrialResponse.WAIT
        )
        return pb.CreateTrialResponse(kind=kind, reason=answer.reason)

    async def _long_poll(self, worker_id: str, wait_s: float | None) -> Assignment:
        """The broker's long-poll (:meth:`TrialBroker.create_trial`), driven from
        the event loop: each step runs in a pool thread; while parked the call
        awaits its waiter and holds no thread."""
        broker, pools = self.broker, self.pools
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + broker.long_poll_window(wait_s)
        poll = await run_in(pools.broker, broker.begin_poll, worker_id)
        try:
            plan = broker.long_poll_plan(poll, deadline)
            request = next(plan)
            waiter = AsyncWaiter(loop)  # each Step makes a fresh one; a Step comes first
            while True:
                if isinstance(request, Step):
                    waiter = AsyncWaiter(loop)
                    reply: Any = await run_in(
                        pools.broker,
                        broker.poll_step,
                        poll,
                        waiter,
                        deadline,
                        retry_idle=request.retry_idle,
                    )
                elif isinstance(request, AskOracle):
                    reply = await run_in(pools.oracle, broker.ask_oracle, worker_id, deadline)
                else:
                    try:
                        reply = await waiter.wait(request.seconds)
                    finally:
                        broker.parked.unpark(worker_id, waiter)
                request = plan.send(reply)
        except StopIteration as done:
            answer: Assignment = done.value
            return answer
        finally:
            # Not awaited, so it runs even when the call was cancelled (the
            # worker hung up); it also unparks a waiter parked meanwhile.
            with contextlib.suppress(RuntimeError):  # the server is shutting down
                pools.broker.call(functools.partial(broker.end_poll, poll))

    @rpc
    async def Report(
        self, request: pb.ReportRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportResponse:
        check_trial_id(request.trial_id)
        check_lease_token(request.lease_token)
        check_optional_worker_id(request.worker_id)
        check_range("epoch", request.epoch, -1, MAX_EPOCH, f"-1 (a heartbeat) or 0..{MAX_EPOCH}")
        check_metrics(request.metrics)
        decision = await run_in(
            self.pools.broker,
            self.broker.report,
            request.trial_id,
            request.lease_token,
            epoch=request.epoch,
            metrics=dict(request.metrics),
            worker_id=request.worker_id,
        )
        if not decision.stop:
            cause = pb.ReportResponse.STOP_CAUSE_UNSPECIFIED
        elif decision.scheduler:
            cause = pb.ReportResponse.SCHEDULER
        else:
            cause = pb.ReportResponse.REQUEUE
        return pb.ReportResponse(
            action=pb.ReportResponse.STOP if decision.stop else pb.ReportResponse.CONTINUE,
            reason=decision.reason,
            lease_expires_in_s=decision.lease_expires_in_s,
            stop_cause=cause,
        )

    @rpc
    async def EndTrial(
        self, request: pb.EndTrialRequest, context: grpc.aio.ServicerContext
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
        outcome = await run_in(self.pools.broker, self._end_trial, request, status)
        return pb.EndTrialResponse(
            recorded=outcome.recorded, final_status=_TRIAL_STATUS_PB[outcome.final_status]
        )

    def _end_trial(self, request: pb.EndTrialRequest, status: AttemptStatus) -> Any:
        # Parsed by Keras Tuner before anything is committed: a state it cannot
        # read is refused here, not found by replay later.
        hp_config = parse_trial_hyperparameters(request.trial_state_json)
        return self.broker.end_trial(
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

    @rpc
    async def GetTrial(
        self, request: pb.GetTrialRequest, context: grpc.aio.ServicerContext
    ) -> pb.TrialInfo:
        check_trial_id(request.trial_id)
        return await run_in(
            self.pools.broker, lambda: trial_info(self.broker.get_trial(request.trial_id))
        )

    @rpc
    async def GetBestTrials(
        self, request: pb.GetBestTrialsRequest, context: grpc.aio.ServicerContext
    ) -> pb.TrialList:
        check_range("num_trials", request.num_trials, 0, MAX_NUM_TRIALS)
        return await run_in(
            self.pools.broker,
            lambda: pb.TrialList(
                trials=[trial_info(t) for t in self.broker.best_trials(request.num_trials)]
            ),
        )

    @rpc
    async def GetSpace(
        self, request: pb.GetSpaceRequest, context: grpc.aio.ServicerContext
    ) -> pb.SpaceMessage:
        space = await run_in(self.pools.space, self.broker.space_config)
        return pb.SpaceMessage(hyperparameters_json=canonical_json(space))

    @rpc
    async def UpdateSpace(
        self, request: pb.SpaceMessage, context: grpc.aio.ServicerContext
    ) -> pb.UpdateSpaceResponse:
        check_text("hyperparameters_json", request.hyperparameters_json, MAX_STATE_JSON_BYTES)
        what = "keras_tuner HyperParameters.get_config() as JSON"
        config = canonical_hyperparameters(
            parse_json("hyperparameters_json", request.hyperparameters_json, what),
            where="hyperparameters_json",
        )
        await run_in(self.pools.space, self.broker.update_space, config)
        return pb.UpdateSpaceResponse()

    @rpc
    async def GetSearchState(
        self, request: pb.GetSearchStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.SearchStateResponse:
        summary = await run_in(self.pools.broker, self.broker.summary)
        return pb.SearchStateResponse(
            state=_SEARCH_STATE_PB[summary.state],
            message=summary.message,
            trials_by_status=summary.trials_by_status,
            max_trials=summary.max_trials or 0,
            objective=summary.objective,
            direction=summary.direction,
        )


class _Unimplemented(UnimplementedError):
    """The chief has no handler for a control RPC (UNIMPLEMENTED)."""


class ControlHandler(Protocol):
    """What the chief plugs into the control RPCs (status, scale, cancel)."""

    def status_document(self) -> dict[str, Any]: ...

    def scale(self, request: pb.ScaleRequest) -> str: ...

    def cancel(self, now: bool) -> str: ...


class ControlServicer(pb_grpc.ControlServiceServicer):
    """The CLI-facing RPCs. UNIMPLEMENTED until a handler is attached.

    ``max_workers`` is the cluster's ``fleet.max_workers``: a Scale past it is
    refused here (INVALID_ARGUMENT), before the fleet sees it. The handler's
    calls (which may call Ray) run in ``pools.control``; set ``pools`` before
    serving (the chief does)."""

    def __init__(
        self, *, max_workers: int = DEFAULT_MAX_WORKERS, audit: AuditLog | None = None
    ) -> None:
        self.handler: ControlHandler | None = None
        self.max_workers = max_workers
        self.audit = audit
        self.pools: RpcPools | None = None
        self.metrics: ChiefMetrics | None = None

    def _require(self) -> tuple[ControlHandler, RpcPools]:
        if self.handler is None or self.pools is None:
            raise _Unimplemented(
                "this chief runs without a fleet (no control handler); status, scale and "
                "cancel need a search started by `ktc submit` or `ktc resume`"
            )
        return self.handler, self.pools

    @rpc
    async def Status(
        self, request: pb.StatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.StatusResponse:
        handler, pools = self._require()
        document = await run_in(pools.control, handler.status_document)
        return pb.StatusResponse(status_json=json.dumps(document))

    @rpc
    async def Scale(
        self, request: pb.ScaleRequest, context: grpc.aio.ServicerContext
    ) -> pb.ScaleResponse:
        check_scale(request, max_workers=self.max_workers)
        handler, pools = self._require()
        return pb.ScaleResponse(summary=await run_in(pools.control, handler.scale, request))

    @rpc
    async def Cancel(
        self, request: pb.CancelRequest, context: grpc.aio.ServicerContext
    ) -> pb.CancelResponse:
        handler, pools = self._require()
        return pb.CancelResponse(summary=await run_in(pools.control, handler.cancel, request.now))


__all__ = [
    "ControlHandler",
    "ControlServicer",
    "TrialServicer",
    "check_metrics",
    "parse_trial_hyperparameters",
    "trial_info",
]
