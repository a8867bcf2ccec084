"""The artifact RPCs of the trial service: upload, download, list.

A mixin of :class:`orchestrator.chief.service.TrialServicer`. Files are read
and written in the chief's I/O pool (:mod:`orchestrator.chief.rpc`), never on
the event loop; an upload holds one I/O thread while its chunks arrive, and
the number of uploads is bounded (:mod:`orchestrator.chief.limits`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from orchestrator.chief.request_checks import check_lease_token, check_range
from orchestrator.chief.rpc import Undecodable, answer_error, observe_rpc, rpc, run_in
from orchestrator.errors import InvalidRequestError, LimitExceededError
from orchestrator.protocol.auth import caller_worker_id
from orchestrator.protocol.error_codes import wire_error
from orchestrator.protocol.names import check_artifact_name, check_trial_id
from orchestrator.protocol.protos import ktcluster_pb2 as pb

if TYPE_CHECKING:
    from orchestrator.chief.artifacts import ArtifactStore
    from orchestrator.chief.audit import AuditLog
    from orchestrator.chief.broker import TrialBroker
    from orchestrator.chief.limits import PeerSlots, ProtocolLimits, UploadThrottle
    from orchestrator.chief.rpc import RpcPools

_SHA_DIGITS = frozenset("0123456789abcdef")
# An upload whose next chunk takes longer than this is abandoned (its I/O
# thread freed, nothing kept): a stalled or vanished uploader.
CHUNK_WAIT_S = 120.0


class ArtifactRpcs:
    """UploadArtifact, DownloadArtifact and ListArtifacts."""

    # Provided by TrialServicer.
    broker: TrialBroker
    artifacts: ArtifactStore
    pools: RpcPools
    limits: ProtocolLimits
    audit: AuditLog | None
    uploads: PeerSlots
    throttle: UploadThrottle

    @rpc
    async def UploadArtifact(
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> pb.UploadArtifactResponse:
        peer = context.peer() or ""
        with self.uploads.hold(peer, over_total=_uploads_busy):
            size, sha = await self._upload(request_iterator, peer, caller_worker_id(context))
        return pb.UploadArtifactResponse(size=size, sha256=sha)

    async def _upload(
        self, request_iterator: AsyncIterator[Any], peer: str, worker_id: str
    ) -> tuple[int, str]:
        loop = asyncio.get_running_loop()
        stream = aiter(request_iterator)
        first = await anext(stream, None)
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
        token = first.lease_token
        await run_in(
            self.pools.broker,
            lambda: self.broker.check_lease(trial_id, token, worker_id=worker_id),
        )
        room = self.limits.max_trial_artifact_bytes - await run_in(
            self.pools.io, self.artifacts.trial_bytes, trial_id, excluding=name
        )
        last_sha = [""]

        def check_chunk(chunk: pb.ArtifactChunk) -> None:
            if chunk.trial_id not in ("", trial_id) or chunk.name not in ("", name):
                raise InvalidRequestError(
                    f"artifact {name!r}: a later chunk names another trial or file "
                    f"({chunk.trial_id!r}, {chunk.name!r}); one upload is one file"
                )
            if chunk.sha256:
                if len(chunk.sha256) != 64 or not set(chunk.sha256) <= _SHA_DIGITS:
                    raise InvalidRequestError(
                        f"artifact {name!r}: sha256 is not 64 lowercase hex digits"
                    )
                last_sha[0] = chunk.sha256

        def chunks() -> Iterator[bytes]:
            # Runs in the I/O thread: each next chunk is received on the loop.
            chunk: Any = first
            while chunk is not None:
                if isinstance(chunk, Undecodable):
                    chunk.refuse()
                check_chunk(chunk)
                delay_s = self.throttle.delay_s(peer, len(chunk.data))
                if delay_s > 0:
                    time.sleep(delay_s)  # throttled: this peer sends faster than its rate
                yield chunk.data
                chunk = asyncio.run_coroutine_threadsafe(anext(stream, None), loop).result(
                    CHUNK_WAIT_S
                )

        # The sha256 comes with the last chunk: checked before the file is renamed.
        return await run_in(
            self.pools.io,
            self.artifacts.write,
            trial_id,
            name,
            chunks(),
            expected_sha256=lambda: last_sha[0],
            max_bytes=min(limit, max(room, 0)),
            min_free_bytes=self.limits.min_free_disk_bytes,
            declared_bytes=first.total_size,
            # Checked again as the file lands, under the broker's lock: an upload
            # that outlived its lease (expired, replaced, the attempt ended) keeps nothing.
            guard=lambda: self.broker.holding_lease(trial_id, token, worker_id=worker_id),
        )

    async def DownloadArtifact(
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ArtifactChunk]:
        first = True
        started, code = time.monotonic(), "OK"
        try:
            if isinstance(request, Undecodable):
                request.refuse()
            check_trial_id(request.trial_id)
            check_artifact_name(request.name)
            # An id the chief never made is refused.
            await run_in(self.pools.broker, self.broker.get_trial, request.trial_id)
            total, chunks = await run_in(
                self.pools.io, self.artifacts.open, request.trial_id, request.name
            )
            while (chunk := await run_in(self.pools.io, next, chunks, None)) is not None:
                yield pb.ArtifactChunk(
                    trial_id=request.trial_id if first else "",
                    name=request.name if first else "",
                    data=chunk,
                    total_size=total if first else 0,
                )
                first = False
        except Exception as exc:
            code = wire_error(exc, method="DownloadArtifact").code.name
            await answer_error(context, exc, "DownloadArtifact", audit=self.audit)
        finally:
            observe_rpc(self, "DownloadArtifact", code, started)
        if first:  # empty file
            yield pb.ArtifactChunk(
                trial_id=request.trial_id, name=request.name, data=b"", total_size=0
            )

    @rpc
    async def ListArtifacts(
        self, request: pb.ListArtifactsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListArtifactsResponse:
        check_trial_id(request.trial_id)
        await run_in(self.pools.broker, self.broker.get_trial, request.trial_id)
        names = await run_in(self.pools.io, self.artifacts.list, request.trial_id)
        return pb.ListArtifactsResponse(names=names)


def _uploads_busy() -> None:
    raise LimitExceededError(
        "concurrent uploads: the chief is receiving as many uploads as it takes at once; "
        "upload again shortly"
    )


__all__ = ["ArtifactRpcs"]
