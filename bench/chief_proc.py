"""A ktcluster chief in its own process, for the benchmarks.

``python -m bench.chief_proc --dir DIR --search-json JSON [--synchronous NORMAL]``
creates a :class:`orchestrator.chief.chief.Chief` (for a ``sleep`` search the space
is declared with :func:`declare_sleep_space`, as the CLI does), starts it,
prints ``READY {address, token, pid}``, waits for the search to end, and
prints ``RESULT {finished_at, state, cpu_s}``. Keeping the chief in its own
process gives its CPU time to psutil untouched by the benchmark's clients,
and makes it a peer of Keras Tuner's chief process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.procs import BenchProcess, emit, spawn


def start_chief_process(
    search: dict[str, Any],
    search_dir: Path,
    *,
    name: str = "ktc-chief",
    synchronous: str = "NORMAL",
    long_poll_s: float = 5.0,
    timeout_s: float = 120.0,
    hold: bool = False,
) -> BenchProcess:
    """Spawn the chief and wait until it serves; ``proc.ready`` holds address/token/pid.

    With ``hold`` the chief keeps serving after the search ends until a line
    arrives on its stdin (``proc.go()``), so workers that call it after STOP
    still find it.
    """
    argv = ["-m", "bench.chief_proc", "--dir", str(search_dir), "--search-json", json.dumps(search)]
    argv += ["--synchronous", synchronous, "--long-poll-s", str(long_poll_s)]
    if hold:
        argv.append("--hold")
    proc = spawn(name, argv, search_dir.parent / "logs")
    proc.wait_ready(timeout_s)
    return proc


def sleep_search(name: str, trials: int, trial_s: float, oracle: str = "random") -> dict[str, Any]:
    """The search mapping the benchmarks use (sleep hypermodel, val_accuracy)."""
    oracle_spec: dict[str, Any] = {"type": oracle, "max_trials": trials, "seed": 1}
    return {
        "name": name,
        "hypermodel": {"name": "sleep", "options": {"epoch_s": trial_s}},
        "oracle": oracle_spec,
        "objective": "val_accuracy",
        # Benchmarks never lose a worker on purpose; keep leases long so a
        # stalled 2-core machine does not requeue trials mid-measurement.
        "failure": {"lease_timeout_s": 600.0},
    }


def main(argv: list[str] | None = None) -> None:
    """Process entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--search-json", required=True)
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--long-poll-s", type=float, default=5.0)
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args(argv)

    import keras_tuner
    import psutil

    from orchestrator.chief.chief import Chief
    from orchestrator.config import parse_search
    from workers.hypermodels.sleep import declare_sleep_space

    search = parse_search(json.loads(args.search_json), check_paths=False)
    # As `ktc submit` does: the chief declares the sleep space itself; real
    # hypermodels declare theirs from the first worker's build.
    hp = None
    if search.hypermodel.name == "sleep":
        hp = keras_tuner.HyperParameters()
        declare_sleep_space(hp, search.hypermodel.options)
    chief = Chief.create(
        search,
        args.dir,
        initial_space=hp,
        long_poll_s=args.long_poll_s,
        ledger_synchronous=args.synchronous,
    )
    endpoint = chief.start()
    me = psutil.Process()
    cpu = me.cpu_times()
    emit(
        "READY",
        {
            "address": endpoint.address,
            "token": endpoint.token,
            "pid": me.pid,
            "cpu_s": cpu.user + cpu.system,
        },
    )
    state = chief.wait()
    finished = time.time()
    cpu = me.cpu_times()
    emit(
        "RESULT",
        {
            "finished_at": finished,
            "state": state.value if state else None,
            "cpu_s": cpu.user + cpu.system,
        },
    )
    if args.hold:
        sys.stdin.readline()
    chief.close()


if __name__ == "__main__":
    main()
