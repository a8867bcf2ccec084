"""Recording and reaping the processes an embedded Ray leaves behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from orchestrator.ray_processes import (
    RECORD_FILE,
    reap_leftover_ray_processes,
    record_ray_processes,
)


def test_reap_kills_recorded_processes_that_are_still_alive(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert record_ray_processes(tmp_path) >= 1
        assert reap_leftover_ray_processes(tmp_path) == [child.pid]
        assert child.wait(timeout=10) != 0
        assert not (tmp_path / RECORD_FILE).exists()
    finally:
        if child.poll() is None:
            child.kill()


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
