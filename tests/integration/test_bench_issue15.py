"""Smoke tests: issue 15's benchmarks (bench/cnn_side_by_side.py, runner_overhead.py,
schedulers_bench.py, scheduler_cost.py) run at a tiny size and yield numbers.

No time thresholds: this machine is shared, and benchmarks are not timed tests.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from bench.cnn_side_by_side import (
    RssSampler,
    Span,
    WayRun,
    busy_share,
    ledger_spans,
    markdown,
    median_run,
    rss_growth,
    shares,
)


def test_the_share_inside_trials_uses_issue_15s_two_windows() -> None:
    spans = [
        Span("a", "0", start=0.0, end=4.0),
        Span("b", "1", start=1.0, end=5.0),
        Span("a", "2", start=5.0, end=9.0),  # the last start: 1 s gap on a
    ]
    assigning, whole = shares(spans, workers=2)
    # First to last ASSIGNED, [0, 5]: a busy 4 of 5, b busy 4 of 5.
    assert assigning == pytest.approx(8 / 10)
    # First ASSIGNED to the last result, [0, 9]: a 8, b 4 of 2 x 9.
    assert whole == pytest.approx(12 / 18)
    assert math.isnan(busy_share(spans, 2, 3.0, 3.0))


def test_rss_growth_is_per_worker_against_its_first_trial() -> None:
    sampler = RssSampler(lambda: [])
    sampler.samples = {
        10: [(0.5, 500.0), (1.5, 600.0), (2.5, 640.0), (3.5, 630.0)],
        11: [(1.2, 550.0), (4.0, 590.0)],  # exits before its second trial's end
    }
    spans = [
        Span("w0", "0", 0.0, 1.0, pid=10),
        Span("w0", "2", 1.0, 2.0, pid=10),
        Span("w0", "3", 2.0, 3.0, pid=10),
        Span("w1", "1", 0.0, 1.0, pid=11),
        Span("w1", "4", 1.0, 5.0, pid=11),
    ]
    # w0: 600 after its first trial, then 640 and 630; w1: 550, then its last sample.
    assert rss_growth(spans, sampler) == {"w0": 40.0, "w1": 40.0}


def test_the_median_row_takes_each_figure_on_its_own() -> None:
    runs = [
        WayRun("ktc", 10.0, 3.0, 1.0, 0.9, 0.8, 0.95, 8, {"w0": 5.0}, load=1.0),
        WayRun("ktc", 30.0, 5.0, 2.0, 0.7, 0.9, 0.97, 8, {"w0": 9.0}, load=3.0),
        WayRun("ktc", 20.0, 4.0, 9.0, 0.8, 0.7, 0.96, 8, {"w0": 1.0}, load=2.0),
        WayRun("ktc", *(math.nan,) * 6, 0, error="boom"),
    ]
    row = median_run(runs)
    assert (row.wall_s, row.exit_s, row.share_assigning, row.best) == (20.0, 2.0, 0.8, 0.96)
    assert row.rss_growth_mib == {"w0": 5.0} and row.load == 2.0
    text = "\n".join(markdown([(row, 4)], "cmd"))
    assert "| ktc | 4 | 20.0 | 4.0 | 2.0 | 0.800 | 0.800 | 0.9600 | 8 | w0 5.0 | 2.00 |" in text


def test_scheduler_cost_measures_every_size() -> None:
    from bench.scheduler_cost import markdown as cost_markdown
    from bench.scheduler_cost import run_scheduler_cost

    rows = run_scheduler_cost([100, 1000], reports=200)
    assert {(r.scheduler, r.kind) for r in rows} == {
        ("asha", "new trial"), ("asha", "new attempt"),
        ("median", "new trial"), ("median", "new attempt"),
    }  # fmt: skip
    assert all(r.median_us > 0 and r.p90_us >= r.median_us for r in rows)
    assert "| asha | new trial | 1,000 |" in "\n".join(cost_markdown(rows, "cmd", 0.5))


def test_schedulers_bench_on_sleep_trials(tmp_path: Path) -> None:
    from bench.schedulers_bench import METHODS, Sizes, markdown, run_seed

    sizes = Sizes(trials=8, epochs=9, workers=2)
    runs = run_seed("sleep", 3, sizes, tmp_path, epoch_s=0.0)

    assert [r.method for r in runs] == list(METHODS) and not any(r.error for r in runs)
    by = {r.method: r for r in runs}
    assert by["random"].epochs_total == 8 * 9 and by["random"].stopped_early == 0
    assert by["asha"].epochs_total < 8 * 9 and by["asha"].stopped_early > 0
    assert by["hyperband"].epochs_total <= 8 * 9  # cut at the budget
    for run in runs:  # the sleep curve's optimum is 1.0 (x=0.3, y=0.7, late epochs)
        assert 0 < run.final_best <= 1.0
        assert run.epochs_to_target is None or 1 <= run.epochs_to_target <= run.epochs_total
    assert by["random"].epochs_to_target is not None
    text = "\n".join(markdown(runs, {"sleep": sizes}, "cmd"))
    assert "| random |" in text and "| asha |" in text

    # The side-by-side reads a real chief's ledger the same way.
    spans = ledger_spans(tmp_path / "sleep-random-s3" / "search")
    assert len(spans) == 8 and all(s.end >= s.start and s.score is not None for s in spans)


@pytest.mark.slow
def test_cnn_side_by_side_runs_ktc_submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.cnn_side_by_side import run_ktc

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    run = run_ktc(way="ktc", warm_spares=False, work_dir=tmp_path, trials=1, epochs=1, workers=1)

    assert run.trials == 1 and 0 < run.best <= 1.0
    assert 0 < run.startup_s < run.wall_s
    assert 0 < run.share_whole <= 1.0
    assert set(run.rss_growth_mib) == {"local-w0"}


@pytest.mark.slow
def test_cnn_side_by_side_runs_keras_tuners_distributed_mode(tmp_path: Path) -> None:
    from bench.cnn_side_by_side import run_kt

    run = run_kt(work_dir=tmp_path, trials=1, epochs=1, workers=1)

    assert run.trials == 1 and 0 < run.best <= 1.0
    assert 0 < run.share_whole <= 1.0
    assert set(run.rss_growth_mib) == {"tuner0"}


@pytest.mark.slow
def test_runner_overhead_pairs_each_trial_with_a_plain_fit(tmp_path: Path) -> None:
    from bench.runner_overhead import markdown as overhead_markdown
    from bench.runner_overhead import run_runner_overhead

    # Two rounds: the second ktc search must make the first's trial again (the seed),
    # or the harness refuses to pair them.
    result = run_runner_overhead(trials=1, epochs=1, rounds=2, work_dir=tmp_path)

    assert len(result.pairs) == 1 and len(result.loads) == 2
    pair = result.pairs[0]
    assert len(pair.ktc_runs_s) == 2 and len(pair.plain_runs_s) == 2
    assert min(pair.ktc_runs_s) > 0 and min(pair.plain_runs_s) > 0
    # One epoch: the phases are the start to its end, nothing, and the end (medians
    # of two rounds are their means, so the phases still add up to the trial).
    assert pair.ktc_phases_s[1] == 0.0 and pair.plain_phases_s[1] == 0.0
    assert sum(pair.ktc_phases_s) == pytest.approx(pair.ktc_s)
    assert sum(pair.plain_phases_s) == pytest.approx(pair.plain_s)
    assert not math.isnan(result.median_overhead)
    assert "Median overhead over 1 trials" in "\n".join(overhead_markdown(result, "cmd"))


def test_the_profile_summary_buckets_py_spy_stacks(tmp_path: Path) -> None:
    from bench.runner_overhead import profile_lines, summarize_profile

    folded = tmp_path / "runner.folded"
    trial = "run (r.py:1);TrialRunner._run_keras_tuner (workers/runner.py:9);_KtcTuner._try_run_and_update_trial (workers/runner.py:3);Tuner._try_build (kt/tuner.py:162)"  # noqa: E501
    folded.write_text(
        f"{trial} 30\n"
        f"{trial};clear_session (keras/global_state.py:98) 10\n"
        f"{trial};_KtcTuner._build_hypermodel (workers/runner.py:549) 5\n"
        "run (r.py:1);TrialRunner._run_keras_tuner (workers/runner.py:9);"
        "TrialRunner._set_up_keras_tuner (workers/runner.py:385) 7\n"
        "heartbeat (client.py:5) 2\n"
    )
    rows = {name: n for name, n, _ in summarize_profile(folded)}
    assert rows["KT's gc.collect() (and size check) before the build"] == 30
    assert rows["KT's clear_session() before the build"] == 10
    assert rows["build + compile"] == 5
    assert rows["set-up, once (TF import, dataset, tuner)"] == 7
    assert rows["other threads"] == 2
    text = "\n".join(profile_lines(folded))
    assert "| KT's gc.collect() (and size check) before the build | 30 | 66.7 % |" in text
