"""The scheduler's decision cost per report, at n trials (issue 15: O(log n) or less).

``python -m bench.scheduler_cost [--sizes 100 1000 10000 100000] [--reports 2000]``

A micro-benchmark of :mod:`orchestrator.chief.schedulers`, calling the classes
directly (no chief, no ledger): for each n, an ASHA scheduler and a median
stopping scheduler are filled with n trials' reports at a judged epoch (ASHA's
first rung; median stopping past its grace), so that rung (or epoch) holds n
scores. Then ``--reports`` more decisions are timed one by one with
``perf_counter_ns``, of two kinds:

- **new trial**: a trial the rung has not seen reports there (n grows by one);
- **new attempt**: a requeued trial's next attempt reports at the rung again,
  so its old score is removed first (the worst path: a removal and an insert;
  n stays the same).

The figure per (scheduler, kind, n) is the median time of one ``apply`` call
(the median, not the mean, because this machine is shared); ``ratio`` is that
time over the same figure at the smallest n. O(log n) means the ratio grows by
a constant step per decade of n; O(n) would multiply it by ten.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from orchestrator.chief.events import TrialProgress
from orchestrator.chief.schedulers import AshaScheduler, MedianStoppingScheduler, TrialScheduler

OBJECTIVE = "val_accuracy"
KINDS = ("new trial", "new attempt")


@dataclass(frozen=True)
class CostRow:
    """The median cost of one decision for one scheduler, kind and size."""

    scheduler: str
    kind: str
    trials: int
    median_us: float
    p90_us: float


def _report(trial: str, epoch: int, score: float, attempt: int = 1) -> TrialProgress:
    return TrialProgress(
        trial_id=trial, attempt=attempt, worker_id="w", epoch=epoch, metrics={OBJECTIVE: score}
    )


def _asha() -> TrialScheduler:
    # Rungs at 1, 3 and 9 epochs: the report of epoch 0 is judged at the first rung.
    return AshaScheduler(
        objective=OBJECTIVE, direction="max", grace_epochs=1, reduction_factor=3, max_epochs=27
    )


def _median() -> TrialScheduler:
    return MedianStoppingScheduler(
        objective=OBJECTIVE, direction="max", grace_epochs=1, min_trials=1, max_epochs=27
    )


SCHEDULERS: dict[str, Callable[[], TrialScheduler]] = {"asha": _asha, "median": _median}


def measure(
    make: Callable[[], TrialScheduler], trials: int, reports: int, kind: str, seed: int = 0
) -> list[float]:
    """Seconds per ``apply`` call for ``reports`` decisions at a rung holding ``trials`` scores."""
    rng = random.Random(seed)
    scheduler = make()
    for i in range(trials):
        scheduler.apply(_report(f"t{i}", 0, rng.random()))
    # Build every event first: only the decision is timed.
    if kind == "new trial":
        events = [_report(f"n{i}", 0, rng.random()) for i in range(reports)]
    else:
        events = [
            _report(f"t{rng.randrange(trials)}", 0, rng.random(), attempt=2 + i)
            for i in range(reports)
        ]
    costs: list[float] = []
    clock = time.perf_counter_ns
    for event in events:
        started = clock()
        scheduler.apply(event)
        costs.append((clock() - started) / 1e9)
    return costs


def run_scheduler_cost(sizes: Sequence[int], reports: int) -> list[CostRow]:
    """Every scheduler, kind and size."""
    rows = []
    for name, make in SCHEDULERS.items():
        for kind in KINDS:
            for trials in sizes:
                costs = sorted(measure(make, trials, reports, kind))
                rows.append(
                    CostRow(
                        scheduler=name,
                        kind=kind,
                        trials=trials,
                        median_us=statistics.median(costs) * 1e6,
                        p90_us=costs[int(0.9 * (len(costs) - 1))] * 1e6,
                    )
                )
    return rows


def markdown(rows: Sequence[CostRow], command: str, load: float) -> list[str]:
    """The section's table."""
    lines = [
        "### The scheduler's decision cost per report",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"(1 min) {load:.2f}. One `apply` call per report, the rung holding n scores; "
        "median (p90) of the timed calls; ratio = median / the median at the smallest n.",
        "",
        "| scheduler | report | n | median µs | p90 µs | ratio |",
        "|---|---|---|---|---|---|",
    ]
    base: dict[tuple[str, str], float] = {}
    for row in rows:
        first = base.setdefault((row.scheduler, row.kind), row.median_us)
        lines.append(
            f"| {row.scheduler} | {row.kind} | {row.trials:,} | {row.median_us:.2f} | "
            f"{row.p90_us:.2f} | {row.median_us / first:.2f} |"
        )
    lines.append("")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Measure and print the markdown table."""
    parser = argparse.ArgumentParser(prog="python -m bench.scheduler_cost", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10_000, 100_000])
    parser.add_argument("--reports", type=int, default=2000)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    rows = run_scheduler_cost(args.sizes, args.reports)
    command = "python -m bench.scheduler_cost " + " ".join(sys.argv[1:] if argv is None else argv)
    print("\n".join(markdown(rows, command.strip(), load)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
