"""bench/user_clock.py: medians and the table from fixed runs; one tiny run of
both systems yields numbers. No time thresholds: the machine is shared."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from bench.user_clock import (
    KT,
    KTC,
    SIZES,
    ClockRun,
    ClockSummary,
    Size,
    parse_sizes,
    run_kt,
    run_ktc,
    table,
)

TINY = Size(workers=1, trials=3, trial_s=0.05)


def _run(system: str, first: float, last: float, exit_: float, load: float) -> ClockRun:
    return ClockRun(system, SIZES[2], first, last, exit_, completed=20, load_1min=load)


def test_summary_is_the_median_of_each_figure() -> None:
    runs = [
        _run(KTC, 5.0, 10.0, 11.0, 1.0),
        _run(KTC, 4.0, 9.0, 12.5, 2.0),
        _run(KTC, 6.0, 11.0, 11.5, 3.0),
    ]
    summary = ClockSummary.of(runs)
    assert summary.first_start_s == 5.0
    assert summary.last_result_s == 10.0
    assert summary.exit_s == 11.5
    # The median of the per-run gaps (1.0, 3.5, 0.5), not the gap of the medians.
    assert summary.exit_after_last_s == 1.0
    assert summary.loads == (1.0, 2.0, 3.0)
    text = table([summary])
    assert (
        "| 2 | 0.5 s | 20 | ktc | 5.00 s | 10.00 s | 1.00 s | 11.50 s | 3 | 1.00, 2.00, 3.00 |"
        in text
    )


def test_summary_refuses_mixed_or_missing_runs() -> None:
    with pytest.raises(ValueError, match="at least one run"):
        ClockSummary.of([])
    with pytest.raises(ValueError, match="different systems or sizes"):
        ClockSummary.of([_run(KT, 1, 2, 3, 0), _run(KTC, 1, 2, 3, 0)])


def test_sizes_are_the_issues() -> None:
    assert parse_sizes("2,16") == [Size(2, 20, 0.5), Size(16, 160, 0.25)]
    with pytest.raises(argparse.ArgumentTypeError, match="expected a comma-separated list"):
        parse_sizes("3")


@pytest.mark.slow
def test_one_tiny_run_of_each_system_yields_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    for run in (run_kt(TINY, tmp_path / "kt", timeout_s=300), run_ktc(TINY, tmp_path / "ktc")):
        assert run.completed == TINY.trials
        assert 0 < run.first_start_s < run.last_result_s <= run.exit_s
        assert not math.isnan(run.exit_after_last_s)
