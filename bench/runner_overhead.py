"""Issue 15, item 3: what the trial runner adds to one trial, against a plain script.

``python -m bench.runner_overhead [--trials 5] [--epochs 15] [--rounds 3] [--profile DIR]
[--output PATH]``

- **ktc**: a real chief (:mod:`bench.chief_proc`) and one worker process
  running the real :class:`workers.runner.TrialRunner` (what a fleet actor
  runs) on the digits CNN search of ``configs/digits-cnn.yaml``, for
  ``--trials`` trials. A trial's time is its ASSIGNED to COMPLETED in the
  ledger: the CreateTrial answer, Keras Tuner's trial machinery (its
  checkpoint callback), the per-epoch Report RPCs, the checkpoint upload and
  the EndTrial.
- **plain**: one process that, for each of those trials, takes the same
  hyperparameters (the ledger's trial state), then builds, compiles and fits
  the same model (``hypermodel.build(hp)``, ``model.fit``) on the same data,
  batch size and epochs, timed from before the build to after the fit.

Both processes get the worker's environment (``WORKER_PROCESS_ENV``) and the
same TensorFlow set-up (``workers.devices.configure_tensorflow`` with a
one-CPU plan, as a CPU worker slot gets). EarlyStopping is removed from the
search so both train exactly ``--epochs`` epochs. The plain script needs the
trials' hyperparameters, which exist once the chief made them, so it runs
after a ktc search.

A trial's time swings by 20 to 30 % from one process to the next (on 2 cores,
with whatever else runs), far more than the few per cent this measures. So the
harness runs ``--rounds`` rounds (default 3), each a ktc search and then a plain
process, ktc and plain alternating so that a drift in the machine's load falls
on both. The random oracle's seed makes every round's search the same trials
(checked: the rounds' hyperparameters must match). A trial's time is the median
over the rounds, on each side; the overhead of trial i is ``ktc_i / plain_i -
1``, and the figure is its median over the trials (issue: median of 5, target
<= 3 %).

``--profile DIR`` records the worker process with py-spy (``py-spy record
--pid``, raw folded stacks and an SVG) for the whole ktc search.

Process entry points: ``python -m bench.runner_overhead worker|plain ...``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.chief_proc import start_chief_process
from bench.cnn_side_by_side import digits_search
from bench.procs import emit, spawn, wait_for_go
from bench.recovery import ledger_events

TOKEN_ENV = "KTC_BENCH_TOKEN"


@dataclass(frozen=True)
class TrialPair:
    """One trial: its time on the ktc worker and the plain script's, in seconds."""

    trial_id: str
    ktc_runs_s: tuple[float, ...]  # one per round's ktc search
    plain_runs_s: tuple[float, ...]  # one per round's plain process
    # (start to the first epoch's end, the other epochs, the last epoch's end to the
    # end): ktc from the ledger (ASSIGNED, the first and last progress, COMPLETED);
    # plain from an epoch-end callback. The median of the rounds.
    ktc_phases_s: tuple[float, float, float] = (math.nan, math.nan, math.nan)
    plain_phases_s: tuple[float, float, float] = (math.nan, math.nan, math.nan)

    @property
    def ktc_s(self) -> float:
        """The median of the ktc rounds."""
        return statistics.median(self.ktc_runs_s)

    @property
    def plain_s(self) -> float:
        """The median of the plain runs."""
        return statistics.median(self.plain_runs_s)

    @property
    def overhead(self) -> float:
        """``ktc / plain - 1``."""
        return self.ktc_s / self.plain_s - 1.0


@dataclass(frozen=True)
class OverheadResult:
    """Every trial's pair, and the load at each phase's start."""

    epochs: int
    pairs: tuple[TrialPair, ...]
    loads: tuple[tuple[float, float], ...]  # per round: at the ktc search's, the plain run's start
    profile: str = ""  # why there is no profile, when asked for one
    profile_path: str = ""  # py-spy's raw (folded) stacks
    # The plain script's clear_session() + gc.collect() after a trial (median): what
    # Keras Tuner's Tuner._try_build does again inside each ktc trial.
    plain_cleanup_s: float = 0.0

    @property
    def median_overhead(self) -> float:
        """The median of the per-trial overheads."""
        return statistics.median(p.overhead for p in self.pairs)


def overhead_search(trials: int, epochs: int) -> dict[str, Any]:
    """The digits CNN search with a fixed epoch count (no EarlyStopping)."""
    search = digits_search(trials=trials, epochs=epochs, name="bench-runner-overhead")
    search["training"] = {k: v for k, v in search["training"].items() if k != "early_stopping"}
    return search


def _plain(
    search: dict[str, Any], states: list[dict[str, Any]], work_dir: Path, name: str
) -> tuple[list[float], list[float], list[tuple[float, float, float]]]:
    """Seconds per trial (build + fit), of the clean-up after each (clear_session + gc),
    and each trial's phases (to the first epoch's end, the other epochs, after the last)."""
    from workers.actor import WORKER_PROCESS_ENV

    proc = spawn(
        name,
        ["-m", "bench.runner_overhead", "plain", "--search-json", json.dumps(search),
         "--states-json", json.dumps(states)],
        work_dir / "logs",
        dict(WORKER_PROCESS_ENV),
    )  # fmt: skip
    try:
        result = proc.wait_result(1800)
        proc.popen.wait(timeout=60)
    finally:
        proc.kill()
    phases = [(float(a), float(b), float(c)) for a, b, c in result["phases_s"]]
    return [float(s) for s in result["seconds"]], [float(s) for s in result["cleanup_s"]], phases


def _ktc(
    search: dict[str, Any], work_dir: Path, profile_dir: Path | None, profile_idle: bool = False
) -> tuple[list[tuple[str, float, dict[str, Any], tuple[float, float, float]]], str]:
    """Run the search on one real runner; per trial (id, ASSIGNED to COMPLETED, trial state)."""
    from orchestrator.chief.events import EventKind
    from workers.actor import WORKER_PROCESS_ENV

    chief = start_chief_process(search, work_dir / "search", hold=True)
    profile_note = ""
    try:
        ready = chief.ready or {}
        worker = spawn(
            "runner",
            ["-m", "bench.runner_overhead", "worker", "--address", str(ready["address"]),
             "--search-json", json.dumps(search)],
            work_dir / "logs",
            {**WORKER_PROCESS_ENV, TOKEN_ENV: str(ready["token"])},
        )  # fmt: skip
        spy: subprocess.Popen[bytes] | None = None
        try:
            pid = int(worker.wait_ready(600)["pid"])
            if profile_dir is not None:
                spy, profile_note = _start_py_spy(pid, profile_dir, profile_idle)
            worker.go()
            worker.wait_result(3600)
            worker.popen.wait(timeout=60)
        finally:
            if spy is not None:
                try:
                    spy.wait(timeout=60)  # py-spy stops when its target exits
                except subprocess.TimeoutExpired:
                    spy.terminate()
            worker.kill()
        chief.go()
        chief.popen.wait(timeout=60)
    finally:
        chief.kill()
    events = ledger_events(work_dir / "search")
    created = {e.trial_id: e.event.trial_state for e in events if e.kind is EventKind.CREATED}
    assigned = {(e.trial_id, e.attempt): e.ts for e in events if e.kind is EventKind.ASSIGNED}
    progress: dict[tuple[Any, Any], list[float]] = {}
    for e in events:
        if e.kind is EventKind.PROGRESS:
            progress.setdefault((e.trial_id, e.attempt), []).append(e.ts)
    trials = []
    for e in events:
        if e.kind is not EventKind.COMPLETED:
            continue
        key = (e.trial_id, e.attempt)
        start, marks = assigned[key], progress.get(key) or [math.nan]
        phases = (marks[0] - start, marks[-1] - marks[0], e.ts - marks[-1])
        trials.append((str(e.trial_id), e.ts - start, created[e.trial_id], phases))
    return trials, profile_note


def _start_py_spy(
    pid: int, profile_dir: Path, idle: bool = False
) -> tuple[subprocess.Popen[bytes] | None, str]:
    py_spy = Path(sys.executable).with_name("py-spy")
    profile_dir.mkdir(parents=True, exist_ok=True)
    out = profile_dir / "runner.folded"
    try:
        spy = subprocess.Popen(
            [str(py_spy), "record", "--pid", str(pid), "--rate", "200", "--format", "raw",
             "--output", str(out), "--nonblocking", *(["--idle"] if idle else [])],
            stdout=subprocess.DEVNULL,
            stderr=(profile_dir / "py-spy.log").open("w"),
        )  # fmt: skip
    except OSError as exc:
        return None, f"py-spy did not start: {exc}"
    time.sleep(1.0)  # let it attach before the first trial
    return spy, f"py-spy raw stacks: {out}"


def _median_phases(runs: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    a, b, c = (statistics.median(run[k] for run in runs) for k in range(3))
    return a, b, c


def run_runner_overhead(
    *,
    trials: int = 5,
    epochs: int = 15,
    rounds: int = 3,
    work_dir: Path | None = None,
    profile_dir: Path | None = None,
    profile_idle: bool = False,
) -> OverheadResult:
    """``rounds`` x (the ktc search, then the plain script on its trials' hyperparameters)."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-runner-overhead-"))
    search = overhead_search(trials, epochs)
    loads: list[tuple[float, float]] = []
    ktc_rounds: list[list[tuple[str, float, dict[str, Any], tuple[float, float, float]]]] = []
    plain: list[list[float]] = []
    plain_phases: list[list[tuple[float, float, float]]] = []
    cleanup: list[float] = []
    note = ""
    for r in range(rounds):
        ktc_load = os.getloadavg()[0]
        # py-spy records the first round's worker only.
        ktc, round_note = _ktc(
            search, base / f"ktc-{r + 1}", profile_dir if r == 0 else None, profile_idle
        )
        note = note or round_note
        if ktc_rounds and _values(ktc) != _values(ktc_rounds[0]):
            raise RuntimeError(
                f"round {r + 1}'s trials have other hyperparameters than round 1's: the "
                "random oracle's seed no longer fixes the search, so rounds cannot be paired"
            )
        ktc_rounds.append(ktc)
        plain_load = os.getloadavg()[0]
        seconds, cleanup_s, phases = _plain(
            search, [state for _, _, state, _ in ktc_rounds[0]], base, f"plain-{r + 1}"
        )
        loads.append((ktc_load, plain_load))
        plain.append(seconds)
        plain_phases.append(phases)
        cleanup += cleanup_s
    pairs = tuple(
        TrialPair(
            trial_id,
            tuple(run[i][1] for run in ktc_rounds),
            tuple(run[i] for run in plain),
            _median_phases([run[i][3] for run in ktc_rounds]),
            _median_phases([run[i] for run in plain_phases]),
        )
        for i, (trial_id, *_) in enumerate(ktc_rounds[0])
    )
    folded = profile_dir / "runner.folded" if profile_dir is not None else None
    path = str(folded) if folded is not None and folded.is_file() else ""
    return OverheadResult(
        epochs, pairs, tuple(loads), note, path, statistics.median(cleanup) if cleanup else 0.0
    )


def _values(ktc: Sequence[tuple[str, float, dict[str, Any], Any]]) -> list[tuple[str, Any]]:
    """Each trial's id and hyperparameter values, in completion order."""
    return [(trial_id, state["hyperparameters"]["values"]) for trial_id, _, state, _ in ktc]


# ---------------------------------------------------------------- profile

# (bucket, test on one stack's frames), first match wins; "in trial" buckets first.
PROFILE_BUCKETS: tuple[tuple[str, str, bool], ...] = (
    ("per-epoch Report RPC (on_epoch_end)", "report_epoch", True),
    ("KT's best-epoch checkpoint (save_weights)", "save_weights", True),
    ("KT's clear_session() before the build", "Tuner._try_build;clear_session", True),
    ("build + compile", "_build_hypermodel", True),
    ("KT's gc.collect() (and size check) before the build", "Tuner._try_build", True),
    ("fit (train + validation steps)", "TensorFlowTrainer.fit", True),
    ("other work inside the trial", "_try_run_and_update_trial", True),
    ("checkpoint upload", "_upload_artifacts", True),
    ("on_trial_end (EndTrial)", "on_trial_end", True),
    ("CreateTrial", "create_trial", False),
    ("set-up, once (TF import, dataset, tuner)", "_set_up_keras_tuner", False),
    ("between trials (runner's clear_session, gc, malloc_trim)", "_run_keras_tuner", False),
)


def summarize_profile(folded: Path) -> list[tuple[str, int, bool]]:
    """py-spy raw (folded) stacks -> samples per bucket (name, samples, inside a trial)."""
    import re

    counts: dict[str, int] = {}
    frame_name = re.compile(r" \([^()]*:\d+\)$")
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        names = ";".join(frame_name.sub("", f) for f in stack.split(";"))
        bucket = next(
            (name for name, needle, _ in PROFILE_BUCKETS if needle in names), "other threads"
        )
        counts[bucket] = counts.get(bucket, 0) + int(n)
    inside = {name: flag for name, _, flag in PROFILE_BUCKETS}
    return [(name, counts.get(name, 0), inside.get(name, False))
            for name in [*inside, "other threads"]]  # fmt: skip


def profile_lines(folded: Path) -> list[str]:
    """The profile as a table: samples per bucket, and their share of the trials' samples."""
    rows = summarize_profile(folded)
    in_trial = sum(n for _, n, inside in rows if inside) or 1
    lines = [
        f"Where the worker's time went (py-spy, {folded}): samples per part; the share is of "
        "the samples inside trials (ASSIGNED to COMPLETED).",
        "",
        "| part | samples | share of in-trial |",
        "|---|---|---|",
    ]
    for name, n, inside in rows:
        share = f"{100 * n / in_trial:.1f} %" if inside else "-"
        lines.append(f"| {name} | {n} | {share} |")
    lines.append("")
    return lines


# ------------------------------------------------------------ process side


def _worker_main(address: str, token: str, search_json: str, worker_id: str) -> None:
    from orchestrator.config import parse_search, spec_json
    from workers.runner import TrialRunner, WorkerConfig

    search = parse_search(json.loads(search_json), check_paths=False)
    config = WorkerConfig(
        worker_id=worker_id,
        chief_address=address,
        token=token,
        search_json=spec_json(search),
        reconnect_timeout_s=5.0,
    )
    emit("READY", {"pid": os.getpid()})
    wait_for_go()
    summary = TrialRunner(config).run()
    emit("RESULT", {"trials_run": summary.trials_run, "reason": summary.reason.value})


def _plain_main(search_json: str, states_json: str) -> None:
    import gc

    from orchestrator.config import parse_search
    from workers.devices import DevicePlan, configure_tensorflow

    configure_tensorflow(DevicePlan())  # what the runner does for a one-CPU worker
    import keras
    from keras_tuner.src.engine import trial as kt_trial

    from workers.datasets import load_dataset
    from workers.hypermodels import resolve_hypermodel

    spec = parse_search(json.loads(search_json), check_paths=False)
    assert spec.dataset is not None  # the digits search has one
    data = load_dataset(spec.dataset)
    hypermodel = resolve_hypermodel(
        spec.hypermodel, data.input_shape, data.num_classes, label_mode=data.label_mode
    )
    seconds: list[float] = []
    cleanup: list[float] = []  # clear_session + gc.collect, outside the timed window
    phases: list[tuple[float, float, float]] = []
    for state in json.loads(states_json):
        hp = kt_trial.Trial.from_state(copy.deepcopy(state)).hyperparameters
        marks: list[float] = []
        mark = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs, marks=marks: marks.append(time.perf_counter())
        )
        started = time.perf_counter()
        model = hypermodel.build(hp)
        model.fit(
            data.x_train,
            data.y_train,
            callbacks=[mark],
            validation_data=(data.x_val, data.y_val),
            epochs=spec.training.epochs,
            batch_size=spec.training.batch_size,
            verbose=0,
        )
        ended = time.perf_counter()
        seconds.append(ended - started)
        phases.append((marks[0] - started, marks[-1] - marks[0], ended - marks[-1]))
        del model
        started = time.perf_counter()
        keras.backend.clear_session()  # as the runner does between trials
        gc.collect()
        cleanup.append(time.perf_counter() - started)
    emit("RESULT", {"seconds": seconds, "cleanup_s": cleanup, "phases_s": phases})


# ------------------------------------------------------------------ report


def markdown(result: OverheadResult, command: str) -> list[str]:
    """The section's table: one row per trial, then the median."""
    rounds = len(result.loads)
    load_text = "; ".join(f"{k:.2f} / {p:.2f}" for k, p in result.loads)
    lines = [
        "### Inside one trial: the runner against a plain script",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"(1 min) at each round's ktc search / plain run: {load_text}. Digits CNN, "
        f"{result.epochs} epochs, batch 16, no EarlyStopping; {rounds} rounds, each a ktc "
        "search (ASSIGNED to COMPLETED in the ledger, one TrialRunner process) and then a plain "
        "process (build + fit of the same hyperparameters); a trial's time is the median of "
        "its rounds on each side. Both with the worker's environment and one TF thread.",
        "",
        "| trial | ktc s (each round) | plain s (each round) | overhead |",
        "|---|---|---|---|",
    ]
    for p in result.pairs:
        lines.append(
            f"| {p.trial_id} | {p.ktc_s:.2f} ({', '.join(f'{v:.2f}' for v in p.ktc_runs_s)}) | "
            f"{p.plain_s:.2f} ({', '.join(f'{v:.2f}' for v in p.plain_runs_s)}) | "
            f"{100 * p.overhead:+.1f} % |"
        )
    lines += ["", *phase_lines(result.pairs)]
    lines += [
        "",
        f"Median overhead over {len(result.pairs)} trials: **{100 * result.median_overhead:+.1f} %** "
        "(target <= 3 %).",
        "",
        f"For scale: in the plain process, `keras.backend.clear_session()` + `gc.collect()` "
        f"after a trial took {result.plain_cleanup_s:.2f} s (median); Keras Tuner's "
        "`Tuner._try_build` runs both again at the start of every trial, inside ASSIGNED to "
        "COMPLETED, after the runner already ran them at the end of the previous trial.",
        "",
    ]
    if result.profile_path:
        folded = Path(result.profile_path)
        lines += profile_lines(folded) if folded.is_file() else [f"No profile: {folded}", ""]
    elif result.profile:
        lines += [result.profile, ""]
    return lines


def phase_lines(pairs: Sequence[TrialPair]) -> list[str]:
    """Where the difference is: the median over trials of each phase, ktc and plain."""
    names = (
        "start to the first epoch's end (ktc: ASSIGNED to its progress event; build, "
        "Keras Tuner's clean-up, first epoch)",
        "the other epochs (ktc: each with its Report RPC and checkpoint)",
        "the last epoch's end to the end (ktc: to COMPLETED; update, upload, EndTrial)",
    )
    lines = [
        "| phase (median over trials) | ktc s | plain s | ktc - plain s |",
        "|---|---|---|---|",
    ]
    for k, name in enumerate(names):
        ktc = statistics.median(p.ktc_phases_s[k] for p in pairs)
        plain = statistics.median(p.plain_phases_s[k] for p in pairs)
        lines.append(f"| {name} | {ktc:.2f} | {plain:.2f} | {ktc - plain:+.2f} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Harness (default) or a process (``worker``/``plain``)."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["worker"]:
        parser = argparse.ArgumentParser(prog="python -m bench.runner_overhead worker")
        parser.add_argument("--address", required=True)
        parser.add_argument("--search-json", required=True)
        parser.add_argument("--worker-id", default="runner-w0")
        args = parser.parse_args(args_in[1:])
        _worker_main(args.address, os.environ[TOKEN_ENV], args.search_json, args.worker_id)
        return 0
    if args_in[:1] == ["plain"]:
        parser = argparse.ArgumentParser(prog="python -m bench.runner_overhead plain")
        parser.add_argument("--search-json", required=True)
        parser.add_argument("--states-json", required=True)
        args = parser.parse_args(args_in[1:])
        _plain_main(args.search_json, args.states_json)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.runner_overhead", description=__doc__)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument(
        "--rounds", type=int, default=3, help="ktc searches, each followed by a plain process"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy the first round's worker into DIR"
    )
    parser.add_argument(
        "--profile-idle",
        action="store_true",
        help="with --profile: sample waiting threads too (RPC round trips show)",
    )
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(args_in)
    result = run_runner_overhead(
        trials=args.trials,
        epochs=args.epochs,
        rounds=args.rounds,
        work_dir=args.work_dir,
        profile_dir=args.profile,
        profile_idle=args.profile_idle,
    )
    shown = [a for a in args_in if a != str(args.output) and a != "--output"]
    command = "RAY_AUTH_MODE=disabled .venv/bin/python -m bench.runner_overhead " + " ".join(shown)
    text = "\n".join(markdown(result, command.strip()))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
