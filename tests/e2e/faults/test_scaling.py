"""Scaling a live search, each step checked in ``ktc status --json``:

- 2 -> 4 -> 1 workers with drain: new workers start at once; the drained ones
  finish their trials (nothing requeued) and stop;
- ``--now``: the removed worker's trial is requeued at once, not as a failure,
  and completes later;
- ``--apply`` with a node added: on embedded Ray the new node's label does not
  exist, so its worker shows as pending with the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.chief.events import EventKind
from tests.e2e.faults.conftest import (
    STARTUP_S,
    KtcRunner,
    assert_no_duplicate_or_lost,
    cluster_yaml,
    ktc_status,
    ledger_events,
    run_ktc,
    search_yaml,
    wait_status,
    write_yaml,
)
from tests.helpers import wait_until

pytestmark = pytest.mark.slow

LIVE = ("running", "idle")


def _live(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [w for w in doc["workers"] if w["state"] in LIVE and w["pid"]]


def _scale(directory: Path, *args: str) -> str:
    done = run_ktc("scale", str(directory), *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _cancel_and_check(directory: Path, run: Any) -> list[Any]:
    done = run_ktc("cancel", str(directory), "--drain")
    assert done.returncode == 0, done.stderr
    assert run.wait(90.0) == 0, run.output()[-3000:]
    return assert_no_duplicate_or_lost(directory, finished=False)


def test_scale_up_then_drain_down(ktc: KtcRunner) -> None:
    # A long lease: on 2 loaded cores an 8-s lease can expire while `ktc scale`
    # starts actors, and an expiry requeue is not what this test is about.
    # Recycled after every trial: each busy worker has a warm spare, which a
    # drain must stop with it.
    run = ktc.submit(
        search_yaml(max_trials=60, epochs=6, lease_timeout_s=60.0),
        cluster_yaml(recycle_after_trials=1),
    )
    directory = run.search_dir
    wait_status(directory, lambda d: len(_live(d)) == 2, STARTUP_S, "2 live workers", run)

    out = _scale(directory, "--workers", "4")
    assert "4" in out
    wait_status(
        directory,
        lambda d: len(_live(d)) == 4 and sum(1 for w in d["workers"] if w["trial_id"]) >= 3,
        90.0,
        "4 live workers, 3+ busy",
        run,
    )
    doc = ktc_status(directory)
    assert doc["state"] == "running"
    assert len(_live(doc)) == 4, doc["workers"]
    assert {w["worker_id"] for w in doc["workers"]} == {f"local-w{i}" for i in range(4)}

    before = {w["worker_id"]: w["trial_id"] for w in ktc_status(directory)["workers"]}
    out = _scale(directory, "--workers", "1")
    assert "draining" in out, out
    # The drained workers, as `ktc scale` named them (an idle one stops within
    # milliseconds, so a later `ktc status` may no longer list it).
    drained = set(out.split("draining ", 1)[1].splitlines()[0].strip().split(", "))
    assert len(drained) == 3 and drained <= set(before), (out, before)
    keep = wait_status(directory, lambda d: len(d["workers"]) == 1, 90.0, "one worker left", run)
    doc = ktc_status(directory)
    assert len(doc["workers"]) == 1 and doc["workers"][0]["state"] in LIVE, doc["workers"]
    assert keep["workers"][0]["worker_id"] not in drained
    draining = {w: before[w] for w in drained}

    events = _cancel_and_check(directory, run)
    # The drained workers finished their trials: completed by them, nothing requeued.
    assert not [e for e in events if e.kind is EventKind.REQUEUED]
    for worker_id, trial_id in draining.items():
        if trial_id:
            done = [e for e in events if e.kind is EventKind.COMPLETED and e.trial_id == trial_id]
            assert done and done[0].worker_id == worker_id
    # A drained slot's spare is stopped, never promoted: no process of a drained
    # worker took over after its retirement.
    log = _chief_log(directory)
    for worker_id in drained:
        after = log.split(f"retiring {worker_id} (drain)", 1)[1]
        assert f"spare for {worker_id} takes over" not in after, after[-3000:]


def _chief_log(directory: Path) -> str:
    return (directory / "chief.log").read_text()


def test_scale_down_now_preempts(ktc: KtcRunner) -> None:
    run = ktc.submit(search_yaml(max_trials=6, epochs=6), cluster_yaml(recycle_after_trials=1))
    directory = run.search_dir
    wait_status(
        directory,
        lambda d: sum(1 for w in d["workers"] if w["trial_id"] and (w["epoch"] or 0) >= 1) == 2,
        STARTUP_S,
        "2 workers mid-trial",
        run,
    )
    out = _scale(directory, "--workers", "1", "--now")
    assert "preempting" in out, out

    def preempted() -> list[Any]:
        return [
            e
            for e in ledger_events(directory)
            if e.kind is EventKind.REQUEUED and "preempted" in e.payload.get("reason", "")
        ]

    wait_until(preempted, 5.0, interval_s=0.1, what="the preempted trial requeued")
    doc = wait_status(directory, lambda d: len(d["workers"]) == 1, 30.0, "one worker", run)
    requeue = preempted()[0]
    assert requeue.worker_id != doc["workers"][0]["worker_id"]
    assert requeue.payload["failures"] == 0  # not counted as a failure
    # The preempted slot's spare (warming since its trial began) went with it.
    wait_until(
        lambda: f"spare for {requeue.worker_id} stopped" in _chief_log(directory),
        10.0,
        interval_s=0.2,
        what=f"the spare of {requeue.worker_id} stopped",
    )

    assert run.wait(120.0) == 0, run.output()[-3000:]
    events = assert_no_duplicate_or_lost(directory, expected_trials=6)
    done = next(
        e for e in events if e.kind is EventKind.COMPLETED and e.trial_id == requeue.trial_id
    )
    assert done.attempt == requeue.attempt + 1
    final = ktc_status(directory)
    entry = next(t for t in final["trials"] if t["trial_id"] == requeue.trial_id)
    assert entry["status"] == "COMPLETED"


def test_apply_adds_node_pending_on_embedded_ray(ktc: KtcRunner, tmp_path: Path) -> None:
    one = cluster_yaml([{"name": "a", "cpus": 4, "cpu_workers": 1}])
    run = ktc.submit(search_yaml(max_trials=40, epochs=6), one)
    directory = run.search_dir
    wait_status(directory, lambda d: len(_live(d)) == 1, STARTUP_S, "1 live worker", run)

    two = cluster_yaml(
        [{"name": "a", "cpus": 4, "cpu_workers": 1}, {"name": "b", "cpus": 2, "cpu_workers": 1}]
    )
    edited = write_yaml(tmp_path / "cluster-two.yaml", two)
    out = _scale(directory, "--apply", str(edited))
    assert "+1 (b-w0)" in out, out
    wait_status(
        directory,
        lambda d: any(w["worker_id"] == "b-w0" and w["state"] == "pending" for w in d["workers"]),
        60.0,
        "b-w0 pending",
        run,
    )
    doc = ktc_status(directory)
    pending = next(w for w in doc["workers"] if w["worker_id"] == "b-w0")
    assert pending["state"] == "pending"
    assert "ktc_node_b" in pending["pending_reason"], pending
    assert any(w["node"] == "a" and w["state"] in LIVE for w in doc["workers"])
    _cancel_and_check(directory, run)
