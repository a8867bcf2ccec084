"""The report refresher of a running search: debounced, in a child process, never fatal."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from bench.report_speed import build_synthetic_search
from orchestrator.report.refresh import ReportRefresher, render_command
from tests.helpers import wait_until


def counting_command(counter: Path) -> list[str]:
    """A child that appends one line to ``counter`` per render."""
    code = f"open({str(counter)!r}, 'a').write('render\\n')"
    return [sys.executable, "-c", code]


def renders(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_renders_at_start_when_progress_changes_and_once_at_close(tmp_path: Path) -> None:
    counter = tmp_path / "renders.txt"
    progress = {"ended": 0, "asked": 0}

    def ended() -> int:
        progress["asked"] += 1
        return progress["ended"]

    refresher = ReportRefresher(
        tmp_path,
        progress=ended,
        min_interval_s=0.05,
        command=counting_command(counter),
    )
    refresher.start()
    wait_until(lambda: refresher.renders >= 1, 30, what="the first render")
    # Nothing ended: several intervals pass without a render (debounced by change).
    asked = progress["asked"]
    wait_until(lambda: progress["asked"] >= asked + 3, 30, what="three more intervals")
    assert refresher.renders == 1
    progress["ended"] = 1
    wait_until(lambda: refresher.renders == 2, 30, what="a render after a trial ended")
    refresher.close()
    assert renders(counter) == 3  # start, the change, the final one
    assert refresher.failures == 0


def test_at_most_one_render_per_interval(tmp_path: Path) -> None:
    counter = tmp_path / "renders.txt"
    ticks = iter(range(10_000))
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: next(ticks),  # changes every time it is asked
        min_interval_s=3600.0,
        command=counting_command(counter),
    )
    refresher.start()
    wait_until(lambda: refresher.renders >= 1, 30, what="the first render")
    refresher.close()
    assert renders(counter) == 2  # the first and the final one: the hour never passed


def test_a_failing_render_is_logged_and_the_search_goes_on(tmp_path: Path, caplog: Any) -> None:
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: 0,
        min_interval_s=3600.0,
        command=[sys.executable, "-c", "import sys; sys.exit('error: the ledger went away')"],
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.report.refresh"):
        refresher.start()
        refresher.close()
    assert refresher.failures == 2
    assert "was not refreshed (exit 1): error: the ledger went away" in caplog.text


def test_a_hanging_render_is_stopped(tmp_path: Path, caplog: Any) -> None:
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: 0,
        min_interval_s=3600.0,
        timeout_s=0.5,
        command=[sys.executable, "-c", "import time; time.sleep(60)"],
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.report.refresh"):
        refresher.start()
        refresher.close()
    assert refresher.failures == 2  # the first and the final one, each stopped
    assert "took over 0.5 s and was stopped" in caplog.text


def test_the_real_child_writes_the_report_and_the_summaries(tmp_path: Path) -> None:
    search_dir = build_synthetic_search(tmp_path / "s", trials=4, epochs=3)
    refresher = ReportRefresher(
        search_dir, progress=lambda: 0, min_interval_s=3600.0, command=render_command(search_dir)
    )
    refresher.start()
    refresher.close()
    assert refresher.failures == 0
    assert (search_dir / "report" / "index.html").is_file()
    assert len(list((search_dir / "tensorboard").glob("trial_*"))) == 4
