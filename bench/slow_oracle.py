"""Latency under a slow oracle: Report and EndTrial while Bayesian GP fits run.

A Bayesian search over the sleep space (4 hyperparameters) with 16 client
threads. Trials are near-instant: each reports ``epochs`` epochs, ``pause_s``
apart, then ends. Every CreateTrial after the initial random points makes
Keras Tuner fit its Gaussian process and optimise the acquisition function,
which grows with the number of finished trials. ktcluster's broker never calls
the oracle under its lock, so Report and EndTrial should not wait for a fit;
Keras Tuner's chief (one RPC thread, ``@synchronized`` oracle) would.

Latencies are measured at the client. A call is counted as "during a fit" when
its interval overlaps a CreateTrial call of another client that took longer
than ``fit_threshold_ms`` (the only CreateTrial calls that slow are the ones
waiting on a fit).
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.chief_proc import sleep_search, start_chief_process
from bench.stats import Distribution


@dataclass(frozen=True)
class SlowOracleResult:
    """Report/EndTrial latency with a Bayesian oracle and many clients."""

    clients: int
    trials: int
    completed: int
    wall_s: float
    create_ms: Distribution
    report_ms: Distribution
    end_ms: Distribution
    report_during_fit_ms: Distribution
    end_during_fit_ms: Distribution
    fit_threshold_ms: float


@dataclass(frozen=True)
class _Call:
    client: str
    kind: str
    start: float
    end: float

    @property
    def ms(self) -> float:
        return (self.end - self.start) * 1000.0


def _client(
    address: str,
    token: str,
    worker_id: str,
    epochs: int,
    pause_s: float,
    calls: list[_Call],
    errors: list[str],
) -> None:
    from orchestrator.protocol.client import AssignmentKind, TrialClient
    from workers.hypermodels.sleep import sleep_score

    def timed(kind: str, fn: object, *args: object, **kwargs: object) -> object:
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)  # type: ignore[operator]
        calls.append(_Call(worker_id, kind, t0, time.perf_counter()))
        return out

    try:
        with TrialClient(address, token, worker_id=worker_id) as client:
            while True:
                assignment = timed("create", client.create_trial, wait_s=5.0)
                kind = getattr(assignment, "kind", None)
                if kind is AssignmentKind.STOP:
                    return
                trial = getattr(assignment, "trial", None)
                if trial is None:
                    continue
                metrics: dict[str, float] = {}
                for epoch in range(epochs):
                    score = sleep_score(trial.values, epoch)
                    metrics = {"val_accuracy": score, "val_loss": 1.0 - score}
                    timed("report", client.report, trial, epoch, metrics)
                    time.sleep(pause_s)
                timed("end", client.end_trial, trial, "COMPLETED", metrics=metrics, best_step=0)
    except Exception as exc:  # reported; the other clients go on
        errors.append(f"{worker_id}: {type(exc).__name__}: {exc}")


def _during_fit(calls: list[_Call], kind: str, threshold_ms: float) -> list[float]:
    fits = [c for c in calls if c.kind == "create" and c.ms > threshold_ms]
    out = []
    for call in calls:
        if call.kind != kind:
            continue
        if any(f.client != call.client and f.start < call.end and call.start < f.end for f in fits):
            out.append(call.ms)
    return out


def run_slow_oracle(
    *,
    trials: int,
    clients: int = 16,
    epochs: int = 5,
    pause_s: float = 0.02,
    fit_threshold_ms: float = 50.0,
    work_dir: Path | None = None,
    timeout_s: float = 1200.0,
) -> SlowOracleResult:
    """Run a Bayesian search with ``clients`` threads; time every call."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-slow-oracle-"))
    chief = start_chief_process(
        sleep_search("bench-slow-oracle", trials, 0.0, oracle="bayesian"),
        base / "search",
        hold=True,
    )
    calls: list[_Call] = []
    errors: list[str] = []
    try:
        ready = chief.ready or {}
        threads = [
            threading.Thread(
                target=_client,
                args=(ready["address"], ready["token"], f"c{i}", epochs, pause_s, calls, errors),
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
        chief.wait_result(60.0)
        chief.go()  # every client is done: let the held chief close
        chief.popen.wait(timeout=30)
    finally:
        chief.kill()
    if errors:
        raise RuntimeError(f"slow oracle: client errors: {errors[:3]}")

    def of(kind: str) -> Distribution:
        return Distribution.of([c.ms for c in calls if c.kind == kind])

    return SlowOracleResult(
        clients=clients,
        trials=trials,
        completed=sum(1 for c in calls if c.kind == "end"),
        wall_s=wall,
        create_ms=of("create"),
        report_ms=of("report"),
        end_ms=of("end"),
        report_during_fit_ms=Distribution.of(_during_fit(calls, "report", fit_threshold_ms)),
        end_during_fit_ms=Distribution.of(_during_fit(calls, "end", fit_threshold_ms)),
        fit_threshold_ms=fit_threshold_ms,
    )
