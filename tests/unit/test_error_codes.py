"""The error table both ways: every exception type to its status code and back
(with its type name in the trailing metadata), and a bare code to its default type."""

from __future__ import annotations

import inspect

import grpc
import pytest

from orchestrator import errors
from orchestrator.errors import (
    AuthenticationError,
    ChiefInternalError,
    ChiefUnavailableError,
    ConfigError,
    InputError,
    InvalidRequestError,
    KtClusterError,
    PermissionDeniedError,
    SearchDirError,
    StaleLeaseError,
    UnimplementedError,
)
from orchestrator.protocol.error_codes import (
    ERROR_CODES,
    ERROR_TYPE_KEY,
    ErrorCode,
    error_from_status,
    error_type_from,
    wire_error,
)

ROWS = {row.error.__name__: row for row in ERROR_CODES}


def test_every_ktcluster_exception_has_its_own_row() -> None:
    declared = {
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, KtClusterError)
    }
    assert {row.error for row in ERROR_CODES} == declared
    assert len(ERROR_CODES) == len(declared)  # one row each


def test_each_code_has_exactly_one_bare_type() -> None:
    codes = {row.code for row in ERROR_CODES}
    for code in codes:
        bare = [row.error.__name__ for row in ERROR_CODES if row.code == code and row.bare_message]
        assert len(bare) == 1, f"{code.name}: bare types {bare}"


@pytest.mark.parametrize("row", ERROR_CODES, ids=lambda row: row.error.__name__)
def test_round_trip_with_type_name(row: ErrorCode) -> None:
    message = f"{row.error.__name__}: where, expected, got; how to fix"
    wire = wire_error(row.error(message), method="Scale")
    assert (wire.code, wire.error_type, wire.details) == (row.code, row.error.__name__, message)
    back = error_from_status(wire.code, wire.details, wire.error_type, method="Scale", address="a")
    assert type(back) is row.error
    assert str(back) == message  # the chief's message, with no header of ours


@pytest.mark.parametrize(
    "row", [row for row in ERROR_CODES if row.bare_message], ids=lambda row: row.code.name
)
def test_bare_code_comes_back_as_its_default_type(row: ErrorCode) -> None:
    back = error_from_status(row.code, "the detail", None, method="Cancel", address="h:1")
    assert type(back) is row.error
    assert "Cancel" in str(back) and "the detail" in str(back)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidRequestError, grpc.StatusCode.INVALID_ARGUMENT),
        (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
        (SearchDirError, grpc.StatusCode.INVALID_ARGUMENT),
        (StaleLeaseError, grpc.StatusCode.FAILED_PRECONDITION),
        (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
        (PermissionDeniedError, grpc.StatusCode.PERMISSION_DENIED),
        (UnimplementedError, grpc.StatusCode.UNIMPLEMENTED),
        (ChiefUnavailableError, grpc.StatusCode.UNAVAILABLE),
        (ChiefInternalError, grpc.StatusCode.INTERNAL),
    ],
)
def test_the_codes_the_protocol_promises(
    error: type[KtClusterError], code: grpc.StatusCode
) -> None:
    assert ROWS[error.__name__].code is code


def test_bad_input_travels_as_invalid_argument_and_nothing_else_does() -> None:
    for row in ERROR_CODES:
        assert (row.code is grpc.StatusCode.INVALID_ARGUMENT) == issubclass(row.error, InputError)


def test_a_subclass_without_a_row_travels_as_its_nearest_base() -> None:
    class UnknownTrial(InvalidRequestError):
        pass

    wire = wire_error(UnknownTrial("unknown trial id '42'"), method="GetTrial")
    assert (wire.code, wire.error_type) == (grpc.StatusCode.INVALID_ARGUMENT, "InvalidRequestError")
    back = error_from_status(wire.code, wire.details, wire.error_type)
    assert type(back) is InvalidRequestError and str(back) == "unknown trial id '42'"


def test_an_unexpected_exception_is_internal_with_its_real_type_and_message() -> None:
    wire = wire_error(ValueError("boom: x must be > 0"), method="Scale")
    assert (wire.code, wire.error_type) == (grpc.StatusCode.INTERNAL, "ChiefInternalError")
    back = error_from_status(wire.code, wire.details, wire.error_type)
    assert type(back) is ChiefInternalError
    assert str(back).startswith("Scale failed on the chief: ValueError: boom: x must be > 0")


def test_plain_ktcluster_error_is_not_mistaken_for_a_stale_lease() -> None:
    wire = wire_error(KtClusterError("the search is ending; scaling is refused"), method="Scale")
    back = error_from_status(wire.code, wire.details, wire.error_type)
    assert type(back) is KtClusterError
    assert str(back) == "the search is ending; scaling is refused"


def test_deadline_exceeded_is_no_chief() -> None:
    back = error_from_status(
        grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", method="Status", address="h:1"
    )
    assert type(back) is ChiefUnavailableError
    assert str(back).startswith("Status: no chief answers at h:1 (DEADLINE_EXCEEDED")


def test_a_code_without_a_row_names_the_code() -> None:
    back = error_from_status(
        grpc.StatusCode.ABORTED, "transaction aborted", method="EndTrial", address="h:1"
    )
    assert type(back) is KtClusterError
    assert str(back) == "EndTrial failed at h:1: ABORTED: transaction aborted"


def test_an_unknown_type_name_falls_back_to_the_code() -> None:
    # A chief of a newer version may send a type this client does not know.
    back = error_from_status(grpc.StatusCode.INVALID_ARGUMENT, "bad", "BrandNewError", method="M")
    assert type(back) is InvalidRequestError and str(back) == "M: bad"


def test_error_type_from_metadata() -> None:
    assert error_type_from(None) is None
    assert error_type_from([("other", "x")]) is None
    assert error_type_from([("other", "x"), (ERROR_TYPE_KEY, "ConfigError")]) == "ConfigError"
    assert error_type_from([(ERROR_TYPE_KEY, b"StaleLeaseError")]) == "StaleLeaseError"
