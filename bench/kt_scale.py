"""Keras Tuner's own chief on the scale workload (:mod:`bench.scale`), with its own clients.

The chief is what Keras Tuner's distributed mode runs (``KERASTUNER_TUNER_ID=chief``,
``tuner.search()``, which serves ``keras_tuner.src.distribute.oracle_chief``: a
``grpc.server`` with one worker thread), built by
:func:`bench.kt_baseline._make_tuner`: the sleep space, ``RandomSearchOracle``,
objective ``val_accuracy``, max_trials = 2T. Its oracle is capped at T running
trials the same way as ktcluster's (``populate_space`` answers IDLE while T
are ongoing).

The simulated workers speak Keras Tuner's ``keras_tuner.Oracle`` gRPC service
(its generated ``service_pb2``), from client processes run by the same harness
as ktcluster's (:func:`bench.scale_clients.run_process`), one channel and TCP
connection each, ids ``sim-p{proc}-w{i}`` as ``tuner_id``. Each mirrors what
Keras Tuner's ``BaseTuner.search`` and ``OracleClient`` send:

- ``CreateTrial(tuner_id)``; on an IDLE trial it asks again **at once**, as
  ``BaseTuner.search`` does (``continue``; Keras Tuner has no long-poll and no
  pause); on STOPPED it exits;
- per epoch, ``UpdateTrial(trial_id, metrics, step=epoch)`` (Keras Tuner's
  report), one every 0.2 s, 10 epochs;
- ``EndTrial(trial)`` with the trial it was given, status COMPLETED.

Keras Tuner has no heartbeat and no lease, so those columns are "-". Its
chief keeps no ledger, so refill is the clients' view only (a TRIAL answer
received minus the latest EndTrial sent before it). Keras Tuner's chief
exits on its own only after polling every 20 s; the driver stops it once
every client is done, so wall time is ``go`` to the last client done.

The client processes do not import ``keras_tuner`` (whose ``__init__``
imports TensorFlow): :func:`kt_protos` loads only its generated protos.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import importlib.util
import os
import random
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import grpc

from bench.chief_proc import cap_oracle
from bench.kt_baseline import _make_tuner, free_port, wait_port
from bench.procs import BenchProcess, spawn
from bench.scale import (
    RssSampler,
    ScaleRun,
    client_procs,
    count_log_errors,
    cpu_s,
    gaps_after_first,
    spawn_clients,
    start_and_collect,
    watchdog,
)
from bench.scale_clients import (
    CONNECT_TIMEOUT_S,
    RPC_TIMEOUT_S,
    Recorder,
    Workload,
    parser,
    run_process,
)
from bench.stats import Distribution

SYSTEM = "keras-tuner"
# KT's OracleClient waits up to an hour per call; the benchmark's deadline bounds it.
KT_RPC_TIMEOUT_S = RPC_TIMEOUT_S


@functools.cache
def kt_protos() -> tuple[Any, Any, Any]:
    """Keras Tuner's ``keras_tuner_pb2``, ``service_pb2`` and ``service_pb2_grpc``,
    loaded without running ``keras_tuner/__init__`` (which imports TensorFlow).

    Placeholder package modules with the right ``__path__`` stand in for
    ``keras_tuner``, ``keras_tuner.src`` and ``keras_tuner.src.protos``; only
    client processes call this (they never import the real package). The
    version choice mirrors ``keras_tuner.src.protos``: v4, else v3.
    """
    spec = importlib.util.find_spec("keras_tuner")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("keras_tuner is not installed")
    root = Path(next(iter(spec.submodule_search_locations)))
    for name, path in (
        ("keras_tuner", root),
        ("keras_tuner.src", root / "src"),
        ("keras_tuner.src.protos", root / "src" / "protos"),
    ):
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(path)]
            sys.modules[name] = module
    try:
        version = "v4"
        importlib.import_module("keras_tuner.src.protos.v4")
    except ImportError:
        version = "v3"
    package = f"keras_tuner.src.protos.{version}"
    return (
        importlib.import_module(f"{package}.keras_tuner_pb2"),
        importlib.import_module(f"{package}.service_pb2"),
        importlib.import_module(f"{package}.service_pb2_grpc"),
    )


class KtWorker:
    """A simulated Keras Tuner worker (see the module docstring)."""

    def __init__(self, address: str, worker_id: str, load: Workload, rec: Recorder) -> None:
        self.address = address
        self.worker_id = worker_id
        self.load = load
        self.rec = rec
        self.rng = random.Random(worker_id)
        self.kt_pb, self.service, self.service_grpc = kt_protos()
        self.channel: grpc.aio.Channel | None = None
        self.stub: Any = None

    async def connect(self) -> None:
        from bench.scale_clients import CHANNEL_OPTIONS

        self.channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        await asyncio.wait_for(self.channel.channel_ready(), CONNECT_TIMEOUT_S)
        self.stub = self.service_grpc.OracleStub(self.channel)
        await self.stub.GetSpace(self.service.GetSpaceRequest(), timeout=CONNECT_TIMEOUT_S)

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def run(self) -> None:
        statuses = self.kt_pb.TrialStatus
        request = self.service.CreateTrialRequest(tuner_id=self.worker_id)
        while True:
            started = time.perf_counter()
            try:
                response = await self.stub.CreateTrial(request, timeout=KT_RPC_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                self.rec.error("CreateTrial", exc)
                await asyncio.sleep(0.5)
                continue
            status = response.trial.status
            if status == statuses.STOPPED:
                self.rec.answers["STOP"] += 1
                return
            if status == statuses.IDLE:
                self.rec.answers["IDLE"] += 1
                continue  # BaseTuner.search: "Oracle is calculating, resend request."
            self.rec.answers["TRIAL"] += 1
            self.rec.create_s.append(time.perf_counter() - started)
            self.rec.trial_started_at.append(time.time())
            await self._run_trial(response.trial)

    async def _run_trial(self, trial: Any) -> None:
        for epoch in range(self.load.epochs):
            await asyncio.sleep(self.load.epoch_s)
            metrics = {"val_accuracy": self.rng.random(), "loss": self.rng.random()}
            request = self.service.UpdateTrialRequest(
                trial_id=trial.trial_id, metrics=metrics, step=epoch
            )
            try:
                await self.rec.timed(
                    self.rec.report_s, self.stub.UpdateTrial(request, timeout=KT_RPC_TIMEOUT_S)
                )
            except grpc.aio.AioRpcError as exc:
                self.rec.error("Report", exc)
                return
        trial.status = self.kt_pb.TrialStatus.COMPLETED
        self.rec.end_sent_at.append(time.time())
        try:
            await self.rec.timed(
                self.rec.end_s,
                self.stub.EndTrial(
                    self.service.EndTrialRequest(trial=trial), timeout=KT_RPC_TIMEOUT_S
                ),
            )
        except grpc.aio.AioRpcError as exc:
            self.rec.error("EndTrial", exc)
            return
        self.rec.completed += 1


# ------------------------------------------------------------------ driver


def run_kt_scale(
    *,
    workers: int,
    work_dir: Path | None = None,
    procs: int | None = None,
    load: Workload | None = None,
    timeout_s: float = 300.0,
) -> ScaleRun:
    """One run of Keras Tuner's chief at ``workers`` (same workload as
    :func:`bench.scale.run_scale`)."""
    load = load or Workload(heartbeat_s=0.0)
    base = Path(work_dir or tempfile.mkdtemp(prefix="bench-kt-scale-"))
    running = max(1, workers // 4)
    trials = 2 * running
    procs = procs or client_procs(workers)
    port = free_port()
    env = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    chief = spawn(
        "kt-scale-chief",
        ["-m", "bench.kt_scale", "chief", "--dir", str(base), "--trials", str(trials)]
        + ["--max-running", str(running), "--epoch-s", str(load.epoch_s)],
        base / "logs",
        {**env, "KERASTUNER_TUNER_ID": "chief"},
    )
    started: list[BenchProcess] = [chief]
    try:
        wait_port(port, timeout_s, chief)
        pid = chief.popen.pid
        with RssSampler(pid) as rss, watchdog(started, timeout_s * 2):
            clients = spawn_clients(
                "bench.kt_scale",
                f"127.0.0.1:{port}",
                workers,
                procs,
                load,
                base / "logs",
                deadline_s=timeout_s,
            )
            started += clients
            cpu_at_go, go_at, totals = start_and_collect(clients, pid, timeout_s)
            cpu_at_end = cpu_s(pid)
    finally:
        for proc in started:
            proc.kill()
    return ScaleRun(
        system=SYSTEM,
        workers=workers,
        running=running,
        trials=trials,
        client_procs=procs,
        completed=totals.completed,
        wall_s=totals.finished_at - go_at,
        report_ms=Distribution.of(totals.report_ms),
        heartbeat_ms=None,
        end_ms=Distribution.of(totals.end_ms),
        refill_ms=None,
        refill_client_ms=Distribution.of(
            gaps_after_first(totals.trial_started_at, totals.end_sent_at, running)
        ).scaled(1000.0),
        cpu_per_trial_ms=(cpu_at_end - cpu_at_go) / trials * 1000.0,
        peak_rss_mib=rss.peak_mib,
        first_rss_mib=rss.first_mib,
        expired_leases=None,
        answers=dict(totals.answers),
        errors=dict(totals.errors),
        error_samples=totals.error_samples,
        search_state="",
        chief_log_errors=count_log_errors(chief.log_path),
        timed_out_workers=totals.timed_out,
    )


# ------------------------------------------------------------ process side


def _serve_chief(directory: Path, trials: int, max_running: int, epoch_s: float) -> None:
    """Keras Tuner's chief, its oracle capped at ``max_running`` ongoing trials."""
    tuner = _make_tuner(directory / "chief", trials, epoch_s)
    cap_oracle(tuner.oracle, max_running)
    # Keras Tuner prints per trial; nobody reads this process's stdout pipe, so
    # a full pipe would block the chief. Its log file is stderr.
    with contextlib.redirect_stdout(sys.stderr):
        tuner.search()  # serves until every worker got STOPPED; the driver stops it earlier


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.kt_scale chief ...`` or ``... --address A --proc P --workers N``."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["chief"]:
        import argparse

        p = argparse.ArgumentParser(description=__doc__)
        p.add_argument("--dir", type=Path, required=True)
        p.add_argument("--trials", type=int, required=True)
        p.add_argument("--max-running", type=int, required=True)
        p.add_argument("--epoch-s", type=float, default=0.2)
        args = p.parse_args(args_in[1:])
        if os.environ.get("KERASTUNER_TUNER_ID") != "chief":
            raise SystemExit("bench.kt_scale chief: set KERASTUNER_TUNER_ID=chief")
        _serve_chief(args.dir, args.trials, args.max_running, args.epoch_s)
        return
    args = parser(__doc__).parse_args(args_in)
    load = Workload(args.epochs, args.epoch_s, args.heartbeat_s, args.wait_s)
    rec = Recorder()
    workers = [
        KtWorker(args.address, f"sim-p{args.proc}-w{i}", load, rec) for i in range(args.workers)
    ]
    run_process(workers, rec, args.deadline_s)


if __name__ == "__main__":
    main()
