"""Recording and reaping the processes an embedded Ray leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psutil

from orchestrator.fleet.ray_processes import (
    RECORD_FILE,
    reap_leftover_ray_processes,
    record_ray_processes,
)


def test_reap_kills_recorded_processes_that_are_still_alive(tmp_path: Path) -> None:
    # A stand-in for the session process: its own child is the "embedded Ray".
    # (Recording this test process would record, and reap, other tests' children.)
    session = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time;"
            "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
            "time.sleep(60)",
        ]
    )
    try:
        root = psutil.Process(session.pid)
        deadline = time.monotonic() + 30
        while not root.children() and time.monotonic() < deadline:
            time.sleep(0.05)
        (ray_child,) = root.children()
        assert record_ray_processes(tmp_path, root=root) == 1
        assert reap_leftover_ray_processes(tmp_path) == [ray_child.pid]
        # Killed: a zombie until its parent (asleep here) reaps it.
        while ray_child.is_running() and ray_child.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline + 10, "the recorded process is still running"
            time.sleep(0.05)
        assert session.poll() is None  # only what was recorded is touched
        assert not (tmp_path / RECORD_FILE).exists()
    finally:
        for proc in root.children(recursive=True) if session.poll() is None else []:
            proc.kill()
        session.kill()
        session.wait(timeout=10)


def test_reap_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # Same pid, different create time: a different process now owns that pid.
        entry = {
            "pid": child.pid,
            "create_time": psutil.Process(child.pid).create_time() - 100,
            "name": "x",
        }
        (tmp_path / RECORD_FILE).write_text(json.dumps([entry]))
        assert reap_leftover_ray_processes(tmp_path) == []
        assert child.poll() is None
    finally:
        child.kill()
        child.wait(timeout=10)


def test_reap_without_a_record_does_nothing(tmp_path: Path) -> None:
    assert reap_leftover_ray_processes(tmp_path) == []
