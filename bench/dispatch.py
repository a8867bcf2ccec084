"""Dispatch efficiency: ktcluster's protocol + ledger against Keras Tuner's, no Ray.

The same workload as :mod:`bench.kt_baseline`: T sleep trials of D seconds on
W worker *processes* on 127.0.0.1, a chief in its own process, random search
over the sleep space. Each ktcluster worker runs the minimal loop a real
runner runs: CreateTrial -> sleep D -> Report(epoch 0) -> EndTrial(COMPLETED).
Start-up (interpreter + imports + channel) is behind the start barrier and
reported separately; the wall time runs from the first trial's start to the
last result recorded.

Entry point for a worker process: ``python -m bench.dispatch worker ...``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chief_proc import sleep_search, start_chief_process
from bench.kt_baseline import run_kt_dispatch
from bench.procs import BenchProcess, emit, spawn, wait_for_go
from bench.timeline import DispatchResult, TrialSpan, summarize

TOKEN_ENV = "KTC_BENCH_TOKEN"


def run_ktcluster_dispatch(
    *,
    workers: int,
    trials: int,
    trial_s: float,
    work_dir: Path | None = None,
    synchronous: str = "NORMAL",
    timeout_s: float = 600.0,
) -> DispatchResult:
    """Run T sleep trials on a ktcluster chief + W TrialClient worker processes."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-ktc-"))
    procs: list[BenchProcess] = []
    try:
        chief = start_chief_process(
            sleep_search("bench-dispatch", trials, trial_s),
            base / "search",
            synchronous=synchronous,
            timeout_s=timeout_s,
            hold=True,
        )
        procs.append(chief)
        ready = chief.ready or {}
        spawned = time.time()
        worker_procs = [
            spawn(
                f"ktc-worker{i}",
                [
                    "-m", "bench.dispatch", "worker",
                    "--address", str(ready["address"]),
                    "--worker-id", f"w{i}",
                    "--trial-s", str(trial_s),
                ],
                base / "logs",
                {TOKEN_ENV: str(ready["token"])},
            )
            for i in range(workers)
        ]  # fmt: skip
        procs.extend(worker_procs)
        for proc in worker_procs:
            proc.wait_ready(timeout_s)
        startup = max(p.ready_at or spawned for p in worker_procs) - spawned
        for proc in worker_procs:
            proc.go()
        spans = [
            TrialSpan.from_json(item)
            for proc in worker_procs
            for item in proc.wait_result(timeout_s)["spans"]
        ]
        chief_result = chief.wait_result(timeout_s)
        last = max((s.recorded for s in spans), default=time.time())
        exit_delay = float(chief_result["finished_at"]) - last
        chief.go()  # every worker is done: let the held chief close
        for proc in procs:
            proc.popen.wait(timeout=30)
    finally:
        for proc in procs:
            proc.kill()
    return summarize(
        system="ktcluster (gRPC, no Ray)" + ("" if synchronous == "NORMAL" else f", {synchronous}"),
        workers=workers,
        trials=trials,
        trial_s=trial_s,
        spans=spans,
        startup_s=startup,
        chief_exit_s=max(exit_delay, 0.0),
    )


@dataclass(frozen=True)
class DispatchComparison:
    """ktcluster and Keras Tuner at one W, measured back to back."""

    workers: int
    ktcluster: DispatchResult
    keras_tuner: DispatchResult | None
    kt_error: str = ""


def compare(
    *, workers: int, trials: int, trial_s: float, work_dir: Path | None = None, with_kt: bool = True
) -> DispatchComparison:
    """Run both systems on the same workload (ktcluster first, then Keras Tuner)."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-dispatch-"))
    ours = run_ktcluster_dispatch(
        workers=workers, trials=trials, trial_s=trial_s, work_dir=base / f"ktc-w{workers}"
    )
    kt: DispatchResult | None = None
    error = ""
    if with_kt:
        try:
            kt = run_kt_dispatch(
                workers=workers, trials=trials, trial_s=trial_s, work_dir=base / f"kt-w{workers}"
            )
        except Exception as exc:  # a baseline failure is reported, not fatal
            error = f"{type(exc).__name__}: {exc}"
    return DispatchComparison(workers=workers, ktcluster=ours, keras_tuner=kt, kt_error=error)


# ------------------------------------------------------------ process side


def _worker_main(address: str, token: str, worker_id: str, trial_s: float) -> None:
    from orchestrator.protocol.client import AssignmentKind, TrialClient
    from workers.hypermodels.sleep import SleepOptions, run_sleep_epoch

    options = SleepOptions(epoch_s=trial_s)
    client = TrialClient(address, token, worker_id=worker_id)
    client.search_state()  # connect before the barrier, like KT's OracleClient
    emit("READY", {"at": time.time()})
    wait_for_go()
    spans: list[TrialSpan] = []
    while True:
        asked = time.time()
        assignment = client.create_trial(wait_s=5.0)
        if assignment.kind is AssignmentKind.STOP:
            break
        if assignment.trial is None:
            continue
        trial = assignment.trial
        start = time.time()
        metrics = run_sleep_epoch(trial.values, 0, options)
        end = time.time()
        client.report(trial, 0, metrics)
        client.end_trial(trial, "COMPLETED", metrics=metrics, best_step=0)
        spans.append(
            TrialSpan(
                worker=worker_id,
                trial_id=trial.trial_id,
                start=start,
                end=end,
                recorded=time.time(),
                create_rtt_s=start - asked,
            )
        )
    client.close()
    emit("RESULT", {"spans": [s.to_json() for s in spans]})


def main(argv: list[str] | None = None) -> None:
    """Process entry point: ``worker``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--trial-s", type=float, required=True)
    args = parser.parse_args(argv)
    # The token comes through the environment so it never shows in `ps`.
    _worker_main(args.address, os.environ[TOKEN_ENV], args.worker_id, args.trial_s)


if __name__ == "__main__":
    main()
