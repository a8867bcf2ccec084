"""Who may call the chief: the per-search token, worker credentials, and the
server interceptor that checks them.

Every RPC carries ``authorization: Bearer <secret>``. The secret is either

- the **search token**: generated once, stored 0600 in the search directory;
  its holder owns the search (the CLI, and a Keras Tuner user's own workers on
  a chief without a fleet); or
- a **worker credential**: minted by the chief's worker registry
  (:mod:`orchestrator.chief.registry`) for one worker process the fleet
  started, and given to that process only.

:class:`TokenAuthInterceptor` answers a call with neither UNAUTHENTICATED, and
a call its secret may not make PERMISSION_DENIED (the rules are on the class);
it binds a worker's requests to the worker id its credential proves.
docs/security.md has the trust model.
"""

from __future__ import annotations

import contextvars
import hmac
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import grpc

from orchestrator.errors import AuthenticationError, KtClusterError, PermissionDeniedError
from orchestrator.protocol.error_codes import wire_error

log = logging.getLogger(__name__)

TOKEN_FILE_NAME = "token"
METADATA_KEY = "authorization"
_TOKEN_BYTES = 32
_BEARER = b"Bearer "


def create_token(search_dir: Path) -> str:
    """Create the search's token file (mode 0600) and return the token.

    An existing token file is kept: a resumed search keeps its token, so
    workers and CLI commands that hold it keep working.
    """
    path = search_dir / TOKEN_FILE_NAME
    if path.exists():
        return read_token(search_dir)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    search_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    # O_EXCL + 0600 from the start: the token is never world-readable, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token


def read_token(search_dir: Path) -> str:
    """Read the token of the search in ``search_dir``."""
    path = search_dir / TOKEN_FILE_NAME
    try:
        token = path.read_text().strip()
    except FileNotFoundError as exc:
        raise AuthenticationError(
            f"{path}: token file not found; expected the search directory written by "
            "`ktc submit`. Check the directory, or that you may read it."
        ) from exc
    except PermissionError as exc:
        raise AuthenticationError(
            f"{path}: permission denied; only the user who started the search may control it."
        ) from exc
    if not token:
        raise AuthenticationError(
            f"{path}: the token file is empty; the search directory is damaged."
        )
    return token


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """gRPC call metadata that carries ``token`` (the search token or a worker credential)."""
    return ((METADATA_KEY, f"Bearer {token}"),)


# The RPCs that act as a worker: once the chief's registry is enforced they need
# a worker credential, and they act only on the caller's own trials.
WORKER_METHODS = frozenset({"CreateTrial", "Report", "EndTrial", "UploadArtifact"})
# Of these, the requests that name their worker in a ``worker_id`` field.
_CLAIMING_METHODS = frozenset({"CreateTrial", "Report", "EndTrial"})
CONTROL_SERVICE = "ControlService"  # the CLI's: status, scale, cancel


class CredentialLookup(Protocol):
    """The chief's worker registry, as the interceptor sees it."""

    @property
    def enforced(self) -> bool: ...

    def worker_for(self, credential: str) -> str | None: ...


class RejectHook(Protocol):
    """Told about every refused call (the chief's audit log, ``AuditLog.record``):
    the method's name, the peer, the worker id the credential proves (empty for
    none or the search token), why, and the status code. Never given a secret."""

    def __call__(
        self, method: str, peer: str, worker_id: str, reason: str, *, code: str = ""
    ) -> None: ...


class Role(str, Enum):
    """What the secret a call presents makes its caller."""

    OWNER = "owner"  # the search token
    WORKER = "worker"  # a worker credential


@dataclass(frozen=True)
class Caller:
    """Who a call comes from, as its secret proves."""

    role: Role
    worker_id: str = ""  # the credential's worker; empty for the search token


# The caller of the call being served, with that call's context (caller_worker_id).
_CURRENT: contextvars.ContextVar[tuple[grpc.aio.ServicerContext, Caller] | None] = (
    contextvars.ContextVar("ktc_caller", default=None)
)


def caller_worker_id(context: grpc.aio.ServicerContext) -> str:
    """The worker id that the credential of the call served with ``context``
    proves; empty for a search-token caller.

    :class:`TokenAuthInterceptor` sets it around unary-response handlers (every
    RPC but DownloadArtifact), in the handler's task; ``context`` must be the
    one the handler was given.
    """
    current = _CURRENT.get()
    if current is None or current[0] is not context:
        return ""
    return current[1].worker_id


async def _prepend(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """``first``, then the rest of an async stream (a request peeked at)."""
    yield first
    async for item in rest:
        yield item


def _split_method(method: str) -> tuple[str, str]:
    """'/ktcluster.v1.TrialService/CreateTrial' -> ('ktcluster.v1.TrialService', 'CreateTrial')."""
    service, _, name = method.lstrip("/").rpartition("/")
    return service, name


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates every call, then authorises it by the caller's role.

    An interceptor of the chief's asyncio server (``grpc.aio``); the handlers it
    wraps are coroutines.

    - No ``authorization`` secret, or one that is neither the search token nor a
      registered worker's credential: UNAUTHENTICATED.
    - A worker credential on a control RPC (status, scale, cancel):
      PERMISSION_DENIED. Workers never hold the search token.
    - The search token on a worker RPC (:data:`WORKER_METHODS`) once ``workers``
      is enforced (a chief with a fleet): PERMISSION_DENIED.
    - A worker's CreateTrial, Report or EndTrial naming another ``worker_id``:
      PERMISSION_DENIED. An empty one is filled in with the credential's id, so
      the broker always sees the authenticated worker (and refuses a Report or
      EndTrial on an attempt leased to another worker).
    - A worker's UploadArtifact for a trial that ``lease_holder`` says another
      worker holds: PERMISSION_DENIED, before any byte is stored. (The upload
      names no worker; the lease token, checked by the broker afterwards, makes
      a lease that changes in between refused as stale.)

    Every refusal goes to ``on_reject(method, peer, worker_id, reason, code=...)``,
    never with the secret. Cost per accepted call: one constant-time compare for the
    token; one more SHA-256 and a dict lookup for a worker credential.
    """

    def __init__(
        self,
        token: str,
        *,
        workers: CredentialLookup | None = None,
        on_reject: RejectHook | None = None,
        lease_holder: Callable[[str], str | None] | None = None,
    ) -> None:
        self._expected = _BEARER + token.encode()
        self._workers = workers
        self._on_reject = on_reject
        self._lease_holder = lease_holder

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method or ""
        service, name = _split_method(method)
        caller = self._authenticate(handler_call_details.invocation_metadata)
        if caller is None:
            return self._deny(
                method,
                "",
                AuthenticationError(
                    "missing or wrong search token; read it from the search directory's "
                    "'token' file and send it as 'authorization: Bearer <token>'"
                ),
                "missing or unknown token or worker credential",
            )
        if caller.role is Role.WORKER and service.rpartition(".")[2] == CONTROL_SERVICE:
            return self._deny(
                method,
                caller.worker_id,
                PermissionDeniedError(
                    f"a worker's credential ({caller.worker_id}) may not call the control "
                    "RPCs; use the search token (`ktc status/scale/cancel DIR`)"
                ),
                "worker credential on a control RPC",
            )
        if (
            caller.role is Role.OWNER
            and name in WORKER_METHODS
            and self._workers is not None
            and self._workers.enforced
        ):
            return self._deny(
                method,
                "",
                PermissionDeniedError(
                    "this chief hands trials only to the workers its fleet started, each "
                    "with its own credential; the search token may not act as a worker. "
                    "Add workers with `ktc scale DIR --workers N` instead"
                ),
                "search token on a worker RPC",
            )
        handler = await continuation(handler_call_details)
        if handler is None or caller.role is Role.OWNER:
            return handler
        return self._bind(handler, method, name, caller)

    def _authenticate(self, metadata: Any) -> Caller | None:
        for key, value in metadata or ():
            if key != METADATA_KEY:
                continue
            presented = value.encode() if isinstance(value, str) else bytes(value)
            if hmac.compare_digest(presented, self._expected):
                return Caller(Role.OWNER)
            if self._workers is None or not presented.startswith(_BEARER):
                return None
            try:
                secret = presented[len(_BEARER) :].decode()
            except UnicodeDecodeError:
                return None
            worker_id = self._workers.worker_for(secret)
            return Caller(Role.WORKER, worker_id) if worker_id else None
        return None

    async def _refuse(
        self,
        context: grpc.aio.ServicerContext,
        method: str,
        worker_id: str,
        reason: str,
        error: KtClusterError,
    ) -> None:
        """Tell ``on_reject``, then end the call with the table's code for
        ``error`` and no type name: the client shows the code's own message, which
        names the chief's address ("... the chief at ADDRESS refused the token: ...")."""
        _, name = _split_method(method)
        code = wire_error(error, method=name).code
        peer = context.peer() or ""
        log.warning("refused %s from %s (worker %r): %s", name, peer, worker_id, reason)
        if self._on_reject is not None:
            try:
                self._on_reject(name, peer, worker_id, reason, code=code.name)
            except Exception:  # an audit failure must not turn a refusal into INTERNAL
                log.exception("on_reject hook failed for %s", name)
        await context.abort(code, str(error))

    def _deny(
        self, method: str, worker_id: str, error: KtClusterError, reason: str
    ) -> grpc.RpcMethodHandler:
        _, name = _split_method(method)

        async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._refuse(context, method, worker_id, reason, error)

        if name == "UploadArtifact":
            return grpc.stream_unary_rpc_method_handler(deny)
        if name == "DownloadArtifact":
            return grpc.unary_stream_rpc_method_handler(deny)
        return grpc.unary_unary_rpc_method_handler(deny)

    async def _check_upload(
        self, method: str, context: grpc.aio.ServicerContext, caller: Caller, trial_id: str
    ) -> None:
        holder = self._lease_holder(trial_id) if self._lease_holder is not None else None
        if holder is None or holder == caller.worker_id:
            return  # not leased: the broker answers (unknown trial, stale lease)
        await self._refuse(
            context,
            method,
            caller.worker_id,
            f"upload for a trial leased to {holder}",
            PermissionDeniedError(
                f"trial {trial_id} is leased to worker {holder}, not {caller.worker_id}; a "
                "worker may report, end and upload for its own trials only"
            ),
        )

    def _bind(
        self, handler: grpc.RpcMethodHandler, method: str, name: str, caller: Caller
    ) -> grpc.RpcMethodHandler:
        """``handler`` with its caller bound: the claimed worker id checked (or
        filled in), and :func:`caller_worker_id` answering during the call."""
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                if name in _CLAIMING_METHODS:
                    claimed = request.worker_id
                    if claimed and claimed != caller.worker_id:
                        await self._refuse(
                            context,
                            method,
                            caller.worker_id,
                            f"claimed to be worker {claimed!r}",
                            PermissionDeniedError(
                                f"worker_id {claimed!r} is not the worker this credential was "
                                f"issued to ({caller.worker_id}); a worker may act only as itself"
                            ),
                        )
                    request.worker_id = caller.worker_id
                reset = _CURRENT.set((context, caller))
                try:
                    return await inner(request, context)
                finally:
                    _CURRENT.reset(reset)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary is not None:
            inner_stream = handler.stream_unary

            async def stream_in(request_iterator: Any, context: grpc.aio.ServicerContext) -> Any:
                if name == "UploadArtifact" and self._lease_holder is not None:
                    stream = aiter(request_iterator)
                    first = await anext(stream, None)
                    if first is not None:
                        await self._check_upload(
                            method, context, caller, getattr(first, "trial_id", "")
                        )
                        request_iterator = _prepend(first, stream)
                reset = _CURRENT.set((context, caller))
                try:
                    return await inner_stream(request_iterator, context)
                finally:
                    _CURRENT.reset(reset)

            return grpc.stream_unary_rpc_method_handler(
                stream_in,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
