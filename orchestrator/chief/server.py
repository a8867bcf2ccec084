"""The chief's gRPC server: ``grpc.aio`` on an event loop of its own thread.

A thousand workers may be connected at once, most of them with a CreateTrial
parked (the search has fewer trials ready than workers). With gRPC's
asyncio server a parked call is a future, not a thread, so Report and EndTrial
are answered at once however many calls are parked (the sync server's thread
pool queued them behind the parked ones). What runs where is in
:mod:`orchestrator.chief.rpc`.

:class:`RpcServer` is synchronous to its owner (the chief, the CLI, tests):
``start`` binds and serves, ``stop`` ends the calls and the loop. It also
raises the process's open-file limit (one connection per worker) and sets the
keepalive that reaps dead workers' connections; docs/operations.md explains
both.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# File descriptors the chief needs besides its workers' connections: the
# ledger and its WAL, logs, the audit log, Ray's sockets, artifact files.
RESERVED_FDS = 256
# Where the soft limit goes when the hard one is unlimited (Linux caps NOFILE
# at fs.nr_open, 1,048,576 by default).
UNLIMITED_NOFILE_TARGET = 1 << 20


@dataclass(frozen=True)
class Keepalive:
    """gRPC keepalive (milliseconds): the server pings an idle connection every
    ``time_ms`` and closes it when no answer comes within ``timeout_ms`` (a
    worker whose machine died, or a network that dropped it). Clients may ping
    at most every ``min_client_ping_ms`` (they ping every 30 s: see
    :data:`orchestrator.protocol.client.CLIENT_KEEPALIVE`)."""

    time_ms: int = 60_000
    timeout_ms: int = 20_000
    min_client_ping_ms: int = 10_000

    def options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.keepalive_time_ms", self.time_ms),
            ("grpc.keepalive_timeout_ms", self.timeout_ms),
            # gRPC 1.6x+ times an unanswered ping with this one (60 s by default).
            ("grpc.http2.ping_timeout_ms", self.timeout_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # gRPC spaces pings with no data between them at least 5 min apart
            # unless told otherwise, which would hold every keepalive ping back.
            ("grpc.http2.min_time_between_pings_ms", self.time_ms),
            ("grpc.http2.min_ping_interval_without_data_ms", self.min_client_ping_ms),
            ("grpc.http2.max_pings_without_data", 0),
        ]


def server_options(keepalive: Keepalive | None = None) -> list[tuple[str, Any]]:
    return [
        # Two chiefs must never share a port silently.
        ("grpc.so_reuseport", 0),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        *(keepalive or Keepalive()).options(),
    ]


@dataclass(frozen=True)
class OpenFiles:
    """The process's open-file limit after :func:`raise_open_files_limit`."""

    before: int
    soft: int
    hard: int

    @property
    def workers(self) -> int:
        """How many workers' connections fit (one each), the chief's own files aside."""
        return max(self.soft - RESERVED_FDS, 0)


def raise_open_files_limit() -> OpenFiles:
    """Raise the soft RLIMIT_NOFILE as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_NOFILE_TARGET if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. above fs.nr_open
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    new_soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    as_int = UNLIMITED_NOFILE_TARGET if new_soft == resource.RLIM_INFINITY else new_soft
    shown_hard = UNLIMITED_NOFILE_TARGET if hard == resource.RLIM_INFINITY else hard
    return OpenFiles(before=soft, soft=as_int, hard=shown_hard)


def log_capacity(files: OpenFiles, max_workers: int) -> None:
    """Say how many workers the open-file limit supports; warn when below the fleet's cap."""
    raised = f"raised from {files.before}, " if files.soft != files.before else ""
    message = (
        f"open-file limit {files.soft} ({raised}hard limit {files.hard}): room for about "
        f"{files.workers} worker connections"
    )
    if files.workers < max_workers:
        log.warning(
            "%s, fewer than fleet.max_workers (%d). Raise the hard limit for the chief's "
            "process (`ulimit -Hn`, systemd LimitNOFILE=, docker --ulimit nofile=; "
            "docs/operations.md)",
            message,
            max_workers,
        )
    else:
        log.info("%s", message)


class RpcServer:
    """A ``grpc.aio`` server on its own event-loop thread.

    ``setup(server)`` runs on the loop before the server starts: register the
    servicers there. ``bind(server)`` adds the port(s) and returns the bound
    port (0 or raising when it cannot bind)."""

    def __init__(
        self,
        *,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        options: Sequence[tuple[str, Any]] | None = None,
    ) -> None:
        self._interceptors = list(interceptors)
        self._options = list(options if options is not None else server_options())
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run_loop, name="ktc-rpc-loop", daemon=True)
        self._server: grpc.aio.Server | None = None

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def start(
        self,
        setup: Callable[[grpc.aio.Server], None],
        bind: Callable[[grpc.aio.Server], int],
        *,
        timeout_s: float = 30.0,
    ) -> int:
        """Start the loop, build the server, bind, serve; the bound port."""
        self._thread.start()

        async def start() -> int:
            server = grpc.aio.server(interceptors=self._interceptors, options=self._options)
            setup(server)
            port = bind(server)
            await server.start()
            self._server = server
            return port

        future: Future[int] = asyncio.run_coroutine_threadsafe(start(), self._loop)
        try:
            return future.result(timeout_s)
        except BaseException:
            self._stop_loop()
            raise

    def stop(self, grace_s: float = 1.0) -> None:
        """End every call (after ``grace_s`` for those in progress) and the loop."""
        if not self._thread.is_alive():
            return
        if self._server is not None:
            server, self._server = self._server, None
            future = asyncio.run_coroutine_threadsafe(server.stop(grace_s), self._loop)
            try:
                future.result(grace_s + 5.0)
            except Exception:
                log.exception("the gRPC server did not stop cleanly")
        self._stop_loop()

    def _stop_loop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10.0)
        if not self._thread.is_alive() and not self._loop.is_closed():
            self._loop.close()


__all__ = [
    "Keepalive",
    "MAX_MESSAGE_BYTES",
    "OpenFiles",
    "RpcServer",
    "log_capacity",
    "raise_open_files_limit",
    "server_options",
]
