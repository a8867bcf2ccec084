"""Run the benchmarks and write BENCHMARKS.md.

``python -m bench.run [--quick] [--only NAME ... [--merge]] [--output PATH]``

Measurements (``--only`` names): dispatch, cost_growth, slow_oracle,
worker_memory, recovery, scale (section 7; section 6 is a hand-written
regression check that ``--merge`` keeps, and a full run does not write).
Quick mode (< 5 min here) shrinks every size; the full run (< 30 min here)
uses the issue's sizes. A measurement that fails is reported with its
reason, and the others still run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import report
from bench.cost_growth import GrowthResult, SyncModeResult, run_growth, run_sync_modes
from bench.dispatch import DispatchComparison, compare
from bench.machine import MachineInfo
from bench.merge import merge_report
from bench.procs import REPO_ROOT
from bench.ray_dispatch import RayDispatchResult, run_ray_dispatch
from bench.recovery import run_recovery
from bench.scale import ScaleRun, describe, median_run, run_scale
from bench.slow_oracle import run_slow_oracle
from bench.worker_memory import MemoryResult, run_worker_memory

NAMES = ("dispatch", "cost_growth", "slow_oracle", "worker_memory", "recovery", "scale")
# Section numbers that are not the name's place in NAMES (6 is written by hand).
SECTION_NUMBERS = {"scale": 7}
RECYCLE_AFTER_TRIALS = 3  # fleet.recycle_after_trials default


@dataclass(frozen=True)
class Plan:
    """The sizes of one run."""

    quick: bool
    dispatch_workers: tuple[int, ...]  # Keras Tuner vs ktcluster over gRPC
    ray_workers: tuple[int, ...]  # ktcluster through `ktc submit` (the Ray fleet)
    trials_per_worker: int
    trial_s: float
    growth_sizes: tuple[int, ...]
    growth_full_sync_size: int
    sync_events: int
    slow_oracle_trials: int
    memory_trials: int
    memory_fresh_trials: int
    scale_workers: tuple[int, ...]  # the chief at fleet scale (section 7)
    scale_runs: int  # runs per W (the median is reported)
    scale_kt_workers: tuple[int, ...]  # Keras Tuner's chief beside it

    @classmethod
    def make(cls, quick: bool) -> Plan:
        """The quick or the full plan."""
        if quick:
            return cls(True, (2,), (2, 4), 5, 0.5, (100, 1000), 0, 1000, 20, 3, 1, (64,), 1, (64,))
        return cls(
            False,
            (1, 4, 16),
            (1, 4, 16),
            10,
            0.5,
            (100, 1000, 10_000),
            1000,
            2000,
            60,
            30,
            10,
            (64, 256, 1024),
            3,
            (64, 256),
        )

    def describe(self) -> str:
        """The sizes, for the report header."""
        workers = ", ".join(str(w) for w in self.dispatch_workers)
        ray = ", ".join(str(w) for w in self.ray_workers)
        growth = ", ".join(f"{n:,}" for n in self.growth_sizes)
        full = (
            f" (+ {self.growth_full_sync_size:,} with FULL sync)"
            if self.growth_full_sync_size
            else ""
        )
        return (
            f"dispatch W in {{{workers}}} (Keras Tuner and ktcluster over gRPC) and "
            f"{{{ray}}} (the Ray fleet), T = {self.trials_per_worker} x W, D = "
            f"{self.trial_s:g} s; cost growth {growth} trials{full}; slow oracle "
            f"{self.slow_oracle_trials} trials; worker memory {self.memory_trials} trials "
            f"long-lived and {self.memory_trials} recycled, {self.memory_fresh_trials} fresh "
            f"processes; scale W in {{{', '.join(str(w) for w in self.scale_workers)}}} "
            f"({self.scale_runs} run{'s' if self.scale_runs > 1 else ''} each), Keras Tuner "
            f"at {{{', '.join(str(w) for w in self.scale_kt_workers)}}}"
        )


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def run_dispatch(plan: Plan, base: Path) -> list[str]:
    """Measurement 1."""
    comparisons: list[DispatchComparison] = []
    rays: list[RayDispatchResult] = []
    failures: list[str] = []
    for workers in sorted(set(plan.dispatch_workers) | set(plan.ray_workers)):
        trials = plan.trials_per_worker * workers
        if workers in plan.dispatch_workers:
            _compare_row(workers, trials, plan, base, comparisons, failures)
        if workers in plan.ray_workers:
            ray = _run_ray_row(workers, trials, plan, base, failures)
            if ray is not None:
                rays.append(ray)
    return report.dispatch_section(comparisons, rays, "\n\n".join(failures), os.cpu_count() or 0)


def _compare_row(
    workers: int,
    trials: int,
    plan: Plan,
    base: Path,
    comparisons: list[DispatchComparison],
    failures: list[str],
) -> None:
    _log(f"dispatch W={workers} T={trials} D={plan.trial_s} ({_load()})")
    try:
        comp = compare(
            workers=workers, trials=trials, trial_s=plan.trial_s, work_dir=base / "dispatch"
        )
        comparisons.append(comp)
        for r in (comp.ktcluster, comp.keras_tuner):
            if r is not None:
                _log(
                    f"  {r.system}: efficiency {r.efficiency:.3f}, refill p50 "
                    f"{r.refill_ms.p50:.1f} ms, start-up {r.startup_s:.1f} s"
                )
        if comp.kt_error:
            _log(f"  keras-tuner failed: {comp.kt_error}")
    except Exception as exc:
        failures.append(f"W={workers}: could not run: {type(exc).__name__}: {exc}")


def _run_ray_row(
    workers: int, trials: int, plan: Plan, base: Path, failures: list[str]
) -> RayDispatchResult | None:
    _log(f"dispatch via ktc submit (Ray fleet) W={workers} T={trials} ({_load()})")
    try:
        ray = run_ray_dispatch(
            workers=workers, trials=trials, trial_s=plan.trial_s, work_dir=base / f"ray-w{workers}"
        )
    except Exception as exc:
        failures.append(f"Ray fleet W={workers}: could not run: {type(exc).__name__}: {exc}")
        return None
    d = ray.dispatch
    _log(
        f"  ray fleet: efficiency {d.efficiency:.3f}, refill p50 {d.refill_ms.p50:.1f} ms, "
        f"first ASSIGNED after {ray.first_assigned_s:.1f} s"
    )
    return ray


def run_cost_growth(plan: Plan, base: Path) -> list[str]:
    """Measurement 2."""
    results: list[GrowthResult] = []
    errors: list[str] = []
    sizes = [(n, "NORMAL") for n in plan.growth_sizes]
    if plan.growth_full_sync_size:
        sizes.append((plan.growth_full_sync_size, "FULL"))
    for trials, mode in sizes:
        _log(f"cost growth {trials} trials, ledger {mode} ({_load()})")
        try:
            result = run_growth(
                trials=trials, synchronous=mode, work_dir=base / f"growth-{trials}-{mode}"
            )
            results.append(result)
            _log(
                f"  chief CPU/trial {result.cpu_per_trial_ms:.2f} ms (last 10 % "
                f"{result.cpu_per_trial_last_ms:.2f}), EndTrial p99 {result.end_ms.p99:.1f} ms"
            )
        except Exception as exc:
            errors.append(f"{trials} trials ({mode}): {type(exc).__name__}: {exc}")
    sync: list[SyncModeResult] = []
    try:
        sync = run_sync_modes(events=plan.sync_events, work_dir=base / "sync")
    except Exception as exc:
        errors.append(f"sync modes: {type(exc).__name__}: {exc}")
    return report.growth_section(results, sync, errors)


def run_slow(plan: Plan, base: Path) -> list[str]:
    """Measurement 3."""
    _log(f"slow oracle: bayesian, {plan.slow_oracle_trials} trials, 16 clients ({_load()})")
    try:
        result = run_slow_oracle(trials=plan.slow_oracle_trials, work_dir=base / "slow-oracle")
    except Exception as exc:
        return report.slow_oracle_section(None, f"{type(exc).__name__}: {exc}")
    _log(f"  Report p99 during fits {result.report_during_fit_ms.p99:.1f} ms")
    return report.slow_oracle_section(result, "")


def run_memory(plan: Plan, base: Path) -> list[str]:
    """Measurement 4."""
    _log(
        f"worker memory: {plan.memory_trials} trials long-lived and recycled every "
        f"{RECYCLE_AFTER_TRIALS}, {plan.memory_fresh_trials} fresh ({_load()})"
    )
    result: MemoryResult = run_worker_memory(
        trials=plan.memory_trials,
        recycle_after=RECYCLE_AFTER_TRIALS,
        fresh_trials=plan.memory_fresh_trials,
        work_dir=base / "memory",
    )
    for run in (result.long_lived, result.recycled, result.fresh):
        if run is not None:
            _log(f"  {run.mode}: growth {run.growth_mib:.1f} MiB over {run.trials} trials")
    if result.error:
        _log(f"  failed: {result.error}")
    return report.memory_section(result, RECYCLE_AFTER_TRIALS)


def run_recovery_section(plan: Plan, base: Path) -> list[str]:
    """Measurement 5."""
    _log("recovery")
    return report.recovery_section(run_recovery(base / "recovery"))


def run_scale_section(plan: Plan, base: Path) -> list[str]:
    """Measurement 7: the chief with 3/4 of W workers parked, and Keras Tuner's beside it."""
    from bench.kt_scale import run_kt_scale

    rows: list[ScaleRun] = []
    errors: list[str] = []
    for workers in plan.scale_workers:
        runs: list[ScaleRun] = []
        for i in range(plan.scale_runs):
            _log(f"scale: ktcluster W={workers} run {i + 1}/{plan.scale_runs} ({_load()})")
            try:
                run = run_scale(workers=workers, work_dir=base / f"scale-w{workers}-{i}")
            except Exception as exc:
                errors.append(f"ktcluster W={workers} run {i + 1}: {type(exc).__name__}: {exc}")
                continue
            _log(f"  {describe(run)}")
            runs.append(run)
        if runs:
            rows.append(median_run(runs))
        if workers in plan.scale_kt_workers:
            _log(f"scale: keras-tuner W={workers} ({_load()})")
            try:
                kt = run_kt_scale(
                    workers=workers, work_dir=base / f"kt-scale-w{workers}", timeout_s=180.0
                )
            except Exception as exc:
                errors.append(f"keras-tuner W={workers}: {type(exc).__name__}: {exc}")
                continue
            _log(f"  {describe(kt)}")
            rows.append(kt)
    return report.scale_section(rows, errors, plan.scale_runs)


RUNNERS: dict[str, Callable[[Plan, Path], list[str]]] = {
    "dispatch": run_dispatch,
    "cost_growth": run_cost_growth,
    "slow_oracle": run_slow,
    "worker_memory": run_memory,
    "recovery": run_recovery_section,
    "scale": run_scale_section,
}


def main(argv: list[str] | None = None) -> int:
    """Run the selected measurements; print and write the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (< 5 min here)")
    parser.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME", help=f"any of {NAMES}")
    parser.add_argument("--output", type=Path, default=REPO_ROOT / "BENCHMARKS.md")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="with --only: replace just these sections of the existing --output file",
    )
    parser.add_argument("--reason", default="", help="with --merge: why this re-run")
    args = parser.parse_args(argv)
    plan = Plan.make(args.quick)
    names = args.only or list(NAMES)
    command = "RAY_AUTH_MODE=disabled .venv/bin/python -m bench.run" + (
        " --quick" if args.quick else ""
    )
    if args.only:
        command += " --only " + " ".join(names)
    command = f"`{command}`"
    if not args.only:
        command += " (what `make bench" + ("-quick" if args.quick else "") + "` runs)"
    info = MachineInfo.collect()
    base = Path(tempfile.mkdtemp(prefix="ktc-bench-"))
    _log(f"work dir {base}; {info.cores} cores, {_load()}")
    started = time.monotonic()
    lines = report.machine_section(info, command, args.quick, plan.describe())
    loads: list[str] = []
    for name in names:
        section_start = time.monotonic()
        loads.append(f"{name} {os.getloadavg()[0]:.2f}")
        try:
            lines += RUNNERS[name](plan, base)
        except Exception as exc:
            traceback.print_exc()
            number = SECTION_NUMBERS.get(name, NAMES.index(name) + 1)
            lines += [f"## {number}. {name}", "", f"Could not run: {type(exc).__name__}: {exc}", ""]
        _log(f"{name} took {time.monotonic() - section_start:.0f} s")
    total = time.monotonic() - started
    lines += [
        f"Total benchmark time: {total / 60:.1f} min. Load average (1 min) as each "
        f"measurement started: {', '.join(loads)}; at the end {os.getloadavg()[0]:.2f}.",
        "",
    ]
    text = "\n".join(lines)
    if args.merge and args.only and args.output.exists():
        note = (
            f"Re-run alone with {command} on {info.date}, load average (1 min) "
            f"{info.load_1m:.2f} at its start ({', '.join(loads)}), {total / 60:.1f} min; "
            "it replaces the full run's figures of this section"
            + (f" ({args.reason})." if args.reason else ".")
        )
        text = merge_report(args.output.read_text(), lines, note)
    args.output.write_text(text)
    print(text)
    _log(f"wrote {args.output} in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
