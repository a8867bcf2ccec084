"""The plumbing under the chief's asyncio gRPC servicers.

The chief serves gRPC with ``grpc.aio`` on one event loop
(:class:`orchestrator.chief.chief.Chief`). The loop only parses, checks and
answers; nothing that can block runs on it:

- the broker's calls (its lock, one SQLite commit) run in :attr:`RpcPools.broker`;
- the oracle's create (a Bayesian step may take seconds) runs in
  :attr:`RpcPools.oracle`, by the one caller that holds the oracle gate;
- GetSpace and UpdateSpace, which wait for the gate, run in
  :attr:`RpcPools.space`. Apart from the oracle's pool on purpose: calls waiting
  for the gate must never take the thread the gate's holder needs to release
  it. Report and EndTrial queue behind none of these;
- artifact streams (disk) run in :attr:`RpcPools.io`;
- the control RPCs (status, scale, cancel, which may call Ray) run in
  :attr:`RpcPools.control`.

A parked CreateTrial holds none of them: it awaits a future in the broker's
parking lot (:mod:`orchestrator.chief.parking`).

Every exception a handler raises is answered with the status code that the one
table in :mod:`orchestrator.protocol.error_codes` gives its type; an exception
that is not a KtClusterError is a bug: INTERNAL, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import wraps
from typing import Any, NoReturn, ParamSpec, TypeVar

import grpc

from orchestrator.chief.audit import AuditLog
from orchestrator.errors import InvalidRequestError, KtClusterError
from orchestrator.protocol.auth import caller_worker_id
from orchestrator.protocol.error_codes import abort_with_error_async, wire_error
from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class RpcPools:
    """The thread pools the servicers hand blocking work to (see the module docstring).

    ``broker`` is small on purpose: its calls serialise on the broker's lock, so
    more threads would only contend for it and for the GIL."""

    def __init__(self, *, uploads: int = 16) -> None:
        self.broker = LoopPool(max_workers=8, thread_name_prefix="ktc-rpc")
        # One: only the gate's holder runs here (TrialBroker.ask_oracle).
        self.oracle = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ktc-oracle")
        self.space = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ktc-space")
        # An upload holds its thread while its chunks arrive: one per allowed upload.
        self.io = ThreadPoolExecutor(max_workers=uploads + 4, thread_name_prefix="ktc-io")
        self.control = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ktc-control")

    def shutdown(self) -> None:
        self.broker.shutdown(wait=False)
        for pool in (self.oracle, self.space, self.io, self.control):
            pool.shutdown(wait=False, cancel_futures=True)


class LoopPool(Executor):
    """A thread pool that hands results back to one event loop cheaply.

    ``loop.run_in_executor`` costs the loop a ``concurrent.futures.Future``
    (with its own Condition), a wrapping asyncio future and a self-pipe write
    per call. Here a call is one asyncio future, the threads take calls from one
    queue, and results go back in batches: a thread that finishes schedules a
    wake-up of the loop only when none is pending, and the loop then sets every
    result that is ready. At 1,024 workers this took the chief's CPU per trial
    from 11.5 to 9.9 ms and its Report p99 from 486 to 303 ms (BENCHMARKS.md,
    section 8).
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        self._calls: queue.SimpleQueue[tuple[asyncio.Future[Any], Callable[[], Any]] | None] = (
            queue.SimpleQueue()
        )
        self._done: collections.deque[tuple[asyncio.Future[Any], bool, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._wake_pending = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads = [
            threading.Thread(target=self._work, name=f"{thread_name_prefix}_{i}", daemon=True)
            for i in range(max_workers)
        ]
        self._started = False
        self._shutdown = False

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """``fn()`` in a pool thread; the future of its result (call on the loop)."""
        if self._shutdown:
            raise RuntimeError("cannot schedule new calls after shutdown")
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        future: asyncio.Future[T] = loop.create_future()
        self._calls.put((future, fn))
        return future

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("LoopPool takes calls from its event loop: use call()")

    def _work(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn = item
            try:
                outcome: tuple[asyncio.Future[Any], bool, Any] = (future, True, fn())
            except BaseException as exc:  # handed to the awaiting coroutine
                outcome = (future, False, exc)
            with self._lock:
                self._done.append(outcome)
                wake = not self._wake_pending
                self._wake_pending = True
            if wake and self._loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed
                    self._loop.call_soon_threadsafe(self._hand_back)

    def _hand_back(self) -> None:
        with self._lock:
            done = list(self._done)
            self._done.clear()
            self._wake_pending = False
        for future, ok, value in done:
            if future.cancelled():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._shutdown = True
        if self._started:
            for _ in self._threads:
                self._calls.put(None)
            if wait:
                for thread in self._threads:
                    thread.join()


async def run_in(pool: Executor, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in ``pool``, awaited from the event loop."""
    call = functools.partial(fn, *args, **kwargs)
    if isinstance(pool, LoopPool):
        return await pool.call(call)
    return await asyncio.get_running_loop().run_in_executor(pool, call)


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
    """Stands in for a grpc server to collect the generated method handlers."""

    def __init__(self) -> None:
        self.handlers: dict[str, dict[str, grpc.RpcMethodHandler]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the registered handlers below carry the same methods

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self.handlers[service] = handlers


def add_servicers_to_server(server: grpc.aio.Server, trials: Any, control: Any) -> None:
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


async def answer_error(
    context: grpc.aio.ServicerContext,
    exc: Exception,
    method: str,
    *,
    audit: AuditLog | None = None,
    worker_id: str = "",
) -> NoReturn:
    """Answer ``exc`` with its status from the error table; log the unexpected;
    record the refusal in the audit log."""
    if not isinstance(exc, KtClusterError):
        log.error("%s failed", method, exc_info=exc)
    if audit is not None:
        wire = wire_error(exc, method=method)
        audit.record(method, context.peer() or "", worker_id, wire.details, code=wire.code.name)
    await abort_with_error_async(context, exc, method=method)


def observe_rpc(servicer: Any, method: str, code: str, started: float) -> None:
    """Time one RPC in the servicer's ``metrics`` (Prometheus), if it has any."""
    metrics = getattr(servicer, "metrics", None)
    if metrics is not None:
        metrics.observe_rpc(method, code, time.monotonic() - started)


def rpc(func: F) -> F:
    """Answer the async handler's exceptions with their codes from the error
    table, and record each refusal in the servicer's ``audit`` log (if it has
    one). Handlers raise; they never call ``context.abort`` themselves."""

    @wraps(func)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.monotonic()
        code = "OK"
        try:
            if isinstance(request, Undecodable):
                request.refuse()
            return await func(self, request, context)
        except Exception as exc:
            code = wire_error(exc, method=func.__name__).code.name
            await answer_error(
                context,
                exc,
                func.__name__,
                audit=getattr(self, "audit", None),
                worker_id=str(getattr(request, "worker_id", "")) or caller_worker_id(context),
            )
        finally:
            observe_rpc(self, func.__name__, code, started)

    return wrapper  # type: ignore[return-value]


__all__ = [
    "LoopPool",
    "RpcPools",
    "Undecodable",
    "add_servicers_to_server",
    "answer_error",
    "observe_rpc",
    "rpc",
    "run_in",
]
