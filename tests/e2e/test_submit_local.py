"""``ktc submit`` end to end on an embedded local Ray: a small real CNN search
on digits completes with sane scores, and bad input fails cleanly."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    DigitsRun,
    RunKtc,
    WriteYaml,
    assert_ok,
    local_cluster,
    read_workers,
    results_json,
    sleep_search,
)

pytestmark = pytest.mark.slow


def test_digits_cnn_search_completes(digits_run: DigitsRun, run_ktc: RunKtc) -> None:
    proc = digits_run.proc
    assert_ok(proc)
    lines = proc.stdout.splitlines()
    # First the search directory, at the end the top table and the verdict.
    assert lines[0] == f"search directory: {digits_run.search_dir}"
    assert "top 3 trials" in proc.stdout
    assert "search completed" in proc.stdout
    assert "Traceback" not in proc.stderr

    rows = results_json(run_ktc, digits_run.search_dir)
    assert len(rows) == digits_run.max_trials
    for row in rows:
        assert set(row) >= {
            "trial_id",
            "status",
            "score",
            "hyperparameters",
            "metrics",
            "attempts",
            "worker",
            "duration_s",
        }, row
        assert row["status"] == "COMPLETED", row
        assert 0.0 < row["score"] <= 1.0, row
        assert row["attempts"] == 1, row
        assert row["worker"] in ("local-w0", "local-w1"), row
        assert row["duration_s"] > 0, row
        assert {"filters_0", "units_0", "dropout"} <= set(row["hyperparameters"]), row
        assert row["trial_id"] in proc.stdout  # every trial is in the top table
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)  # best first
    assert sum(score > 0.5 for score in scores) >= 2, scores
    # Both CPU workers came up (one line each in the placement audit).
    audit = (digits_run.search_dir / "workers.jsonl").read_text()
    assert '"local-w0"' in audit and '"local-w1"' in audit


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("kind: search\nname: bad\noracle: {type: random, max_trials: [\n", r"search\.yaml"),
        (
            "kind: search\nname: bad\nhypermodel: sleep\noracle: {type: random, max_trials: -3}\n",
            r"max_trials",
        ),
        ("kind: search\nname: bad\nhypermodel: sleep\nbogus_key: 1\n", r"bogus_key"),
    ],
    ids=["yaml-syntax", "bad-value", "unknown-key"],
)
def test_malformed_search_file_exits_2_without_traceback(
    tmp_path: Path, run_ktc: RunKtc, text: str, expect: str
) -> None:
    import re

    search_file = tmp_path / "search.yaml"
    search_file.write_text(text)
    search_dir = tmp_path / "never"
    proc = run_ktc("submit", search_file, "--dir", search_dir, timeout=120)
    assert proc.returncode == 2, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    output = proc.stdout + proc.stderr
    assert re.search(expect, output), output
    assert "Traceback" not in output
    assert not search_dir.exists()
    assert not (tmp_path / "searches").exists()


def test_local_ray_ignores_other_clusters_on_the_machine(
    tmp_path: Path, run_ktc: RunKtc, write_yaml: WriteYaml
) -> None:
    """``ray.address: local`` starts its own Ray even when another cluster (here a
    stale one) is recorded in RAY_TMPDIR/ray/ray_current_cluster or RAY_ADDRESS."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ktcst-", dir="/tmp"))
    try:
        (ray_tmp / "ray").mkdir()
        (ray_tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        cluster = local_cluster(
            "one", [{"name": "local", "host": "127.0.0.1", "cpus": 1, "cpu_workers": 1}]
        )
        search_dir = tmp_path / "search"
        proc = run_ktc(
            "submit",
            write_yaml("search.yaml", sleep_search("stale", max_trials=2, epochs=1, epoch_s=0)),
            "--cluster",
            write_yaml("cluster.yaml", cluster),
            "--dir",
            search_dir,
            env={"RAY_TMPDIR": str(ray_tmp)},
            timeout=180,
        )
        assert_ok(proc)
        assert "search completed" in proc.stdout
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_workers_leave_no_files_behind(digits_run: DigitsRun) -> None:
    """Artifacts live in the search directory; a worker's private workdir goes
    away with its process."""
    assert_ok(digits_run.proc)
    audit = read_workers(digits_run.search_dir)
    assert audit
    leftovers = [
        path
        for line in audit
        if (
            path := Path(tempfile.gettempdir(), "ktcluster", f"{line['worker_id']}-{line['pid']}")
        ).exists()
    ]
    assert not leftovers, f"worker workdirs left behind: {leftovers}"
