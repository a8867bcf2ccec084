"""The processes of an embedded Ray, recorded so a resume can reap leftovers.

When a chief that started an embedded Ray is SIGKILLed, Ray's workers, raylet
and GCS die with it, but its DashboardAgent and RuntimeEnvAgent may be left
behind, reparented to init: their parent watcher calls ``sys.exit`` inside an
asyncio task, which does not end the process. So the session records every
process of its Ray (pid + create time) in the search directory, and
``ktc resume`` kills the ones still alive. The create time guards against pid
reuse: only a process that *is* the recorded one is touched.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

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
    try:
        entries = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return []
    reaped = []
    for entry in entries:
        try:
            proc = psutil.Process(int(entry["pid"]))
            if abs(proc.create_time() - float(entry["create_time"])) > 0.01:
                continue  # the pid was reused by an unrelated process
            proc.kill()
            reaped.append(proc.pid)
        except (psutil.Error, KeyError, ValueError):
            continue
    if reaped:
        log.warning(
            "killed %d Ray processes left behind by the previous chief: %s", len(reaped), reaped
        )
    path.unlink(missing_ok=True)
    return reaped
