"""The processes of an embedded Ray, recorded so a resume can reap leftovers.

When a chief that started an embedded Ray is SIGKILLed, Ray's workers, raylet
and GCS die with it, but its DashboardAgent and RuntimeEnvAgent may be left
behind, reparented to init: their parent watcher calls ``sys.exit`` inside an
asyncio task, which does not end the process. So the session records every
process of its Ray (pid + create time) in the search directory, and a small
reaper process (:func:`start_reaper`) waits for the chief to die, however it
dies, and kills the ones still alive then. ``ktc resume`` does the same, in
case the reaper was killed too. The create time guards against pid reuse: only
a process that *is* the recorded one is touched.

The reaper is ``python -m orchestrator.fleet.ray_processes DIR RECORD``, in its own
session (a Ctrl-C at the terminal reaches the chief, not it), reading a pipe
whose other end only the chief holds: the pipe's end of file is the chief's
death. It imports only psutil, and costs no CPU while it waits.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

from orchestrator.search_dir import write_json_atomic

log = logging.getLogger(__name__)

RECORD_FILE = "ray-processes.json"


def record_ray_processes(search_dir: Path, root: psutil.Process | None = None) -> int:
    """Record every descendant of ``root`` (default: this process, whose
    descendants are the embedded Ray); returns the count."""
    entries = []
    for proc in (root or psutil.Process()).children(recursive=True):
        try:
            entries.append(
                {"pid": proc.pid, "create_time": proc.create_time(), "name": proc.name()}
            )
        except psutil.Error:
            continue
    write_json_atomic(Path(search_dir) / RECORD_FILE, entries, mode=0o600)
    return len(entries)


def reap_leftover_ray_processes(search_dir: Path) -> list[int]:
    """Kill recorded Ray processes of a dead chief that are still alive; returns their pids."""
    path = Path(search_dir) / RECORD_FILE
    entries = recorded_ray_processes(search_dir)
    reaped = _kill(entries)
    path.unlink(missing_ok=True)
    return reaped


def recorded_ray_processes(search_dir: Path) -> list[dict[str, Any]]:
    """The record :func:`record_ray_processes` wrote (empty when there is none)."""
    try:
        entries = json.loads((Path(search_dir) / RECORD_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def _kill(entries: list[dict[str, Any]]) -> list[int]:
    reaped = []
    for entry in entries:
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["create_time"])) > 0.01:
                continue  # the pid was reused by an unrelated process
            proc.kill()
            reaped.append(proc.pid)
        except (psutil.Error, KeyError, ValueError, TypeError):
            continue
    if reaped:
        log.warning(
            "killed %d Ray processes left behind by the previous chief: %s", len(reaped), reaped
        )
    return reaped


def start_reaper(search_dir: Path) -> subprocess.Popen[bytes]:
    """Start the process that reaps this Ray's leftovers once this process dies
    (call it after :func:`record_ray_processes`: it is handed the record as it is now).

    It holds the read end of a pipe whose write end stays open in this process
    (and in no child: it is not inheritable), so it reads end of file exactly
    when this process is gone, whether it exited or was killed.
    """
    entries = json.dumps(recorded_ray_processes(search_dir))
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.fleet.ray_processes", str(search_dir), entries],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _wait_for_parent_then_reap(search_dir: Path, entries: list[dict[str, Any]]) -> int:
    """The reaper's body: block on stdin until end of file, then kill the
    processes of the record it was handed at its start (never a resume's newer
    record: another Ray), and remove the record if it is still that one."""
    try:
        while os.read(0, 4096):
            pass  # the chief never writes; anything read is ignored
    except OSError:
        pass
    _kill(entries)
    if recorded_ray_processes(search_dir) == entries:
        (Path(search_dir) / RECORD_FILE).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(
            "usage: python -m orchestrator.fleet.ray_processes SEARCH_DIR RECORD_JSON",
            file=sys.stderr,
        )
        sys.exit(2)
    sys.exit(_wait_for_parent_then_reap(Path(sys.argv[1]), json.loads(sys.argv[2])))
