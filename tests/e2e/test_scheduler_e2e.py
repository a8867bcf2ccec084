"""``ktc submit`` with ``scheduler: asha`` on sleep trials (known learning
curves, 2 workers): the trials ASHA stops end COMPLETED, marked stopped early,
with their best score so far, and the chief's decisions are the ones the
ledger's progress events give when folded through a fresh scheduler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.chief.events import TrialProgress
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.chief.schedulers import build_scheduler
from orchestrator.config import SearchSpec
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.e2e.conftest import (
    RunKtc,
    WriteYaml,
    assert_ok,
    local_cluster,
    results_json,
    sleep_search,
)
from workers.hypermodels.sleep import sleep_score

pytestmark = pytest.mark.slow

EPOCHS = 9


def test_asha_stops_sleep_trials_through_ktc_submit(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    search = sleep_search("asha", max_trials=10, epochs=EPOCHS, epoch_s=0.05)
    search["scheduler"] = {"type": "asha", "grace_epochs": 1, "reduction_factor": 3}
    cluster = local_cluster(
        "local2", [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}]
    )
    search_dir = tmp_path / "search"
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", search),
        "--cluster",
        write_yaml("cluster.yaml", cluster),
        "--dir",
        search_dir,
        timeout=120,
    )
    assert_ok(proc)

    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger, strict=True)
        progress = [e.event for e in ledger.events() if isinstance(e.event, TrialProgress)]
    assert replayed.state is SearchState.COMPLETED
    records = replayed.records
    assert len(records) == 10
    assert {r.status for r in records.values()} == {TrialStatus.COMPLETED}

    # The chief's decisions, recomputed from its own ledger.
    scheduler = build_scheduler(SearchSpec.model_validate(search))
    assert scheduler is not None
    stopped_at: dict[str, int] = {}
    for event in progress:
        if scheduler.apply(event).stop:
            stopped_at.setdefault(event.trial_id, event.epoch)
    assert stopped_at, "ASHA stopped no trial: the curves should make it stop some"
    for trial_id, rec in records.items():
        epochs = [e.epoch for e in progress if e.trial_id == trial_id]
        scores = [e.metrics["val_accuracy"] for e in progress if e.trial_id == trial_id]
        assert rec.stopped_early is (trial_id in stopped_at), trial_id
        if rec.stopped_early:
            # Stopped at a rung (after 1 or 3 epochs), never trained past it.
            assert stopped_at[trial_id] in (0, 2) and epochs[-1] == stopped_at[trial_id]
        else:
            assert epochs == list(range(EPOCHS))
        # Its score: the best epoch so far, as the sleep curve gives it.
        assert rec.score == max(scores)
        assert rec.score == pytest.approx(sleep_score(rec.values, epochs[-1]))

    # The user sees which trials the scheduler stopped: results and status say so.
    rows = results_json(run_ktc, search_dir)
    assert {r["trial_id"] for r in rows if r["stopped_early"]} == set(stopped_at)
    # ... and after how many epochs (the rung it was stopped at).
    assert {r["trial_id"]: r["epochs_trained"] for r in rows if r["stopped_early"]} == {
        trial_id: epoch + 1 for trial_id, epoch in stopped_at.items()
    }
    for trial_id, epoch in stopped_at.items():
        line = f"trial {trial_id}  COMPLETED"
        ended = next(x for x in proc.stdout.splitlines() if x.startswith(line))
        assert f"stopped at epoch {epoch + 1} by the trial scheduler" in ended, ended
    status = run_ktc("status", search_dir, "--json", timeout=120)
    assert_ok(status)
    entries = json.loads(status.stdout)["trials"]
    assert {t["trial_id"] for t in entries if t["stopped_early"]} == set(stopped_at)
    table = run_ktc("results", search_dir, timeout=120)
    assert_ok(table)
    assert table.stdout.count("stopped at epoch") == len(stopped_at)
    # Both the search's end and `ktc results` sum it up: how many, and the epochs
    # they did not train (to the last epoch each would have reached).
    not_trained = sum(EPOCHS - (epoch + 1) for epoch in stopped_at.values())
    summary = (
        f"trial scheduler (asha): stopped {len(stopped_at)} of 10 completed trial(s) early, "
        f"{not_trained} epoch(s) not trained"
    )
    assert summary in proc.stdout and summary in table.stdout, table.stdout[-2000:]
