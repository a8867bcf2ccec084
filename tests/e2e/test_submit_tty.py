"""``ktc submit`` in a terminal: the live progress display (rich) renders from
the chief's light status document while the search runs, and the search
completes. Run under a real pseudo-terminal, as a user's shell would."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import KTC, WriteYaml, ktc_env, local_cluster, sleep_search

pytestmark = pytest.mark.slow


def _run_in_pty(argv: list[str], env: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """Run ``argv`` with a pseudo-terminal as stdin/stdout/stderr; (exit code, output)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(argv, stdin=follower, stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(
                    "ktc submit did not finish:\n" + b"".join(chunks).decode(errors="replace")
                )
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:  # EIO: the child closed the terminal
                    data = b""
                if not data and proc.poll() is not None:
                    break
                chunks.append(data)
            elif proc.poll() is not None:
                break
    finally:
        os.close(leader)
        proc.wait(timeout=30)
    return proc.returncode, b"".join(chunks).decode(errors="replace")


def test_live_progress_display_in_a_terminal(tmp_path: Path, write_yaml: WriteYaml) -> None:
    search_dir = tmp_path / "search"
    cluster = local_cluster(
        "tty", [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}]
    )
    argv = [
        str(KTC),
        "submit",
        str(write_yaml("search.yaml", sleep_search("tty", max_trials=6, epochs=3, epoch_s=0.5))),
        "--cluster",
        str(write_yaml("cluster.yaml", cluster)),
        "--dir",
        str(search_dir),
    ]
    code, output = _run_in_pty(argv, ktc_env({"COLUMNS": "160", "LINES": "40"}), timeout_s=240)
    assert code == 0, output[-6000:]
    assert "Traceback" not in output, output[-6000:]
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output)  # drop cursor moves and colours
    # The live view, drawn while trials ran: the counts line, and a worker
    # row with its running trial and that trial's last reported epoch (read
    # from the chief's leases, not from a copy of every trial).
    assert re.search(r"trials: \d+ pending, [12] running, \d+ completed", text), text[-6000:]
    assert re.search(r"local-w[01] │ local │ cpu\s+│ running │ \d+\s+│ \d+", text), text[-6000:]
    # Then the final table, and the end state.
    assert "top 5 trials" in text, text[-6000:]
    assert "search completed" in text, text[-6000:]
