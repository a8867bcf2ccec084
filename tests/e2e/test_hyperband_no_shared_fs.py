"""Hyperband through ``ktc submit`` with no shared filesystem: every worker
process has its own private workdir, and ``recycle_after_trials: 1`` gives each
trial a fresh process, so a continuation trial can only get its parent's
checkpoint by downloading it from the chief."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from orchestrator.chief.events import EventKind
from orchestrator.chief.ledger import Ledger
from tests.e2e.conftest import (
    RunKtc,
    WriteYaml,
    assert_ok,
    digits_search,
    local_cluster,
    read_workers,
    results_json,
)

pytestmark = pytest.mark.slow


def test_continuations_download_parent_checkpoints(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    search = digits_search(
        "hyperband-e2e",
        # max_epochs 2 / factor 2: bracket 1 runs 2 trials x 1 epoch, then the
        # best continues to epoch 2 (tuner/initial_epoch 1); bracket 0 runs 2
        # trials x 2 epochs.
        oracle={"type": "hyperband", "max_epochs": 2, "factor": 2, "seed": 2},
        epochs=2,
        hypermodel={
            "name": "mlp",
            "overrides": {"units": {"min": 32, "max": 64, "step": 32}},
        },
    )
    cluster = local_cluster(
        "local2", [{"name": "local", "host": "127.0.0.1", "cpus": 2, "cpu_workers": 2}]
    )
    cluster["fleet"]["recycle_after_trials"] = 1  # a fresh process (and workdir) per trial
    search_dir = tmp_path / "search"
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", search),
        "--cluster",
        write_yaml("cluster.yaml", cluster),
        "--dir",
        search_dir,
        timeout=400,
    )
    assert_ok(proc)

    rows = {row["trial_id"]: row for row in results_json(run_ktc, search_dir)}
    failed = {tid: row.get("error") for tid, row in rows.items() if row["status"] != "COMPLETED"}
    assert not failed, failed
    continuations = {
        tid: row for tid, row in rows.items() if "tuner/trial_id" in row["hyperparameters"]
    }
    assert continuations, f"no continuation trial among {sorted(rows)}"

    first_epoch: dict[str, int] = {}
    workers_of: dict[str, set[str]] = defaultdict(set)
    ledger = Ledger(search_dir / "ledger.db", read_only=True)
    try:
        for event in ledger.events():
            if event.trial_id is None:
                continue
            if event.kind is EventKind.PROGRESS:
                first_epoch.setdefault(event.trial_id, int(event.payload["epoch"]))
            if event.kind is EventKind.ASSIGNED and event.worker_id:
                workers_of[event.trial_id].add(event.worker_id)
    finally:
        ledger.close()

    for tid, row in continuations.items():
        hp = row["hyperparameters"]
        parent = str(hp["tuner/trial_id"])
        assert parent in rows and rows[parent]["status"] == "COMPLETED", (tid, parent)
        # The parent's checkpoint went through the chief into the search directory.
        parent_dir = search_dir / "trials" / parent
        assert (parent_dir / "checkpoint.weights.h5").is_file(), sorted(parent_dir.glob("*"))
        assert (parent_dir / "build_config.json").is_file(), sorted(parent_dir.glob("*"))
        # It really continued: its first epoch is the parent's last, not 0.
        initial = int(hp["tuner/initial_epoch"])
        assert initial > 0, hp
        assert first_epoch[tid] == initial, (tid, first_epoch.get(tid), hp)
        assert 0.0 < row["score"] <= 1.0

    # One process per trial: each continuation ran in a process that never had
    # its parent's files locally.
    audit = read_workers(search_dir)
    assert len({line["pid"] for line in audit}) >= len(rows), audit
