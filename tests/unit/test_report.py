"""``ktc report``: every plotted series comes from the ledger, and the page is offline.

Ledgers are written by the chief's own classes (``Chief.create`` and its
broker, through :func:`bench.report_speed.build_synthetic_search`, or by hand
below for a requeued attempt); the expected values are read back from the
ledger's events independently of the report's reader.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from bench.report_speed import build_synthetic_search
from orchestrator.chief.events import TrialCompleted, TrialFailed, TrialProgress
from orchestrator.chief.ledger import Ledger
from orchestrator.cli.main import main
from orchestrator.errors import LedgerError, SearchDirError
from orchestrator.protocol.trials import TrialStatus
from orchestrator.report.build import build_report
from orchestrator.report.data import read_report_data
from orchestrator.report.series import (
    best_so_far,
    learning_curves,
    parallel_coordinates,
    score_by_hyperparameter,
    varying_hyperparameters,
)
from tests.helpers import readable_by_others

TRIALS, EPOCHS, RUNNING = 24, 6, 2


@pytest.fixture(scope="module")
def search_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 ended trials (every 11th failed, some stopped early) and 2 still running."""
    path = tmp_path_factory.mktemp("report") / "search"
    return build_synthetic_search(path, trials=TRIALS, epochs=EPOCHS, running=RUNNING)


def ledger_events(search_dir: Path) -> list[Any]:
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        return list(ledger.events())


def last_attempt_progress(search_dir: Path) -> dict[str, dict[int, dict[str, float]]]:
    """trial -> epoch -> metrics of the trial's last attempt, straight from the events."""
    last: dict[str, int] = {}
    progress: dict[tuple[str, int], dict[int, dict[str, float]]] = {}
    for recorded in ledger_events(search_dir):
        event = recorded.event
        if isinstance(event, TrialProgress):
            progress.setdefault((event.trial_id, event.attempt), {})[event.epoch] = event.metrics
        attempt = getattr(event, "attempt", None)
        if attempt is not None:
            last[event.trial_id] = max(last.get(event.trial_id, 0), attempt)
    return {tid: progress.get((tid, a), {}) for tid, a in last.items()}


def test_trials_and_their_epochs_are_the_ledgers(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    expected = last_attempt_progress(search_dir)
    assert len(data.trials) == TRIALS + RUNNING
    for trial in data.trials:
        want = expected.get(trial.trial_id, {})
        assert [r.epoch for r in trial.history] == sorted(want)
        assert [dict(r.metrics) for r in trial.history] == [want[e] for e in sorted(want)]
    counts = data.counts()
    assert counts[TrialStatus.RUNNING] == RUNNING
    assert counts[TrialStatus.FAILED] == TRIALS // 11
    assert counts[TrialStatus.COMPLETED] == TRIALS - TRIALS // 11
    failed = [t for t in data.trials if t.status is TrialStatus.FAILED]
    assert all("synthetic failure" in (t.error_message or "") for t in failed)
    assert [hp.name for hp in data.space] == ["learning_rate", "units", "activation", "batch_norm"]
    assert any(t.stopped_early for t in data.trials)


def test_one_learning_curve_per_trial_that_reported_the_metric(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    expected = last_attempt_progress(search_dir)
    pictures = learning_curves(data)
    assert sorted(p.base for p in pictures) == ["accuracy", "loss"]
    for picture in pictures:
        assert [p.metric for p in picture.panels] == [picture.base, f"val_{picture.base}"]
        for panel in picture.panels:
            with_metric = {
                tid
                for tid, epochs in expected.items()
                if any(panel.metric in m for m in epochs.values())
            }
            assert {c.trial_id for c in panel.curves} == with_metric
            assert len(panel.curves) == len(with_metric)
            for curve in panel.curves:
                epochs = expected[curve.trial_id]
                assert curve.epochs == tuple(e + 1 for e in sorted(epochs))
                assert curve.values == tuple(epochs[e][panel.metric] for e in sorted(epochs))
            assert sum(c.highlighted for c in panel.curves) == 5


def test_a_trial_of_one_epoch_is_drawn_as_a_dot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A trial scheduler stops most trials at its first rung: one epoch each. A line
    # of one point draws nothing, so without dots they would vanish from the picture.
    from matplotlib.collections import LineCollection, PathCollection

    from orchestrator.report import plots
    from orchestrator.report.series import Curve, LearningCurves, MetricPanel

    curves = (
        Curve("00", (1, 2, 3), (0.5, 0.7, 0.9), highlighted=True),
        Curve("01", (1, 2), (0.4, 0.6), highlighted=False),
        Curve("02", (1,), (0.3,), highlighted=False),
        Curve("03", (1,), (0.2,), highlighted=False),
    )
    family = LearningCurves("accuracy", (MetricPanel("val_accuracy", curves),))
    figures: list[Any] = []
    monkeypatch.setattr(plots, "_save", lambda fig, out_dir, name: figures.append(fig))
    plots._learning_curves(family, {"00": "trial 00"}, {"00": 1}, tmp_path)

    (ax,) = figures[0].axes
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    assert [len(segment) for segment in lines.get_segments()] == [2]  # trial 01
    (dots,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sorted(map(tuple, dots.get_offsets().tolist())) == [(1.0, 0.2), (1.0, 0.3)]


def test_best_so_far_is_the_running_best_of_the_ledgers_scores(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    ends = [
        r for r in ledger_events(search_dir) if isinstance(r.event, (TrialCompleted, TrialFailed))
    ]
    scores = [r.event.score for r in ends if isinstance(r.event, TrialCompleted)]
    series = best_so_far(data)
    assert series.scores == tuple(scores)  # commit order
    running, best = [], None
    for score in scores:
        best = score if best is None else max(best, score)  # val_accuracy: max
        running.append(best)
    assert series.best == tuple(running)
    numbers = [i for i, r in enumerate(ends, start=1) if isinstance(r.event, TrialCompleted)]
    assert series.trial_numbers == tuple(numbers)
    start = data.created_at or 0.0
    assert series.elapsed_s == tuple(
        r.ts - start for r in ends if isinstance(r.event, TrialCompleted)
    )


def test_best_so_far_follows_a_min_objective(search_dir: Path, tmp_path: Path) -> None:
    data = read_report_data(search_dir)
    flipped = best_so_far(type(data)(**{**data.__dict__, "direction": "min"}))
    assert flipped.best[-1] == min(flipped.scores)
    assert all(b >= n for b, n in zip(flipped.best, flipped.best[1:], strict=False))


def test_score_against_each_hyperparameter_is_each_completed_trials_value(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    completed = {
        r.event.trial_id: r.event.score
        for r in ledger_events(search_dir)
        if isinstance(r.event, TrialCompleted)
    }
    scatters = {s.name: s for s in score_by_hyperparameter(data)}
    assert list(scatters) == ["learning_rate", "units", "activation", "batch_norm"]
    values = {t.trial_id: t.values for t in data.trials}
    for scatter in scatters.values():
        assert set(scatter.trial_ids) == set(completed)
        for tid, position, score in zip(
            scatter.trial_ids, scatter.positions, scatter.scores, strict=True
        ):
            assert score == completed[tid]
            value = values[tid][scatter.name]
            if scatter.categorical:
                assert scatter.categories[int(position)] == str(value)
            else:
                assert position == value
    assert scatters["activation"].categories == ("relu", "tanh", "gelu")
    assert scatters["batch_norm"].categories == ("False", "True")
    assert scatters["learning_rate"].log and not scatters["units"].log


def test_parallel_coordinates_normalise_each_axis(search_dir: Path) -> None:
    data = read_report_data(search_dir)
    view = parallel_coordinates(data)
    assert len(view.lines) == len(data.completed())
    assert [a.name for a in view.axes][:-1] == varying_hyperparameters(data)
    for line in view.lines:
        assert all(0.0 <= x <= 1.0 for x in line)
    best = data.best()
    assert best is not None
    i = view.trial_ids.index(best.trial_id)
    assert view.lines[i][-1] == 1.0 and view.colour[i] == 1.0


def test_a_requeued_trial_shows_its_last_attempts_epochs(tmp_path: Path) -> None:
    from orchestrator.chief.chief import Chief
    from orchestrator.protocol.trials import AttemptStatus
    from tests.helpers import float_space, make_search

    chief = Chief.create(
        make_search(objective="val_score"), tmp_path / "s", initial_space=float_space()
    )
    broker = chief.broker
    first = broker.create_trial("w0", wait_s=0)
    assert first.trial_id is not None
    for epoch in range(3):
        broker.report(first.trial_id, first.token, epoch=epoch, metrics={"val_score": 0.1})
    broker.worker_lost("w0", "node lost")
    second = broker.create_trial("w1", wait_s=0)
    assert (second.trial_id, second.attempt) == (first.trial_id, 2)
    broker.report(second.trial_id, second.token, epoch=0, metrics={"val_score": 0.7})
    broker.end_trial(
        second.trial_id, second.token, status=AttemptStatus.COMPLETED, metrics={"val_score": 0.7}
    )
    chief.close()
    data = read_report_data(tmp_path / "s")
    (trial,) = data.trials
    assert trial.attempts == 2 and trial.worker_id == "w1"
    assert [(r.epoch, dict(r.metrics)) for r in trial.history] == [(0, {"val_score": 0.7})]
    (picture,) = learning_curves(data)
    assert [c.values for c in picture.panels[0].curves] == [(0.7,)]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_the_page_is_offline_and_every_picture_is_a_local_png(search_dir: Path) -> None:
    from PIL import Image

    index = build_report(search_dir)
    assert index == search_dir / "report" / "index.html"
    page = index.read_text()
    assert "<script" not in page.lower()
    assert not re.search(r"https?://|//[a-z]", page, re.IGNORECASE), "a link out of the folder"
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links, "no picture linked"
    for link in links:
        assert "/" not in link and not link.startswith("."), link
        path = index.parent / link
        assert path.is_file(), link
        assert path.read_bytes()[:8] == PNG_SIGNATURE
        with Image.open(path) as image:
            image.verify()
    assert {"curves_loss.png", "curves_accuracy.png", "best_so_far.png"} <= set(links)
    assert {"score_by_hyperparameter.png", "parallel_coordinates.png"} <= set(links)
    # The summary, the failures with their message, the trial table and the space.
    data = read_report_data(search_dir)
    best = data.best()
    assert best is not None and f"<b>{best.trial_id}</b>" in page
    assert "synthetic failure in trial" in page
    assert page.count("<tr>") >= len(data.trials) + len(data.space)
    assert "learning_rate" in page and "0.0001 .. 0.1, log" in page


def test_a_rebuild_replaces_the_report_whole(search_dir: Path) -> None:
    build_report(search_dir)
    (search_dir / "report" / "stale.png").write_bytes(b"old")
    build_report(search_dir)
    assert not (search_dir / "report" / "stale.png").exists()
    assert not [p for p in search_dir.iterdir() if p.name.startswith(".report")]


def test_the_report_is_private_like_the_search_directory(search_dir: Path) -> None:
    build_report(search_dir)
    assert not readable_by_others(search_dir / "report")


def test_a_search_with_no_trials_yet_gets_a_page(tmp_path: Path) -> None:
    from orchestrator.chief.chief import Chief
    from tests.helpers import make_search

    Chief.create(make_search(), tmp_path / "s").close()
    page = build_report(tmp_path / "s").read_text()
    assert "no completed trial yet" in page and "Not declared yet" in page


def test_ktc_report_writes_the_page_and_says_where(search_dir: Path, capsys: Any) -> None:
    assert main(["report", str(search_dir), "--no-tensorboard"]) == 0
    out = capsys.readouterr().out
    assert f"report: {search_dir / 'report' / 'index.html'}" in out


def test_ktc_report_on_a_directory_without_a_search_exits_2(tmp_path: Path, capsys: Any) -> None:
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a search directory (no ledger.db)" in err and "ktc submit" in err
    with pytest.raises(SearchDirError, match="not a search directory"):
        read_report_data(tmp_path)


def test_ktc_report_on_a_damaged_ledger_exits_1(tmp_path: Path, capsys: Any) -> None:
    (tmp_path / "ledger.db").write_bytes(b"not a database at all" * 100)
    assert main(["report", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"ledger\.db: cannot read the ledger \(DatabaseError: .*\); expected", err)
    with pytest.raises(LedgerError, match="cannot read the ledger"):
        read_report_data(tmp_path)


def test_rows_that_do_not_decode_are_named_and_the_rest_is_shown(
    search_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(search_dir, copy, ignore=shutil.ignore_patterns("report", "tensorboard"))
    with sqlite3.connect(copy / "ledger.db") as conn:
        conn.execute(
            'UPDATE events SET payload = \'{"epoch": "x"}\' WHERE seq = '
            "(SELECT MIN(seq) FROM events WHERE kind = 'progress')"
        )
    data = read_report_data(copy)
    assert len(data.damaged) == 1 and "does not decode" in data.damaged[0]
    assert len(data.trials) == TRIALS + RUNNING
    assert "Damaged ledger rows" in build_report(copy, data=data).read_text()


_DRAW_IN_TWO = """
import os, sys
from pathlib import Path
from orchestrator.report import plots
from orchestrator.report.data import read_report_data

data = read_report_data(sys.argv[1])
one, two = Path(sys.argv[2]) / "one", Path(sys.argv[2]) / "two"
one.mkdir(); two.mkdir()
alone = plots.render_pictures(data, one)
forked = plots.render_pictures(data, two, processes=2)
assert forked == alone and len(alone) >= 4, (forked, alone)
for picture in alone:
    assert (two / picture.file_name).read_bytes() == (one / picture.file_name).read_bytes()
here, draw_curves = os.getpid(), plots._learning_curves

def broken_there(*args, **kwargs):
    if os.getpid() != here:
        raise ValueError("no room for the legend")
    return draw_curves(*args, **kwargs)

# The second drawing (a learning-curves figure) is the forked copy's.
plots._learning_curves = broken_there
try:
    plots.render_pictures(data, two, processes=2)
except RuntimeError as exc:
    print("raised:", exc)
"""


def test_pictures_drawn_two_at_a_time_are_the_same_files_in_the_same_order(
    search_dir: Path, tmp_path: Path
) -> None:
    """The warm render process draws every other picture in a forked copy of
    itself (plots.render_pictures, processes=2): the same PNGs, the page in the
    same order, and a drawing that fails there fails the render here. In a
    process of its own: one with other threads (this one) never forks."""
    done = subprocess.run(
        [sys.executable, "-c", _DRAW_IN_TWO, str(search_dir), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "raised: drawing the report's pictures failed: ValueError: no room for the legend" in (
        done.stdout
    ), done.stdout


def test_a_process_with_other_threads_draws_every_picture_itself(
    search_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orchestrator.report import plots

    def no_fork() -> int:
        raise AssertionError("forked with other threads running")

    monkeypatch.setattr(os, "fork", no_fork)
    blocker = threading.Event()
    other = threading.Thread(target=blocker.wait, daemon=True)
    other.start()
    try:
        pictures = plots.render_pictures(read_report_data(search_dir), tmp_path, processes=2)
    finally:
        blocker.set()
    assert all((tmp_path / p.file_name).is_file() for p in pictures) and len(pictures) >= 4


def test_trials_not_ended_are_not_called_running_without_a_live_chief(
    search_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import replace

    import orchestrator.status
    from orchestrator.cli.report import not_ended_text
    from orchestrator.protocol.trials import SearchState

    data = read_report_data(search_dir)
    # No chief.json: whatever the ledger last said, nothing runs these trials.
    assert not_ended_text(data) == (
        f"{RUNNING} not run (the search is interrupted, with no live chief)"
    )
    failed = replace(data, state=SearchState.FAILED)
    assert not_ended_text(failed) == f"{RUNNING} not run (the search is failed, with no live chief)"
    monkeypatch.setattr(orchestrator.status, "live_chief", lambda path: object())
    live = replace(data, state=SearchState.RUNNING)
    assert not_ended_text(live) == f"{RUNNING} running (written as they end)"
