"""One table: the gRPC status code each ktcluster exception travels as, and back.

The chief's servicers answer an exception with :func:`abort_with_error`;
:class:`~orchestrator.protocol.client.TrialClient` turns the status back into
the exception with :func:`error_from_status`. Both read :data:`ERROR_CODES`,
so the two sides cannot drift apart.

Several types share a code (a ConfigError and an InvalidRequestError are both
INVALID_ARGUMENT), so the chief also sends the type's name in the trailing
metadata key :data:`ERROR_TYPE_KEY`, and the client rebuilds exactly that type
with the chief's message unchanged: the user reads the real cause. A status
without a name (set by gRPC itself, by the token interceptor, or by a chief of
another version) comes back as the code's *bare* type, the one row per code
that has a ``bare_message``.

An exception that is not a :class:`~orchestrator.errors.KtClusterError` is a
bug on the chief: INTERNAL, with its real type and message, as a
:class:`~orchestrator.errors.ChiefInternalError`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NoReturn

import grpc

from orchestrator.errors import (
    AuthenticationError,
    ChiefInternalError,
    ChiefUnavailableError,
    ConfigError,
    DatasetUnavailableError,
    DeployError,
    FleetError,
    InputError,
    InvalidRequestError,
    JobsApiError,
    KtClusterError,
    LedgerError,
    LimitExceededError,
    NotFoundError,
    NothingToResumeError,
    PermissionDeniedError,
    SearchDirError,
    SearchFailedError,
    StaleLeaseError,
    UnimplementedError,
)

ERROR_TYPE_KEY = "ktc-error-type"

_Code = grpc.StatusCode


@dataclass(frozen=True)
class ErrorCode:
    """One row: an exception type and the status code it travels as.

    ``bare_message`` is set on the one row per code that a status without a
    type name comes back as; it may use ``{method}``, ``{address}``, ``{code}``
    and ``{details}``.
    """

    error: type[KtClusterError]
    code: grpc.StatusCode
    bare_message: str | None = None


ERROR_CODES: tuple[ErrorCode, ...] = (
    # Bad input: nothing changed on the chief; fixing the request fixes it.
    ErrorCode(InvalidRequestError, _Code.INVALID_ARGUMENT, "{method}: {details}"),
    ErrorCode(ConfigError, _Code.INVALID_ARGUMENT),  # e.g. scale to an unknown node
    ErrorCode(SearchDirError, _Code.INVALID_ARGUMENT),
    ErrorCode(NothingToResumeError, _Code.INVALID_ARGUMENT),  # resume of a completed search
    ErrorCode(InputError, _Code.INVALID_ARGUMENT),
    # Well formed, but the object does not exist (an artifact not uploaded).
    ErrorCode(NotFoundError, _Code.NOT_FOUND, "{method}: {details}"),
    # The chief's state refuses the call: a lease that is no longer the trial's,
    # a fleet that is not running, a search that is ending or failed. A bare
    # FAILED_PRECONDITION is a stale lease, as workers have always read it.
    ErrorCode(StaleLeaseError, _Code.FAILED_PRECONDITION, "{method}: {details}"),
    ErrorCode(FleetError, _Code.FAILED_PRECONDITION),
    # A worker's machine lacks the search's data: the search cannot run there.
    ErrorCode(DatasetUnavailableError, _Code.FAILED_PRECONDITION),
    ErrorCode(SearchFailedError, _Code.FAILED_PRECONDITION),
    ErrorCode(KtClusterError, _Code.FAILED_PRECONDITION),
    ErrorCode(
        AuthenticationError,
        _Code.UNAUTHENTICATED,
        "{method}: the chief at {address} refused the token: {details}",
    ),
    # Authenticated, but this credential may not make this call (docs/security.md).
    ErrorCode(
        PermissionDeniedError,
        _Code.PERMISSION_DENIED,
        "{method}: the chief at {address} refused this caller: {details}",
    ),
    # One caller holds as many parked long-polls or uploads as it may.
    ErrorCode(
        LimitExceededError,
        _Code.RESOURCE_EXHAUSTED,
        "{method}: the chief at {address} refused the call: {details}",
    ),
    ErrorCode(
        UnimplementedError,
        _Code.UNIMPLEMENTED,
        "{method}: the chief at {address} does not serve this call ({details}); "
        "is it a chief of another ktcluster version?",
    ),
    # The client retries UNAVAILABLE (a restarting chief) before raising this.
    ErrorCode(
        ChiefUnavailableError,
        _Code.UNAVAILABLE,
        "{method}: no chief answers at {address} ({code}: {details}); "
        "is the search still running? See `ktc status DIR`.",
    ),
    # The chief's own failures; its log holds the traceback.
    ErrorCode(
        ChiefInternalError,
        _Code.INTERNAL,
        "{method} failed on the chief at {address}: {details}",
    ),
    ErrorCode(LedgerError, _Code.INTERNAL),
    ErrorCode(DeployError, _Code.INTERNAL),
    # Raised on the user's machine about a cluster's Jobs API; never by a chief.
    ErrorCode(JobsApiError, _Code.INTERNAL),
)

# gRPC's own deadline means to us what UNAVAILABLE means: no chief answered.
_BARE_ALIASES = {_Code.DEADLINE_EXCEEDED: _Code.UNAVAILABLE}

_CODE_OF: dict[type[KtClusterError], grpc.StatusCode] = {row.error: row.code for row in ERROR_CODES}
_BY_NAME: dict[str, type[KtClusterError]] = {row.error.__name__: row.error for row in ERROR_CODES}
_BARE: dict[grpc.StatusCode, ErrorCode] = {
    row.code: row for row in ERROR_CODES if row.bare_message is not None
}


@dataclass(frozen=True)
class WireError:
    """What the chief answers for an exception: code, type name, message."""

    code: grpc.StatusCode
    error_type: str
    details: str


def wire_error(exc: BaseException, *, method: str) -> WireError:
    """The status the chief answers ``exc`` with (server side).

    A KtClusterError travels as the nearest type in the table (its own, or the
    first base class that has a row) with its message unchanged. Anything else
    is a bug on the chief: INTERNAL, naming the exception's real type.
    """
    if isinstance(exc, KtClusterError):
        # KtClusterError has a row, so every subclass finds one.
        row = next(cls for cls in type(exc).__mro__ if cls in _CODE_OF)
        return WireError(_CODE_OF[row], row.__name__, str(exc))
    return WireError(
        _Code.INTERNAL,
        ChiefInternalError.__name__,
        f"{method} failed on the chief: {type(exc).__name__}: {exc} "
        "(the traceback is in the chief's log)",
    )


def abort_with_error(context: grpc.ServicerContext, exc: BaseException, *, method: str) -> NoReturn:
    """End the call with the status the table gives ``exc``; raises, as
    ``context.abort`` does.

    Handlers raise exceptions rather than call ``context.abort`` themselves:
    grpc's abort raises a plain Exception, which an ``except Exception`` around
    the handler would answer again, as INTERNAL."""
    wire = wire_error(exc, method=method)
    context.set_trailing_metadata(((ERROR_TYPE_KEY, wire.error_type),))
    context.abort(wire.code, wire.details)
    raise AssertionError("grpc's context.abort returned")  # it always raises


async def abort_with_error_async(
    context: grpc.aio.ServicerContext, exc: BaseException, *, method: str
) -> NoReturn:
    """:func:`abort_with_error` for the chief's asyncio server."""
    wire = wire_error(exc, method=method)
    await context.abort(
        wire.code, wire.details, trailing_metadata=((ERROR_TYPE_KEY, wire.error_type),)
    )
    raise AssertionError("grpc's context.abort returned")  # it always raises


def error_type_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The type name the chief sent in the trailing metadata, if any."""
    for item in metadata or ():
        key, value = item
        if key == ERROR_TYPE_KEY:
            return value.decode() if isinstance(value, bytes) else value
    return None


def error_from_status(
    code: grpc.StatusCode,
    details: str,
    error_type: str | None = None,
    *,
    method: str = "",
    address: str = "",
) -> KtClusterError:
    """The exception a status stands for (client side).

    A type name from the table wins, with the chief's message unchanged; else
    the code's bare type with its ``bare_message``; else (a code no row has,
    such as ABORTED) a KtClusterError naming the code.
    """
    named = _BY_NAME.get(error_type or "")
    if named is not None:
        return named(details)
    row = _BARE.get(_BARE_ALIASES.get(code, code))
    fields = {"method": method, "address": address, "code": code.name, "details": details}
    if row is not None and row.bare_message is not None:
        return row.error(row.bare_message.format(**fields))
    return KtClusterError("{method} failed at {address}: {code}: {details}".format(**fields))
