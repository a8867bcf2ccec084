"""The report refresher of a running search: debounced, in a warm render process
that speaks orchestrator/report/server.py's protocol, never fatal."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import psutil

from bench.report_speed import build_synthetic_search
from orchestrator.report.refresh import ReportRefresher, render_command
from orchestrator.report.server import serve
from tests.helpers import wait_until


def server(per_render: str, *, counter: Path | None = None) -> list[str]:
    """A render process: for each ``render`` line it runs ``per_render`` (Python,
    which sets ``reply``), appends its pid to ``counter`` and answers ``reply``."""
    code = (
        "import json, os, sys, time\n"
        "for line in sys.stdin:\n"
        "    reply = {'code': 0, 'error': ''}\n"
        f"    {per_render}\n"
        f"    if {str(counter)!r} != 'None':\n"
        f"        open({str(counter)!r}, 'a').write(str(os.getpid()) + '\\n')\n"
        "    print(json.dumps(reply), flush=True)\n"
    )
    return [sys.executable, "-c", code]


def renders(counter: Path) -> list[str]:
    """The pid of the process that made each render so far."""
    return counter.read_text().splitlines() if counter.exists() else []


def test_renders_at_start_when_progress_changes_and_once_at_close(tmp_path: Path) -> None:
    counter = tmp_path / "renders.txt"
    progress = {"ended": 0, "asked": 0}

    def ended() -> int:
        progress["asked"] += 1
        return progress["ended"]

    refresher = ReportRefresher(
        tmp_path, progress=ended, min_interval_s=0.05, command=server("pass", counter=counter)
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
    made = renders(counter)
    assert len(made) == 3  # start, the change, the final one
    # One warm process made all three, and it is gone once the refresher closed.
    assert len(set(made)) == 1 and not psutil.pid_exists(int(made[0]))
    assert refresher.failures == 0


def test_at_most_one_render_per_interval(tmp_path: Path) -> None:
    counter = tmp_path / "renders.txt"
    ticks = iter(range(10_000))
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: next(ticks),  # changes every time it is asked
        min_interval_s=3600.0,
        command=server("pass", counter=counter),
    )
    refresher.start()
    wait_until(lambda: refresher.renders >= 1, 30, what="the first render")
    refresher.close()
    assert len(renders(counter)) == 2  # the first and the final one: the hour never passed


def test_the_process_is_replaced_after_its_share_of_renders(tmp_path: Path) -> None:
    counter = tmp_path / "renders.txt"
    ticks = iter(range(10_000))
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: next(ticks),
        min_interval_s=0.01,
        command=server("pass", counter=counter),
        renders_per_process=2,
    )
    refresher.start()
    wait_until(lambda: refresher.renders >= 5, 60, what="five renders")
    refresher.close()
    made = renders(counter)
    assert [len(set(made[i : i + 2])) for i in range(0, 4, 2)] == [1, 1]
    assert made[0] != made[2] and made[2] != made[4]


def test_a_failing_render_is_logged_and_the_search_goes_on(tmp_path: Path, caplog: Any) -> None:
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: 0,
        min_interval_s=3600.0,
        command=server("reply = {'code': 1, 'error': 'error: the ledger went away'}"),
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.report.refresh"):
        refresher.start()
        refresher.close()
    assert refresher.failures == 2
    assert "was not refreshed (exit 1: error: the ledger went away)" in caplog.text


def test_a_render_process_that_dies_is_logged_with_its_stderr_and_replaced(
    tmp_path: Path, caplog: Any
) -> None:
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: 0,
        min_interval_s=3600.0,
        command=server("sys.exit('MemoryError: the figure was too big')"),
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.report.refresh"):
        refresher.start()
        refresher.close()
    assert refresher.failures == 2  # each render met a fresh process, which died
    assert "(exit 1: MemoryError: the figure was too big)" in caplog.text


def test_a_hanging_render_is_stopped(tmp_path: Path, caplog: Any) -> None:
    refresher = ReportRefresher(
        tmp_path,
        progress=lambda: 0,
        min_interval_s=3600.0,
        timeout_s=0.5,
        command=server("time.sleep(60)"),
    )
    with caplog.at_level(logging.WARNING, logger="orchestrator.report.refresh"):
        refresher.start()
        refresher.close()
    assert refresher.failures == 2  # the first and the final one, each stopped
    assert "took over 0.5 s and was stopped" in caplog.text


def test_the_real_process_writes_the_report_and_the_summaries(tmp_path: Path) -> None:
    search_dir = build_synthetic_search(tmp_path / "s", trials=4, epochs=3)
    refresher = ReportRefresher(
        search_dir, progress=lambda: 0, min_interval_s=3600.0, command=render_command(search_dir)
    )
    refresher.start()
    refresher.close()
    assert refresher.failures == 0
    assert (search_dir / "report" / "index.html").is_file()
    assert len(list((search_dir / "tensorboard").glob("trial_*"))) == 4


def test_the_server_answers_each_request_and_survives_a_bad_one(tmp_path: Path) -> None:
    search_dir = build_synthetic_search(tmp_path / "s", trials=2, epochs=2)
    out = tmp_path / "answers.txt"
    with out.open("w") as answers:
        assert serve(search_dir, ["render\n", "\n", "paint\n", "render\n"], answers) == 0
    replies = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["code"] for r in replies] == [0, 2, 0]
    assert "unknown request 'paint'; expected 'render'" in replies[1]["error"]
    missing = tmp_path / "nothing-here"
    with out.open("w") as answers:
        serve(missing, ["render\n"], answers)
    reply = json.loads(out.read_text())
    assert reply["code"] == 2 and str(missing) in reply["error"], reply
    assert os.path.isfile(search_dir / "report" / "index.html")
