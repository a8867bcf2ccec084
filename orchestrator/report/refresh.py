"""Keep a running search's report and TensorBoard summaries up to date, off the chief's threads.

A :class:`ReportRefresher` owns one thread that sleeps on an event; every
``min_interval_s`` (30 s by default) it asks ``progress()`` for a cheap
signature of the search (trials ended, and the state) and, when it changed,
asks a render process for a render. So:

- the chief's RPC threads and the session's display thread never draw,
  import matplotlib or hold the GIL for it (the Bayesian GP step went into its
  own process for the same reason: BENCHMARKS.md, section 3);
- at most one render runs at a time, and at most one starts per interval
  however many trials end in it (debounced); one render at start, so the page
  exists as soon as ``ktc submit`` names it, and a final one at :meth:`close`;
- the render process stays up between renders (``python -m
  orchestrator.report --serve DIR``, :mod:`orchestrator.report.server`), so
  its imports are paid once, at the search's start, and not between the last
  result and the exit; it is replaced after :data:`RENDERS_PER_PROCESS`
  renders, which bounds what a long search's renders could leak;
- a render that fails or hangs (the process is killed after ``timeout_s``, and
  the next render starts a new one) is logged with its error and never stops
  the search.

The render process runs in a session of its own, so a Ctrl-C at the terminal
reaches the search (which decides what to do) and not a half-drawn picture.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from orchestrator.report.server import REQUEST

log = logging.getLogger(__name__)

DEFAULT_MIN_INTERVAL_S = 30.0
DEFAULT_TIMEOUT_S = 300.0
RENDERS_PER_PROCESS = 50
_ERROR_TAIL_CHARS = 2000


def render_command(search_dir: Path | str) -> list[str]:
    """The render process of ``search_dir``: it answers ``render`` lines (server.py)."""
    return [sys.executable, "-m", "orchestrator.report", "--serve", str(search_dir)]


class RenderFailed(Exception):
    """A render that did not write the report (its message says why)."""


class RenderProcess:
    """One warm render process: :meth:`render` asks it for a render and waits
    for the answer, at most ``timeout_s``; a process that died, hung or served
    its share is replaced by the next call."""

    def __init__(self, command: Sequence[str], *, renders_per_process: int) -> None:
        self._command = list(command)
        self._renders_per_process = renders_per_process
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []  # the tail of the process's stderr
        self._stderr_reader: threading.Thread | None = None
        self._served = 0

    def start(self) -> None:
        """Start the process now (it imports while the search starts)."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._answers = queue.Queue()
        self._proc = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._served = 0
        proc, answers = self._proc, self._answers
        threading.Thread(
            target=_read_lines, args=(proc.stdout, answers), name="ktc-report-answers", daemon=True
        ).start()
        self._stderr = []
        self._stderr_reader = threading.Thread(
            target=_keep_tail, args=(proc.stderr, self._stderr), name="ktc-report-err", daemon=True
        )
        self._stderr_reader.start()

    def render(self, timeout_s: float) -> None:
        """One render; RenderFailed with its reason when it did not write the report."""
        if self._proc is not None and self._served >= self._renders_per_process:
            self.stop()
        self.start()
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        try:
            proc.stdin.write(REQUEST + "\n")
            proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # it died: its end of output says why (below)
        try:
            line = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            self.stop()
            raise RenderFailed(f"the render took over {timeout_s:g} s and was stopped") from None
        self._served += 1
        if line is None:  # the process ended without answering (its output closed)
            code: int | None = None
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(timeout=5.0)
            self._proc = None
            if self._stderr_reader is not None:
                self._stderr_reader.join(timeout=2.0)  # what it said before it went
            tail = "".join(self._stderr)[-_ERROR_TAIL_CHARS:].strip()
            raise RenderFailed(f"exit {code}: {tail or 'no message'}")
        try:
            reply = json.loads(line)
            code, error = int(reply["code"]), str(reply["error"])
        except (ValueError, KeyError, TypeError):
            self.stop()
            raise RenderFailed(f"the render process answered {line[:200]!r}") from None
        if code != 0:
            raise RenderFailed(f"exit {code}: {error.strip()[-_ERROR_TAIL_CHARS:] or 'no message'}")

    def stop(self) -> None:
        """End the process: at the end of its input, or killed if it does not go."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        try:
            proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                proc.kill()
            proc.wait()


def _read_lines(stream: object, answers: queue.Queue[str | None]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        answers.put(line)
    answers.put(None)


def _keep_tail(stream: object, tail: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        tail.append(line)
        if len(tail) > 200:
            del tail[:100]


class ReportRefresher:
    """Re-renders a search's report in a render process as trials end (see the module docstring).

    ``progress``: a cheap, thread-safe signature of the search (the session
    passes the count of ended trials and the state); a render starts only when
    it changed since the last one. ``command``: the render process's argv
    (tests pass their own, speaking :mod:`orchestrator.report.server`'s
    protocol).
    """

    def __init__(
        self,
        search_dir: Path | str,
        *,
        progress: Callable[[], Hashable],
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        command: Sequence[str] | None = None,
        renders_per_process: int = RENDERS_PER_PROCESS,
    ) -> None:
        self.search_dir = Path(search_dir)
        self._progress = progress
        self._min_interval_s = min_interval_s
        self._timeout_s = timeout_s
        self._process = RenderProcess(
            command if command is not None else render_command(search_dir),
            renders_per_process=renders_per_process,
        )
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
        try:
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
        finally:
            self._process.stop()

    def _render(self) -> None:
        failed = True
        try:
            self._process.render(self._timeout_s)
            failed = False
        except RenderFailed as exc:
            log.warning("the report of %s was not refreshed (%s)", self.search_dir, exc)
        except OSError as exc:
            log.warning("the report of %s was not refreshed: %s", self.search_dir, exc)
        with self._lock:
            self._renders += 1
            self._failures += int(failed)
