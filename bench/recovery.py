"""Recovery: worker SIGKILL and chief SIGKILL + ``ktc resume``, through the real CLI.

Both scenarios run ``ktc submit SEARCH.yaml --cluster CLUSTER.yaml --dir DIR``
(embedded local Ray, 2 CPU worker actors, sleep trials of 4 x 0.5 s) as a
subprocess in its own session, and read times from the ledger:

- **worker kill**: once the status document shows a worker with a pid at
  epoch >= 1, SIGKILL that pid; the figure is the ledger timestamp of that
  trial's next ASSIGNED event minus the kill time (the lease is 60 s, so a
  fast figure comes from Ray's actor-death signal, not lease expiry).
- **chief kill**: SIGKILL the ``ktc submit`` process (chief and Ray driver),
  then start ``ktc resume DIR``; the figure is the first ASSIGNED event after
  the resume started minus the resume's start (interpreter, Ray start-up and
  worker actor start-up included: that is what a user waits).

Clean-up stops only what this module started, by pid: the ktc processes
(SIGTERM, then SIGKILL) and, after a chief SIGKILL, the processes that were
its children (the embedded Ray it started and its worker actors).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from bench.procs import REPO_ROOT, bench_env

KTC = [sys.executable, "-m", "orchestrator.cli.main"]
_NEEDED = ("workers/actor.py", "orchestrator/fleet/slots.py", "orchestrator/cli/submit.py",
           "orchestrator/cli/resume.py")  # fmt: skip


@dataclass(frozen=True)
class RecoveryResult:
    """Both recovery figures (None = not measured; the detail says why)."""

    worker_kill_s: float | None
    worker_detail: str
    chief_resume_s: float | None
    chief_detail: str


def fleet_status() -> str:
    """Empty when the Ray fleet and the CLI are in the repository; else why not."""
    missing = [p for p in _NEEDED if not (REPO_ROOT / p).exists()]
    return f"not in the repository yet: {', '.join(missing)}" if missing else ""


class KtcProcess:
    """One background ``ktc`` process and the processes it started."""

    def __init__(self, argv: list[str], log: Path) -> None:
        with log.open("w") as out:
            self.popen = subprocess.Popen(
                [*KTC, *argv],
                cwd=str(log.parent),
                env=bench_env({"RAY_AUTH_MODE": "disabled"}),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        self.started = time.time()
        self.log = log
        self.children: list[psutil.Process] = []

    def remember_children(self) -> None:
        """Note this process's descendants (for :meth:`reap_children`)."""
        with contextlib.suppress(psutil.Error):
            self.children = psutil.Process(self.popen.pid).children(recursive=True)

    def sigkill(self) -> float:
        """SIGKILL the ktc process itself; returns the kill time."""
        self.remember_children()
        os.kill(self.popen.pid, signal.SIGKILL)
        killed = time.time()
        self.popen.wait(timeout=10)
        return killed

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the ktc process, then reap what it started."""
        self.remember_children()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self.reap_children()

    def reap_children(self) -> None:
        """Kill the remembered descendants that still run."""
        # Only processes we saw as this ktc's descendants (psutil.Process
        # remembers the create time, so a reused pid is never touched).
        for child in self.children:
            with contextlib.suppress(psutil.Error):
                if child.is_running():
                    child.kill()


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as YAML to ``path`` (returns ``path``)."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sleep_files(
    base: Path,
    name: str,
    *,
    trials: int,
    epoch_s: float,
    epochs: int,
    seed: int,
    lease_timeout_s: float,
    cpus: int,
    cpu_workers: int,
    recycle_after_trials: int,
) -> tuple[Path, Path]:
    """Write the search (sleep hypermodel, random search) and the one-node
    embedded-Ray cluster YAML files of one ``ktc submit`` run."""
    base.mkdir(parents=True, exist_ok=True)
    search = {
        "name": name,
        "hypermodel": {"name": "sleep", "options": {"epoch_s": epoch_s}},
        "objective": "val_accuracy",
        "oracle": {"type": "random", "max_trials": trials, "seed": seed},
        "training": {"epochs": epochs},
        "failure": {"lease_timeout_s": lease_timeout_s},
    }
    cluster = {
        "kind": "cluster",
        "name": name,
        "ray": {"address": "local"},
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": recycle_after_trials},
        "nodes": [{"name": "local", "host": "127.0.0.1", "cpus": cpus, "cpu_workers": cpu_workers}],
    }
    return write_yaml(base / "search.yaml", search), write_yaml(base / "cluster.yaml", cluster)


def _files(base: Path, name: str, trials: int) -> tuple[Path, Path]:
    """The recovery runs: 2 workers, 4 epochs of 0.5 s per trial."""
    return sleep_files(
        base,
        name,
        trials=trials,
        epoch_s=0.5,
        epochs=4,
        seed=3,
        lease_timeout_s=60.0,
        cpus=4,
        cpu_workers=2,
        recycle_after_trials=100,
    )


def ledger_events(search_dir: Path) -> list[Any]:
    """Every ledger event of ``search_dir`` (read-only; empty before the ledger exists)."""
    from orchestrator.chief.ledger import Ledger

    if not (search_dir / "ledger.db").exists():
        return []
    ledger = Ledger(search_dir / "ledger.db", read_only=True)
    try:
        return list(ledger.events())
    finally:
        ledger.close()


def _poll(predicate: Callable[[], Any], timeout_s: float, what: str, proc: KtcProcess) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(
                f"ktc exited ({proc.popen.returncode}) waiting for {what}; see {proc.log}"
            )
        with contextlib.suppress(Exception):
            found = predicate()
            if found:
                return found
        time.sleep(0.1)
    raise RuntimeError(f"no {what} within {timeout_s:g} s; see {proc.log}")


def _running_worker(search_dir: Path) -> dict[str, Any] | None:
    from orchestrator.status import status_document

    for worker in status_document(search_dir).workers:
        epoch = worker.epoch
        if worker.trial_id and worker.pid and epoch is not None and epoch >= 1:
            return worker.to_json()
    return None


def measure_worker_kill(base: Path, timeout_s: float = 180.0) -> tuple[float, str]:
    """SIGKILL a worker mid-trial; seconds until its trial is ASSIGNED again."""
    from orchestrator.chief.events import EventKind

    base.mkdir(parents=True, exist_ok=True)
    search, cluster = _files(base, "bench-worker-kill", 8)
    search_dir = base / "search"
    ktc = KtcProcess(["submit", str(search), "--cluster", str(cluster), "--dir", str(search_dir),
                "--no-progress"], base / "submit.log")  # fmt: skip
    try:
        victim = _poll(lambda: _running_worker(search_dir), timeout_s, "worker at epoch >= 1", ktc)
        ktc.remember_children()
        trial_id = victim["trial_id"]
        os.kill(int(victim["pid"]), signal.SIGKILL)
        killed = time.time()

        def reassigned() -> Any:
            return next(
                (
                    e
                    for e in ledger_events(search_dir)
                    if e.kind is EventKind.ASSIGNED and e.trial_id == trial_id and e.ts > killed
                ),
                None,
            )

        event = _poll(reassigned, 120.0, f"trial {trial_id} assigned again", ktc)
        requeue = next(
            (
                e
                for e in ledger_events(search_dir)
                if e.kind is EventKind.REQUEUED and e.trial_id == trial_id
            ),
            None,
        )
        detail = f"trial {trial_id} attempt {event.attempt} on {event.worker_id}"
        if requeue is not None:
            detail += f"; requeued {max(requeue.ts - killed, 0.0):.2f} s after the kill ({requeue.payload.get('reason', '')[:60]})"
        return event.ts - killed, detail
    finally:
        ktc.stop()


def measure_chief_resume(base: Path, timeout_s: float = 180.0) -> tuple[float, str]:
    """SIGKILL the chief mid-search, ``ktc resume``; seconds to the first trial handed out."""
    from orchestrator.chief.events import EventKind

    base.mkdir(parents=True, exist_ok=True)
    search, cluster = _files(base, "bench-chief-kill", 12)
    search_dir = base / "search"
    submit = KtcProcess(["submit", str(search), "--cluster", str(cluster), "--dir", str(search_dir),
                   "--no-progress"], base / "submit.log")  # fmt: skip
    resume: KtcProcess | None = None
    try:
        _poll(lambda: _running_worker(search_dir), timeout_s, "worker at epoch >= 1", submit)
        submit.sigkill()
        resume = KtcProcess(["resume", str(search_dir), "--no-progress"], base / "resume.log")
        started = resume.started

        def assigned() -> Any:
            return next(
                (
                    e
                    for e in ledger_events(search_dir)
                    if e.kind is EventKind.ASSIGNED and e.ts > started
                ),
                None,
            )

        event = _poll(assigned, timeout_s, "a trial assigned after resume", resume)
        detail = (
            f"trial {event.trial_id} attempt {event.attempt} on {event.worker_id}; includes "
            "`ktc resume` start-up (interpreter, Ray, worker actors)"
        )
        return event.ts - started, detail
    finally:
        if resume is not None:
            resume.stop()
        submit.reap_children()


def run_recovery(work_dir: Path | None = None) -> RecoveryResult:
    """Measure both scenarios; a scenario that cannot run says why."""
    reason = fleet_status()
    if reason:
        pending = f"pending: {reason}"
        return RecoveryResult(None, pending, None, pending)
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-recovery-"))
    worker_s: float | None = None
    chief_s: float | None = None
    try:
        worker_s, worker_detail = measure_worker_kill(base / "worker-kill")
    except Exception as exc:
        worker_detail = f"could not run: {type(exc).__name__}: {exc}"
    try:
        chief_s, chief_detail = measure_chief_resume(base / "chief-kill")
    except Exception as exc:
        chief_detail = f"could not run: {type(exc).__name__}: {exc}"
    return RecoveryResult(worker_s, worker_detail, chief_s, chief_detail)
