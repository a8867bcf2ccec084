"""The worker registry: which worker processes the fleet started, and the secret
each one proves itself with.

The fleet registers every worker process it starts (:meth:`WorkerRegistry.register`)
and hands the credential it gets back to that process only, in the actor's
constructor arguments. The chief's auth interceptor
(:class:`~orchestrator.protocol.auth.TokenAuthInterceptor`) maps the credential a
call presents back to its worker id with :meth:`worker_for`; the request's
``worker_id`` must be that id, and the broker refuses a Report, EndTrial or
upload on an attempt leased to another worker. docs/security.md has the whole
trust model.

**Enforcement.** A chief without a fleet (tests, a Keras Tuner user's own
workers through ``RemoteOracle.attach``) serves any holder of the search token,
as before. A chief whose session starts a fleet calls :meth:`require` before the
first worker starts (:meth:`register` turns it on too); from then on the
worker RPCs (CreateTrial, Report, EndTrial, UploadArtifact) need a worker
credential, and the search token alone is refused for them.

**Lifetime.** Credentials live in the chief's memory only. A restarted or
recycled process in a slot is registered again and gets a fresh credential,
which revokes its predecessor's; the fleet revokes a slot's credential when
its process is killed or dies. A resumed chief (``ktc resume``) starts with an
empty registry and registers its new fleet's workers; a worker that outlived a
killed chief is refused (UNAUTHENTICATED), and its lease expires and is
requeued by the existing reaper.

Thread-safe; every method is O(1). Only SHA-256 digests of credentials are
kept, so a memory dump of the registry does not give a usable credential, and
a lookup by digest leaks nothing useful through timing.
"""

from __future__ import annotations

import hashlib
import secrets
import threading

_CREDENTIAL_BYTES = 32
# Worker credentials carry a prefix, so logs and error reports can say which
# kind of secret was presented without showing it.
CREDENTIAL_PREFIX = "ktcw."


def _digest(credential: str) -> bytes:
    return hashlib.sha256(credential.encode()).digest()


class WorkerRegistry:
    """Registered worker ids and the digests of their current credentials."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._worker_of: dict[bytes, str] = {}
        self._digest_of: dict[str, bytes] = {}
        self._enforced = False

    @property
    def enforced(self) -> bool:
        """True once the worker RPCs need a worker credential (see module docstring)."""
        with self._lock:
            return self._enforced

    def require(self) -> None:
        """From now on, only registered workers get trials (a chief with a fleet)."""
        with self._lock:
            self._enforced = True

    def register(self, worker_id: str) -> str:
        """Mint a credential for ``worker_id``; its previous one stops working."""
        if not worker_id:
            raise ValueError("register: expected a worker id, got an empty string")
        credential = CREDENTIAL_PREFIX + secrets.token_urlsafe(_CREDENTIAL_BYTES)
        digest = _digest(credential)
        with self._lock:
            old = self._digest_of.get(worker_id)
            if old is not None:
                self._worker_of.pop(old, None)
            self._digest_of[worker_id] = digest
            self._worker_of[digest] = worker_id
            self._enforced = True
        return credential

    def revoke(self, worker_id: str) -> None:
        """Forget ``worker_id``'s credential (its process was killed or died)."""
        with self._lock:
            digest = self._digest_of.pop(worker_id, None)
            if digest is not None:
                self._worker_of.pop(digest, None)

    def worker_for(self, credential: str) -> str | None:
        """The worker id ``credential`` was minted for, or None."""
        if not credential.startswith(CREDENTIAL_PREFIX):
            return None
        digest = _digest(credential)
        with self._lock:
            return self._worker_of.get(digest)

    def registered(self) -> list[str]:
        """The worker ids that hold a credential now, sorted."""
        with self._lock:
            return sorted(self._digest_of)


__all__ = ["CREDENTIAL_PREFIX", "WorkerRegistry"]
