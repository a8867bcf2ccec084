"""The exception hierarchy. Every error ktcluster raises on purpose derives from
:class:`KtClusterError`, so the CLI can render it without a traceback."""

from __future__ import annotations


class KtClusterError(Exception):
    """Root of every ktcluster error. Its message is meant for the user."""


class ConfigError(KtClusterError):
    """A cluster or search YAML is malformed. The message names file, key path,
    what was expected, what was got and how to fix it."""


class ChiefUnavailableError(KtClusterError):
    """No live chief answers for a search directory or address."""


class AuthenticationError(KtClusterError):
    """The chief refused the search token (missing or wrong)."""


class StaleLeaseError(KtClusterError):
    """The lease token is not the trial's current attempt; the result was ignored."""


class InvalidRequestError(KtClusterError):
    """The chief rejected a malformed request (INVALID_ARGUMENT)."""


class SearchFailedError(KtClusterError):
    """The search ended in state FAILED (for example too many consecutive failures)."""


class LedgerError(KtClusterError):
    """The ledger is missing, corrupt, or belongs to another search."""


class FleetError(KtClusterError):
    """Workers could not be placed or started on the Ray cluster."""


class DeployError(KtClusterError):
    """Bringing a Ray cluster up or down failed."""
