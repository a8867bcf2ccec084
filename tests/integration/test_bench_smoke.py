"""Smoke test: the quick dispatch benchmark runs through its Python API and yields numbers.

No time thresholds: this machine is shared, and benchmarks are not timed tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.dispatch import run_ktcluster_dispatch
from bench.timeline import TrialSpan, ideal_wall_s, refill_gaps_s, summarize


def test_refill_gaps_are_per_worker() -> None:
    spans = [
        TrialSpan("a", "0", start=0.0, end=1.0, recorded=1.01, create_rtt_s=0.002),
        TrialSpan("b", "1", start=0.0, end=1.0, recorded=1.02, create_rtt_s=0.003),
        TrialSpan("a", "2", start=1.5, end=2.0, recorded=2.01, create_rtt_s=0.004),
    ]
    assert refill_gaps_s(spans) == [0.5]
    result = summarize(
        system="x", workers=2, trials=3, trial_s=1.0, spans=spans, startup_s=0.1, chief_exit_s=None
    )
    assert ideal_wall_s(3, 2, 1.0) == 2.0
    assert result.wall_s == pytest.approx(2.01)
    assert result.efficiency == pytest.approx(2.0 / 2.01)


@pytest.mark.slow
def test_quick_dispatch_benchmark_produces_numbers(tmp_path: Path) -> None:
    result = run_ktcluster_dispatch(workers=2, trials=6, trial_s=0.05, work_dir=tmp_path)

    assert result.completed == 6
    assert result.efficiency > 0 and not math.isnan(result.efficiency)
    assert result.refill_ms.count == 4  # 6 trials on 2 workers: 2 gaps each
    assert not math.isnan(result.refill_ms.p50) and result.refill_ms.p50 >= 0
    assert not math.isnan(result.create_rtt_ms.p95)
    assert result.startup_s > 0


def test_memory_growth_is_against_a_fresh_process_after_one_trial() -> None:
    from bench.report import memory_section
    from bench.worker_memory import MemoryResult, MemoryRun

    recycled = MemoryRun(
        mode="recycle after 3 trials (the policy)",
        trials_per_process=3,
        processes=((600.0, 640.0, 650.0, 660.0), (600.0, 641.0, 652.0, 661.0)),
        startup_s=(6.0, 6.2),
        trial_s=4.0,
    )
    assert recycled.trials == 6
    assert recycled.baseline_mib == 640.0
    assert recycled.growth_mib == pytest.approx(21.0)
    assert recycled.growth_per_trial_mib == pytest.approx(10.0)
    assert recycled.after_first_mib == (640.0, 641.0)

    text = "\n".join(memory_section(MemoryResult(2, None, recycled, None), 3))
    assert "RSS growth <= 50 MB over 6 trials, under the policy (recycle after 3)" in text
    assert "| met |" in text


@pytest.mark.slow
def test_ray_fleet_dispatch_produces_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.ray_dispatch import run_ray_dispatch

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    result = run_ray_dispatch(workers=2, trials=4, trial_s=0.05, work_dir=tmp_path)

    assert result.dispatch.completed == 4
    assert not math.isnan(result.dispatch.efficiency)
    assert not math.isnan(result.dispatch.refill_ms.p50)
    assert result.first_assigned_s > 0
    assert result.in_trial_ms.count == 4


def test_merge_replaces_only_the_rerun_sections() -> None:
    from bench.merge import merge_report

    old = "# Benchmarks\n\n- **Date:** x\n\n## 1. A\n\nold a\n\n## 2. B\n\nold b\n\nTotal benchmark time: 9 min.\n"
    merged = merge_report(old, ["# Benchmarks", "", "## 2. B", "", "new b", ""], "re-run at noon")

    assert "old a" in merged and "new b" in merged and "old b" not in merged
    assert merged.index("## 1. A") < merged.index("## 2. B") < merged.index("Total benchmark time")
    assert "- **Re-run:** re-run at noon" in merged
    assert "*re-run at noon*" in merged
    assert "replaced by the re-run" not in merged  # the old section had no targets table
