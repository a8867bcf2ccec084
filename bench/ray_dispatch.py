"""Dispatch through the real Ray fleet: ``ktc submit`` with W worker actors, sleep trials.

The same workload as :mod:`bench.dispatch` (T sleep trials of D seconds, W
workers, random search over the sleep space), but run the way a user runs it:
``ktc submit SEARCH.yaml --cluster CLUSTER.yaml --no-progress`` with an
embedded Ray on this machine, a local node with ``cpus: W`` (logical CPUs) and
``cpu_workers: W``, and ``fleet.recycle_after_trials: 0`` (sleep workers do not
leak, so no recycling). Every time comes from the ledger and ``workers.jsonl``:

- **wall**: first ASSIGNED to last COMPLETED;
- **refill** (per-trial overhead): per worker, one COMPLETED to that worker's
  next ASSIGNED;
- **in-trial overhead**: per trial, ASSIGNED to COMPLETED minus D (the worker
  actor's own work around the sleep: config, hypermodel, Report, EndTrial);
- **start-up** (outside the wall): ``ktc submit`` start to the first ASSIGNED,
  with the worker actors' ready times (``workers.jsonl``) and the spread of
  the workers' first ASSIGNED (actors that came up late, inside the wall).
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench.procs import tail
from bench.recovery import KtcProcess, ledger_events, sleep_files
from bench.stats import Distribution
from bench.timeline import DispatchResult, TrialSpan, summarize

SYSTEM = "ktcluster (Ray fleet, `ktc submit`)"


@dataclass(frozen=True)
class RayDispatchResult:
    """One ``ktc submit`` run: the dispatch numbers and the start-up breakdown."""

    dispatch: DispatchResult
    in_trial_ms: Distribution  # ASSIGNED -> COMPLETED minus D, per trial
    actors_first_ready_s: float  # submit start -> first worker actor ready
    actors_last_ready_s: float  # submit start -> last worker actor ready
    first_assigned_s: float  # submit start -> first ASSIGNED
    # Worker time spent inside trials / (W x time) from the last actor ready to
    # the last COMPLETED: how busy the fleet was once every worker was up.
    utilisation_all_up: float
    assign_spread_s: float  # first ASSIGNED -> the last worker's first ASSIGNED
    submit_total_s: float  # submit start -> process exit


def _actor_ready_times(search_dir: Path) -> list[float]:
    path = search_dir / "workers.jsonl"
    if not path.exists():
        return []
    return [float(json.loads(line)["ts"]) for line in path.read_text().splitlines() if line]


def run_ray_dispatch(
    *,
    workers: int,
    trials: int,
    trial_s: float,
    work_dir: Path | None = None,
    timeout_s: float = 900.0,
) -> RayDispatchResult:
    """Run ``ktc submit`` to completion and read the timings from its ledger."""
    from orchestrator.chief.events import EventKind

    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-ray-dispatch-"))
    search, cluster = sleep_files(
        base,
        f"bench-ray-w{workers}",
        trials=trials,
        epoch_s=trial_s,
        epochs=1,
        seed=1,
        # A stalled 2-core machine must not requeue trials mid-measurement.
        lease_timeout_s=600.0,
        cpus=workers,
        cpu_workers=workers,
        recycle_after_trials=0,  # sleep workers do not leak
    )
    search_dir = base / "search"
    ktc = KtcProcess(
        [
            "submit",
            str(search),
            "--cluster",
            str(cluster),
            "--dir",
            str(search_dir),
            "--no-progress",
        ],
        base / "submit.log",
    )
    try:
        deadline = time.monotonic() + timeout_s
        while ktc.popen.poll() is None and time.monotonic() < deadline:
            ktc.remember_children()  # so leftovers can be reaped, by pid
            with contextlib.suppress(Exception):
                ktc.popen.wait(timeout=0.1)
        exited = time.time()
        if ktc.popen.poll() is None:
            raise RuntimeError(f"ktc submit still running after {timeout_s:g} s; see {ktc.log}")
        if ktc.popen.returncode != 0:
            raise RuntimeError(
                f"ktc submit exited with code {ktc.popen.returncode}; see {ktc.log}:\n{tail(ktc.log)}"
            )
    finally:
        ktc.stop()
    events = ledger_events(search_dir)
    assigned = {(e.trial_id, e.attempt): e for e in events if e.kind is EventKind.ASSIGNED}
    spans: list[TrialSpan] = []
    for e in events:
        if e.kind is not EventKind.COMPLETED:
            continue
        start = assigned.get((e.trial_id, e.attempt))
        if start is None:  # COMPLETED carries the attempt it closes
            start = max(
                (a for (t, _), a in assigned.items() if t == e.trial_id), key=lambda a: a.ts
            )
        spans.append(
            TrialSpan(
                worker=str(start.worker_id),
                trial_id=str(e.trial_id),
                start=start.ts,
                end=e.ts,
                recorded=e.ts,
                create_rtt_s=0.0,
            )
        )
    if not spans:
        raise RuntimeError(f"no COMPLETED trial in {search_dir}; see {ktc.log}")
    first_assigned = min(s.start for s in spans)
    last_completed = max(s.recorded for s in spans)
    first_per_worker = [
        min(s.start for s in spans if s.worker == w) for w in {s.worker for s in spans}
    ]
    ready = _actor_ready_times(search_dir)
    started = ktc.started
    all_up = max(ready) if ready else math.nan
    result = summarize(
        system=SYSTEM,
        workers=workers,
        trials=trials,
        trial_s=trial_s,
        spans=spans,
        startup_s=first_assigned - started,
        chief_exit_s=max(exited - last_completed, 0.0),
    )
    # ktc has no client-side CreateTrial timing: leave that column empty.
    result = replace(result, create_rtt_ms=Distribution.of([]))
    return RayDispatchResult(
        dispatch=result,
        in_trial_ms=Distribution.of([(s.end - s.start - trial_s) * 1000.0 for s in spans]),
        actors_first_ready_s=(min(ready) - started) if ready else math.nan,
        actors_last_ready_s=(max(ready) - started) if ready else math.nan,
        first_assigned_s=first_assigned - started,
        utilisation_all_up=busy_fraction(spans, workers, all_up, last_completed),
        assign_spread_s=max(first_per_worker) - first_assigned,
        submit_total_s=exited - started,
    )


def busy_fraction(spans: list[TrialSpan], workers: int, begin: float, end: float) -> float:
    """Trial time inside [begin, end], summed over spans, / (workers x (end - begin))."""
    if not (end > begin) or workers <= 0:
        return math.nan
    busy = sum(max(0.0, min(s.end, end) - max(s.start, begin)) for s in spans)
    return busy / (workers * (end - begin))
