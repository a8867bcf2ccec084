"""The exception hierarchy. Every error ktcluster raises on purpose derives from
:class:`KtClusterError`, so the CLI can render it without a traceback.

Two branches matter to a caller:

- :class:`InputError` and its subclasses: the input was wrong (a file, an
  argument, a request field) and nothing changed; fixing the input fixes it.
  ``ktc`` exits 2 for these.
- every other :class:`KtClusterError`: a runtime failure (no chief, a stale
  lease, a fleet that cannot start...). ``ktc`` exits 1 for these.

Each class travels over gRPC as the status code that
:mod:`orchestrator.protocol.error_codes` gives it, and comes back as itself.
"""

from __future__ import annotations


class KtClusterError(Exception):
    """Root of every ktcluster error. Its message is meant for the user."""


class InputError(KtClusterError):
    """The input was wrong and nothing changed: a file, an argument or a request
    field. The message names the input and what was expected."""


class ConfigError(InputError):
    """A cluster or search YAML, or a command-line argument, is malformed. The
    message names file, key path, what was expected, what was got and how to fix it."""


class InvalidRequestError(InputError):
    """The chief rejected a malformed request (INVALID_ARGUMENT); nothing changed."""


class NothingToResumeError(InputError):
    """``ktc resume`` of a search that already completed: refused, nothing changed
    (the same words for a search directory here and a search id on a cluster)."""

    @classmethod
    def completed(cls, search: str) -> NothingToResumeError:
        """The refusal for ``search`` (its directory, or its id on a cluster)."""
        return cls(
            f"{search}: the search already completed; nothing to resume. "
            f"See the results with `ktc results {search}`."
        )


class NotFoundError(KtClusterError):
    """The chief has no such object (an artifact of a trial), though the request
    was well formed."""


class ChiefUnavailableError(KtClusterError):
    """No live chief answers for a search directory or address."""


class SearchDirError(InputError, ChiefUnavailableError):
    """A path given as a search directory holds no search (no ledger): bad input.

    It is a ChiefUnavailableError too, because no chief can serve a directory
    without a search, and callers that fall back when no chief answers (the
    offline status document) must keep doing so."""


class AuthenticationError(KtClusterError):
    """The chief refused the search token (missing or wrong)."""


class PermissionDeniedError(KtClusterError):
    """The caller is authenticated, but its credential does not allow this call: a
    worker acting for another worker or on another worker's trial, the search token
    used for a worker's RPC on a chief with a fleet, or a worker's credential used
    for a control RPC (see docs/security.md)."""


class StaleLeaseError(KtClusterError):
    """The lease token is not the trial's current attempt; the result was ignored."""


class LimitExceededError(KtClusterError):
    """The caller holds as much of the chief as one caller may (parked long-polls,
    concurrent uploads; see :mod:`orchestrator.chief.limits`). Nothing changed;
    the same call succeeds once the caller's other calls end."""


class UnimplementedError(KtClusterError):
    """The chief does not serve this call (a control RPC on a chief run without a
    fleet, or a chief of another version)."""


class ChiefInternalError(KtClusterError):
    """The chief failed unexpectedly while serving a call. The message holds the
    chief's own exception type and text; its traceback is in the chief's log."""


class SearchFailedError(KtClusterError, RuntimeError):
    """The search ended in state FAILED (for example too many consecutive failures).

    A RuntimeError too: Keras Tuner's own consecutive-failure limit raises one
    out of ``search()``, and a Keras Tuner user's script catches that."""


class LedgerError(KtClusterError):
    """The ledger is missing, corrupt, or belongs to another search."""


class DatasetUnavailableError(KtClusterError):
    """A dataset path of the search cannot be read on a worker's machine (missing,
    a folder where a file is expected, unreadable). Every trial would fail the same
    way, so the worker reports it before its first trial and the fleet fails the
    search with this message instead of retrying trials in a crash loop."""


class FleetError(KtClusterError):
    """Workers could not be placed or started on the Ray cluster."""


class JobsApiError(KtClusterError):
    """The cluster's Ray Jobs API failed a request, or the head cannot run the search."""


class DeployError(KtClusterError):
    """Bringing a Ray cluster up or down failed."""
