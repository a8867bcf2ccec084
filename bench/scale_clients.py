"""A client process of the scale benchmark: many simulated workers on grpc.aio.

``python -m bench.scale_clients --address HOST:PORT --proc P --workers N``
(the token in ``KTC_BENCH_TOKEN``, kept off the command line) runs N simulated
ktcluster workers (ids ``sim-p{P}-w{i}``) as asyncio tasks in one process,
each with **its own channel and TCP connection** (``grpc.use_local_subchannel_pool``),
as real workers have: the chief bounds parked calls per connection, so workers
sharing one would be refused.

Each simulated worker sends what a real one sends
(:class:`orchestrator.protocol.client.TrialClient` and ``LeaseKeeper``):

- ``CreateTrial(worker_id, wait_s=5.0)``, again at once after WAIT, until STOP;
- per trial, ``--epochs`` Reports (epoch 0.., metrics ``val_accuracy`` and
  ``loss``), one every ``--epoch-s`` seconds (the sleep comes first, as an
  epoch's training does), and a heartbeat (Report with epoch -1) every
  ``--heartbeat-s`` seconds while the trial runs;
- then, heartbeats stopped, ``EndTrial(COMPLETED, metrics, best_step,
  trial_state_json, worker_id)`` with the best epoch's metrics and the
  ``trial_state_json`` the chief handed out, unchanged.

The process connects every channel first (``channel_ready`` and one
``GetSearchState`` each), prints ``READY``, waits for ``go`` on stdin
(:mod:`bench.procs`), runs, and prints ``RESULT`` with every call's latency
(client side, ms), the CreateTrial answers, errors, and the wall-clock times
the driver needs for the client-side refill. :func:`run_process` is the
harness; :mod:`bench.kt_scale` runs Keras Tuner's workers in it too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from bench.procs import emit, wait_for_go

T = TypeVar("T")
TOKEN_ENV = "KTC_BENCH_TOKEN"
CONNECT_TIMEOUT_S = 60.0
RPC_TIMEOUT_S = 30.0
ERROR_SAMPLES = 5
# One TCP connection per simulated worker, as real workers have (see the docstring).
CHANNEL_OPTIONS: list[tuple[str, Any]] = [("grpc.use_local_subchannel_pool", 1)]


def raise_nofile_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft, hard


@dataclass(frozen=True)
class Workload:
    """What one simulated worker does per trial."""

    epochs: int = 10
    epoch_s: float = 0.2
    heartbeat_s: float = 1.0  # 0: no heartbeats (a protocol without them)
    wait_s: float = 5.0  # the CreateTrial long-poll a worker asks for


@dataclass
class Recorder:
    """Everything the workers of one process measured (latencies in seconds)."""

    report_s: list[float] = field(default_factory=list)
    heartbeat_s: list[float] = field(default_factory=list)
    end_s: list[float] = field(default_factory=list)
    create_s: list[float] = field(default_factory=list)  # the calls that answered TRIAL
    answers: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    trial_started_at: list[float] = field(default_factory=list)  # TRIAL answer received
    end_sent_at: list[float] = field(default_factory=list)  # EndTrial sent
    completed: int = 0

    async def timed(self, sink: list[float], call: Awaitable[T]) -> T:
        """Await ``call``; append its duration to ``sink``."""
        started = time.perf_counter()
        result = await call
        sink.append(time.perf_counter() - started)
        return result

    def error(self, rpc: str, exc: BaseException) -> None:
        """Count a failed call by RPC and status code; keep the first few messages."""
        code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
        self.errors[f"{rpc}: {code}"] += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            detail = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            self.error_samples.append(f"{rpc}: {code}: {detail}")

    def to_json(self) -> dict[str, Any]:
        """The RESULT payload (latencies in ms)."""

        def ms(values: Sequence[float]) -> list[float]:
            return [round(v * 1000.0, 3) for v in values]

        return {
            "report_ms": ms(self.report_s),
            "heartbeat_ms": ms(self.heartbeat_s),
            "end_ms": ms(self.end_s),
            "create_trial_ms": ms(self.create_s),
            "answers": dict(self.answers),
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "trial_started_at": self.trial_started_at,
            "end_sent_at": self.end_sent_at,
            "completed": self.completed,
        }


class SimWorker(Protocol):
    """One simulated worker: connect before the barrier, run after it."""

    async def connect(self) -> None: ...

    async def run(self) -> None: ...

    async def close(self) -> None: ...


async def heartbeat_loop(
    beat: Callable[[], Awaitable[bool]], interval_s: float, stop: asyncio.Event
) -> None:
    """Call ``beat`` every ``interval_s`` until ``stop`` is set or it returns False."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
            return
        except TimeoutError:
            pass
        if not await beat():
            return


class KtcWorker:
    """A simulated ktcluster worker (see the module docstring)."""

    def __init__(
        self, address: str, token: str, worker_id: str, load: Workload, rec: Recorder
    ) -> None:
        from orchestrator.protocol.auth import bearer

        self.address = address
        self.metadata = bearer(token)
        self.worker_id = worker_id
        self.load = load
        self.rec = rec
        self.rng = random.Random(worker_id)
        self.channel: grpc.aio.Channel | None = None
        self.stub: Any = None

    async def connect(self) -> None:
        from orchestrator.protocol.protos import ktcluster_pb2 as pb
        from orchestrator.protocol.protos import ktcluster_pb2_grpc as pb_grpc

        self.channel = grpc.aio.insecure_channel(self.address, options=CHANNEL_OPTIONS)
        await asyncio.wait_for(self.channel.channel_ready(), CONNECT_TIMEOUT_S)
        self.stub = pb_grpc.TrialServiceStub(self.channel)
        await self.stub.GetSearchState(
            pb.GetSearchStateRequest(), metadata=self.metadata, timeout=CONNECT_TIMEOUT_S
        )

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    async def run(self) -> None:
        from orchestrator.protocol.protos import ktcluster_pb2 as pb

        kinds = pb.CreateTrialResponse.Kind
        request = pb.CreateTrialRequest(worker_id=self.worker_id, wait_s=self.load.wait_s)
        while True:
            started = time.perf_counter()
            try:
                response = await self.stub.CreateTrial(
                    request, metadata=self.metadata, timeout=self.load.wait_s + RPC_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as exc:
                self.rec.error("CreateTrial", exc)
                await asyncio.sleep(0.5)  # a refused park (limits) or a stalled chief
                continue
            kind = kinds.Name(response.kind)
            self.rec.answers[kind] += 1
            if response.kind == pb.CreateTrialResponse.STOP:
                return
            if response.kind != pb.CreateTrialResponse.TRIAL:
                continue
            self.rec.create_s.append(time.perf_counter() - started)
            self.rec.trial_started_at.append(time.time())
            await self._run_trial(response.trial)

    async def _run_trial(self, trial: Any) -> None:
        stop = asyncio.Event()
        beats = asyncio.create_task(
            heartbeat_loop(lambda: self._report(trial, -1, {}), self.load.heartbeat_s, stop)
        )
        best: tuple[int, dict[str, float]] = (0, {})
        try:
            for epoch in range(self.load.epochs):
                await asyncio.sleep(self.load.epoch_s)
                metrics = {"val_accuracy": self.rng.random(), "loss": self.rng.random()}
                if not best[1] or metrics["val_accuracy"] > best[1]["val_accuracy"]:
                    best = (epoch, metrics)
                if not await self._report(trial, epoch, metrics):
                    return
        finally:
            # As the worker's LeaseKeeper: heartbeats stop (an in-flight one
            # answered) before EndTrial is sent.
            stop.set()
            await beats
        await self._end(trial, *best)

    async def _report(self, trial: Any, epoch: int, metrics: dict[str, float]) -> bool:
        from orchestrator.protocol.protos import ktcluster_pb2 as pb

        request = pb.ReportRequest(
            trial_id=trial.trial_id,
            lease_token=trial.lease_token,
            epoch=epoch,
            metrics=metrics,
            worker_id=self.worker_id,
        )
        sink = self.rec.heartbeat_s if epoch < 0 else self.rec.report_s
        try:
            await self.rec.timed(
                sink, self.stub.Report(request, metadata=self.metadata, timeout=RPC_TIMEOUT_S)
            )
        except grpc.aio.AioRpcError as exc:
            self.rec.error("Heartbeat" if epoch < 0 else "Report", exc)
            return False
        return True

    async def _end(self, trial: Any, best_step: int, metrics: dict[str, float]) -> None:
        from orchestrator.protocol.protos import ktcluster_pb2 as pb

        request = pb.EndTrialRequest(
            trial_id=trial.trial_id,
            lease_token=trial.lease_token,
            status=pb.COMPLETED,
            metrics=metrics,
            best_step=best_step,
            trial_state_json=trial.trial_state_json,
            worker_id=self.worker_id,
        )
        self.rec.end_sent_at.append(time.time())
        try:
            await self.rec.timed(
                self.rec.end_s,
                self.stub.EndTrial(request, metadata=self.metadata, timeout=RPC_TIMEOUT_S),
            )
        except grpc.aio.AioRpcError as exc:
            self.rec.error("EndTrial", exc)
            return
        self.rec.completed += 1


async def _serve(workers: Sequence[SimWorker], rec: Recorder, deadline_s: float) -> None:
    soft, _ = raise_nofile_limit()
    connect_started = time.time()
    await asyncio.gather(*(w.connect() for w in workers))
    emit(
        "READY",
        {"workers": len(workers), "nofile": soft, "connect_s": time.time() - connect_started},
    )
    await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
    go_at = time.time()
    tasks = [asyncio.create_task(w.run()) for w in workers]
    done, pending = await asyncio.wait(tasks, timeout=deadline_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            rec.error("worker", task.exception() or RuntimeError("?"))
    finished_at = time.time()
    await asyncio.gather(*(w.close() for w in workers), return_exceptions=True)
    emit(
        "RESULT",
        {
            **rec.to_json(),
            "go_at": go_at,
            "finished_at": finished_at,
            "timed_out": len(pending),  # workers still running at the deadline
        },
    )


def run_process(workers: Sequence[SimWorker], rec: Recorder, deadline_s: float) -> None:
    """The client process: connect all, READY, wait for go, run all, RESULT.

    Workers still running ``deadline_s`` after go are cancelled and counted in
    ``timed_out``, so a stalled chief gives a RESULT rather than a hang.
    """
    asyncio.run(_serve(workers, rec, deadline_s))


def client_argv(module: str, address: str, proc: int, workers: int, load: Workload) -> list[str]:
    """The argv (after ``python``) of one client process of ``module``."""
    return [
        "-m",
        module,
        "--address",
        address,
        "--proc",
        str(proc),
        "--workers",
        str(workers),
        "--epochs",
        str(load.epochs),
        "--epoch-s",
        str(load.epoch_s),
        "--heartbeat-s",
        str(load.heartbeat_s),
        "--wait-s",
        str(load.wait_s),
    ]


def parser(description: str | None) -> argparse.ArgumentParser:
    """The arguments every scale client process takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--address", required=True)
    p.add_argument("--proc", type=int, required=True)
    p.add_argument("--workers", type=int, required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--epoch-s", type=float, default=0.2)
    p.add_argument("--heartbeat-s", type=float, default=1.0)
    p.add_argument("--wait-s", type=float, default=5.0)
    p.add_argument("--deadline-s", type=float, default=300.0)
    return p


def main(argv: list[str] | None = None) -> None:
    """Process entry point (ktcluster's protocol)."""
    args = parser(__doc__).parse_args(argv)
    token = os.environ[TOKEN_ENV]
    load = Workload(args.epochs, args.epoch_s, args.heartbeat_s, args.wait_s)
    rec = Recorder()
    workers = [
        KtcWorker(args.address, token, f"sim-p{args.proc}-w{i}", load, rec)
        for i in range(args.workers)
    ]
    run_process(workers, rec, args.deadline_s)


if __name__ == "__main__":
    main()
