"""Issue 15, item 3: the same digits CNN search three ways, in one run.

``python -m bench.cnn_side_by_side [--runs 3] [--kt-runs 1] [--trials 8] [--epochs 15]
[--output PATH]``

The search is ``configs/digits-cnn.yaml`` (the ``cnn`` hypermodel with its
overrides, scikit-learn's digits with its split, random search with seed 42,
8 trials, 15 epochs, batch 16, EarlyStopping on val_loss), run:

- **keras-tuner**: Keras Tuner's distributed mode, a chief process and 2 worker
  processes on 127.0.0.1, set up as Keras Tuner documents it
  (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``, ``KERASTUNER_ORACLE_PORT``;
  see :mod:`bench.kt_baseline`). Each process builds the same hypermodel
  (``workers.hypermodels.resolve_hypermodel``), dataset
  (``workers.datasets.load_dataset``) and ``RandomSearchOracle(seed=42)`` the
  chief of ktcluster builds; TF as Keras Tuner users run it (default threads);
- **ktc, no spares**: ``ktc submit`` on an embedded Ray with ``configs/local.yaml``
  (2 CPU workers, ``recycle_after_trials: 3``) and ``fleet.warm_spares: false``;
- **ktc, warm spares**: the same with ``fleet.warm_spares: true``.

Only ``failure.lease_timeout_s`` differs from the YAML (600 s instead of 60): a
stalled shared machine must not requeue a trial mid-measurement.

Per way:

- **wall**: launch (the first process spawned) to the last result (ktc: the
  ledger's last COMPLETED or FAILED; Keras Tuner: the last worker's
  ``on_trial_end`` returned, i.e. EndTrial acknowledged);
- **inside trials**, as issue 15's item 1 defines it: worker time inside
  trials (ktc: ASSIGNED to the attempt's end in the ledger; Keras Tuner:
  ``on_trial_begin`` to the end of ``on_trial_end``) over W x the window, for
  two windows: first ASSIGNED to last ASSIGNED (while trials were still
  waiting to start) and first ASSIGNED to the last result (the whole search);
- **best** ``val_accuracy``;
- **RSS growth per worker**: the harness samples each worker process's RSS
  every 0.25 s (psutil, by pid: Keras Tuner's worker processes, and for ktc
  every process ``workers.jsonl`` records, the process that ran a trial being
  the slot's latest one recorded before the trial's ASSIGNED). A trial's RSS is
  its process's first sample after the trial ended; a worker's growth is its
  highest trial RSS minus the RSS after its first trial, so under recycling it
  is what the policy bounds (as in :mod:`bench.worker_memory`).

``--runs`` ktc runs of each kind, interleaved (no spares, spares, no spares,
...), so load drift on a shared machine hits both; the table gives each
figure's median over the runs. Every row carries the load average at its start.

Process entry points (used by the harness): ``python -m bench.cnn_side_by_side kt
chief|worker ...``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from bench.kt_baseline import free_port, wait_port
from bench.procs import REPO_ROOT, BenchProcess, emit, spawn, tail
from bench.recovery import KtcProcess, ledger_events, write_yaml

SEARCH_YAML = REPO_ROOT / "configs" / "digits-cnn.yaml"
CLUSTER_YAML = REPO_ROOT / "configs" / "local.yaml"
MIB = 1024 * 1024
WAYS = ("keras-tuner", "ktc, no spares", "ktc, warm spares")


# ------------------------------------------------------------- the search


def digits_search(
    *, trials: int | None = None, epochs: int | None = None, name: str = "bench-cnn"
) -> dict[str, Any]:
    """configs/digits-cnn.yaml as a mapping, with the bench's lease and optional sizes."""
    search = dict(yaml.safe_load(SEARCH_YAML.read_text()))
    search["name"] = name
    search["oracle"] = {**search["oracle"]}
    search["training"] = {**search["training"]}
    if trials is not None:
        search["oracle"]["max_trials"] = trials
    if epochs is not None:
        search["training"]["epochs"] = epochs
    search["failure"] = {**search.get("failure", {}), "lease_timeout_s": 600.0}
    return search


def local_cluster(*, warm_spares: bool | None, name: str = "bench-cnn") -> dict[str, Any]:
    """configs/local.yaml, with ``fleet.warm_spares`` set (None: the YAML's default)."""
    cluster = dict(yaml.safe_load(CLUSTER_YAML.read_text()))
    cluster["name"] = name
    cluster["fleet"] = {**cluster["fleet"]}
    if warm_spares is not None:
        cluster["fleet"]["warm_spares"] = warm_spares
    return cluster


# ------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Span:
    """One trial attempt on one worker (epoch seconds)."""

    worker: str
    trial_id: str
    start: float
    end: float
    score: float | None = None
    pid: int | None = None


def busy_share(spans: Sequence[Span], workers: int, begin: float, end: float) -> float:
    """Time inside trials within [begin, end], summed over spans, / (workers x (end - begin))."""
    if not end > begin or workers <= 0:
        return math.nan
    busy = sum(max(0.0, min(s.end, end) - max(s.start, begin)) for s in spans)
    return busy / (workers * (end - begin))


def shares(spans: Sequence[Span], workers: int) -> tuple[float, float]:
    """(first start to last start, first start to last end): issue 15's two windows."""
    if not spans:
        return math.nan, math.nan
    first = min(s.start for s in spans)
    last_start = max(s.start for s in spans)
    last_end = max(s.end for s in spans)
    return busy_share(spans, workers, first, last_start), busy_share(
        spans, workers, first, last_end
    )


class RssSampler:
    """Samples the RSS of a changing set of pids every ``interval_s`` (a thread)."""

    def __init__(self, pids: Callable[[], Iterable[int]], interval_s: float = 0.25) -> None:
        self._pids = pids
        self._interval_s = interval_s
        self._stop = threading.Event()
        self.samples: dict[int, list[tuple[float, float]]] = {}  # pid -> [(ts, MiB)]
        self._procs: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                for pid in list(self._pids()):
                    if pid not in self._procs:
                        with contextlib.suppress(psutil.Error):
                            self._procs[pid] = psutil.Process(pid)
                    proc = self._procs.get(pid)
                    if proc is None:
                        continue
                    with contextlib.suppress(psutil.Error):
                        rss = proc.memory_info().rss / MIB
                        self.samples.setdefault(pid, []).append((time.time(), rss))
            self._stop.wait(self._interval_s)

    def rss_after(self, pid: int | None, ts: float) -> float:
        """The pid's first sample at or after ``ts`` (its last one if it exited first)."""
        samples = self.samples.get(pid or -1, [])
        after = [rss for t, rss in samples if t >= ts]
        if after:
            return after[0]
        return samples[-1][1] if samples else math.nan


def rss_growth(spans: Sequence[Span], sampler: RssSampler) -> dict[str, float]:
    """Per worker: highest RSS after any of its trials minus the RSS after its first."""
    growth: dict[str, float] = {}
    for worker in sorted({s.worker for s in spans}):
        ordered = sorted((s for s in spans if s.worker == worker), key=lambda s: s.end)
        after = [sampler.rss_after(s.pid, s.end) for s in ordered]
        after = [v for v in after if not math.isnan(v)]
        growth[worker] = max(after) - after[0] if after else math.nan
    return growth


@dataclass(frozen=True)
class WayRun:
    """One run of one way."""

    way: str
    wall_s: float  # launch -> last result
    startup_s: float  # launch -> first trial start
    exit_s: float  # last result -> the launched process (chief / ktc submit) exited
    share_assigning: float  # inside trials, first to last ASSIGNED
    share_whole: float  # inside trials, first ASSIGNED to last result
    best: float
    trials: int  # attempts that ended
    rss_growth_mib: dict[str, float] = field(default_factory=dict)
    load: float = math.nan
    error: str = ""


def median_run(runs: Sequence[WayRun]) -> WayRun:
    """Each figure's median over the runs (per worker for RSS)."""
    good = [r for r in runs if not r.error]
    if not good:
        return runs[0]

    def med(values: Iterable[float]) -> float:
        kept = [v for v in values if not math.isnan(v)]
        return statistics.median(kept) if kept else math.nan

    workers = sorted({w for r in good for w in r.rss_growth_mib})
    return WayRun(
        way=good[0].way,
        wall_s=med(r.wall_s for r in good),
        startup_s=med(r.startup_s for r in good),
        exit_s=med(r.exit_s for r in good),
        share_assigning=med(r.share_assigning for r in good),
        share_whole=med(r.share_whole for r in good),
        best=med(r.best for r in good),
        trials=round(med(float(r.trials) for r in good)),
        rss_growth_mib={w: med(r.rss_growth_mib.get(w, math.nan) for r in good) for w in workers},
        load=med(r.load for r in good),
    )


# --------------------------------------------------------------- ktc submit


def ledger_spans(search_dir: Path) -> list[Span]:
    """Every attempt that ended: ASSIGNED to its COMPLETED, FAILED or REQUEUED event."""
    from orchestrator.chief.events import EventKind

    ends = {EventKind.COMPLETED, EventKind.FAILED, EventKind.REQUEUED}
    started: dict[tuple[str, int], Any] = {}
    spans: list[Span] = []
    for e in ledger_events(search_dir):
        key = (str(e.trial_id), int(e.attempt or 0))
        if e.kind is EventKind.ASSIGNED:
            started[key] = e
        elif e.kind in ends and key in started:
            begin = started.pop(key)
            score = getattr(e.event, "score", None) if e.kind is EventKind.COMPLETED else None
            spans.append(Span(str(begin.worker_id), key[0], begin.ts, e.ts, score))
    return spans


def _workers_jsonl(search_dir: Path) -> list[dict[str, Any]]:
    path = search_dir / "workers.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            rows.append(json.loads(line))
    return rows


def _with_pids(spans: Sequence[Span], processes: Sequence[dict[str, Any]]) -> list[Span]:
    """Each span with the pid of its slot's latest process recorded before it started."""
    out = []
    for span in spans:
        mine = sorted(
            (p for p in processes if p.get("worker_id") == span.worker), key=lambda p: p["ts"]
        )
        before = [p for p in mine if p["ts"] <= span.start] or mine[:1]
        out.append(replace(span, pid=int(before[-1]["pid"]) if before else None))
    return out


def run_ktc(
    *,
    way: str,
    warm_spares: bool | None,
    work_dir: Path,
    trials: int | None = None,
    epochs: int | None = None,
    workers: int = 2,
    timeout_s: float = 1800.0,
) -> WayRun:
    """One ``ktc submit`` of the digits CNN search; figures from its ledger."""
    work_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    search = write_yaml(work_dir / "search.yaml", digits_search(trials=trials, epochs=epochs))
    cluster_spec = local_cluster(warm_spares=warm_spares)
    cluster_spec["nodes"][0]["cpu_workers"] = workers
    cluster = write_yaml(work_dir / "cluster.yaml", cluster_spec)
    search_dir = work_dir / "search"
    launched = time.time()
    ktc = KtcProcess(
        [
            "submit",
            str(search),
            "--cluster",
            str(cluster),
            "--dir",
            str(search_dir),
            "--no-progress",
        ],
        work_dir / "submit.log",
    )

    def pids() -> list[int]:
        return [int(p["pid"]) for p in _workers_jsonl(search_dir) if "pid" in p]

    try:
        with RssSampler(pids) as sampler:
            deadline = time.monotonic() + timeout_s
            while ktc.popen.poll() is None and time.monotonic() < deadline:
                ktc.remember_children()  # so leftovers can be reaped, by pid
                with contextlib.suppress(Exception):
                    ktc.popen.wait(timeout=0.5)
            exited = time.time()
        if ktc.popen.poll() is None:
            raise RuntimeError(f"ktc submit still running after {timeout_s:g} s; see {ktc.log}")
        if ktc.popen.returncode != 0:
            raise RuntimeError(
                f"ktc submit exited with code {ktc.popen.returncode}; see {ktc.log}:\n{tail(ktc.log)}"
            )
    finally:
        ktc.stop()
    spans = _with_pids(ledger_spans(search_dir), _workers_jsonl(search_dir))
    if not spans:
        raise RuntimeError(f"no trial ended in {search_dir}; see {ktc.log}")
    return _way_run(way, spans, workers, launched, exited, sampler, load)


def _way_run(
    way: str,
    spans: Sequence[Span],
    workers: int,
    launched: float,
    exited: float,
    sampler: RssSampler,
    load: float,
) -> WayRun:
    assigning, whole = shares(spans, workers)
    last = max(s.end for s in spans)
    scores = [s.score for s in spans if s.score is not None]
    return WayRun(
        way=way,
        wall_s=last - launched,
        startup_s=min(s.start for s in spans) - launched,
        exit_s=max(exited - last, 0.0),
        share_assigning=assigning,
        share_whole=whole,
        best=max(scores) if scores else math.nan,
        trials=len(spans),
        rss_growth_mib=rss_growth(spans, sampler),
        load=load,
    )


# ------------------------------------------------------- Keras Tuner's mode


def run_kt(
    *,
    work_dir: Path,
    trials: int | None = None,
    epochs: int | None = None,
    workers: int = 2,
    timeout_s: float = 1800.0,
) -> WayRun:
    """Keras Tuner's chief + ``workers`` worker processes on the same search."""
    work_dir.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    port = free_port()
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    search = json.dumps(digits_search(trials=trials, epochs=epochs))
    common = ["-m", "bench.cnn_side_by_side", "kt", "--dir", str(work_dir), "--search-json", search]
    procs: list[BenchProcess] = []
    launched = time.time()
    try:
        chief = spawn("kt-chief", [*common, "chief"], work_dir / "logs",
                      {**env, "KERASTUNER_TUNER_ID": "chief"})  # fmt: skip
        procs.append(chief)
        wait_port(port, timeout_s, chief)
        worker_procs = [
            spawn(
                f"kt-worker{i}",
                [*common, "worker"],
                work_dir / "logs",
                {**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
            )  # fmt: skip
            for i in range(workers)
        ]
        procs.extend(worker_procs)
        with RssSampler(lambda: [p.popen.pid for p in worker_procs]) as sampler:
            results = [p.wait_result(timeout_s) for p in worker_procs]
        chief.wait_result(timeout_s)  # KT's chief polls its workers every 20 s
        chief.popen.wait(timeout=60)
        exited = time.time()
    finally:
        for proc in procs:
            proc.kill()
    spans = [
        Span(
            worker=str(item["worker"]),
            trial_id=str(item["trial_id"]),
            start=float(item["start"]),
            end=float(item["end"]),
            score=None if item["score"] is None else float(item["score"]),
            pid=proc.popen.pid,
        )
        for proc, result in zip(worker_procs, results, strict=True)
        for item in result["spans"]
    ]
    if not spans:
        raise RuntimeError(f"Keras Tuner ran no trial; see {work_dir / 'logs'}")
    return _way_run("keras-tuner", spans, workers, launched, exited, sampler, load)


def _kt_process(role: str, directory: Path, search_json: str) -> None:
    import keras
    import keras_tuner

    from orchestrator.config import parse_search
    from workers.datasets import load_dataset
    from workers.hypermodels import resolve_hypermodel

    spec = parse_search(json.loads(search_json), check_paths=False)
    assert spec.dataset is not None  # the digits search has one
    data = load_dataset(spec.dataset)
    hypermodel = resolve_hypermodel(
        spec.hypermodel, data.input_shape, data.num_classes, label_mode=data.label_mode
    )
    spans: list[dict[str, Any]] = []
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    objective = keras_tuner.Objective(spec.objective.name, spec.objective.resolved_direction)

    class SpanTuner(keras_tuner.Tuner):  # type: ignore[misc]
        """A stock Tuner that records each trial's span; no TensorBoard import
        (TF 2.21 no longer installs it, and every trial would fail)."""

        begun = 0.0
        best: float | None = None

        def on_trial_begin(self, trial: Any) -> None:
            self.begun = time.time()
            self.best = None
            super().on_trial_begin(trial)

        def on_epoch_end(self, trial: Any, model: Any, epoch: int, logs: Any = None) -> None:
            # A worker's trial never gets its score (the chief computes it): the
            # objective's best epoch is what Keras Tuner scores the trial by.
            super().on_epoch_end(trial, model, epoch, logs=logs)
            value = (logs or {}).get(objective.name)
            if value is not None:
                better = self.best is None or (
                    value > self.best if objective.direction == "max" else value < self.best
                )
                self.best = float(value) if better else self.best

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)  # UpdateTrial + EndTrial on the chief
            score = self.best
            spans.append(
                {"worker": tuner_id, "trial_id": str(trial.trial_id), "start": self.begun,
                 "end": time.time(), "score": None if score is None else float(score)}
            )  # fmt: skip
            keras.backend.clear_session()

        def _configure_tensorboard_dir(
            self, callbacks: Any, trial: Any, execution: int = 0
        ) -> None:
            return None

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=objective,
        max_trials=spec.oracle.max_trials,
        seed=spec.oracle.seed,
    )
    tuner = SpanTuner(
        oracle=oracle,
        hypermodel=hypermodel,
        directory=str(directory / tuner_id),
        project_name="kt",
        overwrite=True,
    )
    training = spec.training
    callbacks = []
    if training.early_stopping is not None:
        es = training.early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=es.monitor, patience=es.patience, min_delta=es.min_delta
            )
        )
    tuner.search(
        data.x_train,
        data.y_train,
        validation_data=(data.x_val, data.y_val),
        epochs=training.epochs,
        batch_size=training.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    emit("RESULT", {"spans": spans, "at": time.time()})


# ------------------------------------------------------------------ report


def _fmt(value: float, digits: int = 1) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def markdown(rows: Sequence[tuple[WayRun, int]], command: str) -> list[str]:
    """The section: one row per way (the median of its runs)."""
    lines = [
        "### Real CNN trials: the digits CNN search three ways",
        "",
        f"`{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        "configs/digits-cnn.yaml (8 trials x up to 15 epochs, seed 42) on 2 workers; "
        "ktc rows are the median of their runs (each figure on its own). Inside trials: "
        "worker time inside trials / (2 x window), the window being first to last ASSIGNED, "
        "or first ASSIGNED to the last result (the whole search). RSS growth per worker: "
        "its highest RSS after a trial minus after its first trial.",
        "",
        "| way | runs | launch to last result s | first trial after s | exit after last "
        "result s | inside trials, first to last ASSIGNED | inside trials, whole search | "
        "best val_accuracy | attempts | RSS growth per worker MiB | load (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, count in rows:
        if run.error:
            lines.append(f"| {run.way} | {count} | failed: {run.error} |||||||||")
            continue
        rss = ", ".join(f"{w} {_fmt(v)}" for w, v in run.rss_growth_mib.items())
        lines.append(
            f"| {run.way} | {count} | {_fmt(run.wall_s)} | {_fmt(run.startup_s)} | "
            f"{_fmt(run.exit_s)} | {_fmt(run.share_assigning, 3)} | {_fmt(run.share_whole, 3)} | "
            f"{_fmt(run.best, 4)} | {run.trials} | {rss} | {_fmt(run.load, 2)} |"
        )
    lines.append("")
    return lines


def per_run_lines(runs: Sequence[WayRun]) -> list[str]:
    """Every run, for the record (wall, shares, best, load)."""
    lines = ["Every run:", ""]
    for r in runs:
        if r.error:
            lines.append(f"- {r.way}: failed: {r.error}")
            continue
        lines.append(
            f"- {r.way}: wall {r.wall_s:.1f} s, inside trials {r.share_assigning:.3f} / "
            f"{r.share_whole:.3f}, best {r.best:.4f}, load {r.load:.2f}"
        )
    lines.append("")
    return lines


def run_side_by_side(
    *,
    runs: int,
    kt_runs: int,
    work_dir: Path,
    trials: int | None = None,
    epochs: int | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> tuple[list[tuple[WayRun, int]], list[WayRun]]:
    """Every way; (median row and run count per way, every run)."""
    every: list[WayRun] = []
    by_way: dict[str, list[WayRun]] = {w: [] for w in WAYS}

    def attempt(way: str, fn: Callable[[], WayRun]) -> None:
        log(f"{way} (load {os.getloadavg()[0]:.2f})")
        try:
            run = fn()
        except Exception as exc:
            run = WayRun(way, *(math.nan,) * 6, 0, load=os.getloadavg()[0],
                         error=f"{type(exc).__name__}: {exc}"[:500])  # fmt: skip
        log(f"  {per_run_lines([run])[2]}")
        every.append(run)
        by_way[way].append(run)

    for i in range(kt_runs):
        attempt("keras-tuner", partial(run_kt, work_dir=work_dir / f"kt-{i}", trials=trials,
                                       epochs=epochs))  # fmt: skip
    for i in range(runs):
        for way, spares in (("ktc, no spares", False), ("ktc, warm spares", True)):
            slug = "spares" if spares else "nospares"
            attempt(way, partial(run_ktc, way=way, warm_spares=spares,
                                 work_dir=work_dir / f"{slug}-{i}", trials=trials,
                                 epochs=epochs))  # fmt: skip
    rows = [(median_run(by_way[w]), len(by_way[w])) for w in WAYS if by_way[w]]
    return rows, every


def main(argv: list[str] | None = None) -> int:
    """Harness (default) or a Keras Tuner process (``kt chief|worker``)."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["kt"]:
        parser = argparse.ArgumentParser(prog="python -m bench.cnn_side_by_side kt")
        parser.add_argument("--dir", type=Path, required=True)
        parser.add_argument("--search-json", required=True)
        parser.add_argument("role", choices=["chief", "worker"])
        args = parser.parse_args(args_in[1:])
        _kt_process(args.role, args.dir, args.search_json)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.cnn_side_by_side", description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="ktc runs of each kind (median)")
    parser.add_argument("--kt-runs", type=int, default=1)
    parser.add_argument("--trials", type=int, default=None, help="default: the YAML's 8")
    parser.add_argument("--epochs", type=int, default=None, help="default: the YAML's 15")
    parser.add_argument("--output", type=Path, default=None, help="also write the section here")
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args(args_in)
    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="bench-cnn-"))

    def log(message: str) -> None:
        print(f"[cnn {time.strftime('%H:%M:%S')}] {message}", flush=True)

    log(f"work dir {work_dir}")
    rows, every = run_side_by_side(
        runs=args.runs, kt_runs=args.kt_runs, work_dir=work_dir,
        trials=args.trials, epochs=args.epochs, log=log,
    )  # fmt: skip
    command = "RAY_AUTH_MODE=disabled .venv/bin/python -m bench.cnn_side_by_side " + " ".join(
        a for a in args_in if not a.startswith("--output") and a != str(args.output)
    )
    text = "\n".join(markdown(rows, command.strip()) + per_run_lines(every))
    print(text)
    if args.output is not None:
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
