"""The per-search token: generated once, stored 0600 in the search directory,
and required in the metadata of every RPC (``authorization: Bearer <token>``)."""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from orchestrator.errors import AuthenticationError

TOKEN_FILE_NAME = "token"
METADATA_KEY = "authorization"
_TOKEN_BYTES = 32


def create_token(search_dir: Path) -> str:
    """Create the search's token file (mode 0600) and return the token.

    An existing token file is kept: a resumed search keeps its token, so
    workers and CLI commands that hold it keep working.
    """
    path = search_dir / TOKEN_FILE_NAME
    if path.exists():
        return read_token(search_dir)
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    search_dir.mkdir(parents=True, exist_ok=True)
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
    """gRPC call metadata that carries ``token``."""
    return ((METADATA_KEY, f"Bearer {token}"),)


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Refuses every call whose metadata lacks the search token (UNAUTHENTICATED)."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

        def deny(request: Any, context: grpc.ServicerContext) -> Any:
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong search token; read it from the search directory's "
                "'token' file and send it as 'authorization: Bearer <token>'",
            )

        def deny_stream(request_iterator: Any, context: grpc.ServicerContext) -> Any:
            deny(None, context)

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream_in = grpc.stream_unary_rpc_method_handler(deny_stream)
        self._deny_stream_out = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        for key, value in handler_call_details.invocation_metadata or ():
            if key == METADATA_KEY:
                presented = value.encode() if isinstance(value, str) else bytes(value)
                if hmac.compare_digest(presented, self._expected):
                    return continuation(handler_call_details)
                break
        method = handler_call_details.method or ""
        if method.endswith("/UploadArtifact"):
            return self._deny_stream_in
        if method.endswith("/DownloadArtifact"):
            return self._deny_stream_out
        return self._deny_unary
