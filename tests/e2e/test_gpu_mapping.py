"""GPU mapping on an embedded Ray with logical GPUs: each worker's
``CUDA_VISIBLE_DEVICES`` is exactly the GPUs its cluster YAML maps to it.

The machine has no GPU: the embedded Ray advertises the YAML's GPUs as logical
resources, and the sleep hypermodel (no TensorFlow) runs the trials.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    RunKtc,
    WriteYaml,
    assert_ok,
    local_cluster,
    read_workers,
    results_json,
    sleep_search,
)

pytestmark = pytest.mark.slow

# Enough sleep work that every worker has started before the search ends.
SEARCH = sleep_search("gpu-map", max_trials=10, epochs=3, epoch_s=0.3)


def _latest_by_worker(rows: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(row["worker_id"]): row for row in rows}


def test_explicit_workers_see_exactly_their_yaml_gpus(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    cluster = local_cluster(
        "gpu4",
        [
            {
                "name": "box",
                "host": "127.0.0.1",
                "gpus": [0, 1, 2, 3],
                "cpus": 4,
                "workers": [{"gpus": [0]}, {"gpus": [1]}, {"gpus": [2, 3]}, {"cpus": 1}],
            }
        ],
    )
    search_dir = tmp_path / "search"
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", SEARCH),
        "--cluster",
        write_yaml("cluster.yaml", cluster),
        "--dir",
        search_dir,
        timeout=240,
    )
    assert_ok(proc)

    workers = _latest_by_worker(read_workers(search_dir))
    expected = {"box-w0": "0", "box-w1": "1", "box-w2": "2,3", "box-w3": ""}
    assert {w: row["cuda_visible_devices"] for w, row in workers.items()} == expected
    for worker_id, row in workers.items():
        assert row["node"] == "box", row
        assert row["pid"], row
        assert row["node_id"], row
        want = [int(g) for g in expected[worker_id].split(",") if g]
        assert list(row["gpus"]) == want, row  # type: ignore[call-overload]

    # No two GPU workers share a GPU; the CPU-only worker sees none.
    owners = Counter(
        gpu
        for row in workers.values()
        for gpu in str(row["cuda_visible_devices"]).split(",")
        if gpu
    )
    assert owners == Counter({"0": 1, "1": 1, "2": 1, "3": 1})
    # Every worker is a separate process.
    assert len({row["pid"] for row in workers.values()}) == len(workers)

    rows = results_json(run_ktc, search_dir)
    assert sum(r["status"] == "COMPLETED" for r in rows) == SEARCH["oracle"]["max_trials"]
    assert {r["worker"] for r in rows} <= set(expected)


def test_packed_workers_share_one_gpu_each(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    cluster = local_cluster(
        "packed",
        [
            {
                "name": "small",
                "host": "127.0.0.1",
                "gpus": [0, 1],
                "cpus": 4,
                "workers_per_gpu": 2,
                "gpu_memory_mb": 16000,
                "memory_cap_mb": 7000,
            }
        ],
    )
    search_dir = tmp_path / "search"
    proc = run_ktc(
        "submit",
        write_yaml("search.yaml", SEARCH),
        "--cluster",
        write_yaml("cluster.yaml", cluster),
        "--dir",
        search_dir,
        timeout=240,
    )
    assert_ok(proc)

    workers = _latest_by_worker(read_workers(search_dir))
    assert set(workers) == {"small-w0", "small-w1", "small-w2", "small-w3"}
    # Two workers per GPU, and each of them sees exactly that one GPU.
    seen = Counter(str(row["cuda_visible_devices"]) for row in workers.values())
    assert seen == Counter({"0": 2, "1": 2})
    for row in workers.values():
        assert list(row["gpus"]) == [int(str(row["cuda_visible_devices"]))], row  # type: ignore[call-overload]
    assert (
        workers["small-w0"]["cuda_visible_devices"] == workers["small-w1"]["cuda_visible_devices"]
    )
    assert len({row["pid"] for row in workers.values()}) == 4
