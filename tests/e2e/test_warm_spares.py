"""Warm spare workers (issue 15): a recycled worker's replacement is started
during its last trial, imports TensorFlow without touching a device, and takes
over the moment the old process exits.

- On a Ray node whose only CPU and GPU the slot's placement group holds, the
  worker process and its spare both start (neither reserves anything), and
  after ``warm()`` the spare has TensorFlow imported but its devices neither
  listed nor initialised: the CPU machine's stand-in for "no CUDA context".
- A search that recycles after every trial starts each slot's process cold
  once; every later process is a spare that took over, and every trial runs
  exactly once.

The CNN fault test (``faults/test_cnn_faults.py``) runs with spares on: a
worker SIGKILLed while its spare warms, Ctrl-C and a chief SIGKILL, then resume.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    RunKtc,
    WriteYaml,
    assert_ok,
    local_cluster,
    ray_test_cluster,
    read_workers,
    results_json,
    sleep_search,
)

pytestmark = pytest.mark.slow

LOG_STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
DECIDED_S = 0.3  # a fleet decision's log line may follow the state it read by this much


@pytest.fixture
def one_gpu_node(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Ray node with exactly 1 CPU and 1 (logical) GPU: full once a slot reserves them."""
    import ray

    head = {"num_cpus": 1, "num_gpus": 1, "resources": {"ktc_node_g": 1000}}
    with ray_test_cluster(monkeypatch, "ktcws-", head) as cluster:
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
        try:
            yield cluster
        finally:
            ray.shutdown()


def test_spare_fits_beside_its_worker_and_touches_no_device(one_gpu_node: Any) -> None:
    import ray

    from orchestrator.config import parse_cluster
    from orchestrator.fleet.placement import process_options, release_slot, reserve_slot
    from workers.actor import ProcessSetup, remote_worker_class

    cluster = parse_cluster(
        {
            "ray": {"address": "auto"},
            "nodes": [{"name": "g", "cpus": 1, "gpus": [0], "workers": [{"gpus": [0]}]}],
        }
    )
    (slot,) = cluster.worker_slots()
    group = reserve_slot(slot, name="test-warm-spare")
    try:
        assert ray.get(group.ready(), timeout=60)
        # The group holds the node's only CPU and GPU ...
        free = ray.available_resources()
        assert free.get("CPU", 0) == 0 and free.get("GPU", 0) == 0, free
        # ... and both processes still start inside it: they reserve nothing.
        setup = ProcessSetup(worker_id="g-w0", slot=slot)
        worker, spare = (
            remote_worker_class()
            .options(**process_options(group, name=f"test-ws-{i}", runtime_env={}))
            .remote(setup)
            for i in range(2)
        )
        infos = ray.get([worker.info.remote(), spare.info.remote()], timeout=120)
        assert infos[0]["pid"] != infos[1]["pid"]
        assert infos[1]["cuda_visible_devices"] == "0"  # the YAML's GPU, set before any import

        seconds = ray.get(spare.warm.remote(True, [None]), timeout=300)
        assert seconds > 0

        def modules(actor: Any) -> list[str]:
            import sys

            return [m for m in ("tensorflow", "keras", "keras_tuner") if m in sys.modules]

        assert ray.get(spare.__ray_call__.remote(modules), timeout=30) == [
            "tensorflow",
            "keras",
            "keras_tuner",
        ]
        assert ray.get(spare.devices_touched.remote(), timeout=30) is False

        # The probe sees it once TensorFlow lists its devices (what run() does first).
        def list_devices(actor: Any) -> int:
            import tensorflow as tf

            return len(tf.config.list_physical_devices())

        assert ray.get(spare.__ray_call__.remote(list_devices), timeout=60) >= 1
        assert ray.get(spare.devices_touched.remote(), timeout=30) is True
    finally:
        release_slot(group)


def test_recycling_search_hands_every_slot_to_its_spare(
    run_ktc: RunKtc, write_yaml: WriteYaml, tmp_path: Path
) -> None:
    search = write_yaml("search.yaml", sleep_search("spares", max_trials=6, epochs=2, epoch_s=0.5))
    cluster_doc = local_cluster("spares", [{"name": "local", "cpus": 2, "cpu_workers": 2}])
    cluster_doc["fleet"] = {"cpus_per_worker": 1, "recycle_after_trials": 1, "warm_spares": True}
    cluster = write_yaml("cluster.yaml", cluster_doc)
    search_dir = tmp_path / "run"
    proc = run_ktc(
        "submit", search, "--cluster", cluster, "--dir", search_dir, "--no-progress", timeout=300
    )
    assert_ok(proc)

    rows = results_json(run_ktc, search_dir)
    assert len(rows) == 6 and all(r["status"] == "COMPLETED" for r in rows), rows

    from orchestrator.chief.events import EventKind
    from tests.e2e.faults.conftest import ledger_events

    assigned = Counter(
        e.trial_id for e in ledger_events(search_dir) if e.kind is EventKind.ASSIGNED
    )
    assert set(assigned.values()) == {1}, f"a trial ran twice: {assigned}"

    # One process per trial (recycle after 1), and each slot started cold once:
    # every later process was the spare that took over.
    incarnations = Counter(w["worker_id"] for w in read_workers(search_dir))
    assert sum(incarnations.values()) >= 6, incarnations
    log = (search_dir / "chief.log").read_text()
    cold = [line for line in log.splitlines() if "started actor for" in line]
    assert len(cold) == 2, "\n".join(cold)
    assert log.count("takes over") >= 4, log[-3000:]

    # Once the last trial was handed out, no process starts: a spare (or a fresh
    # process) then would only import TensorFlow beside the last trials, on their
    # CPU. The process that runs the last trial asks for its successor as that
    # trial starts: it gets none. (The other slot's request came at its own
    # trial's start, earlier; a decision made a moment before the last trial went
    # out may log just after it, so lines within DECIDED_S are not judged.)
    last = max(
        (e for e in ledger_events(search_dir) if e.kind is EventKind.ASSIGNED), key=lambda e: e.ts
    )
    late = [
        (stamp, line)
        for line in log.splitlines()
        if LOG_STAMP.match(line)
        and (stamp := datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()) > last.ts
    ]
    last_worker = last.event.worker_id
    assert not [line for _, line in late if f"warming a spare for {last_worker} " in line], log
    started = [
        line
        for stamp, line in late
        if stamp > last.ts + DECIDED_S and ("takes over" in line or "started actor for" in line)
    ]
    assert not started, "\n".join(line for _, line in late)
