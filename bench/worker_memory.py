"""Worker memory: RSS of a worker process across real digits CNN trials.

Three runs against a real chief (:mod:`bench.chief_proc`), each worker being
the real :class:`workers.runner.TrialRunner` (the Keras Tuner path: build,
fit, report per epoch, upload the checkpoint, ``keras.backend.clear_session()``)
with the quota ``max_trials`` the fleet sets from ``recycle_after_trials``;
worker processes run one after another:

- **long-lived**: one process runs every trial (no recycling): the growth per
  trial of a long-lived process;
- **recycled** (the policy, ``recycle_after_trials`` = R): ceil(N / R)
  processes of R trials each, N trials in all;
- **fresh process per trial** (R = 1).

RSS is sampled before each process's first trial and after each trial (at the
next CreateTrial call, i.e. after ``clear_session`` and ``gc``). A mode's
growth is the highest RSS after any of its trials minus a fresh process's RSS
after its first trial, so the recycled figure is what the policy bounds.

Entry point for a worker process: ``python -m bench.worker_memory worker ...``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bench.chief_proc import start_chief_process
from bench.procs import emit, spawn
from workers.actor import WORKER_PROCESS_ENV

TOKEN_ENV = "KTC_BENCH_TOKEN"
MIB = 1024 * 1024


@dataclass(frozen=True)
class MemoryRun:
    """RSS samples of one worker mode: one tuple per worker process, in order."""

    mode: str
    trials_per_process: int  # the quota (0 = no quota: one process runs every trial)
    processes: tuple[tuple[float, ...], ...]  # per process: [before 1st, after 1st, ...] MiB
    startup_s: tuple[float, ...]  # per process: spawn -> first CreateTrial
    trial_s: float  # mean seconds per trial (first CreateTrial -> last)

    @property
    def trials(self) -> int:
        """Trials run, over every process."""
        return sum(len(p) - 1 for p in self.processes)

    @property
    def baseline_mib(self) -> float:
        """A fresh process after its first trial: the first process's second sample."""
        first = self.processes[0] if self.processes else ()
        return first[1] if len(first) > 1 else math.nan

    @property
    def max_mib(self) -> float:
        """The highest RSS after any trial, over every process."""
        after = [v for p in self.processes for v in p[1:]]
        return max(after) if after else math.nan

    @property
    def growth_mib(self) -> float:
        """Max RSS after any trial minus a fresh process's RSS after its first trial."""
        return self.max_mib - self.baseline_mib

    @property
    def growth_per_trial_mib(self) -> float:
        """Within one process: RSS growth per trial after the first (mean over processes)."""
        rates = [(p[-1] - p[1]) / (len(p) - 2) for p in self.processes if len(p) > 2]
        return sum(rates) / len(rates) if rates else math.nan

    @property
    def worst_in_process_mib(self) -> float:
        """The largest growth inside one process: its max RSS after a trial minus after its first."""
        growths = [max(p[1:]) - p[1] for p in self.processes if len(p) > 1]
        return max(growths) if growths else math.nan

    @property
    def after_first_mib(self) -> tuple[float, ...]:
        """Every process's RSS after its first trial."""
        return tuple(p[1] for p in self.processes if len(p) > 1)


@dataclass(frozen=True)
class MemoryResult:
    """Every mode that ran."""

    epochs: int
    long_lived: MemoryRun | None
    recycled: MemoryRun | None
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


def run_quota(
    *,
    mode: str,
    processes: int,
    per_process: int,
    epochs: int,
    work_dir: Path,
    timeout_s: float = 1800.0,
) -> MemoryRun:
    """``processes`` worker processes in turn, each running up to ``per_process`` trials.

    ``per_process=0`` means no quota (one process runs every trial of the
    search, which then has ``processes`` trials). Each process is the real
    runner with ``max_trials=per_process``, the quota the fleet's
    ``recycle_after_trials`` sets.
    """
    slug = mode.split()[0]
    total = processes if per_process == 0 else processes * per_process
    count = 1 if per_process == 0 else processes
    search = cnn_search(f"bench-memory-{slug}", total, epochs)
    chief = start_chief_process(search, work_dir / slug / "search", hold=True)
    samples_per_process: list[tuple[float, ...]] = []
    startups: list[float] = []
    spent = 0.0
    try:
        ready = chief.ready or {}
        for i in range(count):
            worker = spawn(
                f"mem-{slug}{i}",
                _worker_args(ready, f"{slug[0]}{i}", search, per_process),
                work_dir / slug / "logs",
                # The environment a real worker actor gets (malloc arenas etc.).
                {**WORKER_PROCESS_ENV, TOKEN_ENV: str(ready["token"])},
            )
            try:
                result = worker.wait_result(timeout_s)
                worker.popen.wait(timeout=60)
            finally:
                worker.kill()
            samples = result["samples"]
            samples_per_process.append(tuple(s["rss"] / MIB for s in samples))
            startups.append(samples[0]["at"] - worker.spawned_at)
            spent += samples[-1]["at"] - samples[0]["at"]
        chief.go()
        chief.popen.wait(timeout=30)
    finally:
        chief.kill()
    trials_run = sum(len(p) - 1 for p in samples_per_process)
    return MemoryRun(
        mode=mode,
        trials_per_process=per_process,
        processes=tuple(samples_per_process),
        startup_s=tuple(startups),
        trial_s=spent / max(trials_run, 1),
    )


def run_worker_memory(
    *,
    trials: int,
    recycle_after: int,
    fresh_trials: int,
    epochs: int = 2,
    work_dir: Path | None = None,
) -> MemoryResult:
    """Long-lived, recycled every ``recycle_after`` trials, and fresh per trial.

    The long-lived and recycled runs both cover ``trials`` trials; the fresh
    run covers ``fresh_trials``. A mode that cannot run is reported with the
    reason.
    """
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-memory-"))
    errors = []
    runs: dict[str, MemoryRun | None] = {"long": None, "recycled": None, "fresh": None}
    plans = {
        "long": ("long-lived (no recycling)", trials, 0),
        "recycled": (
            f"recycle after {recycle_after} trials (the policy)",
            math.ceil(trials / recycle_after),
            recycle_after,
        ),
        "fresh": ("fresh process per trial", fresh_trials, 1),
    }
    for key, (mode, processes, quota) in plans.items():
        long_lived = runs["long"]
        if key == "recycled" and processes == 1 and long_lived is not None:
            # One process of `trials <= recycle_after` trials is both modes.
            runs[key] = replace(
                long_lived, mode=mode + " (= the long-lived run)", trials_per_process=quota
            )
            continue
        if processes <= 0:
            continue
        try:
            runs[key] = run_quota(
                mode=mode, processes=processes, per_process=quota, epochs=epochs, work_dir=base
            )
        except Exception as exc:
            errors.append(f"{mode}: {type(exc).__name__}: {exc}")
    return MemoryResult(
        epochs=epochs,
        long_lived=runs["long"],
        recycled=runs["recycled"],
        fresh=runs["fresh"],
        error="; ".join(errors),
    )


# ------------------------------------------------------------ process side


def _worker_main(
    address: str, token: str, worker_id: str, search_json: str, max_trials: int
) -> None:
    import psutil

    from orchestrator.config import parse_search, spec_json
    from orchestrator.protocol.client import TrialClient
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
        search_json=spec_json(search),
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
