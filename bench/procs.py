"""Start benchmark processes behind a start barrier and collect their output.

Workers import their framework, connect, print one ``READY`` line and block
on stdin; once every worker is ready the harness writes ``go`` to all of them
at once. Interpreter start-up and imports therefore stay out of the measured
window (they are reported separately), as the issue asks.

Protocol on a worker's stdout: ``READY <json>`` once, then ``RESULT <json>``
once at the end. Anything else is ignored; stderr goes to a log file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.errors import KtClusterError

REPO_ROOT = Path(__file__).resolve().parent.parent


class BenchProcessError(KtClusterError):
    """A benchmark process did not start or did not report."""


def bench_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for benchmark subprocesses: quiet TF, no GPU, repo importable."""
    env = dict(os.environ)
    env.update(
        {
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(
                p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            ),
            "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "disabled"),
        }
    )
    env.update(extra or {})
    return env


@dataclass
class BenchProcess:
    """A started process speaking the READY/RESULT protocol."""

    name: str
    popen: subprocess.Popen[str]
    spawned_at: float
    log_path: Path
    ready: dict[str, Any] | None = None
    ready_at: float | None = None

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Block until the process printed READY (returns its payload)."""
        payload = self._read_tagged("READY", timeout_s)
        self.ready, self.ready_at = payload, time.time()
        return payload

    def go(self) -> None:
        """Release the barrier."""
        stdin = self.popen.stdin
        if stdin is not None:
            stdin.write("go\n")
            stdin.flush()

    def wait_result(self, timeout_s: float) -> dict[str, Any]:
        """Block until the process printed RESULT."""
        return self._read_tagged("RESULT", timeout_s)

    def _read_tagged(self, tag: str, timeout_s: float) -> dict[str, Any]:
        # readline blocks; the deadline is checked between lines and enforced
        # by the caller killing the process group on overall timeout.
        deadline = time.monotonic() + timeout_s
        stdout: IO[str] | None = self.popen.stdout
        if stdout is None:
            raise BenchProcessError(f"{self.name}: no stdout pipe")
        while time.monotonic() < deadline:
            line = stdout.readline()
            if not line:
                code = self.popen.wait(timeout=5)
                raise BenchProcessError(
                    f"{self.name}: exited with code {code} before printing {tag}; "
                    f"see {self.log_path}:\n{tail(self.log_path)}"
                )
            if line.startswith(tag + " "):
                return dict(json.loads(line[len(tag) + 1 :]))
        raise BenchProcessError(
            f"{self.name}: no {tag} within {timeout_s:g} s; see {self.log_path}"
        )

    def kill(self) -> None:
        """Kill this process (only this one, by pid) if it still runs."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(timeout=10)


def spawn(
    name: str,
    argv: Sequence[str],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
) -> BenchProcess:
    """Start ``python argv...`` with pipes for the barrier protocol."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log_file = log_path.open("w")
    spawned = time.time()
    popen = subprocess.Popen(
        [sys.executable, *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
        env=bench_env(env),
        cwd=str(REPO_ROOT),
    )
    log_file.close()
    return BenchProcess(name=name, popen=popen, spawned_at=spawned, log_path=log_path)


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def emit(tag: str, payload: Mapping[str, Any]) -> None:
    """Worker side: print one protocol line."""
    sys.stdout.write(f"{tag} {json.dumps(dict(payload))}\n")
    sys.stdout.flush()


def wait_for_go() -> None:
    """Worker side: block until the harness releases the barrier."""
    sys.stdin.readline()
