"""Keep a running search's report and TensorBoard summaries up to date, off the chief's threads.

A :class:`ReportRefresher` owns one thread that sleeps on an event; every
``min_interval_s`` (30 s by default) it asks ``progress()`` for a cheap
signature of the search (trials ended, and the state) and, when it changed,
renders in a child process: ``python -m orchestrator.report DIR``. So:

- the chief's RPC threads and the session's display thread never draw,
  import matplotlib or hold the GIL for it (the Bayesian GP step went into its
  own process for the same reason: BENCHMARKS.md, section 3);
- at most one render runs at a time, and at most one starts per interval
  however many trials end in it (debounced); one render at start, so the page
  exists as soon as ``ktc submit`` names it, and a final one at :meth:`close`;
- a render that fails or hangs (killed after ``timeout_s``) is logged with the
  tail of its stderr and never stops the search.

The child runs in a session of its own, so a Ctrl-C at the terminal reaches
the search (which decides what to do) and not a half-drawn picture.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 300.0
_STDERR_TAIL_CHARS = 2000


def render_command(search_dir: Path | str) -> list[str]:
    """The child process that writes the report and the summaries of ``search_dir``."""
    return [sys.executable, "-m", "orchestrator.report", str(search_dir)]


class ReportRefresher:
    """Re-renders a search's report in a child process as trials end (see the module docstring).

    ``progress``: a cheap, thread-safe signature of the search (the session
    passes the count of ended trials and the state); a render starts only when
    it changed since the last one. ``command``: the child's argv (tests pass
    their own).
    """

    def __init__(
        self,
        search_dir: Path | str,
        *,
        progress: Callable[[], Hashable],
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        command: Sequence[str] | None = None,
    ) -> None:
        self.search_dir = Path(search_dir)
        self._progress = progress
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._command = list(command) if command is not None else render_command(search_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._renders = 0
        self._failures = 0

    @property
    def renders(self) -> int:
        """Renders finished so far (successful or not)."""
        with self._lock:
            return self._renders

    @property
    def failures(self) -> int:
        """Renders that failed or timed out."""
        with self._lock:
            return self._failures

    def start(self) -> None:
        """Start the thread; it renders once at once."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="ktc-report-refresh", daemon=True)
        self._thread.start()

    def close(self, *, timeout_s: float | None = None) -> None:
        """Render a last time (the search has ended) and wait for it; never raises."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s if timeout_s is not None else self._timeout_s + 5.0)
        if thread.is_alive():
            log.warning("the report's final refresh of %s did not finish in time", self.search_dir)
        self._thread = None

    def _run(self) -> None:
        last: Hashable | None = None
        first = True
        while True:
            stopping = False if first else self._stop.wait(self._min_interval_s)
            try:
                signature = self._progress()
            except Exception:
                log.exception("report refresh: could not read the search's progress")
                signature = None
            # The final render always runs: the ledger now has the search's end.
            if first or stopping or signature != last:
                self._render()
                last = signature
            first = False
            if stopping:
                return

    def _render(self) -> None:
        failed = True
        try:
            done = subprocess.run(
                self._command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=self._timeout_s,
                start_new_session=True,
                check=False,
            )
            if done.returncode == 0:
                failed = False
            else:
                tail = done.stderr.decode("utf-8", "replace")[-_STDERR_TAIL_CHARS:].strip()
                log.warning(
                    "the report of %s was not refreshed (exit %s): %s",
                    self.search_dir,
                    done.returncode,
                    tail or "no message",
                )
        except subprocess.TimeoutExpired:
            log.warning(
                "the report of %s was not refreshed: the render took over %g s and was stopped",
                self.search_dir,
                self._timeout_s,
            )
        except OSError as exc:
            log.warning("the report of %s was not refreshed: %s", self.search_dir, exc)
        with self._lock:
            self._renders += 1
            self._failures += int(failed)
