"""Ctrl-C while a session starts (Ray and the fleet coming up) still leaves a
consistent, resumable ledger and prints the resume command."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.chief.replay import replay
from orchestrator.cli.session_cli import start_session
from orchestrator.protocol.trials import SearchState
from tests.helpers import float_space, make_search


class _Session:
    """A session whose start is interrupted after a trial was handed out."""

    def __init__(self, chief: Chief, error: BaseException) -> None:
        self.chief = chief
        self.error = error
        self.closed = False

    def start(self) -> None:
        self.chief.broker.create_trial("w0", wait_s=0)  # a worker got a trial, then Ctrl-C
        raise self.error

    def close(self) -> None:
        self.closed = True
        self.chief.close()


def _chief(tmp_path: Path) -> Chief:
    chief = Chief.create(
        make_search({"type": "random", "max_trials": 3}),
        tmp_path / "s",
        initial_space=float_space(),
    )
    chief.start()
    return chief


def test_ctrl_c_while_starting_requeues_and_prints_resume(tmp_path: Path, capsys: Any) -> None:
    session = _Session(_chief(tmp_path), KeyboardInterrupt())
    assert start_session(session) == 130
    assert session.closed
    assert f"ktc resume {tmp_path / 's'}" in capsys.readouterr().out
    from orchestrator.chief.ledger import Ledger

    with Ledger(tmp_path / "s" / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger)
    assert replayed.state is SearchState.INTERRUPTED
    assert replayed.in_flight == [] and list(replayed.queue) == ["0"]


def test_error_while_starting_is_raised_after_a_clean_stop(tmp_path: Path) -> None:
    session = _Session(_chief(tmp_path), RuntimeError("ray would not start"))
    with pytest.raises(RuntimeError, match="ray would not start"):
        start_session(session)
    assert session.closed


def test_the_live_display_is_left_showing_the_end_of_the_search() -> None:
    import io

    from rich.console import Console
    from rich.text import Text

    from orchestrator.cli.session_cli import _wait

    class Running:
        """Ticks once while running, then the search completes."""

        state = "running"

        def status(self, with_trials: bool) -> str:
            return self.state

        def wait(self, tick_s: float, on_tick: Any) -> SearchState:
            on_tick()
            self.state = "completed"
            return SearchState.COMPLETED

    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=80)
    state = _wait(Running(), console, True, lambda doc: Text(f"search is {doc}"))
    assert state is SearchState.COMPLETED
    frames = re.findall(r"search is (\w+)", out.getvalue())
    assert frames[-1] == "completed", frames
