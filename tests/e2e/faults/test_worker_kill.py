"""A worker SIGKILLed mid-trial: its trial is requeued (Ray's actor-death
signal, well inside the lease), re-run as attempt 2 and completed; the fleet
starts a replacement process for the slot; the search completes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from orchestrator.chief.events import EventKind
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcRunner,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    ktc_status,
    ledger_events,
    running_worker,
    search_yaml,
    wait_status,
    workers_log,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow


def test_worker_sigkill_mid_trial_requeues_and_replaces(ktc: KtcRunner, tmp_path: Path) -> None:
    run = ktc.submit(search_yaml(max_trials=8, epochs=4, lease_timeout_s=30), cluster_yaml())
    doc = wait_status(
        run.search_dir,
        lambda d: running_worker(d, min_epoch=1),
        STARTUP_S,
        "a worker at epoch >= 1",
        run,
    )
    victim = running_worker(doc, min_epoch=1)
    assert victim is not None
    trial_id, worker_id, pid = victim["trial_id"], victim["worker_id"], int(victim["pid"])
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    def requeued() -> bool:
        return any(
            e.kind is EventKind.REQUEUED and e.trial_id == trial_id
            for e in ledger_events(run.search_dir)
        )

    # Lease is 30 s: a requeue inside 10 s comes from Ray's actor-death signal.
    wait_until(requeued, 10.0, interval_s=0.2, what=f"trial {trial_id} requeued")
    assert time.monotonic() - killed_at < 10.0
    # The replacement process for the slot (incarnation 2) appears.
    wait_until(
        lambda: any(
            w["worker_id"] == worker_id and w["incarnation"] == 2
            for w in workers_log(run.search_dir)
        ),
        60.0,
        interval_s=0.3,
        what=f"a second incarnation of {worker_id}",
    )
    # Mid-search, the status document shows the slot alive again.
    live = ktc_status(run.search_dir)
    if live["state"] == "running":
        slot = next(w for w in live["workers"] if w["worker_id"] == worker_id)
        assert slot["incarnation"] >= 2 and slot["pid"] != pid

    assert run.wait(120.0) == 0, run.output()[-3000:]
    events = assert_no_duplicate_or_lost(run.search_dir, expected_trials=8)
    requeue = next(e for e in events if e.kind is EventKind.REQUEUED and e.trial_id == trial_id)
    assert requeue.attempt == 1 and requeue.worker_id == worker_id
    assert worker_id in requeue.payload["reason"] and "died" in requeue.payload["reason"]
    completed = next(e for e in events if e.kind is EventKind.COMPLETED and e.trial_id == trial_id)
    assert completed.attempt == 2
    assigned = [e for e in events if e.kind is EventKind.ASSIGNED and e.trial_id == trial_id]
    assert [e.attempt for e in assigned] == [1, 2]
    final = ktc_status(run.search_dir)
    assert final["state"] == "completed"
    entry = next(t for t in final["trials"] if t["trial_id"] == trial_id)
    assert entry["status"] == "COMPLETED" and entry["attempts"] == 2
