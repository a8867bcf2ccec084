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
    start_reaper,
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


def _sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _record(search_dir: Path, *procs: subprocess.Popen[bytes]) -> None:
    entries = [
        {"pid": p.pid, "create_time": psutil.Process(p.pid).create_time(), "name": "x"}
        for p in procs
    ]
    (search_dir / RECORD_FILE).write_text(json.dumps(entries))


def test_the_reaper_kills_the_record_once_the_chief_is_sigkilled(tmp_path: Path) -> None:
    # The "Ray" process, recorded; a "chief" that starts the reaper, then is killed -9.
    ray_agent = _sleeper()
    _record(tmp_path, ray_agent)
    chief = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path;"
         "from orchestrator.fleet.ray_processes import start_reaper;"
         f"reaper = start_reaper(Path({str(tmp_path)!r})); print(reaper.pid, flush=True);"
         "time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert chief.stdout is not None
        reaper = psutil.Process(int(chief.stdout.readline()))
        time.sleep(0.5)
        assert ray_agent.poll() is None  # nothing happens while the chief lives
        chief.kill()
        chief.wait(timeout=10)
        assert ray_agent.wait(timeout=20) == -9  # SIGKILLed by the reaper
        reaper.wait(timeout=20)  # and it is gone too
        assert not (tmp_path / RECORD_FILE).exists()
    finally:
        chief.kill()
        ray_agent.kill()
        ray_agent.wait(timeout=10)


def test_the_reaper_kills_the_record_it_was_handed_not_a_newer_one(
    tmp_path: Path,
) -> None:
    old, new = _sleeper(), _sleeper()
    try:
        _record(tmp_path, old)
        reaper = start_reaper(tmp_path)  # handed the record as it is now
        _record(tmp_path, new)  # a resume's Ray, recorded since
        assert reaper.stdin is not None
        reaper.stdin.close()  # the end of its chief
        assert reaper.wait(timeout=20) == 0
        assert old.wait(timeout=20) == -9
        assert new.poll() is None  # the newer record's process is left alone
        assert json.loads((tmp_path / RECORD_FILE).read_text())[0]["pid"] == new.pid
    finally:
        for proc in (old, new):
            proc.kill()
            proc.wait(timeout=10)
