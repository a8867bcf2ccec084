"""The chief at fleet scale: W simulated workers, most of them parked in CreateTrial.

The workload (issue 13; BENCHMARKS.md section 7):

- **Chief**: ktcluster's chief in its own process (:mod:`bench.chief_proc`),
  sleep search, random oracle, objective ``val_accuracy``,
  ``failure.lease_timeout_s = 10`` (a chief that stalls shows as expired
  leases). Every simulated worker uses the owner token (no fleet, so worker
  ids are free-form: ``sim-p{proc}-w{i}``). The bound on parked CreateTrials
  in all (``ProtocolLimits.max_long_polls``) is passed explicitly as
  :data:`MAX_LONG_POLLS`, so every idle worker parks.
- **Sizes**: W workers, T = W/4 trials running at once, 2T trials in all. The
  chief's oracle is capped at T running trials (``--max-running``: it answers
  IDLE while T are ongoing), standing in for an oracle with fewer trials than
  workers (a Bayesian fit in progress, Hyperband's last brackets). So 3/4 of
  the workers are parked at any time, and each of the last T trials starts
  only when an earlier one ends: refill is measurable.
- **Workers**: P client processes (:mod:`bench.scale_clients`; 4, or fewer for
  small W: one per 32 workers), each running W/P simulated workers as asyncio
  tasks on grpc.aio, each with its own channel and TCP connection. Per trial:
  10 Reports 0.2 s apart, a heartbeat (Report with epoch -1) every 1 s while it
  runs, then (heartbeats stopped) EndTrial COMPLETED with the best epoch's
  metrics and the trial_state_json it was given.
  CreateTrial asks for a 5-s long-poll, as real workers do. Start barrier:
  every process connects all its channels, then all start on ``go``.

Measured:

- **Report, heartbeat and EndTrial latency**, client side, p50/p99;
- **refill**, at the chief (ledger times): for each trial after the first T,
  its ASSIGNED minus the latest COMPLETED before it, p50/p95; and the same from
  the clients' side (a TRIAL answer received minus the latest EndTrial sent
  before it), the only refill Keras Tuner's chief allows;
- **the chief's CPU per trial** (psutil user + system of the chief process from
  ``go`` to the search's end, over 2T) and **peak RSS** (sampled every 0.2 s
  from the driver, from the chief's start to its exit);
- **expired leases**: REQUEUED events whose reason says the lease expired, and
  FAILED events for the same reason (must be 0: no worker is lost on purpose);
- the CreateTrial answers (TRIAL / WAIT / STOP), call errors, and the wall
  time (``go`` to the search's end).

``python -m bench.scale --workers 64`` runs one size and prints the figures.
Keras Tuner's chief on the same workload: :mod:`bench.kt_scale`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import psutil

from bench.chief_proc import sleep_search, start_chief_process
from bench.procs import BenchProcess, spawn
from bench.recovery import ledger_events
from bench.scale_clients import TOKEN_ENV, Workload, client_argv
from bench.stats import Distribution

MAX_LONG_POLLS = (
    8192  # ProtocolLimits.max_long_polls since issue 13; explicit, so every idle worker parks
)
LEASE_TIMEOUT_S = 10.0
MAX_CLIENT_PROCS = 4
WORKERS_PER_PROC_MIN = 32
EXPIRED_PREFIX = "lease expired"  # orchestrator/chief/lifecycle.py, expire_leases


def client_procs(workers: int, most: int = MAX_CLIENT_PROCS) -> int:
    """How many client processes for ``workers``: one per 32 workers, at most ``most``."""
    return max(1, min(most, workers // WORKERS_PER_PROC_MIN))


def split(workers: int, procs: int) -> list[int]:
    """``workers`` spread over ``procs`` as evenly as possible."""
    return [workers // procs + (1 if i < workers % procs else 0) for i in range(procs)]


@dataclass(frozen=True)
class ScaleRun:
    """One run of one system at one W (latencies in ms)."""

    system: str
    workers: int
    running: int  # T: trials at once
    trials: int  # 2T
    client_procs: int
    completed: int
    wall_s: float
    report_ms: Distribution
    heartbeat_ms: Distribution | None  # None: the protocol has no heartbeat
    end_ms: Distribution
    refill_ms: Distribution | None  # at the chief (ledger); None: no ledger
    refill_client_ms: Distribution
    cpu_per_trial_ms: float
    peak_rss_mib: float
    first_rss_mib: float  # the first sample: the chief started, before any worker connected
    expired_leases: int | None  # None: the chief has no leases
    answers: dict[str, int]
    errors: dict[str, int]
    error_samples: list[str] = field(default_factory=list)
    search_state: str = ""
    chief_log_errors: int = 0  # ERROR / Traceback lines in the chief's log
    timed_out_workers: int = 0
    note: str = ""
    # Peak anonymous RSS (RssAnon: heap, stacks, arenas); the rest of RSS is
    # file-backed pages of shared libraries (TensorFlow's), shared and reclaimable.
    peak_anon_mib: float = math.nan

    def to_json(self) -> dict[str, Any]:
        """A JSON-able mapping (for logs and the CLI)."""
        return asdict(self)


# ------------------------------------------------------------------ sampling


def _rss_anon_bytes(pid: int) -> int:
    """RssAnon of /proc/PID/status (Linux); 0 where there is none."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        pass
    return 0


class RssSampler:
    """Samples one process's RSS every ``interval_s`` in a thread; keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.first_bytes = 0
        self.peak_anon_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while True:
            try:
                rss = self.process.memory_info().rss
                self.first_bytes = self.first_bytes or rss
                self.peak_bytes = max(self.peak_bytes, rss)
                self.peak_anon_bytes = max(self.peak_anon_bytes, _rss_anon_bytes(self.process.pid))
            except (psutil.Error, OSError):
                return
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20

    @property
    def first_mib(self) -> float:
        return self.first_bytes / 2**20


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@contextmanager
def watchdog(procs: Sequence[BenchProcess], timeout_s: float) -> Iterator[None]:
    """Kill ``procs`` (each by its own pid) if the block is still running after
    ``timeout_s``: a blocked read of their stdout then ends, and the caller's
    wait raises instead of hanging."""
    done = threading.Event()

    def guard() -> None:
        if not done.wait(timeout_s):
            for proc in procs:
                proc.kill()

    thread = threading.Thread(target=guard, name="bench-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=5)


# ----------------------------------------------------------------- summaries


@dataclass
class ClientTotals:
    """The client processes' RESULTs, merged."""

    report_ms: list[float] = field(default_factory=list)
    heartbeat_ms: list[float] = field(default_factory=list)
    end_ms: list[float] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    trial_started_at: list[float] = field(default_factory=list)
    end_sent_at: list[float] = field(default_factory=list)
    completed: int = 0
    finished_at: float = 0.0
    timed_out: int = 0

    @classmethod
    def merge(cls, results: Sequence[Mapping[str, Any]]) -> ClientTotals:
        """Concatenate the processes' samples."""
        out = cls()
        for r in results:
            out.report_ms += r["report_ms"]
            out.heartbeat_ms += r["heartbeat_ms"]
            out.end_ms += r["end_ms"]
            out.answers.update(r["answers"])
            out.errors.update(r["errors"])
            out.error_samples += r["error_samples"][: 5 - len(out.error_samples)]
            out.trial_started_at += r["trial_started_at"]
            out.end_sent_at += r["end_sent_at"]
            out.completed += int(r["completed"])
            out.finished_at = max(out.finished_at, float(r["finished_at"]))
            out.timed_out += int(r["timed_out"])
        return out


def gaps_after_first(starts: Sequence[float], ends: Sequence[float], first: int) -> list[float]:
    """For each start after the ``first`` earliest: itself minus the latest end before it.

    A start with no end before it (none freed a slot yet) is skipped.
    """
    ordered_ends = sorted(ends)
    gaps: list[float] = []
    j = 0
    latest: float | None = None
    for start in sorted(starts)[first:]:
        while j < len(ordered_ends) and ordered_ends[j] <= start:
            latest = ordered_ends[j]
            j += 1
        if latest is not None:
            gaps.append(start - latest)
    return gaps


@dataclass(frozen=True)
class LedgerFigures:
    """What the chief's ledger says about one run."""

    refill_s: list[float]
    expired_leases: int
    completed: int
    failed: int
    state: str


def ledger_figures(events: Sequence[Any], running: int) -> LedgerFigures:
    """Refill (per ASSIGNED after the first ``running``: the gap from the latest
    COMPLETED before it, in commit order), expired leases, and end counts."""
    from orchestrator.chief.events import EventKind

    refill: list[float] = []
    assigned = expired = completed = failed = 0
    last_completed: float | None = None
    state = ""
    for e in sorted(events, key=lambda e: e.seq):
        if e.kind is EventKind.COMPLETED:
            completed += 1
            last_completed = e.ts
        elif e.kind is EventKind.ASSIGNED:
            assigned += 1
            if assigned > running and last_completed is not None:
                refill.append(e.ts - last_completed)
        elif e.kind is EventKind.REQUEUED:
            expired += str(e.payload.get("reason", "")).startswith(EXPIRED_PREFIX)
        elif e.kind is EventKind.FAILED:
            failed += 1
            expired += str(e.payload.get("error_message", "")).startswith(EXPIRED_PREFIX)
        elif e.kind is EventKind.SEARCH:
            value = e.payload.get("state", "")
            state = str(getattr(value, "value", value))
    return LedgerFigures(refill, expired, completed, failed, state)


def count_log_errors(path: Path) -> int:
    """Lines of a log that say ERROR or start a traceback."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return 0
    return sum(("ERROR" in line or line.startswith("Traceback")) for line in text.splitlines())


def _dist(values_ms: Sequence[float]) -> Distribution:
    return Distribution.of(list(values_ms))


# ---------------------------------------------------------------------- runs


def start_and_collect(
    clients: Sequence[BenchProcess], chief_pid: int, timeout_s: float
) -> tuple[float, float, ClientTotals]:
    """Wait until every client process is connected, start them all at once,
    and collect their figures: (the chief's CPU seconds at go, go's time, totals)."""
    for proc in clients:
        proc.wait_ready(timeout_s)
    cpu_at_go = cpu_s(chief_pid)
    go_at = time.time()
    for proc in clients:
        proc.go()
    return cpu_at_go, go_at, ClientTotals.merge([proc.wait_result(timeout_s) for proc in clients])


def spawn_clients(
    module: str,
    address: str,
    workers: int,
    procs: int,
    load: Workload,
    log_dir: Path,
    *,
    deadline_s: float,
    env: Mapping[str, str] | None = None,
) -> list[BenchProcess]:
    """Start ``procs`` client processes of ``module`` sharing ``workers``."""
    return [
        spawn(
            f"{module.rsplit('.', 1)[-1]}-p{p}",
            [*client_argv(module, address, p, n, load), "--deadline-s", str(deadline_s)],
            log_dir,
            env,
        )
        for p, n in enumerate(split(workers, procs))
    ]


def run_scale(
    *,
    workers: int,
    work_dir: Path | None = None,
    procs: int | None = None,
    running: int | None = None,
    load: Workload | None = None,
    max_long_polls: int | None = MAX_LONG_POLLS,
    lease_timeout_s: float = LEASE_TIMEOUT_S,
    timeout_s: float = 300.0,
) -> ScaleRun:
    """One run of ktcluster's chief at ``workers`` (see the module docstring).

    ``running`` (T) defaults to W/4. ``timeout_s`` bounds every wait: the
    chief's start, the clients' connect, and the run (a watchdog kills every
    process it started past twice that).
    """
    load = load or Workload()
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-scale-"))
    running = running or max(1, workers // 4)
    trials = 2 * running
    procs = procs or client_procs(workers)
    search = sleep_search(f"scale-w{workers}", trials, load.epoch_s)
    search["failure"] = {"lease_timeout_s": lease_timeout_s}
    search_dir = base / "search"
    chief = start_chief_process(
        search,
        search_dir,
        hold=True,
        max_running=running,
        max_long_polls=max_long_polls,
        timeout_s=timeout_s,
    )
    started: list[BenchProcess] = [chief]
    try:
        ready = chief.ready or {}
        pid = int(ready["pid"])
        with RssSampler(pid) as rss, watchdog(started, timeout_s * 2):
            clients = spawn_clients(
                "bench.scale_clients",
                str(ready["address"]),
                workers,
                procs,
                load,
                base / "logs",
                deadline_s=timeout_s,
                env={TOKEN_ENV: str(ready["token"])},
            )
            started += clients
            cpu_at_go, go_at, totals = start_and_collect(clients, pid, timeout_s)
            result = chief.wait_result(timeout_s)
            chief.go()  # release --hold: every client is done
            chief.popen.wait(timeout=30)
    finally:
        for proc in started:
            proc.kill()
    ledger = ledger_figures(ledger_events(search_dir), running)
    return ScaleRun(
        system="ktcluster",
        workers=workers,
        running=running,
        trials=trials,
        client_procs=procs,
        completed=ledger.completed,
        wall_s=float(result["finished_at"]) - go_at,
        report_ms=_dist(totals.report_ms),
        heartbeat_ms=_dist(totals.heartbeat_ms),
        end_ms=_dist(totals.end_ms),
        refill_ms=Distribution.of(ledger.refill_s).scaled(1000.0),
        refill_client_ms=Distribution.of(
            gaps_after_first(totals.trial_started_at, totals.end_sent_at, running)
        ).scaled(1000.0),
        cpu_per_trial_ms=(float(result["cpu_s"]) - cpu_at_go) / trials * 1000.0,
        peak_rss_mib=rss.peak_mib,
        first_rss_mib=rss.first_mib,
        peak_anon_mib=rss.peak_anon_bytes / 2**20,
        expired_leases=ledger.expired_leases,
        answers=dict(totals.answers),
        errors=dict(totals.errors),
        error_samples=totals.error_samples,
        search_state=ledger.state or str(result.get("state")),
        chief_log_errors=count_log_errors(chief.log_path),
        timed_out_workers=totals.timed_out,
    )


# ------------------------------------------------------------------ medians


def _median(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return statistics.median(finite) if finite else math.nan


def _median_dist(dists: Sequence[Distribution | None]) -> Distribution | None:
    present = [d for d in dists if d is not None]
    if not present:
        return None
    return Distribution(
        count=int(_median([d.count for d in present])),
        p50=_median([d.p50 for d in present]),
        p95=_median([d.p95 for d in present]),
        p99=_median([d.p99 for d in present]),
        max=_median([d.max for d in present]),
    )


def median_run(runs: Sequence[ScaleRun]) -> ScaleRun:
    """Each figure's median over ``runs`` (same system and W); counts of bad
    events (expired leases, errors, timed-out workers) are the worst run's."""
    if len(runs) == 1:
        return runs[0]
    first = runs[0]
    expired = [r.expired_leases for r in runs if r.expired_leases is not None]
    errors: Counter[str] = Counter()
    for r in runs:
        for key, count in r.errors.items():
            errors[key] = max(errors[key], count)
    return replace(
        first,
        completed=min(r.completed for r in runs),
        wall_s=_median([r.wall_s for r in runs]),
        report_ms=_median_dist([r.report_ms for r in runs]) or first.report_ms,
        heartbeat_ms=_median_dist([r.heartbeat_ms for r in runs]),
        end_ms=_median_dist([r.end_ms for r in runs]) or first.end_ms,
        refill_ms=_median_dist([r.refill_ms for r in runs]),
        refill_client_ms=_median_dist([r.refill_client_ms for r in runs]) or first.refill_client_ms,
        cpu_per_trial_ms=_median([r.cpu_per_trial_ms for r in runs]),
        peak_rss_mib=_median([r.peak_rss_mib for r in runs]),
        first_rss_mib=_median([r.first_rss_mib for r in runs]),
        peak_anon_mib=_median([r.peak_anon_mib for r in runs]),
        expired_leases=max(expired) if expired else None,
        answers={k: int(_median([r.answers.get(k, 0) for r in runs])) for k in first.answers},
        errors=dict(errors),
        error_samples=[s for r in runs for s in r.error_samples][:5],
        chief_log_errors=max(r.chief_log_errors for r in runs),
        timed_out_workers=max(r.timed_out_workers for r in runs),
        note=f"median of {len(runs)} runs",
    )


def describe(run: ScaleRun) -> str:
    """One log line."""
    hb = run.heartbeat_ms
    return (
        f"{run.system} W={run.workers}: {run.completed}/{run.trials} completed in "
        f"{run.wall_s:.1f} s; Report p50/p99 {run.report_ms.p50:.1f}/{run.report_ms.p99:.1f} ms, "
        + (f"heartbeat p99 {hb.p99:.1f} ms, " if hb else "")
        + f"EndTrial p50/p99 {run.end_ms.p50:.1f}/{run.end_ms.p99:.1f} ms, "
        + (f"refill p50 {run.refill_ms.p50:.1f} ms, " if run.refill_ms else "")
        + f"CPU/trial {run.cpu_per_trial_ms:.1f} ms, RSS {run.peak_rss_mib:.0f} MiB, "
        f"expired leases {run.expired_leases}, answers {run.answers}, errors {run.errors}"
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.scale --workers W [--procs P] [--dir DIR]``: one run, printed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--procs", type=int, default=None)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--timeout-s", type=float, default=300.0)
    parser.add_argument("--keras-tuner", action="store_true", help="Keras Tuner's chief instead")
    args = parser.parse_args(argv)
    if args.keras_tuner:
        from bench.kt_scale import run_kt_scale

        run = run_kt_scale(
            workers=args.workers, work_dir=args.dir, procs=args.procs, timeout_s=args.timeout_s
        )
    else:
        run = run_scale(
            workers=args.workers, work_dir=args.dir, procs=args.procs, timeout_s=args.timeout_s
        )
    print(describe(run))
    print(json.dumps({k: v for k, v in run.to_json().items() if k != "error_samples"}))
    for sample in run.error_samples:
        print("error:", sample)


__all__ = ["ScaleRun", "median_run", "run_scale"]


if __name__ == "__main__":
    main()
