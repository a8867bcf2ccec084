"""``ktc submit`` on the embedded Ray: every process it started is gone when
it exits, and the report's final render happened before the exit."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from bench.procs import bench_env
from bench.recovery import sleep_files

pytestmark = pytest.mark.slow


def test_submit_exits_leaving_no_process_and_a_final_report(tmp_path: Path) -> None:
    search, cluster = sleep_files(
        tmp_path,
        "exit-check",
        trials=4,
        epoch_s=0.05,
        epochs=1,
        seed=1,
        lease_timeout_s=120.0,
        cpus=2,
        cpu_workers=2,
        recycle_after_trials=0,
    )
    search_dir = tmp_path / "search"
    argv = [sys.executable, "-m", "orchestrator.cli.main", "submit", str(search)]
    argv += ["--cluster", str(cluster), "--dir", str(search_dir), "--no-progress"]
    ktc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env=bench_env({"RAY_AUTH_MODE": "disabled"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: dict[int, psutil.Process] = {}
    try:
        deadline = time.monotonic() + 240
        while ktc.poll() is None:
            assert time.monotonic() < deadline, "ktc submit did not finish in 240 s"
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(ktc.pid).children(recursive=True):
                    seen.setdefault(child.pid, child)
            time.sleep(0.05)
        output = ktc.stdout.read() if ktc.stdout else ""
        assert ktc.returncode == 0, output
        assert "search completed" in output
        assert len(seen) >= 4, f"saw too few processes to judge: {seen}"

        def alive(proc: psutil.Process) -> bool:
            try:
                return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
            except psutil.Error:
                return False

        left = [p for p in seen.values() if alive(p)]
        assert left == [], f"still running after ktc exited: {left}"
        # The final render ran before the exit: the report shows the search's end.
        index = (search_dir / "report" / "index.html").read_text()
        assert '<span class="state COMPLETED">completed</span>' in index
        assert "4 of at most 4" in index
    finally:
        if ktc.poll() is None:
            ktc.kill()
            ktc.wait(timeout=30)
        for proc in seen.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running():
                    proc.kill()
