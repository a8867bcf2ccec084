"""Issue 15, item 3: trial schedulers against random search and Keras Tuner's Hyperband.

``python -m bench.schedulers_bench [--workload sleep cnn] [--seeds 1 2 3 4 5]
[--output PATH]``

Four searches per workload and seed, each through a real chief
(:class:`orchestrator.chief.chief.Chief`, gRPC on 127.0.0.1) and real trial
runners (:class:`workers.runner.TrialRunner`):

- **random**: random search, no scheduler;
- **asha**: the same random search (same seed, so the same trials in the same
  order) with ``scheduler: {type: asha}``;
- **median**: the same with ``scheduler: {type: median}``;
- **hyperband**: Keras Tuner's Hyperband (``oracle.type: hyperband``, the
  chief's own KT oracle) with ``max_epochs`` = the trials' epochs, at an equal
  budget of epochs: it runs enough iterations to pass the random search's
  ``max_trials x epochs``, and only its events up to that budget count.

Workloads:

- **sleep**: the ``sleep`` hypermodel (``workers/hypermodels/sleep.py``): its
  ``val_accuracy`` is a bowl in ``x, y`` with its best at ``x=0.3, y=0.7``
  (1.0 there, times an epoch factor ``1 - 0.5 exp(-epoch/2)``), so the
  optimum is known. Epochs sleep ``--sleep-epoch-s``; the runners are threads
  in this process (the light path imports no TensorFlow).
- **cnn**: the digits CNN of ``configs/digits-cnn.yaml`` without its
  EarlyStopping (so a trial without a scheduler trains every epoch), the
  runners being worker processes (``bench.runner_overhead worker``).

Figures, from each search's ledger (progress events in commit order, one per
epoch trained, requeued attempts included):

- **epochs to target**: epochs trained until the best ``val_accuracy``
  reported so far came within 0.005 of the random search's final best (same
  workload and seed); ``-`` when it never did;
- **final best** (within the budget, for Hyperband).

Epoch counts do not depend on the machine's load (only on the order reports
arrive in, which the asynchronous rules see); each row is the median over the
seeds, with the per-seed figures beside it. Target: ASHA reaches the target
in <= 0.4x the epochs of random search, with a final best no more than 0.005
worse.
"""

from __future__ import annotations

import argparse
import json
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
from typing import Any

from bench.cnn_side_by_side import digits_search
from bench.procs import BenchProcess, spawn
from bench.recovery import ledger_events

METHODS = ("random", "asha", "median", "hyperband")
OBJECTIVE = "val_accuracy"
WITHIN = 0.005
TOKEN_ENV = "KTC_BENCH_TOKEN"


@dataclass(frozen=True)
class Sizes:
    """One workload's search sizes and scheduler settings."""

    trials: int
    epochs: int
    workers: int
    grace_epochs: int = 1
    reduction_factor: int = 3
    median_grace_epochs: int = 3
    hyperband_factor: int = 3


SLEEP = Sizes(trials=60, epochs=27, workers=2)
CNN = Sizes(trials=12, epochs=9, workers=2)


@dataclass(frozen=True)
class SearchRun:
    """One search's figures."""

    workload: str
    method: str
    seed: int
    epochs_total: int  # epochs trained (Hyperband: up to the budget)
    epochs_to_target: int | None  # None: never within WITHIN of the target
    final_best: float
    target: float  # the random search's final best - WITHIN
    trials: int  # trials that reported an epoch (within the budget)
    stopped_early: int
    wall_s: float
    load: float
    error: str = ""


# ------------------------------------------------------------ the searches


def search_spec(
    workload: str, method: str, seed: int, sizes: Sizes, *, epoch_s: float = 0.005
) -> dict[str, Any]:
    """The search mapping of one workload and method."""
    if workload == "sleep":
        search: dict[str, Any] = {
            "name": f"sched-sleep-{method}",
            "hypermodel": {"name": "sleep", "options": {"epoch_s": epoch_s}},
            "objective": OBJECTIVE,
            "training": {"epochs": sizes.epochs},
            "failure": {"lease_timeout_s": 600.0},
        }
    else:
        search = digits_search(name=f"sched-{workload}-{method}")
        search["training"] = {
            k: v for k, v in search["training"].items() if k != "early_stopping"
        } | {"epochs": sizes.epochs}
        if workload == "cnn-wide":
            # The hypermodel's own learning-rate range (1e-4 to 1e-2, log), the
            # Keras Tuner tutorials' one, instead of the config's [0.002, 0.005].
            hypermodel = dict(search["hypermodel"])
            hypermodel["overrides"] = {
                k: v for k, v in hypermodel["overrides"].items() if k != "learning_rate"
            }
            search["hypermodel"] = hypermodel
    if method == "hyperband":
        budget = sizes.trials * sizes.epochs
        per_iteration = hyperband_epochs(sizes.epochs, sizes.hyperband_factor)
        search["oracle"] = {
            "type": "hyperband",
            "max_epochs": sizes.epochs,
            "factor": sizes.hyperband_factor,
            "hyperband_iterations": max(1, math.ceil(budget / per_iteration)),
            "seed": seed,
        }
        return search
    search["oracle"] = {"type": "random", "max_trials": sizes.trials, "seed": seed}
    if method == "asha":
        search["scheduler"] = {
            "type": "asha",
            "grace_epochs": sizes.grace_epochs,
            "reduction_factor": sizes.reduction_factor,
        }
    elif method == "median":
        search["scheduler"] = {"type": "median", "grace_epochs": sizes.median_grace_epochs}
    return search


def hyperband_epochs(max_epochs: int, factor: int) -> int:
    """Epochs one Hyperband iteration trains (Keras Tuner's brackets, continuations
    training only their new epochs)."""
    from keras_tuner.src.tuners.hyperband import HyperbandOracle

    oracle = HyperbandOracle(objective="val_accuracy", max_epochs=max_epochs, factor=factor)
    total = 0
    for bracket in reversed(range(oracle._get_num_brackets())):
        previous = 0
        for round_num in range(bracket + 1):
            size = oracle._get_size(bracket, round_num)
            epochs = oracle._get_epochs(bracket, round_num)
            total += size * (epochs - previous)
            previous = epochs
    return total


def run_search(
    spec: dict[str, Any], search_dir: Path, workers: int, *, timeout_s: float = 3600.0
) -> list[Any]:
    """Run one search on a chief in this process; its ledger's events."""
    import keras_tuner

    from orchestrator.chief.chief import Chief
    from orchestrator.config import parse_search
    from workers.hypermodels.sleep import declare_sleep_space

    search = parse_search(spec, check_paths=False)
    hp = None
    if search.hypermodel.name == "sleep":
        hp = keras_tuner.HyperParameters()
        declare_sleep_space(hp, search.hypermodel.options)
    chief = Chief.create(search, search_dir, initial_space=hp, long_poll_s=2.0)
    endpoint = chief.start()
    try:
        if search.hypermodel.name == "sleep":
            _sleep_runners(endpoint.address, endpoint.token, spec, workers, timeout_s)
        else:
            _process_runners(endpoint.address, endpoint.token, spec, workers, search_dir, timeout_s)
        state = chief.wait(timeout_s)
        if state is None:
            raise RuntimeError(f"{search_dir}: the search did not end within {timeout_s:g} s")
    finally:
        chief.close()
    return ledger_events(search_dir)


def _sleep_runners(
    address: str, token: str, spec: dict[str, Any], workers: int, timeout_s: float
) -> None:
    from orchestrator.config import parse_search, spec_json
    from workers.runner import TrialRunner, WorkerConfig

    search_json = spec_json(parse_search(spec, check_paths=False))
    errors: list[BaseException] = []

    def run(i: int) -> None:
        config = WorkerConfig(worker_id=f"w{i}", chief_address=address, token=token,
                              search_json=search_json, wait_s=1.0)  # fmt: skip
        try:
            TrialRunner(config).run()
        except BaseException as exc:  # reported below, in the harness's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), name=f"runner-{i}") for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    if errors:
        raise RuntimeError(f"a sleep runner failed: {errors[0]!r}") from errors[0]


def _process_runners(
    address: str, token: str, spec: dict[str, Any], workers: int, search_dir: Path, timeout_s: float
) -> None:
    from workers.actor import WORKER_PROCESS_ENV

    procs: list[BenchProcess] = []
    try:
        for i in range(workers):
            proc = spawn(
                f"runner{i}",
                ["-m", "bench.runner_overhead", "worker", "--address", address,
                 "--worker-id", f"w{i}", "--search-json", json.dumps(spec)],
                search_dir.parent / "logs",
                {**WORKER_PROCESS_ENV, TOKEN_ENV: token},
            )  # fmt: skip
            procs.append(proc)
        for proc in procs:
            proc.wait_ready(600)
            proc.go()
        for proc in procs:
            proc.wait_result(timeout_s)
            proc.popen.wait(timeout=60)
    finally:
        for proc in procs:
            proc.kill()


# ----------------------------------------------------------------- figures


@dataclass(frozen=True)
class Curve:
    """What a search's ledger says, epoch by epoch (progress events in commit order)."""

    scores: tuple[float, ...]  # the objective of each epoch trained
    trials: tuple[str, ...]  # whose epoch it was
    stopped_early: frozenset[str]

    @classmethod
    def of(cls, events: Sequence[Any]) -> Curve:
        """Read the curve from a ledger's events."""
        from orchestrator.chief.events import EventKind

        scores, trials, stopped = [], [], set()
        for e in events:
            if e.kind is EventKind.PROGRESS:
                value = e.event.metrics.get(OBJECTIVE)
                scores.append(math.nan if value is None else float(value))
                trials.append(str(e.trial_id))
            elif e.kind is EventKind.COMPLETED and getattr(e.event, "stopped_early", False):
                stopped.add(str(e.trial_id))
        return cls(tuple(scores), tuple(trials), frozenset(stopped))

    def cut(self, budget: int) -> Curve:
        """The first ``budget`` epochs only."""
        trials = self.trials[:budget]
        return Curve(self.scores[:budget], trials, self.stopped_early & set(trials))

    @property
    def final_best(self) -> float:
        """The best objective reported."""
        kept = [s for s in self.scores if not math.isnan(s)]
        return max(kept) if kept else math.nan

    def epochs_to(self, target: float) -> int | None:
        """Epochs trained until the best so far reached ``target``."""
        for i, score in enumerate(self.scores):
            if score >= target:
                return i + 1
        return None


def figures(
    workload: str, method: str, seed: int, curve: Curve, target: float, wall_s: float, load: float
) -> SearchRun:
    """A search's row."""
    return SearchRun(
        workload=workload,
        method=method,
        seed=seed,
        epochs_total=len(curve.scores),
        epochs_to_target=curve.epochs_to(target),
        final_best=curve.final_best,
        target=target,
        trials=len(set(curve.trials)),
        stopped_early=len(curve.stopped_early),
        wall_s=wall_s,
        load=load,
    )


def run_seed(
    workload: str,
    seed: int,
    sizes: Sizes,
    work_dir: Path,
    epoch_s: float,
    methods: Sequence[str] = METHODS,
) -> list[SearchRun]:
    """Each method on one workload and seed (random first: it sets the target)."""
    curves: dict[str, tuple[Curve, float, float]] = {}
    runs: list[SearchRun] = []
    for method in methods:
        load = os.getloadavg()[0]
        started = time.monotonic()
        try:
            events = run_search(
                search_spec(workload, method, seed, sizes, epoch_s=epoch_s),
                work_dir / f"{workload}-{method}-s{seed}" / "search",
                sizes.workers,
            )
        except Exception as exc:
            runs.append(SearchRun(workload, method, seed, 0, None, math.nan, math.nan, 0, 0,
                                  time.monotonic() - started, load,
                                  f"{type(exc).__name__}: {exc}"[:300]))  # fmt: skip
            continue
        curve = Curve.of(events)
        if method == "hyperband":
            curve = curve.cut(sizes.trials * sizes.epochs)
        curves[method] = (curve, time.monotonic() - started, load)
    base = curves.get("random")
    target = base[0].final_best - WITHIN if base else math.nan
    for method, (curve, wall_s, load) in curves.items():
        runs.append(figures(workload, method, seed, curve, target, wall_s, load))
    return runs


# ------------------------------------------------------------------ report


def _median(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return statistics.median(kept) if kept else math.nan


def markdown(runs: Sequence[SearchRun], sizes: dict[str, Sizes], command: str) -> list[str]:
    """One table per workload: the median over seeds, per-seed figures beside it."""
    lines = [
        "### Schedulers: epochs to within 0.005 of random search's best",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Epoch "
        "counts come from each search's ledger (one progress event per epoch trained) and do "
        "not depend on load; wall times and the load average (1 min) at each search's start "
        "are given for the record.",
        "",
    ]
    for workload in dict.fromkeys(r.workload for r in runs):
        s = sizes[workload]
        mine = [r for r in runs if r.workload == workload]
        seeds = sorted({r.seed for r in mine})
        lines += [
            f"**{workload}**: {s.trials} trials x {s.epochs} epochs on {s.workers} workers "
            f"(budget {s.trials * s.epochs} epochs); ASHA grace {s.grace_epochs}, factor "
            f"{s.reduction_factor}; median grace {s.median_grace_epochs}, min_trials 2; "
            f"Hyperband max_epochs {s.epochs}, factor {s.hyperband_factor}, cut at the budget. "
            f"Seeds {', '.join(map(str, seeds))}.",
            "",
            "| method | epochs to target (median) | x random | final best (median) | best - "
            "random's | epochs trained | trials | stopped early | per seed: epochs to target "
            "/ final best | wall s | load |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        random_runs = {r.seed: r for r in mine if r.method == "random" and not r.error}
        for method in METHODS:
            rows = [r for r in mine if r.method == method]
            good = [r for r in rows if not r.error]
            if not good:
                if rows:
                    lines.append(f"| {method} | failed: {rows[0].error} |||||||||| ")
                continue
            med_to = statistics.median(_epochs(r) for r in good)
            ratios = [
                _epochs(r) / _epochs(random_runs[r.seed]) for r in good if r.seed in random_runs
            ]
            gaps = [
                r.final_best - random_runs[r.seed].final_best for r in good if r.seed in random_runs
            ]
            per_seed = "; ".join(
                f"s{r.seed}: {'-' if r.epochs_to_target is None else r.epochs_to_target} / "
                f"{r.final_best:.4f}"
                for r in good
            )
            lines.append(
                f"| {method} | {'-' if math.isinf(med_to) else f'{med_to:g}'} | "
                f"{_fmt_ratio(ratios)} | {_median([r.final_best for r in good]):.4f} | "
                f"{_median(gaps):+.4f} | {statistics.median(r.epochs_total for r in good):g} | "
                f"{statistics.median(r.trials for r in good):g} | "
                f"{statistics.median(r.stopped_early for r in good):g} | {per_seed} | "
                f"{_median([r.wall_s for r in good]):.0f} | "
                f"{_median([r.load for r in good]):.2f} |"
            )
        lines.append("")
    lines += [
        "x random: the median over seeds of (epochs to target / random search's epochs to "
        "target, same seed). Target: ASHA <= 0.4x, final best no more than 0.005 below.",
        "",
    ]
    return lines


def _epochs(run: SearchRun) -> float:
    """Epochs to target; infinity when never reached."""
    return math.inf if run.epochs_to_target is None else float(run.epochs_to_target)


def _fmt_ratio(ratios: Sequence[float]) -> str:
    if not ratios:
        return "-"
    value = statistics.median(ratios)
    return "never" if math.isinf(value) else f"{value:.2f}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the workloads and print (and optionally write) the section."""
    parser = argparse.ArgumentParser(prog="python -m bench.schedulers_bench", description=__doc__)
    parser.add_argument(
        "--workload", nargs="+", choices=["sleep", "cnn", "cnn-wide"], default=["sleep", "cnn"]
    )
    parser.add_argument(
        "--methods", nargs="+", choices=METHODS, default=list(METHODS),
        help="the searches to run (random always runs: it sets the target)",
    )  # fmt: skip
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--cnn-seeds", type=int, nargs="+", default=None,
                        help="seeds for the cnn workload (default: --seeds)")  # fmt: skip
    parser.add_argument("--sleep-epoch-s", type=float, default=0.005)
    parser.add_argument("--sleep-trials", type=int, default=SLEEP.trials)
    parser.add_argument("--cnn-trials", type=int, default=CNN.trials)
    parser.add_argument("--cnn-epochs", type=int, default=CNN.epochs)
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args_in = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(args_in)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-schedulers-"))
    sizes = {
        "sleep": Sizes(trials=args.sleep_trials, epochs=SLEEP.epochs, workers=SLEEP.workers),
        "cnn": Sizes(trials=args.cnn_trials, epochs=args.cnn_epochs, workers=CNN.workers),
    }
    sizes["cnn-wide"] = sizes["cnn"]
    methods = ["random", *(m for m in METHODS if m in args.methods and m != "random")]
    runs: list[SearchRun] = []
    for workload in args.workload:
        seeds = args.cnn_seeds if workload != "sleep" and args.cnn_seeds else args.seeds
        for seed in seeds:
            print(f"[sched {time.strftime('%H:%M:%S')}] {workload} seed {seed} "
                  f"(load {os.getloadavg()[0]:.2f})", flush=True)  # fmt: skip
            for run in run_seed(
                workload, seed, sizes[workload], work_dir, args.sleep_epoch_s, methods
            ):
                runs.append(run)
                print(f"  {run.method}: epochs to target {run.epochs_to_target}, final best "
                      f"{run.final_best:.4f}, {run.epochs_total} epochs {run.error}", flush=True)  # fmt: skip
    shown = [a for a in args_in if a not in (str(args.output), "--output")]
    command = "RAY_AUTH_MODE=disabled .venv/bin/python -m bench.schedulers_bench " + " ".join(shown)
    text = "\n".join(markdown(runs, sizes, command.strip()))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
