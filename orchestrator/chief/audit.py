"""The audit log: every request the chief refused, one JSON line each.

``<search_dir>/audit.jsonl`` (mode 0600) gets a line per rejected request:

    {"ts": 1718000000.123, "peer": "ipv4:10.0.0.7:51234", "method": "EndTrial",
     "worker_id": "gpu-node-1-w3", "code": "INVALID_ARGUMENT", "reason": "..."}

The search token never appears: a request's token is never passed in, and any
occurrence of a secret given to ``redact`` (the search token) in a reason is
replaced by ``<redacted>``. Fields are cut to a bounded length, and the file
stops growing at ``max_bytes`` (one last line says so), so a flood of bad
requests cannot fill the disk through this log either.

The log is a plain callable as well: ``audit(method, peer, worker_id, reason)``
is ``audit.record(...)``, so the token interceptor can take it as an
``on_reject`` callback without importing this module.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

from orchestrator.clock import Clock, SystemClock

log = logging.getLogger(__name__)

AUDIT_FILE_NAME = "audit.jsonl"
MAX_AUDIT_BYTES = 64 * 1024 * 1024
"""The audit file stops growing here (about 200,000 refusals)."""
MAX_FIELD_CHARS = 300
"""Peer, method and worker id are cut to this many characters; reasons to 4x."""


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit] + f"...(+{len(value) - limit} chars)"


class AuditLog:
    """Appends one JSON line per refused request. Thread-safe; O(len(line)) per
    record, one ``write`` on an O_APPEND descriptor under a lock."""

    def __init__(
        self,
        path: Path,
        *,
        redact: Iterable[str] = (),
        clock: Clock | None = None,
        max_bytes: int = MAX_AUDIT_BYTES,
    ) -> None:
        self.path = Path(path)
        self.clock = clock or SystemClock()
        self.max_bytes = max_bytes
        self._secrets = tuple(s for s in redact if s)
        self._lock = threading.Lock()
        # 0600 from the start: reasons may quote ids and peers.
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.chmod(self.path, 0o600)
        self._size = os.fstat(self._fd).st_size
        self._full = self._size >= max_bytes

    def record(
        self, method: str, peer: str, worker_id: str, reason: str, *, code: str = ""
    ) -> None:
        """Append one refusal. Never raises: a full disk must not turn a refused
        request into an INTERNAL answer."""
        entry = {
            "ts": round(self.clock.wall(), 6),
            "peer": _cut(str(peer), MAX_FIELD_CHARS),
            "method": _cut(str(method), MAX_FIELD_CHARS),
            "worker_id": _cut(str(worker_id), MAX_FIELD_CHARS),
            "code": code,
            "reason": _cut(self._redact(str(reason)), 4 * MAX_FIELD_CHARS),
        }
        line = (json.dumps(entry, ensure_ascii=True) + "\n").encode()
        with self._lock:
            if self._full or self._fd < 0:
                return
            if self._size + len(line) > self.max_bytes:
                self._full = True
                line = (
                    json.dumps(
                        {"ts": entry["ts"], "reason": f"audit log full at {self.max_bytes} bytes"}
                    )
                    + "\n"
                ).encode()
            try:
                os.write(self._fd, line)
                self._size += len(line)
            except OSError:
                log.exception("could not append to the audit log %s", self.path)

    __call__ = record

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "<redacted>")
        return text

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


__all__ = ["AUDIT_FILE_NAME", "AuditLog"]
