"""Helpers for the end-to-end fault tests: real ``ktc`` processes, real kills.

Every test starts ``ktc submit`` / ``ktc resume`` as a background process in
its own process group (so a SIGINT to it is ours alone), polls the live
status document, and asserts the ledger's invariants at the end: every trial
reached COMPLETED at most once and none was lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml

from orchestrator.chief.events import EventKind
from orchestrator.chief.events import RecordedEvent as LedgerEvent
from orchestrator.chief.ledger import Ledger
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parents[3]
KTC = [sys.executable, "-m", "orchestrator.cli.main"]
STARTUP_S = 150.0  # embedded Ray + first worker on a loaded 2-core machine
EPOCH_S = 0.5


def ktc_env() -> dict[str, str]:
    """The environment of every ``ktc`` child: no Ray auth, no inherited Ray address."""
    env = dict(os.environ)
    env["RAY_AUTH_MODE"] = "disabled"
    env.pop("RAY_ADDRESS", None)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def search_yaml(
    *,
    max_trials: int | None = 8,
    epochs: int = 4,
    epoch_s: float = EPOCH_S,
    oracle: Mapping[str, Any] | None = None,
    lease_timeout_s: float = 8.0,
    name: str = "faults",
) -> dict[str, Any]:
    """A sleep-hypermodel search (no TensorFlow): ``epochs`` x ``epoch_s`` per trial."""
    return {
        "name": name,
        "hypermodel": {"name": "sleep", "options": {"epoch_s": epoch_s}},
        "objective": {"name": "val_accuracy", "direction": "max"},
        "oracle": dict(oracle or {"type": "random", "max_trials": max_trials, "seed": 7}),
        "training": {"epochs": epochs},
        "failure": {"lease_timeout_s": lease_timeout_s},
    }


def cluster_yaml(
    nodes: list[Mapping[str, Any]] | None = None,
    *,
    address: str = "local",
    name: str = "faults",
    recycle_after_trials: int = 100,
) -> dict[str, Any]:
    """A cluster file; default one local node with 4 logical CPUs and 2 CPU workers.

    ``recycle_after_trials=1`` recycles each worker process after every trial,
    with a warm spare (the default ``fleet.warm_spares``) started beside it
    during every trial: a fault then also hits a slot that has a spare.
    """
    ray: dict[str, Any] = {"address": address}
    if address != "local":
        ray |= {"auth": False, "working_dir": None}
    return {
        "kind": "cluster",
        "name": name,
        "ray": ray,
        "chief": {"host": "127.0.0.1", "port": 0},
        "fleet": {"cpus_per_worker": 1, "recycle_after_trials": recycle_after_trials},
        "nodes": [dict(n) for n in (nodes or [{"name": "local", "cpus": 4, "cpu_workers": 2}])],
    }


def write_yaml(path: Path, data: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(data), sort_keys=False))
    return path


@dataclass
class KtcProcess:
    """A background ``ktc submit``/``ktc resume`` (its own process group)."""

    proc: subprocess.Popen[str]
    search_dir: Path
    log: Path
    argv: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait(self, timeout_s: float) -> int:
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{' '.join(self.argv)} did not exit within {timeout_s:g} s; output:\n"
                + self.output()[-4000:]
            ) from None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL, by pid; then the group we created (Ray children)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(timeout=10)
        kill_worker_pids(self.search_dir)
        # Leftovers in the session we created (e.g. Ray agents after a SIGKILL).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)


class KtcRunner:
    """Starts ``ktc`` processes for one test and stops them all at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.processes: list[KtcProcess] = []
        self._n = 0

    def start(self, argv: list[str], search_dir: Path) -> KtcProcess:
        self._n += 1
        log = self.tmp_path / f"ktc-{self._n}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                KTC + argv,
                cwd=self.tmp_path,
                env=ktc_env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        handle = KtcProcess(proc, search_dir, log, ["ktc", *argv])
        self.processes.append(handle)
        return handle

    def submit(
        self,
        search: Mapping[str, Any],
        cluster: Mapping[str, Any] | Path,
        *extra: str,
        dir_name: str = "search",
    ) -> KtcProcess:
        search_file = write_yaml(self.tmp_path / "search.yaml", search)
        cluster_file = (
            cluster
            if isinstance(cluster, Path)
            else write_yaml(self.tmp_path / "cluster.yaml", cluster)
        )
        search_dir = self.tmp_path / dir_name
        argv = ["submit", str(search_file), "--cluster", str(cluster_file)]
        argv += ["--dir", str(search_dir), "--no-progress", *extra]
        return self.start(argv, search_dir)

    def resume(self, search_dir: Path, *extra: str) -> KtcProcess:
        return self.start(["resume", str(search_dir), "--no-progress", *extra], search_dir)

    def stop_all(self) -> None:
        for handle in self.processes:
            with contextlib.suppress(Exception):
                handle.stop()


@pytest.fixture
def ktc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[KtcRunner]:
    """A :class:`KtcRunner` whose processes are stopped after the test."""
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    runner = KtcRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


def run_ktc(
    *args: str, cwd: Path | None = None, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a short ``ktc`` command (status, scale, cancel, results) to completion."""
    return subprocess.run(
        KTC + list(args),
        cwd=cwd,
        env=ktc_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def ktc_status(search_dir: Path) -> dict[str, Any]:
    """``ktc status DIR --json`` through the CLI."""
    done = run_ktc("status", str(search_dir), "--json")
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def live_status(search_dir: Path) -> dict[str, Any] | None:
    """The status document (in-process, same code as ``ktc status --json``); None
    while the chief is not up yet."""
    from orchestrator.status import status_document

    if not (search_dir / "ledger.db").exists() or not (search_dir / "chief.json").exists():
        return None
    try:
        return status_document(search_dir).to_json()
    except Exception:
        return None


def wait_status(
    search_dir: Path, predicate: Any, timeout_s: float, what: str, proc: KtcProcess | None = None
) -> dict[str, Any]:
    """Poll the live status until ``predicate(doc)``; return that document."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(
                f"ktc exited ({proc.proc.returncode}) while waiting for {what}:\n"
                + proc.output()[-4000:]
            )
        doc = live_status(search_dir)
        if doc is None:
            return False
        seen["doc"] = doc
        return bool(predicate(doc))

    try:
        wait_until(check, timeout_s, interval_s=0.3, what=what)
    except AssertionError as exc:
        last = json.dumps(seen.get("doc", {}).get("workers"), indent=1)
        raise AssertionError(f"{exc}; last workers: {last}") from None
    return seen["doc"]


def running_worker(doc: Mapping[str, Any], min_epoch: int = 1) -> dict[str, Any] | None:
    """A worker holding a trial at epoch >= ``min_epoch``, with a pid."""
    for worker in doc.get("workers", []):
        epoch = worker.get("epoch")
        if (
            worker.get("trial_id")
            and worker.get("pid")
            and epoch is not None
            and epoch >= min_epoch
        ):
            return dict(worker)
    return None


def ledger_events(search_dir: Path) -> list[LedgerEvent]:
    """Every ledger event, read-only."""
    ledger = Ledger(search_dir / "ledger.db", read_only=True)
    try:
        return list(ledger.events())
    finally:
        ledger.close()


def workers_log(search_dir: Path) -> list[dict[str, Any]]:
    """The lines of ``workers.jsonl`` (one per started worker process)."""
    path = search_dir / "workers.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def worker_pids(search_dir: Path) -> list[int]:
    return [int(w["pid"]) for w in workers_log(search_dir) if w.get("pid")]


def alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_worker_pids(search_dir: Path) -> None:
    """Last resort at teardown: SIGKILL the worker processes this test's search started."""
    for pid in worker_pids(search_dir):
        with contextlib.suppress(Exception):
            proc = psutil.Process(pid)
            if " ".join(proc.cmdline()).startswith("ray::"):  # still a Ray worker, not a reused pid
                proc.kill()


def completed_counts(events: list[LedgerEvent]) -> Counter[str]:
    return Counter(e.trial_id for e in events if e.kind is EventKind.COMPLETED and e.trial_id)


def assert_no_duplicate_or_lost(
    search_dir: Path, expected_trials: int | None = None, *, finished: bool = True
) -> list[LedgerEvent]:
    """The ledger invariants every fault test ends with.

    - every trial id reached COMPLETED at most once, and never both COMPLETED and FAILED;
    - nothing happened to a trial after its final event (no re-assignment);
    - when ``finished``: every created trial is final (none lost in RUNNING/PENDING);
    - with ``expected_trials``: exactly that many trials completed.
    Returns the events for further checks.
    """
    events = ledger_events(search_dir)
    created = [e.trial_id for e in events if e.kind is EventKind.CREATED]
    assert len(created) == len(set(created)), f"a trial id was created twice: {created}"
    done = completed_counts(events)
    dup = {tid: n for tid, n in done.items() if n > 1}
    assert not dup, f"trials COMPLETED more than once: {dup}"
    failed = {e.trial_id for e in events if e.kind is EventKind.FAILED}
    assert not (failed & set(done)), f"trials both COMPLETED and FAILED: {failed & set(done)}"
    final_seq: dict[str, int] = {}
    for e in events:
        if e.trial_id is None:
            continue
        if e.trial_id in final_seq and e.kind is not EventKind.PROGRESS:
            raise AssertionError(
                f"trial {e.trial_id}: {e.kind.value} (seq {e.seq}) after its final event "
                f"(seq {final_seq[e.trial_id]})"
            )
        if e.kind in (EventKind.COMPLETED, EventKind.FAILED):
            final_seq[e.trial_id] = e.seq
    if finished:
        lost = [tid for tid in created if tid not in final_seq]
        assert not lost, f"trials lost (never completed or failed): {lost}"
    if expected_trials is not None:
        assert len(done) == expected_trials, (
            f"expected {expected_trials} completed trials, got {len(done)}: {sorted(done)}"
        )
    return events


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` is alive; return the survivors after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(alive(p) for p in pids):
            return []
        time.sleep(0.2)
    return [p for p in pids if alive(p)]


def final_state(search_dir: Path) -> str:
    from orchestrator.status import status_document

    return status_document(search_dir).state.value
