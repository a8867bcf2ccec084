"""How long ``ktc report`` takes for a large search (issue 14: 1,000 trials in < 10 s).

    .venv/bin/python -m bench.report_speed [--trials 1000] [--epochs 20] [--keep DIR]

Builds a synthetic search with the chief's own classes (``Chief.create`` and its
``TrialBroker``, a random oracle over four hyperparameters, a fake clock), every
trial reporting ``loss``/``accuracy``/``val_loss``/``val_accuracy`` each epoch,
some stopped early and some failed; then times the report (reading the ledger,
every picture, index.html) and, separately, the TensorBoard summaries, each in a
fresh process as the refresher runs them. Prints one line per figure.

:func:`build_synthetic_search` is also what the report's tests build their
ledgers with (smaller).
"""

from __future__ import annotations

import argparse
import math
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEARCH_NAME = "synthetic"


def synthetic_space() -> Any:
    """Four hyperparameters, one of each kind the report draws differently."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    hp.Float("learning_rate", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 16, 256, step=16)
    hp.Choice("activation", ["relu", "tanh", "gelu"])
    hp.Boolean("batch_norm")
    return hp


def build_synthetic_search(
    search_dir: Path,
    *,
    trials: int,
    epochs: int,
    seed: int = 0,
    fail_every: int = 11,
    running: int = 0,
) -> Path:
    """A search directory whose ledger holds ``trials`` ended trials (every
    ``fail_every``-th failed, the rest completed, about one in four stopped
    early) and ``running`` more trials still running with a few epochs.

    Everything goes through the chief's broker, so the ledger is what a real
    chief writes: created/assigned/progress/completed/failed events, the space
    and the search state. Time comes from a fake clock, so wall times are
    reproducible.
    """
    from orchestrator.chief.chief import Chief
    from orchestrator.clock import FakeClock
    from orchestrator.config import parse_search
    from orchestrator.protocol.answers import AssignmentKind
    from orchestrator.protocol.trials import AttemptStatus

    search = parse_search(
        {
            "name": SEARCH_NAME,
            "hypermodel": "mlp",
            "objective": "val_accuracy",
            "oracle": {"type": "random", "max_trials": trials + running, "seed": seed},
            "training": {"epochs": epochs},
            "failure": {"retries_per_trial": 0, "max_consecutive_failed_trials": 1000},
        }
    )
    clock = FakeClock()
    rng = random.Random(seed)
    chief = Chief.create(search, search_dir, clock=clock, initial_space=synthetic_space())
    broker = chief.broker
    try:
        for n in range(trials + running):
            a = broker.create_trial(f"bench-w{n}", wait_s=0)  # one worker per running trial
            if a.kind is not AssignmentKind.TRIAL or a.trial_id is None or a.values is None:
                raise RuntimeError(f"the oracle gave no trial at {n}: {a.kind} {a.reason}")
            values = a.values
            quality = _quality(values)
            still_running = n >= trials
            failed = not still_running and fail_every > 0 and n % fail_every == fail_every - 1
            stop_at = epochs
            if still_running:
                stop_at = 1 + n % 3
            elif failed:
                stop_at = rng.randint(0, 2)
            elif rng.random() < 0.25:
                stop_at = rng.randint(3, max(3, epochs - 1))
            best_epoch, best_val = 0, -math.inf
            for epoch in range(stop_at):
                clock.advance(1.0 + rng.random())
                metrics = _epoch_metrics(quality, epoch, rng)
                broker.report(a.trial_id, a.token, epoch=epoch, metrics=metrics)
                if metrics["val_accuracy"] > best_val:
                    best_epoch, best_val = epoch, metrics["val_accuracy"]
            if still_running:
                continue
            clock.advance(0.2)
            if failed:
                broker.end_trial(
                    a.trial_id,
                    a.token,
                    status=AttemptStatus.FAILED,
                    metrics={},
                    # Distinct beyond digits: the chief fails a search on the same
                    # error (numbers and hex ids aside) on 3 hyperparameter sets.
                    error_message=(
                        f"ValueError: synthetic failure in trial {a.trial_id} "
                        f"(case {''.join(chr(ord('g') + int(d)) for d in str(n))})"
                    ),
                )
            else:
                broker.end_trial(
                    a.trial_id,
                    a.token,
                    status=AttemptStatus.COMPLETED,
                    metrics={"val_accuracy": best_val},
                    best_step=best_epoch,
                )
    finally:
        chief.close()
    return Path(search_dir)


def _quality(values: dict[str, Any]) -> float:
    """How good a configuration is, in 0..1 (a smooth function of the values)."""
    lr = float(values.get("learning_rate", 1e-3))
    units = float(values.get("units", 64))
    q = 1.0 - abs(math.log10(lr) + 2.5) / 2.5
    q += 0.15 * min(units, 128.0) / 128.0
    q += {"relu": 0.05, "gelu": 0.08}.get(str(values.get("activation")), 0.0)
    return max(0.0, min(1.0, q))


def _epoch_metrics(quality: float, epoch: int, rng: random.Random) -> dict[str, float]:
    progress = 1.0 - math.exp(-(epoch + 1) / 4.0)
    acc = 0.1 + 0.85 * quality * progress + rng.uniform(-0.01, 0.01)
    val_acc = acc - 0.03 * progress + rng.uniform(-0.02, 0.02)
    loss = 2.3 * (1.0 - 0.9 * quality * progress) + rng.uniform(0, 0.02)
    val_loss = loss + 0.1 * progress + rng.uniform(0, 0.05)
    return {
        "loss": round(loss, 5),
        "accuracy": round(min(acc, 1.0), 5),
        "val_loss": round(val_loss, 5),
        "val_accuracy": round(min(val_acc, 1.0), 5),
    }


def _timed_child(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.report", *argv], check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--keep", type=Path, default=None, help="build the search here and keep it")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ktc-report-bench-") as tmp:
        search_dir = args.keep or Path(tmp) / "search"
        start = time.perf_counter()
        build_synthetic_search(search_dir, trials=args.trials, epochs=args.epochs)
        print(
            f"built {args.trials} trials x up to {args.epochs} epochs in "
            f"{time.perf_counter() - start:.1f} s: {search_dir}"
        )
        from orchestrator.report.build import build_report

        start = time.perf_counter()
        build_report(search_dir)
        in_process = time.perf_counter() - start
        print(f"report (in process, imports warm): {in_process:.2f} s")
        report_s = _timed_child([str(search_dir), "--no-tensorboard"])
        print(f"report (fresh process, as `ktc report`): {report_s:.2f} s")
        tb_s = _timed_child([str(search_dir), "--only-tensorboard"])
        print(f"tensorboard summaries (fresh process, first write): {tb_s:.2f} s")
        again_s = _timed_child([str(search_dir)])
        print(f"report + tensorboard again (incremental): {again_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
