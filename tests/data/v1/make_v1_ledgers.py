"""Write the schema-1 ledgers that tests/unit/test_ledger_v1.py reads.

They were made by the code before typed events (commit 533603f), so the
tests check real old payloads, not our idea of them:

    git worktree add /tmp/v1 533603f
    cd /tmp/v1 && PYTHONPATH=/tmp/v1 python /path/to/this/file OUT_DIR

- ``OUT_DIR/good/``: a random search on a space with a conditional scope:
  completed trials (one with hyperparameters its build registered), a FAILED
  trial, a retried (INVALID) attempt, a lost worker, one trial in flight.
- ``OUT_DIR/damaged/``: the same start, then the EndTrial of symptom 2 of
  issue 11 (``"hyperparameters": "x"``): its COMPLETED event was committed
  before the old broker crashed on it.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import keras_tuner

from orchestrator.chief.chief import Chief
from orchestrator.config import parse_search
from orchestrator.protocol.trials import AttemptStatus


def _space() -> keras_tuner.HyperParameters:
    hp = keras_tuner.HyperParameters()
    hp.Choice("layers", [1, 2])
    with hp.conditional_scope("layers", [2]):
        hp.Int("units_1", 8, 64, step=8)
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    return hp


def _built(values: dict, extra: str) -> dict:
    hp = _space()
    hp.values.update({k: v for k, v in values.items() if k in hp.values})
    hp.Int(extra, 1, 4)
    return hp.get_config()


def main(out: Path) -> None:
    search = parse_search(
        {
            "name": "v1",
            "hypermodel": "mlp",
            "objective": {"name": "score", "direction": "max"},
            "oracle": {"type": "random", "max_trials": 8, "seed": 5},
            "failure": {"retries_per_trial": 1, "max_consecutive_failed_trials": 5},
        }
    )
    for name in ("good", "damaged"):
        directory = out / name
        shutil.rmtree(directory, ignore_errors=True)
        chief = Chief.create(search, directory, initial_space=_space(), long_poll_s=0)
        b = chief.broker
        a = b.create_trial("w0", wait_s=0)
        b.report(a.trial_id, a.token, epoch=0, metrics={"score": 0.3, "loss": 1.0})
        b.end_trial(
            a.trial_id,
            a.token,
            status=AttemptStatus.COMPLETED,
            metrics={"score": 0.4, "loss": 0.9},
            hyperparameters_config=_built(a.values, "built_in_trial"),
        )
        a = b.create_trial("w0", wait_s=0)
        b.end_trial(
            a.trial_id, a.token, status=AttemptStatus.FAILED, metrics={}, error_message="bad"
        )
        a = b.create_trial("w0", wait_s=0)
        b.end_trial(
            a.trial_id,
            a.token,
            status=AttemptStatus.INVALID,
            metrics={},
            error_message="ValueError: boom",
            traceback_tail="Traceback ...\nValueError: boom",
        )
        a = b.create_trial("w0", wait_s=0)  # the retry, attempt 2
        b.end_trial(a.trial_id, a.token, status=AttemptStatus.COMPLETED, metrics={"score": 0.7})
        a = b.create_trial("w1", wait_s=0)
        b.worker_lost("w1", "the node went away")
        a = b.create_trial("w0", wait_s=0)  # the lost one, attempt 2: in flight at the end
        if name == "damaged":
            c = b.create_trial("w2", wait_s=0)
            try:
                b.end_trial(
                    c.trial_id,
                    c.token,
                    status=AttemptStatus.COMPLETED,
                    metrics={"score": 0.9},
                    hyperparameters_config="x",  # type: ignore[arg-type]
                )
            except AttributeError as exc:
                print("the old broker crashed after committing, as in issue 11:", exc)
        chief.close(grace_s=0)
        for extra in ("token", "chief.json"):
            (directory / extra).unlink(missing_ok=True)
        print("wrote", directory)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
