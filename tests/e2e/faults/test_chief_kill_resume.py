"""The chief (``ktc submit``) SIGKILLed mid-search, then ``ktc resume DIR``.

The embedded Ray and every worker process die with their driver (no orphan
holds a slot); resume continues from the ledger: completed trials never run
again, in-flight ones re-run, the budget (max_trials, or Hyperband's brackets)
counts across the resume, and ``ktc results`` agrees with the ledger.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
from typing import Any

import psutil
import pytest

from orchestrator.chief.events import EventKind
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcRunner,
    alive,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    completed_counts,
    ledger_events,
    run_ktc,
    running_worker,
    search_yaml,
    wait_gone,
    wait_status,
    worker_pids,
)

pytestmark = pytest.mark.slow

HYPERBAND = {"type": "hyperband", "max_epochs": 4, "factor": 3, "seed": 7}


def hyperband_budget(max_epochs: int, factor: int, iterations: int = 1) -> int:
    """How many trials Keras Tuner's Hyperband creates (its own bracket formulas)."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end0 = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for bracket in range(brackets):
        end = end0 / (bracket + 1)
        total += sum(math.ceil(end * factor ** (bracket - r)) for r in range(bracket + 1))
    return total * iterations


def _describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            out.append(f"{pid}: {' '.join(psutil.Process(pid).cmdline())[:120]}")
        except psutil.NoSuchProcess:
            continue
    return out


@pytest.mark.parametrize("oracle", ["random", "hyperband"])
def test_chief_sigkill_then_resume(ktc: KtcRunner, oracle: str) -> None:
    if oracle == "random":
        search = search_yaml(max_trials=8, epochs=4)
        expected = 8
    else:
        search = search_yaml(oracle=HYPERBAND, epochs=4)
        expected = hyperband_budget(4, 3)
    run = ktc.submit(search, cluster_yaml())
    directory = run.search_dir

    def mid_search(doc: dict[str, Any]) -> bool:
        done = sum(1 for t in doc["trials"] if t["status"] == "COMPLETED")
        return done >= 2 and running_worker(doc, min_epoch=1) is not None

    wait_status(directory, mid_search, STARTUP_S, "2 completed trials and one in flight", run)
    chief = json.loads((directory / "chief.json").read_text())
    assert chief["pid"] == run.pid
    procs = psutil.Process(run.pid).children(recursive=True)
    family = [run.pid] + [c.pid for c in procs]
    workers = worker_pids(directory)
    assert workers, "no worker recorded in workers.jsonl"
    os.kill(run.pid, signal.SIGKILL)
    assert run.wait(10.0) == -signal.SIGKILL

    # No process the chief started survives it (bounded): workers, raylet and
    # GCS die with their driver, and the chief's reaper kills Ray's agents,
    # which would otherwise linger until a resume (and then itself exits).
    survivors = _describe(wait_gone(workers + family, 30.0))
    assert not survivors, "processes outlived the killed chief:\n" + "\n".join(survivors)

    before = ledger_events(directory)
    last_seq = before[-1].seq
    done_before = set(completed_counts(before))
    assert len(done_before) >= 2
    in_flight = (
        {e.trial_id for e in before if e.kind is EventKind.ASSIGNED}
        - done_before
        - {e.trial_id for e in before if e.kind is EventKind.FAILED}
    )
    assert in_flight, "expected a trial in flight at the kill"

    status = run_ktc("status", str(directory), "--json")
    assert json.loads(status.stdout)["state"] == "interrupted"

    resumed = ktc.resume(directory)
    assert resumed.wait(180.0) == 0, resumed.output()[-3000:]
    assert "resuming:" in resumed.output()

    events = assert_no_duplicate_or_lost(directory, expected_trials=expected)
    after = [e for e in events if e.seq > last_seq]
    again = {e.trial_id for e in after if e.kind is EventKind.ASSIGNED} & done_before
    assert not again, f"completed trials were assigned again after the resume: {again}"
    # Every trial in flight at the kill was re-run and completed after the resume.
    redone = {e.trial_id for e in after if e.kind is EventKind.COMPLETED}
    assert in_flight <= redone
    # The resume prints a line for each trial that ended after it, and none for
    # the ones the killed run printed already.
    printed = set(re.findall(r"^trial (\S+)  (?:COMPLETED|FAILED)", resumed.output(), re.M))
    ended_after = {e.trial_id for e in after if e.kind in (EventKind.COMPLETED, EventKind.FAILED)}
    assert printed == ended_after, resumed.output()[-3000:]
    if oracle == "random":
        assert len({e.trial_id for e in events if e.kind is EventKind.CREATED}) == expected

    results = run_ktc("results", str(directory), "--json")
    assert results.returncode == 0, results.stderr
    rows = json.loads(results.stdout)
    ledger_scores = {
        e.trial_id: e.payload["score"] for e in events if e.kind is EventKind.COMPLETED
    }
    result_scores = {r["trial_id"]: r["score"] for r in rows if r["status"] == "COMPLETED"}
    assert result_scores == ledger_scores
    assert len(rows) == len({e.trial_id for e in events if e.kind is EventKind.CREATED})
    # Nothing the killed chief started is left after the resume either.
    # (psutil's is_running also compares the create time: a reused pid is not ours.)
    leftovers = _describe([p.pid for p in procs if p.is_running() and alive(p.pid)])
    assert not leftovers, "processes of the killed chief outlived the resume:\n" + "\n".join(
        leftovers
    )
