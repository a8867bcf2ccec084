"""Shared foreground runner for ``ktc submit`` and ``ktc resume``: signals,
the live progress display, and the final report."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

from orchestrator.config.limits import MAX_MAX_WORKERS
from orchestrator.protocol.status_document import StatusDocument
from orchestrator.protocol.trials import SearchState, TrialView

if TYPE_CHECKING:
    from orchestrator.config import ClusterSpec, SearchSpec

# What the chief imports before it can create a search: Keras Tuner (Keras,
# TensorFlow) for its oracle, and the chief and session modules themselves.
CHIEF_MODULES: tuple[str, ...] = (
    "keras_tuner",
    "orchestrator.chief.chief",
    "orchestrator.fleet.session",
    "workers.hypermodels.sleep",
)

EXIT_CODES = {
    SearchState.COMPLETED: 0,
    SearchState.CANCELLED: 0,
    SearchState.FAILED: 1,
    SearchState.INTERRUPTED: 130,
}


def hide_gpus_from_chief() -> None:
    """The chief never trains: keep TensorFlow in this process off every GPU.
    Must run before anything imports TensorFlow."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # "3" unless -v: cli/quiet_terminal.py


def connect_ray_while_importing(cluster: ClusterSpec, search: SearchSpec) -> bool:
    """Start the embedded Ray (or connect to the cluster) for ``search`` while
    :data:`CHIEF_MODULES` are imported in a thread (see
    ``orchestrator/cli/background_imports.py``); returns True if Ray was
    started here. Ray is stopped again when the imports fail or on Ctrl-C."""
    from orchestrator.cli.background_imports import BackgroundImports
    from orchestrator.fleet.embedded_ray import connect_ray, search_uses_user_code

    settled = threading.Event()
    imports = BackgroundImports(CHIEF_MODULES, after=settled).start()
    started = connect_ray(
        cluster, user_code=search_uses_user_code(search), environment_settled=settled
    )
    try:
        imports.wait()
    except BaseException:
        stop_ray(started)
        raise
    return started


def stop_ray(started: bool) -> None:
    """``ray.shutdown()`` when this process started (or connected to) Ray."""
    import ray

    if started or ray.is_initialized():
        ray.shutdown()


def add_session_arguments(parser: Any) -> None:
    parser.add_argument(
        "--cluster",
        metavar="CLUSTER.yaml",
        help="cluster file (default: embedded local Ray, 2 CPU workers)",
    )
    parser.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help="start this many workers (default: every slot of the cluster file)",
    )
    parser.add_argument(
        "--on-interrupt",
        choices=("requeue", "finish"),
        default="requeue",
        help="what Ctrl-C does to running trials: requeue them now (default) or let them finish",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no live display (for logs and CI)"
    )
    # A session's process ends without the interpreter's finalisation once
    # everything is closed (orchestrator/cli/main.py, end_process).
    parser.set_defaults(end_process_fast=True)


def _worker_count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value == 0:
        # No worker would ever take a trial: the search would sit RUNNING forever.
        raise argparse.ArgumentTypeError(
            "expected at least 1 worker, got 0: a search with no workers never makes "
            "progress. Start with --workers 1 (or more); a running search can be paused "
            "with `ktc scale DIR --workers 0` and resumed with `ktc scale DIR --workers N`"
        )
    if not 1 <= value <= MAX_MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from 1 to {MAX_MAX_WORKERS} (and at most the cluster "
            f"file's fleet.max_workers), got {value}"
        )
    return value


def run_in_foreground(
    chief: Any, args: argparse.Namespace, *, ray_started: bool | None = None
) -> int:
    """Run a started chief's search with its fleet until it ends (submit and resume).

    ``ray_started``: None when the session is to connect Ray itself; else the
    caller connected it, True meaning it started the embedded Ray (the session
    then stops it).
    """
    from orchestrator.fleet.session import SearchSession, SessionOptions

    session = SearchSession(
        chief,
        SessionOptions(workers=args.workers, on_interrupt=args.on_interrupt),
        ray_started=ray_started,
    )
    # A resume's ledger already holds trials that ended: their lines were printed
    # by the run before, and `ktc results` lists them. Print only the new ones.
    _, ended_before = chief.broker.ended_since(0)
    code = start_session(session)
    if code is not None:
        return code
    if getattr(session, "report", None) is not None:
        from orchestrator.report.paths import report_index

        print(
            f"report: {report_index(session.chief.search_dir)} (refreshed as trials end)",
            flush=True,
        )
    return run_session(
        session, progress=not args.no_progress and sys.stdout.isatty(), ended_before=ended_before
    )


def start_session(session: Any) -> int | None:
    """Start the session; a Ctrl-C (or any error) while Ray and the fleet come up
    still leaves a consistent, resumable ledger. Returns an exit code on Ctrl-C."""
    try:
        session.start()
    except KeyboardInterrupt:
        session.chief.interrupt(requeue_running=True)
        session.close()
        print(f"interrupted while starting; resume with:  ktc resume {session.chief.search_dir}")
        return EXIT_CODES[SearchState.INTERRUPTED]
    except BaseException:
        session.chief.interrupt(requeue_running=True)
        session.close()
        raise
    return None


def run_session(session: Any, *, progress: bool, ended_before: int = 0) -> int:
    """Run a started SearchSession in the foreground; returns the exit code.
    ``ended_before``: trials that had ended before it started (a resume's), not
    printed again without the live display."""

    from rich.text import Text

    from orchestrator.cli.render import (
        make_console,
        render_status,
        scheduler_line,
        top_trials_table,
    )

    console = make_console()
    err = make_console(stderr=True)
    search_dir = session.chief.search_dir

    def on_signal(signum: int, frame: FrameType | None) -> None:
        message = session.interrupt()
        err.print(f"[yellow]{message}[/yellow]")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        state = _wait(session, console, progress, render_status, ended_before)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        session.close()

    broker = session.chief.broker
    trials = broker.trials()
    console.print(
        top_trials_table(trials, objective=broker.objective, direction=broker.direction, n=5)
    )
    scheduled = scheduler_line(trials, session.chief.search)
    if scheduled is not None:
        console.print(scheduled, soft_wrap=True, markup=False, highlight=False)
    message = session.chief.broker.message
    colour = {SearchState.COMPLETED: "green", SearchState.FAILED: "red"}.get(state, "yellow")
    # soft_wrap: never break these lines (people and scripts copy the commands).
    # Text, not markup: an error's "[...]" (shapes, lists) must print as written.
    verdict = Text(f"search {state.value}", style=colour)
    verdict.append(f": {message}")
    console.print(verdict, soft_wrap=True)
    if state in (SearchState.INTERRUPTED, SearchState.CANCELLED):
        console.print(f"resume with:  ktc resume {search_dir}", soft_wrap=True)
    console.print(f"results:      ktc results {search_dir}", soft_wrap=True)
    if getattr(session, "report", None) is not None:
        from orchestrator.report.paths import report_index

        console.print(f"report:       {report_index(search_dir)}", soft_wrap=True)
    sys.stdout.flush()
    return EXIT_CODES.get(state, 1)


class EndedTrials:
    """The trials that ended since the last call, in the order they ended
    (``--no-progress`` prints one line each); O(new ends) per call."""

    def __init__(self, broker: Any, *, position: int = 0) -> None:
        self.broker = broker
        self._position = position  # ends already reported

    def new(self) -> list[TrialView]:
        views, self._position = self.broker.ended_since(self._position)
        return list(views)


def _wait(
    session: Any,
    console: Any,
    progress: bool,
    render: Callable[[StatusDocument], Any],
    ended_before: int = 0,
) -> SearchState:
    if not progress or not console.is_terminal:
        from orchestrator.cli.render import trial_end_line

        broker = session.chief.broker
        ended = EndedTrials(broker, position=ended_before)

        def print_ended() -> None:
            for trial in ended.new():
                console.print(trial_end_line(trial, broker.objective), soft_wrap=True, markup=False)
            sys.stdout.flush()

        state: SearchState = session.wait(1.0, print_ended)
        print_ended()  # the trials that ended in the last second
        return state
    from rich.live import Live

    def document() -> StatusDocument:
        return session.status(with_trials=False)  # type: ignore[no-any-return]

    with Live(render(document()), console=console, refresh_per_second=2) as live:

        def tick() -> None:
            live.update(render(document()))

        state = session.wait(0.5, tick)
        # The frame left on the screen is the search's end, not the last tick's
        # (up to half a second before: "running", the last trial still in flight).
        live.update(render(document()), refresh=True)
        return state  # type: ignore[no-any-return]
