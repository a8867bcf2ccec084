"""Worker memory: RSS of a worker process across real digits CNN trials.

Two runs against a real chief (:mod:`bench.chief_proc`), each worker being the
real :class:`workers.runner.TrialRunner` (the Keras Tuner path: build, fit,
report per epoch, upload the checkpoint, ``keras.backend.clear_session()``):

- **long-lived**: one process runs every trial (no recycling); RSS is sampled
  before the first trial and after each one (at the next CreateTrial call,
  i.e. after ``clear_session`` and ``gc``).
- **fresh process per trial** (recycle after 1 trial): RSS after its one
  trial, and the process's start-up cost (spawn to its first CreateTrial).

Together they inform ``fleet.recycle_after_trials``: the growth per trial of the
long-lived process against the start-up a recycle costs.

Entry point for a worker process: ``python -m bench.worker_memory worker ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chief_proc import start_chief_process
from bench.procs import emit, spawn

TOKEN_ENV = "KTC_BENCH_TOKEN"
MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryRun:
    """RSS samples of one worker mode."""

    mode: str
    trials: int
    rss_mib: tuple[float, ...]  # [before trial 1, after trial 1, ..., after trial N]
    startup_s: tuple[float, ...]  # per process: spawn -> first CreateTrial
    trial_s: float  # mean seconds per trial (first CreateTrial -> last)

    @property
    def growth_mib(self) -> float:
        """RSS after the last trial minus RSS after the first."""
        return self.rss_mib[-1] - self.rss_mib[1] if len(self.rss_mib) > 2 else float("nan")

    def growth_over(self, trials: int) -> float:
        """RSS after ``trials`` trials minus RSS after the first."""
        if len(self.rss_mib) <= trials:
            return float("nan")
        return self.rss_mib[trials] - self.rss_mib[1]


@dataclass(frozen=True)
class MemoryResult:
    """Both modes."""

    epochs: int
    long_lived: MemoryRun | None
    fresh: MemoryRun | None
    error: str = ""


def cnn_search(name: str, trials: int, epochs: int) -> dict[str, Any]:
    """The digits CNN search the memory benchmark runs."""
    return {
        "name": name,
        "hypermodel": "cnn",
        "dataset": "digits",
        "oracle": {"type": "random", "max_trials": trials, "seed": 1},
        "objective": "val_accuracy",
        "training": {"epochs": epochs, "batch_size": 64},
        "failure": {"lease_timeout_s": 600.0},
    }


def _worker_args(
    ready: dict[str, Any], worker_id: str, search: dict[str, Any], quota: int
) -> list[str]:
    return [
        "-m", "bench.worker_memory", "worker",
        "--address", str(ready["address"]),
        "--worker-id", worker_id,
        "--search-json", json.dumps(search),
        "--max-trials", str(quota),
    ]  # fmt: skip


def run_long_lived(
    *, trials: int, epochs: int = 2, work_dir: Path, timeout_s: float = 1800.0
) -> MemoryRun:
    """One worker process runs all ``trials`` trials."""
    search = cnn_search("bench-memory-long", trials, epochs)
    chief = start_chief_process(search, work_dir / "long" / "search", hold=True)
    try:
        ready = chief.ready or {}
        worker = spawn("mem-long", _worker_args(ready, "m0", search, 0), work_dir / "long" / "logs",
                       {TOKEN_ENV: str(ready["token"])})  # fmt: skip
        try:
            result = worker.wait_result(timeout_s)
            worker.popen.wait(timeout=60)
        finally:
            worker.kill()
        chief.go()
        chief.popen.wait(timeout=30)
    finally:
        chief.kill()
    samples = result["samples"]
    return MemoryRun(
        mode="long-lived (no recycling)",
        trials=result["trials_run"],
        rss_mib=tuple(s["rss"] / MIB for s in samples),
        startup_s=(samples[0]["at"] - worker.spawned_at,),
        trial_s=(samples[-1]["at"] - samples[0]["at"]) / max(result["trials_run"], 1),
    )


def run_fresh(
    *, trials: int, epochs: int = 2, work_dir: Path, timeout_s: float = 600.0
) -> MemoryRun:
    """``trials`` worker processes in turn, one trial each."""
    search = cnn_search("bench-memory-fresh", trials, epochs)
    chief = start_chief_process(search, work_dir / "fresh" / "search")
    rss: list[float] = []
    startups: list[float] = []
    spent = 0.0
    try:
        ready = chief.ready or {}
        for i in range(trials):
            worker = spawn(f"mem-fresh{i}", _worker_args(ready, f"f{i}", search, 1),
                           work_dir / "fresh" / "logs", {TOKEN_ENV: str(ready["token"])})  # fmt: skip
            try:
                result = worker.wait_result(timeout_s)
                worker.popen.wait(timeout=60)
            finally:
                worker.kill()
            samples = result["samples"]
            if not rss:
                rss.append(samples[0]["rss"] / MIB)  # before the first trial
            rss.append(samples[-1]["rss"] / MIB)
            startups.append(samples[0]["at"] - worker.spawned_at)
            spent += samples[-1]["at"] - samples[0]["at"]
        # Each worker stopped at its quota of 1, so nobody asked the oracle
        # once more to learn it is exhausted: the search is still "running".
    finally:
        chief.kill()
    return MemoryRun(
        mode="fresh process per trial",
        trials=trials,
        rss_mib=tuple(rss),
        startup_s=tuple(startups),
        trial_s=spent / max(trials, 1),
    )


def run_worker_memory(
    *, trials: int, fresh_trials: int, epochs: int = 2, work_dir: Path | None = None
) -> MemoryResult:
    """Both modes; a mode that cannot run is reported with the reason."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-memory-"))
    errors = []
    long_lived = fresh = None
    try:
        long_lived = run_long_lived(trials=trials, epochs=epochs, work_dir=base)
    except Exception as exc:
        errors.append(f"long-lived: {type(exc).__name__}: {exc}")
    if fresh_trials > 0:
        try:
            fresh = run_fresh(trials=fresh_trials, epochs=epochs, work_dir=base)
        except Exception as exc:
            errors.append(f"fresh: {type(exc).__name__}: {exc}")
    return MemoryResult(epochs=epochs, long_lived=long_lived, fresh=fresh, error="; ".join(errors))


# ------------------------------------------------------------ process side


def _worker_main(
    address: str, token: str, worker_id: str, search_json: str, max_trials: int
) -> None:
    import psutil

    from orchestrator.client import TrialClient
    from orchestrator.config import parse_search
    from workers.runner import TrialRunner, WorkerConfig

    me = psutil.Process()
    samples: list[dict[str, float]] = []
    original = TrialClient.create_trial

    def sampling_create_trial(self: TrialClient, wait_s: float = 5.0) -> Any:
        # Between trials: after the runner's clear_session() and gc.collect().
        samples.append({"at": time.time(), "rss": float(me.memory_info().rss)})
        return original(self, wait_s)

    TrialClient.create_trial = sampling_create_trial  # type: ignore[method-assign]
    search = parse_search(json.loads(search_json), check_paths=False)
    config = WorkerConfig(
        worker_id=worker_id,
        chief_address=address,
        token=token,
        # exclude_unset: a full dump does not validate again (OracleSpec refuses
        # the other oracle types' keys once they are "set"); see the report.
        search_json=search.model_dump_json(exclude_unset=True),
        max_trials=max_trials,
        reconnect_timeout_s=5.0,
    )
    summary = TrialRunner(config).run()
    samples.append({"at": time.time(), "rss": float(me.memory_info().rss)})
    if max_trials == 0 and len(samples) >= 2:
        # The last CreateTrial (answered STOP) already sampled after the last trial.
        samples.pop()
    emit("RESULT", {"samples": samples, "trials_run": summary.trials_run})


def main(argv: list[str] | None = None) -> None:
    """Process entry point: ``worker``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["worker"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--search-json", required=True)
    parser.add_argument("--max-trials", type=int, default=0)
    args = parser.parse_args(argv)
    _worker_main(
        args.address, os.environ[TOKEN_ENV], args.worker_id, args.search_json, args.max_trials
    )


if __name__ == "__main__":
    main()
