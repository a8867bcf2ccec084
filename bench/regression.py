"""Did a change make the chief slower? Dispatch refill and cost growth, median of N runs.

    RAY_AUTH_MODE=disabled .venv/bin/python -m bench.regression --runs 3

Runs the gRPC dispatch benchmark (W sleep workers, 10 x W trials of 0.5 s)
and the cost-growth benchmark (instant trials, 8 clients) ``--runs`` times
each, and prints the median of every figure beside the one BENCHMARKS.md
recorded, so a change can be held to "within 10 %". Run it on a quiet machine:
on 2 cores any other load shows up in the refill times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.cost_growth import run_growth
from bench.dispatch import run_ktcluster_dispatch

# BENCHMARKS.md before the change being judged (section 1, ktcluster over gRPC;
# section 2, cost growth at NORMAL sync).
BASELINE = {
    "dispatch W=4 refill p50 (ms)": 8.7,
    "dispatch W=4 efficiency": 0.975,
    "dispatch W=16 refill p50 (ms)": 4.6,
    "dispatch W=16 efficiency": 0.964,
    "growth 100 chief CPU/trial (ms)": 3.50,
    "growth 1,000 chief CPU/trial (ms)": 3.26,
    "growth 1,000 EndTrial p50 (ms)": 4.2,
    "growth 10,000 chief CPU/trial (ms)": 3.84,
}
# Figures where more is better (the rest: less is better).
HIGHER_IS_BETTER = {"dispatch W=4 efficiency", "dispatch W=16 efficiency"}


def measure(runs: int, work_dir: Path, *, with_10k: bool) -> dict[str, list[float]]:
    """Every figure of BASELINE, once per run."""
    samples: dict[str, list[float]] = {name: [] for name in BASELINE}

    def note(name: str, value: float) -> None:
        samples[name].append(value)

    for run in range(runs):
        for workers in (4, 16):
            result = run_ktcluster_dispatch(
                workers=workers,
                trials=10 * workers,
                trial_s=0.5,
                work_dir=work_dir / f"dispatch-{workers}-{run}",
            )
            note(f"dispatch W={workers} refill p50 (ms)", result.refill_ms.p50)
            note(f"dispatch W={workers} efficiency", result.efficiency)
        sizes = (100, 1000, 10_000) if with_10k else (100, 1000)
        for trials in sizes:
            growth = run_growth(trials=trials, work_dir=work_dir / f"growth-{trials}-{run}")
            label = f"{trials:,}"
            note(f"growth {label} chief CPU/trial (ms)", growth.cpu_per_trial_ms)
            if trials == 1000:
                note("growth 1,000 EndTrial p50 (ms)", growth.end_ms.p50)
    return samples


def table(samples: dict[str, list[float]], fmt: Callable[[float], str] = "{:.3g}".format) -> str:
    """A markdown table: figure, baseline, the runs, their median, the change."""
    lines = [
        "| figure | BENCHMARKS.md | runs | median | change | within 10 % |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in samples.items():
        if not values:
            continue
        median = statistics.median(values)
        base = BASELINE[name]
        change = (median - base) / base
        worse = -change if name in HIGHER_IS_BETTER else change
        lines.append(
            f"| {name} | {fmt(base)} | {', '.join(fmt(v) for v in values)} | {fmt(median)} | "
            f"{change:+.0%} | {'yes' if worse <= 0.10 else 'NO'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--with-10k", action="store_true", help="also the 10,000-trial growth run")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-regression-") as tmp:
        samples = measure(args.runs, Path(tmp), with_10k=args.with_10k)
    print(f"load average (1 min) at the start: {load:.2f}")
    print(table(samples))


if __name__ == "__main__":
    main()
