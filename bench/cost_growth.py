"""Cost growth: does a trial cost the chief the same at 100, 1,000 and 10,000 trials?

The chief runs in its own process (:mod:`bench.chief_proc`) so that psutil
reads *its* CPU time only; 8 client threads in this process drive it with
instant trials (CreateTrial -> EndTrial COMPLETED, no sleep), timing each call.
Why a subprocess and not ``time.process_time`` in-process: the clients' own
gRPC and Python work would land in the same process total, and wrapping only
the servicers would miss gRPC's server threads and the interceptor. Reading
the chief process's user+system time counts everything the chief does,
serialisation included, and nothing the clients do.

Per-trial cost is reported two ways: the run's average (chief CPU / trials) and
the marginal cost in the run's last 10 % of trials (the ledger at its biggest).
Also here: the ledger's SQLite sync modes, NORMAL vs FULL, as the cost of one
committed event (``Ledger.append``) on this machine's disk.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.chief_proc import sleep_search, start_chief_process
from bench.procs import BenchProcess
from bench.stats import Distribution


@dataclass(frozen=True)
class GrowthResult:
    """One run at one size."""

    trials: int
    clients: int
    completed: int
    wall_s: float
    cpu_per_trial_ms: float  # chief CPU over the whole run / trials
    cpu_per_trial_last_ms: float  # chief CPU per trial over the last 10 % of trials
    create_ms: Distribution
    end_ms: Distribution
    create_last_ms: Distribution
    end_last_ms: Distribution
    synchronous: str = "NORMAL"


@dataclass(frozen=True)
class SyncModeResult:
    """Cost of one committed ledger event in one SQLite sync mode."""

    mode: str
    events: int
    per_event_us: Distribution
    mean_us: float


class _Progress:
    """Counts finished trials and samples the chief's CPU at the 90 % mark."""

    def __init__(self, chief_pid: int, total: int) -> None:
        self._proc = psutil.Process(chief_pid)
        self._lock = threading.Lock()
        self.total = total
        self.done = 0
        self.mark = max(int(total * 0.9), 0)
        self.cpu_at_mark: float | None = None
        self.time_at_mark: float | None = None

    def cpu_s(self) -> float:
        times = self._proc.cpu_times()
        return float(times.user + times.system)

    def finished_one(self) -> None:
        with self._lock:
            self.done += 1
            if self.done == self.mark:
                self.cpu_at_mark = self.cpu_s()
                self.time_at_mark = time.monotonic()


def _client_loop(
    address: str,
    token: str,
    worker_id: str,
    progress: _Progress,
    creates: list[tuple[float, float]],
    ends: list[tuple[float, float]],
    errors: list[str],
) -> None:
    from orchestrator.protocol.client import AssignmentKind, TrialClient
    from workers.hypermodels.sleep import sleep_score

    try:
        with TrialClient(address, token, worker_id=worker_id) as client:
            while True:
                t0 = time.perf_counter()
                assignment = client.create_trial(wait_s=5.0)
                t1 = time.perf_counter()
                if assignment.kind is AssignmentKind.STOP:
                    return
                if assignment.trial is None:
                    continue
                creates.append((t1, t1 - t0))
                score = sleep_score(assignment.trial.values, 0)
                t2 = time.perf_counter()
                client.end_trial(
                    assignment.trial, "COMPLETED", metrics={"val_accuracy": score}, best_step=0
                )
                t3 = time.perf_counter()
                ends.append((t3, t3 - t2))
                progress.finished_one()
    except Exception as exc:  # reported in the result, the other clients go on
        errors.append(f"{worker_id}: {type(exc).__name__}: {exc}")


def run_growth(
    *,
    trials: int,
    clients: int = 8,
    work_dir: Path | None = None,
    synchronous: str = "NORMAL",
    timeout_s: float = 1800.0,
) -> GrowthResult:
    """Drive one chief through ``trials`` instant trials with ``clients`` threads."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-growth-"))
    chief: BenchProcess = start_chief_process(
        sleep_search(f"bench-growth-{trials}", trials, 0.0),
        base / "search",
        synchronous=synchronous,
        hold=True,
    )
    try:
        ready = chief.ready or {}
        progress = _Progress(int(ready["pid"]), trials)
        cpu_start = progress.cpu_s()
        creates: list[tuple[float, float]] = []
        ends: list[tuple[float, float]] = []
        errors: list[str] = []
        threads = [
            threading.Thread(
                target=_client_loop,
                args=(ready["address"], ready["token"], f"c{i}", progress, creates, ends, errors),
                daemon=True,
            )
            for i in range(clients)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout_s)
        wall = time.monotonic() - started
        cpu_end = progress.cpu_s()
        chief.wait_result(60.0)
        chief.go()  # every client is done: let the held chief close
        chief.popen.wait(timeout=30)
    finally:
        chief.kill()
    if errors:
        raise RuntimeError(f"cost growth at {trials} trials: client errors: {errors[:3]}")
    done = progress.done
    cpu_mark = progress.cpu_at_mark if progress.cpu_at_mark is not None else cpu_start
    last_n = max(done - progress.mark, 1)
    mark_time = progress.time_at_mark or started
    return GrowthResult(
        trials=trials,
        clients=clients,
        completed=done,
        wall_s=wall,
        cpu_per_trial_ms=(cpu_end - cpu_start) / max(done, 1) * 1000.0,
        cpu_per_trial_last_ms=(cpu_end - cpu_mark) / last_n * 1000.0,
        create_ms=Distribution.of([d for _, d in creates]).scaled(1000.0),
        end_ms=Distribution.of([d for _, d in ends]).scaled(1000.0),
        create_last_ms=Distribution.of([d for t, d in creates if t >= mark_time]).scaled(1000.0),
        end_last_ms=Distribution.of([d for t, d in ends if t >= mark_time]).scaled(1000.0),
        synchronous=synchronous,
    )


def run_sync_modes(*, events: int = 2000, work_dir: Path | None = None) -> list[SyncModeResult]:
    """Time ``Ledger.append`` (one committed transaction each) in NORMAL and FULL."""
    from orchestrator.chief.events import TrialProgress
    from orchestrator.chief.ledger import Ledger

    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-sync-"))
    results = []
    for mode in ("NORMAL", "FULL"):
        ledger = Ledger(base / f"ledger-{mode}.db", synchronous=mode)
        metrics = {"val_accuracy": 0.9, "val_loss": 0.1}
        samples = []
        try:
            for i in range(events):
                t0 = time.perf_counter()
                ledger.append(
                    [
                        TrialProgress(
                            trial_id=f"t{i}", attempt=1, worker_id="w", epoch=0, metrics=metrics
                        )
                    ]
                )
                samples.append((time.perf_counter() - t0) * 1e6)
        finally:
            ledger.close()
        results.append(
            SyncModeResult(
                mode=mode,
                events=events,
                per_event_us=Distribution.of(samples),
                mean_us=sum(samples) / len(samples),
            )
        )
    return results
