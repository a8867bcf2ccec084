"""A ktcluster chief in its own process, for the benchmarks.

``python -m bench.chief_proc --dir DIR --search-json JSON [--synchronous NORMAL]``
creates a :class:`orchestrator.chief.chief.Chief` (for a ``sleep`` search the space
is declared with :func:`declare_sleep_space`, as the CLI does), starts it,
prints ``READY {address, token, pid}``, waits for the search to end, and
prints ``RESULT {finished_at, state, cpu_s}``. Keeping the chief in its own
process gives its CPU time to psutil untouched by the benchmark's clients,
and makes it a peer of Keras Tuner's chief process.

Bench-only options (the scale benchmark, :mod:`bench.scale`):

- ``--max-running N``: the chief's oracle answers IDLE while N trials are
  ongoing (:func:`cap_running_trials`). It stands in for an oracle that has
  fewer trials than workers (a Bayesian fit in progress, Hyperband's last
  brackets), so idle workers park while trials run and refill is measurable.
- ``--max-long-polls N``: the chief's bound on parked CreateTrial calls in all
  (``ProtocolLimits.max_long_polls``), so a benchmark can park every idle worker.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    max_running: int | None = None,
    max_long_polls: int | None = None,
) -> BenchProcess:
    """Spawn the chief and wait until it serves; ``proc.ready`` holds address/token/pid.

    With ``hold`` the chief keeps serving after the search ends until a line
    arrives on its stdin (``proc.go()``), so workers that call it after STOP
    still find it. ``max_running`` and ``max_long_polls``: see the module
    docstring (None keeps the chief's own behaviour).
    """
    argv = ["-m", "bench.chief_proc", "--dir", str(search_dir), "--search-json", json.dumps(search)]
    argv += ["--synchronous", synchronous, "--long-poll-s", str(long_poll_s)]
    if hold:
        argv.append("--hold")
    if max_running is not None:
        argv += ["--max-running", str(max_running)]
    if max_long_polls is not None:
        argv += ["--max-long-polls", str(max_long_polls)]
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


def cap_oracle(oracle: Any, max_running: int) -> Any:
    """``oracle`` (a keras_tuner Oracle), answering IDLE while ``max_running`` trials run."""
    populate = oracle.populate_space

    def capped(trial_id: str) -> dict[str, Any]:
        if len(oracle.ongoing_trials) >= max_running:
            return {"status": "IDLE"}
        return dict(populate(trial_id))

    oracle.populate_space = capped
    return oracle


def cap_running_trials(max_running: int) -> None:
    """Make every oracle this process builds answer IDLE while ``max_running`` trials run.

    Wraps :func:`orchestrator.chief.oracles.build_oracle` (and every chief
    module's imported copy of it): the oracle's ``populate_space`` returns
    ``{"status": "IDLE"}`` while ``len(oracle.ongoing_trials) >= max_running``,
    which Keras Tuner's ``Oracle.create_trial`` turns into an IDLE trial. The
    chief files each running trial in ``ongoing_trials`` and feeds ends to the
    oracle before its next ``create_trial`` (``OracleGate``), so the count is
    current whenever the oracle is asked. Call it in the chief process only,
    after importing the chief and before ``Chief.create``.
    """
    from orchestrator.chief import oracles

    original = oracles.build_oracle

    def build_capped(*args: Any, **kwargs: Any) -> Any:
        return cap_oracle(original(*args, **kwargs), max_running)

    for name, module in list(sys.modules.items()):
        if name.startswith("orchestrator.") and getattr(module, "build_oracle", None) is original:
            module.__dict__["build_oracle"] = build_capped


def main(argv: list[str] | None = None) -> None:
    """Process entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--search-json", required=True)
    parser.add_argument("--synchronous", default="NORMAL", choices=["NORMAL", "FULL"])
    parser.add_argument("--long-poll-s", type=float, default=5.0)
    parser.add_argument("--hold", action="store_true")
    parser.add_argument("--max-running", type=int, default=None)
    parser.add_argument("--max-long-polls", type=int, default=None)
    args = parser.parse_args(argv)

    import keras_tuner
    import psutil

    from orchestrator.chief.chief import Chief
    from orchestrator.config import parse_search
    from workers.hypermodels.sleep import declare_sleep_space

    if args.max_running is not None:
        cap_running_trials(args.max_running)
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
    if args.max_long_polls is not None:
        chief.limits = dataclasses.replace(chief.limits, max_long_polls=args.max_long_polls)
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
