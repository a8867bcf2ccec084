"""GPU mapping on an embedded Ray with logical GPUs: each worker's
``CUDA_VISIBLE_DEVICES`` is exactly the GPUs its cluster YAML maps to it.

The machine has no GPU: the embedded Ray advertises the YAML's GPUs as logical
resources, and the sleep hypermodel (no TensorFlow) runs the trials. One
``ktc submit`` covers two layouts on two nodes of the same embedded Ray:

- ``box``: 4 GPUs, an explicit worker list (one worker on GPUs 2 and 3) and a
  CPU-only worker;
- ``small``: 2 GPUs packed with 2 workers each (memory-capped).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import (
    assert_ok,
    ktc,
    local_cluster,
    read_workers,
    sleep_search,
)

pytestmark = pytest.mark.slow

# Enough sleep work that every worker has started before the search ends.
# Long enough (about 36 s of trial time) for all 8 actors to come up on 2 busy cores.
SEARCH = sleep_search("gpu-map", max_trials=24, epochs=3, epoch_s=0.5)
CLUSTER = local_cluster(
    "gpus",
    [
        {
            "name": "box",
            "host": "127.0.0.1",
            "gpus": [0, 1, 2, 3],
            "cpus": 4,
            "workers": [{"gpus": [0]}, {"gpus": [1]}, {"gpus": [2, 3]}, {"cpus": 1}],
        },
        {
            "name": "small",
            "host": "127.0.0.1",
            "gpus": [0, 1],
            "cpus": 4,
            "workers_per_gpu": 2,
            "gpu_memory_mb": 16000,
            "memory_cap_mb": 7000,
        },
    ],
)


@dataclass(frozen=True)
class GpuRun:
    """The finished search: its ``workers.jsonl`` rows by worker id, and its results."""

    workers: dict[str, dict[str, Any]]
    results: list[dict[str, Any]]


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory: pytest.TempPathFactory) -> GpuRun:
    root = tmp_path_factory.mktemp("gpus")
    (root / "search.yaml").write_text(yaml.safe_dump(SEARCH))
    (root / "cluster.yaml").write_text(yaml.safe_dump(CLUSTER))
    search_dir = root / "search"
    proc = ktc(
        "submit",
        root / "search.yaml",
        "--cluster",
        root / "cluster.yaml",
        "--dir",
        search_dir,
        cwd=root,
        timeout=240,
    )
    assert_ok(proc)
    results = ktc("results", search_dir, "--json", cwd=root, timeout=120)
    assert_ok(results)
    import json

    return GpuRun(
        workers={str(row["worker_id"]): row for row in read_workers(search_dir)},
        results=json.loads(results.stdout),
    )


def _gpus(row: dict[str, Any]) -> list[int]:
    return [int(g) for g in row["gpus"]]


def test_explicit_workers_see_exactly_their_yaml_gpus(gpu_run: GpuRun) -> None:
    workers = {w: row for w, row in gpu_run.workers.items() if w.startswith("box-")}
    expected = {"box-w0": "0", "box-w1": "1", "box-w2": "2,3", "box-w3": ""}
    assert {w: row["cuda_visible_devices"] for w, row in workers.items()} == expected
    for worker_id, row in workers.items():
        assert row["node"] == "box", row
        assert row["node_id"], row
        assert _gpus(row) == [int(g) for g in expected[worker_id].split(",") if g], row

    # No two workers of the node share a GPU; the CPU-only worker sees none.
    owners = Counter(
        gpu for row in workers.values() for gpu in row["cuda_visible_devices"].split(",") if gpu
    )
    assert owners == Counter({"0": 1, "1": 1, "2": 1, "3": 1})


def test_packed_workers_share_one_gpu_each(gpu_run: GpuRun) -> None:
    workers = {w: row for w, row in gpu_run.workers.items() if w.startswith("small-")}
    assert set(workers) == {"small-w0", "small-w1", "small-w2", "small-w3"}
    # Two workers per GPU, and each of them sees exactly that one GPU.
    assert Counter(row["cuda_visible_devices"] for row in workers.values()) == Counter(
        {"0": 2, "1": 2}
    )
    for row in workers.values():
        assert _gpus(row) == [int(row["cuda_visible_devices"])], row
    assert (
        workers["small-w0"]["cuda_visible_devices"] == workers["small-w1"]["cuda_visible_devices"]
    )


def test_every_worker_is_its_own_process_and_trials_complete(gpu_run: GpuRun) -> None:
    assert len(gpu_run.workers) == 8
    assert len({row["pid"] for row in gpu_run.workers.values()}) == 8
    assert (
        sum(r["status"] == "COMPLETED" for r in gpu_run.results) == SEARCH["oracle"]["max_trials"]
    )
    assert {r["worker"] for r in gpu_run.results} <= set(gpu_run.workers)


def test_every_worker_process_has_the_worker_environment(gpu_run: GpuRun) -> None:
    """The embedded Ray hands the settings down from its raylet (actors carry no
    runtime env there): each process must still have them, MALLOC_ARENA_MAX
    (worker memory) and Ray's hands off CUDA_VISIBLE_DEVICES among them."""
    from workers.actor import WORKER_PROCESS_ENV

    for worker_id, row in gpu_run.workers.items():
        assert row["process_env"] == WORKER_PROCESS_ENV, worker_id
