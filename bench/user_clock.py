"""The user's clock: launch to the last result to process exit, on sleep trials.

``RAY_AUTH_MODE=disabled python -m bench.user_clock [--runs 3] [--sizes 2,16]``

An independent harness: it only starts processes and reads what they leave
behind; neither system is asked how long it took. Two systems, the same
workload (T sleep trials of D seconds, random search over the sleep space):

- **Keras Tuner** (its own distributed mode, :mod:`bench.kt_baseline`): the
  chief and W worker processes are spawned together at launch. Each worker
  imports Keras Tuner, says READY and waits; once every worker is READY and the
  chief listens, all are released at once (the common barrier: a worker
  cannot start before the chief serves). Then the search, then the chief's
  exit. Trial start and result times come from the workers' timelines
  (:class:`bench.timeline.TrialSpan`, written by the workers).
- **ktcluster**: ``ktc submit SEARCH.yaml --cluster CLUSTER.yaml --no-progress``
  on an embedded Ray, run as :mod:`bench.ray_dispatch` runs it, from process
  start to exit. Trial start (ASSIGNED) and result (COMPLETED) times come from
  its ledger.

Per run and system: launch -> first trial start, launch -> last result, last
result -> exit, launch -> exit; the table shows the median of the runs, with
the machine's load average (``os.getloadavg()``) when each run started.
Sizes: W=2 at D=0.5 s with 20 trials, W=16 at D=0.25 s with 160 trials.

Launch is taken just before the first process is spawned (Keras Tuner) and
just after ``Popen`` returns (ktc, :class:`bench.recovery.KtcProcess`): a
few milliseconds in ktc's favour. Exits are seen by a thread blocked in
``wait()`` on each process.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.kt_baseline import _make_tuner, free_port, wait_port
from bench.procs import BenchProcess, emit, spawn, wait_for_go
from bench.stats import fmt
from bench.timeline import TrialSpan


@dataclass(frozen=True)
class Size:
    """One workload: W workers, T trials of D seconds."""

    workers: int
    trials: int
    trial_s: float


SIZES: dict[int, Size] = {
    2: Size(workers=2, trials=20, trial_s=0.5),
    16: Size(workers=16, trials=160, trial_s=0.25),
}

KT = "Keras Tuner"
KTC = "ktc"


@dataclass(frozen=True)
class ClockRun:
    """One run of one system, in seconds from launch."""

    system: str
    size: Size
    first_start_s: float  # launch -> first trial start
    last_result_s: float  # launch -> last result recorded
    exit_s: float  # launch -> the process the user waits on exited
    completed: int
    load_1min: float  # os.getloadavg()[0] when the run started

    @property
    def exit_after_last_s(self) -> float:
        """Last result -> process exit."""
        return self.exit_s - self.last_result_s


@dataclass(frozen=True)
class ClockSummary:
    """The median of several runs of one system at one size."""

    system: str
    size: Size
    runs: int
    first_start_s: float
    last_result_s: float
    exit_after_last_s: float
    exit_s: float
    loads: tuple[float, ...]

    @classmethod
    def of(cls, runs: Sequence[ClockRun]) -> ClockSummary:
        """Medians of ``runs`` (one system, one size; at least one run)."""
        if not runs:
            raise ValueError("ClockSummary.of: expected at least one run, got none")
        first = runs[0]
        if any(r.system != first.system or r.size != first.size for r in runs):
            raise ValueError("ClockSummary.of: runs of different systems or sizes")
        return cls(
            system=first.system,
            size=first.size,
            runs=len(runs),
            first_start_s=statistics.median(r.first_start_s for r in runs),
            last_result_s=statistics.median(r.last_result_s for r in runs),
            exit_after_last_s=statistics.median(r.exit_after_last_s for r in runs),
            exit_s=statistics.median(r.exit_s for r in runs),
            loads=tuple(r.load_1min for r in runs),
        )


class ExitWatch:
    """Notes the moment a process exits (a thread blocked in ``wait()``)."""

    def __init__(self, proc: BenchProcess) -> None:
        self.proc = proc
        self.exited_at: float | None = None
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        self.proc.popen.wait()
        self.exited_at = time.time()

    def wait(self, timeout_s: float) -> float:
        """The exit time; raises if the process still runs after ``timeout_s``."""
        self._thread.join(timeout_s)
        if self.exited_at is None:
            raise RuntimeError(f"{self.proc.name} still running after {timeout_s:g} s")
        return self.exited_at


def run_kt(size: Size, work_dir: Path, timeout_s: float = 900.0) -> ClockRun:
    """Keras Tuner's chief and W workers, spawned together behind one barrier."""
    load = os.getloadavg()[0]
    port = free_port()
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    common = ["--dir", str(work_dir), "--trials", str(size.trials)]
    common += ["--trial-s", str(size.trial_s)]
    procs: list[BenchProcess] = []
    launch = time.time()
    try:
        chief = spawn(
            "kt-chief",
            ["-m", "bench.kt_baseline", *common, "chief"],
            work_dir / "logs",
            {**env, "KERASTUNER_TUNER_ID": "chief"},
        )
        procs.append(chief)
        workers = [
            spawn(
                f"kt-worker{i}",
                ["-m", "bench.user_clock", "kt-worker", *common],
                work_dir / "logs",
                {**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
            )
            for i in range(size.workers)
        ]
        procs.extend(workers)
        chief_exit = ExitWatch(chief)
        for proc in workers:
            proc.wait_ready(timeout_s)
        wait_port(port, timeout_s, chief)
        for proc in workers:
            proc.go()
        spans = [
            TrialSpan.from_json(item)
            for proc in workers
            for item in proc.wait_result(timeout_s)["spans"]
        ]
        chief.wait_result(timeout_s)
        exited = chief_exit.wait(timeout_s)
        for proc in workers:
            proc.popen.wait(timeout=60)
    finally:
        for proc in procs:
            proc.kill()
    if not spans:
        raise RuntimeError(f"Keras Tuner recorded no trial; see {work_dir / 'logs'}")
    return ClockRun(
        system=KT,
        size=size,
        first_start_s=min(s.start for s in spans) - launch,
        last_result_s=max(s.recorded for s in spans) - launch,
        exit_s=exited - launch,
        completed=len(spans),
        load_1min=load,
    )


def run_ktc(size: Size, work_dir: Path, timeout_s: float = 900.0) -> ClockRun:
    """``ktc submit`` from process start to exit (:func:`bench.ray_dispatch.run_ray_dispatch`)."""
    from bench.ray_dispatch import run_ray_dispatch

    load = os.getloadavg()[0]
    result = run_ray_dispatch(
        workers=size.workers,
        trials=size.trials,
        trial_s=size.trial_s,
        work_dir=work_dir,
        timeout_s=timeout_s,
    )
    exit_after = result.dispatch.chief_exit_s
    if exit_after is None:
        raise RuntimeError(f"ktc submit: no exit time; see {work_dir}")
    return ClockRun(
        system=KTC,
        size=size,
        first_start_s=result.first_assigned_s,
        last_result_s=result.submit_total_s - exit_after,
        exit_s=result.submit_total_s,
        completed=result.dispatch.completed,
        load_1min=load,
    )


def measure(sizes: Sequence[Size], runs: int, work_dir: Path | None = None) -> list[ClockSummary]:
    """``runs`` rounds; each round runs every size on both systems, one at a time."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-user-clock-"))
    results: dict[tuple[str, Size], list[ClockRun]] = {}
    for round_ in range(runs):
        for size in sizes:
            for system, runner in ((KT, run_kt), (KTC, run_ktc)):
                where = base / f"r{round_}-w{size.workers}-{system.replace(' ', '-').lower()}"
                run = runner(size, where)
                results.setdefault((system, size), []).append(run)
                print(
                    f"run {round_ + 1}/{runs} {system} W={size.workers}: first trial "
                    f"{run.first_start_s:.2f} s, last result {run.last_result_s:.2f} s, exit "
                    f"{run.exit_s:.2f} s (load {run.load_1min:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
    return [ClockSummary.of(r) for r in results.values()]


def table(summaries: Sequence[ClockSummary]) -> str:
    """The markdown table: one row per size and system (medians)."""
    lines = [
        "| W | D | trials | system | launch -> first trial | launch -> last result "
        "| last result -> exit | launch -> exit | runs | load (1 min) at each run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in sorted(summaries, key=lambda s: (s.size.workers, s.system)):
        loads = ", ".join(f"{v:.2f}" for v in s.loads)
        lines.append(
            f"| {s.size.workers} | {s.size.trial_s:g} s | {s.size.trials} | {s.system} "
            f"| {fmt(s.first_start_s, 2)} s | {fmt(s.last_result_s, 2)} s "
            f"| {fmt(s.exit_after_last_s, 2)} s | {fmt(s.exit_s, 2)} s | {s.runs} | {loads} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------ process side


def kt_worker(argv: Sequence[str]) -> None:
    """A Keras Tuner worker behind the barrier: import, READY, wait for go,
    then build the tuner (which talks to the chief) and search."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--trial-s", type=float, required=True)
    args = parser.parse_args(argv)
    import keras_tuner  # noqa: F401  (the start-up: Keras Tuner, Keras, TensorFlow)

    emit("READY", {"at": time.time()})
    wait_for_go()
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    tuner = _make_tuner(args.dir / tuner_id, args.trials, args.trial_s)
    tuner.search()
    emit("RESULT", {"spans": [s.to_json() for s in tuner.spans]})


def parse_sizes(text: str) -> list[Size]:
    """``"2,16"`` -> the sizes of :data:`SIZES` (argparse type)."""
    sizes = []
    for item in text.split(","):
        try:
            sizes.append(SIZES[int(item)])
        except (ValueError, KeyError):
            raise argparse.ArgumentTypeError(
                f"--sizes: expected a comma-separated list of {sorted(SIZES)}, got {text!r}"
            ) from None
    return sizes


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: the harness, or (``kt-worker``) one Keras Tuner worker."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["kt-worker"]:
        kt_worker(args_in[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("2,16"))
    parser.add_argument(
        "--dir", type=Path, default=None, help="work directory (default: a temp one)"
    )
    args = parser.parse_args(args_in)
    if args.runs < 1:
        parser.error(f"--runs: expected at least 1, got {args.runs}")
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    summaries = measure(args.sizes, args.runs, args.dir)
    print(f"user's clock, {started}, median of {args.runs} run(s), {os.cpu_count()} CPUs")
    print(table(summaries))
    if any(math.isnan(s.exit_s) for s in summaries):
        sys.exit(1)


if __name__ == "__main__":
    main()
