"""The chief's log file: ``<search_dir>/chief.log``, INFO and above.

The terminal shows warnings only (more with ``-v``); the file keeps what an
operator asks about later: which trial went to which worker, requeues, the
open-file limit and how many workers it supports (docs/operations.md), the
server's address. Mode 0600, like every file of the search directory.

Records below the terminal's level must still reach the file, so while a
chief runs, the ``orchestrator`` logger passes INFO on, and each handler of
the root logger that had no level of its own is given the root logger's level:
what the terminal shows does not change.

A record flagged :data:`TRIAL_LINE` (a trial that ended FAILED) is kept off
the terminal's handlers while a chief runs: ``ktc submit`` and ``ktc resume``
print every ended trial as their own line, so the terminal would show each
failure twice. The file keeps it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from orchestrator.search_dir import LOG_FILE

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# ``extra={TRIAL_LINE: True}``: the CLI shows this event as a trial's line.
TRIAL_LINE = "ktc_trial_line"


def _not_a_trial_line(record: logging.LogRecord) -> bool:
    return not getattr(record, TRIAL_LINE, False)


def _is_terminal(handler: logging.Handler) -> bool:
    return isinstance(handler, logging.StreamHandler) and not isinstance(
        handler, logging.FileHandler
    )


class ChiefLog:
    """Attach with :meth:`open`, detach with :meth:`close` (idempotent)."""

    def __init__(self, search_dir: Path) -> None:
        self.path = Path(search_dir) / LOG_FILE
        self._handler: logging.FileHandler | None = None
        self._logger = logging.getLogger("orchestrator")
        self._previous_level = self._logger.level
        self._pinned: list[logging.Handler] = []
        self._filtered: list[logging.Handler] = []

    def open(self) -> None:
        if self._handler is not None:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.close(fd)
        os.chmod(self.path, 0o600)
        handler = logging.FileHandler(self.path, encoding="utf-8")
        handler.setLevel(logging.INFO)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        root = logging.getLogger()
        for existing in root.handlers:
            if existing.level == logging.NOTSET:  # the terminal's: keep showing what it showed
                existing.setLevel(root.level)
                self._pinned.append(existing)
            if _is_terminal(existing):
                existing.addFilter(_not_a_trial_line)
                self._filtered.append(existing)
        self._previous_level = self._logger.level
        if self._logger.getEffectiveLevel() > logging.INFO:
            self._logger.setLevel(logging.INFO)
        self._logger.addHandler(handler)
        self._handler = handler

    def close(self) -> None:
        if self._handler is None:
            return
        self._logger.removeHandler(self._handler)
        self._handler.close()
        self._handler = None
        self._logger.setLevel(self._previous_level)
        for handler in self._pinned:
            handler.setLevel(logging.NOTSET)
        self._pinned = []
        for handler in self._filtered:
            handler.removeFilter(_not_a_trial_line)
        self._filtered = []


__all__ = ["LOG_FORMAT", "TRIAL_LINE", "ChiefLog"]
