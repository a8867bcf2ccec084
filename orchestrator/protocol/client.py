"""TrialClient: the worker's and the CLI's side of the protocol.

It imports neither Keras Tuner nor TensorFlow, so light workers (the ``sleep``
benchmark hypermodel) and CLI commands stay light. gRPC errors become the
exceptions the chief raised, through the one table in
:mod:`orchestrator.protocol.error_codes` (the chief's exception type travels in
the trailing metadata; the status code is the fallback). UNAVAILABLE and
DEADLINE_EXCEEDED are first retried with backoff for ``reconnect_timeout_s``
(a restarting chief), then raised as ChiefUnavailableError.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import grpc

from orchestrator.errors import (
    ChiefUnavailableError,
    InvalidRequestError,
    KtClusterError,
    StaleLeaseError,
)
from orchestrator.protocol.answers import AssignmentKind
from orchestrator.protocol.auth import bearer, read_token
from orchestrator.protocol.error_codes import error_from_status, error_type_from
from orchestrator.protocol.names import is_forbidden_control
from orchestrator.protocol.protos import ktcluster_pb2 as pb
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc
from orchestrator.search_dir import read_chief_info

log = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK_BYTES = 1024 * 1024
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


@dataclass(frozen=True)
class LeasedTrial:
    """A trial attempt this worker holds."""

    trial_id: str
    attempt: int
    token: str
    values: dict[str, Any]
    trial_state: dict[str, Any]
    lease_timeout_s: float
    # No trial scheduler at the chief: an epoch's report need not wait for its
    # answer (LeaseKeeper.report).
    reports_async: bool = False


@dataclass(frozen=True)
class TrialAssignment:
    """What CreateTrial answered."""

    kind: AssignmentKind
    trial: LeasedTrial | None = None
    reason: str = ""


@dataclass(frozen=True)
class TrialSummary:
    """A trial as the chief reports it."""

    trial_id: str
    status: str
    attempts: int
    score: float | None
    worker_id: str
    duration_s: float
    error_message: str
    current_epoch: int | None
    trial_state: dict[str, Any]


class ReportAction(str, Enum):
    """What the chief answered to an epoch report."""

    CONTINUE = "CONTINUE"
    # Stop and end the attempt STOPPED: the chief requeues the trial
    # (preemption, cancel, a drain, the search's end).
    STOP = "STOP"
    # The chief's trial scheduler stopped the trial: stop training and end the
    # attempt COMPLETED with the best score so far.
    STOP_EARLY = "STOP_EARLY"


# ANSI escape sequences (Ray colours its task errors) and other control characters.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")


def plain_text(text: str) -> str:
    """``text`` without terminal colour codes or other control characters (the
    chief refuses those in free text; a user reads the message, not the codes)."""
    text = _ANSI.sub("", text)
    return "".join("?" if is_forbidden_control(ch) else ch for ch in text)


# A worker pings the chief every 30 s on an idle connection and gives up on it
# after 10 s without an answer, so a chief that vanished (its machine died) is
# noticed; the chief allows pings every 10 s (orchestrator.chief.server.Keepalive).
CLIENT_KEEPALIVE: tuple[tuple[str, int], ...] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.http2.ping_timeout_ms", 10_000),  # gRPC 1.6x+ times a ping with this one
    ("grpc.http2.min_time_between_pings_ms", 30_000),  # else at most one per 5 min
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


class TrialClient:
    """A connection to one chief, authenticated with the search token."""

    def __init__(
        self,
        address: str,
        token: str,
        *,
        worker_id: str = "",
        ca_pem: bytes | None = None,
        server_name: str | None = None,
        rpc_timeout_s: float = 30.0,
        reconnect_timeout_s: float = 30.0,
    ) -> None:
        self.address = address
        self.worker_id = worker_id
        self.rpc_timeout_s = rpc_timeout_s
        self.reconnect_timeout_s = reconnect_timeout_s
        self._metadata = bearer(token)
        options: list[tuple[str, str | int]] = [
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_send_message_length", 8 * 1024 * 1024),
            *CLIENT_KEEPALIVE,
        ]
        if ca_pem is not None:
            if server_name:
                options.append(("grpc.ssl_target_name_override", server_name))
            creds = grpc.ssl_channel_credentials(root_certificates=ca_pem)
            self._channel = grpc.secure_channel(address, creds, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._trials = pb_grpc.TrialServiceStub(self._channel)
        self._control = pb_grpc.ControlServiceStub(self._channel)

    @classmethod
    def from_search_dir(
        cls, search_dir: Path, *, worker_id: str = "cli", **kwargs: Any
    ) -> TrialClient:
        """Connect to the chief recorded in ``search_dir/chief.json``."""
        info = read_chief_info(search_dir)
        if not info.running or not info.process_alive():
            raise ChiefUnavailableError(
                f"{search_dir}: no live chief (last pid {info.pid}); the search is not running. "
                f"Continue it with `ktc resume {search_dir}`."
            )
        ca = Path(info.tls_ca).read_bytes() if info.tls_ca else None
        return cls(
            info.address,
            read_token(Path(search_dir)),
            worker_id=worker_id,
            ca_pem=ca,
            server_name=info.tls_server_name,
            **kwargs,
        )

    # -------------------------------------------------------------- calling

    def _call(
        self, name: str, fn: Callable[..., T], request: Any, *, timeout_s: float | None = None
    ) -> T:
        deadline = time.monotonic() + self.reconnect_timeout_s
        delay = 0.1
        while True:
            try:
                return fn(request, metadata=self._metadata, timeout=timeout_s or self.rpc_timeout_s)
            except grpc.RpcError as exc:
                code = exc.code()
                if code in _RETRYABLE and time.monotonic() + delay < deadline:
                    log.info(
                        "%s: chief unavailable (%s); retrying in %.1fs", name, code.name, delay
                    )
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                raise translate_error(exc, name, self.address) from None

    def create_trial(self, wait_s: float = 5.0) -> TrialAssignment:
        """Ask for a trial; the chief holds the call up to ``wait_s`` when none is ready."""
        response = self._call(
            "CreateTrial",
            self._trials.CreateTrial,
            pb.CreateTrialRequest(worker_id=self.worker_id, wait_s=wait_s),
            timeout_s=wait_s + self.rpc_timeout_s,
        )
        if response.kind == pb.CreateTrialResponse.TRIAL:
            t = response.trial
            log.info("trial %s attempt %d: started, %s", t.trial_id, t.attempt, t.values_json)
            return TrialAssignment(
                AssignmentKind.TRIAL,
                trial=LeasedTrial(
                    trial_id=t.trial_id,
                    attempt=t.attempt,
                    token=t.lease_token,
                    values=json.loads(t.values_json or "{}"),
                    trial_state=json.loads(t.trial_state_json or "{}"),
                    lease_timeout_s=t.lease_timeout_s,
                    reports_async=t.reports_async,
                ),
            )
        kind = (
            AssignmentKind.STOP
            if response.kind == pb.CreateTrialResponse.STOP
            else AssignmentKind.WAIT
        )
        return TrialAssignment(kind, reason=response.reason)

    def report(self, trial: LeasedTrial, epoch: int, metrics: Mapping[str, float]) -> ReportAction:
        """Send an epoch's metrics (renews the lease). Returns whether to go on."""
        response = self._call(
            "Report",
            self._trials.Report,
            pb.ReportRequest(
                trial_id=trial.trial_id,
                lease_token=trial.token,
                epoch=epoch,
                metrics=dict(metrics),
                worker_id=self.worker_id,
            ),
        )
        if response.action != pb.ReportResponse.STOP:
            return ReportAction.CONTINUE
        if response.stop_cause == pb.ReportResponse.SCHEDULER:
            return ReportAction.STOP_EARLY
        return ReportAction.STOP

    def heartbeat(self, trial: LeasedTrial) -> ReportAction:
        """Renew the lease without metrics."""
        return self.report(trial, -1, {})

    def end_trial(
        self,
        trial: LeasedTrial,
        status: str,
        *,
        metrics: Mapping[str, float] | None = None,
        best_step: int = 0,
        error_message: str = "",
        traceback_tail: str = "",
        trial_state: Mapping[str, Any] | None = None,
    ) -> bool:
        """End the attempt with COMPLETED, INVALID, FAILED or STOPPED. Returns
        False when the chief had already recorded this exact call."""
        response = self._call(
            "EndTrial",
            self._trials.EndTrial,
            pb.EndTrialRequest(
                trial_id=trial.trial_id,
                lease_token=trial.token,
                status=pb.TrialStatus.Name(pb.TrialStatus.Value(status)),
                metrics=dict(metrics or {}),
                best_step=best_step,
                error_message=plain_text(error_message)[-16_000:],
                traceback_tail=plain_text(traceback_tail)[-16_000:],
                trial_state_json=json.dumps(trial_state) if trial_state else "",
                worker_id=self.worker_id,
            ),
        )
        return bool(response.recorded)

    def end_attempt(self, trial: LeasedTrial, status: str, **kwargs: Any) -> bool:
        """A worker's EndTrial: True when the chief recorded this result.

        A stale lease (the attempt was taken back) is logged and ignored. A
        result the chief refuses as malformed ends the attempt INVALID with the
        chief's own reason instead, so the trial shows the real cause (and is
        retried) rather than the worker crashing on it.
        """
        try:
            self.end_trial(trial, status, **kwargs)
            why = kwargs.get("error_message") or ""
            log.info(
                "trial %s attempt %d: ended %s%s",
                trial.trial_id,
                trial.attempt,
                status,
                f": {why}" if why else "",
            )
            return True
        except StaleLeaseError as exc:
            log.warning("trial %s: result refused: %s", trial.trial_id, exc)
            return False
        except InvalidRequestError as exc:
            reason = f"the chief refused this attempt's result: {exc}"
            log.error("trial %s: %s", trial.trial_id, reason)
            try:
                self.end_trial(trial, "INVALID", error_message=reason)
            except (StaleLeaseError, InvalidRequestError) as again:
                log.warning("trial %s: could not end the attempt: %s", trial.trial_id, again)
            return False

    def get_trial(self, trial_id: str) -> TrialSummary:
        return _summary(
            self._call("GetTrial", self._trials.GetTrial, pb.GetTrialRequest(trial_id=trial_id))
        )

    def get_best_trials(self, num_trials: int = 1) -> list[TrialSummary]:
        response = self._call(
            "GetBestTrials",
            self._trials.GetBestTrials,
            pb.GetBestTrialsRequest(num_trials=num_trials),
        )
        return [_summary(info) for info in response.trials]

    def get_space(self) -> dict[str, Any]:
        response = self._call("GetSpace", self._trials.GetSpace, pb.GetSpaceRequest())
        return dict(json.loads(response.hyperparameters_json))

    def update_space(self, hyperparameters_config: Mapping[str, Any]) -> None:
        self._call(
            "UpdateSpace",
            self._trials.UpdateSpace,
            pb.SpaceMessage(hyperparameters_json=json.dumps(hyperparameters_config)),
        )

    def search_state(self) -> pb.SearchStateResponse:
        return self._call("GetSearchState", self._trials.GetSearchState, pb.GetSearchStateRequest())

    # ------------------------------------------------------------ artifacts

    def upload_artifact(self, trial: LeasedTrial, name: str, path: Path) -> str:
        """Upload a file in 1 MiB chunks; returns its sha256."""
        path = Path(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        total = path.stat().st_size

        def chunks() -> Iterator[pb.ArtifactChunk]:
            with path.open("rb") as handle:
                first = True
                while True:
                    data = handle.read(CHUNK_BYTES)
                    last = len(data) < CHUNK_BYTES
                    yield pb.ArtifactChunk(
                        trial_id=trial.trial_id if first else "",
                        lease_token=trial.token if first else "",
                        name=name if first else "",
                        data=data,
                        total_size=total if first else 0,
                        sha256=digest if last else "",
                    )
                    first = False
                    if last:
                        return

        try:
            response = self._trials.UploadArtifact(
                chunks(), metadata=self._metadata, timeout=max(self.rpc_timeout_s, total / 1e6)
            )
        except grpc.RpcError as exc:
            raise translate_error(exc, "UploadArtifact", self.address) from None
        return str(response.sha256)

    def download_artifact(self, trial_id: str, name: str, dest: Path) -> Path:
        """Download an artifact to ``dest`` (written atomically)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part")
        try:
            with tmp.open("wb") as handle:
                for chunk in self._trials.DownloadArtifact(
                    pb.DownloadArtifactRequest(trial_id=trial_id, name=name),
                    metadata=self._metadata,
                    timeout=max(self.rpc_timeout_s, 600.0),
                ):
                    handle.write(chunk.data)
            tmp.replace(dest)
        except grpc.RpcError as exc:
            tmp.unlink(missing_ok=True)
            raise translate_error(exc, "DownloadArtifact", self.address) from None
        return dest

    def list_artifacts(self, trial_id: str) -> list[str]:
        response = self._call(
            "ListArtifacts", self._trials.ListArtifacts, pb.ListArtifactsRequest(trial_id=trial_id)
        )
        return list(response.names)

    # -------------------------------------------------------------- control

    def status(self) -> dict[str, Any]:
        response = self._call("Status", self._control.Status, pb.StatusRequest())
        return dict(json.loads(response.status_json))

    def scale(
        self,
        *,
        total_workers: int | None = None,
        node_workers: Mapping[str, int] | None = None,
        cluster_yaml: str = "",
        cluster_yaml_path: str = "",
        now: bool = False,
    ) -> str:
        request = pb.ScaleRequest(
            total_workers=-1 if total_workers is None else total_workers,
            node_workers=dict(node_workers or {}),
            cluster_yaml=cluster_yaml,
            cluster_yaml_path=cluster_yaml_path,
            now=now,
        )
        return str(self._call("Scale", self._control.Scale, request).summary)

    def cancel(self, *, now: bool = True) -> str:
        return str(self._call("Cancel", self._control.Cancel, pb.CancelRequest(now=now)).summary)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> TrialClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def translate_error(exc: grpc.RpcError, method: str, address: str) -> KtClusterError:
    """A gRPC error as the exception the chief raised (see ``error_codes``)."""
    return error_from_status(
        exc.code(),
        exc.details() or "",
        error_type_from(exc.trailing_metadata()),
        method=method,
        address=address,
    )


def _summary(info: pb.TrialInfo) -> TrialSummary:
    return TrialSummary(
        trial_id=info.trial_id,
        status=pb.TrialStatus.Name(info.status),
        attempts=info.attempts,
        score=info.score if info.has_score else None,
        worker_id=info.worker_id,
        duration_s=info.duration_s,
        error_message=info.error_message,
        current_epoch=info.current_epoch if info.current_epoch >= 0 else None,
        trial_state=json.loads(info.trial_state_json or "{}"),
    )
