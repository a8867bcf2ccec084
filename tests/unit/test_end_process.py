"""``end_process``: the exit handlers run and output is flushed, a running
non-daemon thread is still waited for, and ``main(argv)`` never ends the process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from orchestrator.cli.main import main


def _run(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        """
        import atexit, sys, threading, time
        from pathlib import Path
        from orchestrator.cli.main import end_process
        out = Path(sys.argv[1])
        """
    ) + textwrap.dedent(body)
    return subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_exit_handlers_run_and_output_is_flushed(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        sys.stdout.write("no newline, still buffered")
        end_process(3)
        """,
    )
    assert done.returncode == 3
    assert done.stdout == "no newline, still buffered"
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_running_non_daemon_thread_is_still_waited_for(tmp_path: Path) -> None:
    done = _run(
        tmp_path,
        """
        def late():
            time.sleep(0.5)
            (out / "thread").write_text("finished")
        threading.Thread(target=late).start()
        end_process(4)
        """,
    )
    assert done.returncode == 4
    assert (tmp_path / "thread").read_text() == "finished"


def test_main_with_arguments_returns_instead_of_ending_the_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A session verb (end_process_fast) that fails early: main returns its code.
    code = main(["submit", str(tmp_path / "missing.yaml"), "--no-progress"])
    assert code == 2
    assert "missing.yaml" in capsys.readouterr().err
