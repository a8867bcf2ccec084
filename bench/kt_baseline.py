"""The bar to beat: Keras Tuner's own distributed mode on the sleep workload.

A chief process and W worker processes on 127.0.0.1, set up the way Keras
Tuner documents it (``KERASTUNER_TUNER_ID``, ``KERASTUNER_ORACLE_IP``,
``KERASTUNER_ORACLE_PORT``; see keras_tuner/src/distribute/utils.py). Every
process runs a ``keras_tuner.Tuner`` subclass whose ``run_trial`` sleeps D
seconds and returns the ``sleep`` hypermodel's deterministic metrics; the space
is the sleep hypermodel's (Floats x, y, Int units, Choice optimizer) and the
oracle is ``RandomSearchOracle``, exactly what the ktcluster run uses.

Workers record per-trial spans (see :mod:`bench.timeline`): ``pre_create_trial``
to ``on_trial_begin`` is the CreateTrial round trip, ``run_trial`` is the work,
and the end of ``on_trial_end`` (UpdateTrial + EndTrial RPCs + the tuner's
save) is "result recorded".

Entry points (used by the harness): ``python -m bench.kt_baseline chief|worker ...``.
"""

from __future__ import annotations

import argparse
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.procs import BenchProcess, BenchProcessError, emit, spawn, wait_for_go
from bench.timeline import DispatchResult, TrialSpan, summarize

OBJECTIVE = "val_accuracy"


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout_s: float, proc: BenchProcess) -> None:
    """Block until something listens on ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise BenchProcessError(f"{proc.name}: exited before listening; see {proc.log_path}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise BenchProcessError(f"{proc.name}: nothing listens on port {port} after {timeout_s:g} s")


def run_kt_dispatch(
    *,
    workers: int,
    trials: int,
    trial_s: float,
    work_dir: Path | None = None,
    timeout_s: float = 600.0,
) -> DispatchResult:
    """Run T sleep trials on Keras Tuner's chief + W workers; summarise the spans."""
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-kt-"))
    port = free_port()
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    common = ["-m", "bench.kt_baseline", "--dir", str(base), "--trials", str(trials)]
    common += ["--trial-s", str(trial_s)]
    procs: list[BenchProcess] = []
    try:
        chief = spawn(
            "kt-chief", [*common, "chief"], base / "logs", {**env, "KERASTUNER_TUNER_ID": "chief"}
        )
        procs.append(chief)
        wait_port(port, timeout_s, chief)
        spawned = time.time()
        workers_ = [
            spawn(
                f"kt-worker{i}",
                [*common, "worker"],
                base / "logs",
                {**env, "KERASTUNER_TUNER_ID": f"tuner{i}"},
            )
            for i in range(workers)
        ]
        procs.extend(workers_)
        for proc in workers_:
            proc.wait_ready(timeout_s)
        startup = max(p.ready_at or spawned for p in workers_) - spawned
        for proc in workers_:
            proc.go()
        spans = [
            TrialSpan.from_json(item)
            for proc in workers_
            for item in proc.wait_result(timeout_s)["spans"]
        ]
        chief_result = chief.wait_result(timeout_s)
        last = max((s.recorded for s in spans), default=time.time())
        exit_delay = float(chief_result["search_returned_at"]) - last
        for proc in procs:
            proc.popen.wait(timeout=30)
    finally:
        for proc in procs:
            proc.kill()
    return summarize(
        system="keras-tuner",
        workers=workers,
        trials=trials,
        trial_s=trial_s,
        spans=spans,
        startup_s=startup,
        chief_exit_s=exit_delay,
    )


# ------------------------------------------------------------ process side


def _make_tuner(directory: Path, trials: int, trial_s: float) -> Any:
    import keras_tuner

    from workers.hypermodels.sleep import make_sleep_hypermodel, run_sleep_epoch

    options = {"epoch_s": trial_s}

    class SleepTuner(keras_tuner.Tuner):  # type: ignore[misc]
        """Runs the sleep workload and records spans."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.spans: list[TrialSpan] = []
            self._asked_at = 0.0
            self._rtt = 0.0
            self._start = 0.0
            self._end = 0.0

        def pre_create_trial(self) -> None:
            self._asked_at = time.time()

        def on_trial_begin(self, trial: Any) -> None:
            self._rtt = time.time() - self._asked_at
            super().on_trial_begin(trial)

        def run_trial(self, trial: Any, *args: Any, **kwargs: Any) -> dict[str, float]:
            self._start = time.time()
            metrics = run_sleep_epoch(trial.hyperparameters.values, 0, options)
            self._end = time.time()
            return metrics

        def on_trial_end(self, trial: Any) -> None:
            super().on_trial_end(trial)
            self.spans.append(
                TrialSpan(
                    worker=self.tuner_id,
                    trial_id=str(trial.trial_id),
                    start=self._start,
                    end=self._end,
                    recorded=time.time(),
                    create_rtt_s=self._rtt,
                )
            )

    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective(OBJECTIVE, "max"), max_trials=trials, seed=1
    )
    return SleepTuner(
        oracle=oracle,
        hypermodel=make_sleep_hypermodel(options),
        directory=str(directory),
        project_name="kt",
        overwrite=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Process entry point: ``chief`` or ``worker``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("role", choices=["chief", "worker"])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--trials", type=int, required=True)
    parser.add_argument("--trial-s", type=float, required=True)
    args = parser.parse_args(argv)
    tuner_id = os.environ["KERASTUNER_TUNER_ID"]
    tuner = _make_tuner(args.dir / tuner_id, args.trials, args.trial_s)
    if args.role == "chief":
        tuner.search()  # serves until every worker is done, then polls up to 20 s
        emit("RESULT", {"search_returned_at": time.time()})
        return
    emit("READY", {"at": time.time()})
    wait_for_go()
    tuner.search()
    emit("RESULT", {"spans": [s.to_json() for s in tuner.spans]})


if __name__ == "__main__":
    main()
