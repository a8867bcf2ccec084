"""``index.html`` of a report: one self-contained page, readable offline.

No script at all, no stylesheet or font from elsewhere: the style is inline
and the pictures are PNG files beside the page, linked by relative path. Every
text that comes from the ledger (names, values, error messages) is escaped.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from orchestrator.protocol.trials import TrialStatus
from orchestrator.report.data import HyperparameterRow, ReportData, TrialRow
from orchestrator.report.plots import Picture

# Longer error messages are cut in the failures table (the whole text is in `ktc results`).
_ERROR_CHARS = 600

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5em auto;
       max-width: 1400px; padding: 0 1em; color: #1d2330; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #d8dde3; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #d8dde3; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f4f7; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted { color: #6b7480; } .state { font-weight: bold; }
.COMPLETED { color: #1a7f37; } .FAILED { color: #c62828; } .RUNNING { color: #1f6feb; }
.PENDING { color: #6b7480; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #e3e7ec; }
figcaption { color: #4b5563; font-size: 0.9em; }
pre { white-space: pre-wrap; margin: 0; font-size: 0.85em; }
.scroll { max-height: 40em; overflow: auto; }
"""


def render_index(data: ReportData, pictures: Sequence[Picture], *, generated_at: float) -> str:
    """The page for ``data``, linking ``pictures`` (file names relative to the page)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(data.name)}: ktcluster report</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{_e(data.name)}</h1>",
        f'<p class="muted">ktcluster report of {_e(str(data.search_dir))}, written '
        f"{_e(_when(generated_at))} from its ledger. Refreshed as trials end while the "
        "search runs; reload to see the latest.</p>",
        _summary(data),
        _evaluation(data),
        _damaged(data),
        _failures(data),
        _pictures(pictures),
        _trials(data),
        _space(data.space),
        "</body></html>",
    ]
    return "\n".join(part for part in parts if part)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def _table(
    header: Iterable[str], rows: Iterable[Iterable[str]], *, numeric: frozenset[int] = frozenset()
) -> str:
    """An HTML table; cells are HTML already (escape before)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in numeric else f"<td>{c}</td>"
            for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _summary(data: ReportData) -> str:
    counts = data.counts()
    total = len(data.trials)
    count_text = (
        ", ".join(
            f'<span class="{s.value}">{n} {s.value.lower()}</span>' for s, n in counts.items() if n
        )
        or "no trials yet"
    )
    best = data.best()
    rows = [
        (
            "state",
            f'<span class="state {_e(data.state.value.upper())}">{_e(data.state.value)}</span>'
            + (f" &mdash; {_e(data.message)}" if data.message else ""),
        ),
        ("objective", f"{_e(data.objective)} ({_e(data.direction)}imise)"),
        (
            "trials",
            f"{total}"
            + (f" of at most {data.max_trials}" if data.max_trials else "")
            + f": {count_text}",
        ),
        ("started", _e(_when(data.created_at))),
        ("search id", f"<code>{_e(data.search_id)}</code>"),
    ]
    if best is not None:
        values = ", ".join(f"{_e(k)}={_e(_value(v))}" for k, v in best.values.items())
        rows.insert(
            2,
            (
                "best trial",
                f"<b>{_e(best.trial_id)}</b>: {_e(data.objective)} = "
                f"<b>{_e(_num(best.score, 6))}</b> (epoch {best.best_step + 1})"
                f"<br><code>{values}</code>",
            ),
        )
    else:
        rows.insert(2, ("best trial", '<span class="muted">no completed trial yet</span>'))
    body = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    return f"<h2>Summary</h2><table>{body}</table>"


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _damaged(data: ReportData) -> str:
    if not data.damaged:
        return ""
    items = "".join(f"<li>{_e(d)}</li>" for d in data.damaged)
    return (
        "<h2>Damaged ledger rows</h2><p>These rows of the ledger do not decode; the report "
        f"shows everything else.</p><ul>{items}</ul>"
    )


def _failures(data: ReportData) -> str:
    failed = [t for t in data.trials if t.status is TrialStatus.FAILED]
    if not failed:
        return ""
    by_message = Counter((t.error_message or "(no message)") for t in failed)
    common = "".join(
        f"<li>{n} &times; <code>{_e(_cut(m))}</code></li>" for m, n in by_message.most_common(5)
    )
    rows = (
        [
            _e(t.trial_id),
            str(t.attempts),
            _e(t.worker_id or "-"),
            f"<pre>{_e(_cut(t.error_message or '(no message)'))}</pre>",
        ]
        for t in failed
    )
    return (
        f"<h2>Failures ({len(failed)})</h2><p>Most common errors:</p><ul>{common}</ul>"
        '<div class="scroll">'
        + _table(["trial", "attempts", "worker", "error"], rows, numeric=frozenset({1}))
        + "</div>"
    )


def _cut(text: str) -> str:
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 1] + "…"


def _pictures(pictures: Sequence[Picture]) -> str:
    if not pictures:
        return '<h2>Pictures</h2><p class="muted">Nothing to draw yet: no trial has reported an epoch.</p>'
    figures = [
        f'<figure><img src="{_e(p.file_name)}" alt="{_e(p.title)}" loading="lazy">'
        f"<figcaption><b>{_e(p.title)}.</b> {_e(p.caption)}</figcaption></figure>"
        for p in pictures
    ]
    return "<h2>Pictures</h2>" + "".join(figures)


def _trials(data: ReportData) -> str:
    names = data.hyperparameter_names()
    header = [
        "trial",
        "status",
        data.objective,
        "attempts",
        "worker",
        "duration",
        "epochs run",
        "stopped early",
        *names,
    ]
    rows = []
    for trial in data.ranked():
        rows.append(
            [
                _e(trial.trial_id),
                f'<span class="{trial.status.value}">{trial.status.value.lower()}</span>',
                _e(_num(trial.score, 6)),
                str(trial.attempts),
                _e(trial.worker_id or "-"),
                _e(_duration(_trial_duration(trial))),
                _epochs_text(trial),
                _stopped_text(trial),
                *(_e(_value(trial.values[n])) if n in trial.values else "-" for n in names),
            ]
        )
    return (
        f'<h2>Trials ({len(data.trials)})</h2><p class="muted">Completed trials best first, '
        "then the others in creation order. Durations are the last attempt's.</p>"
        + '<div class="scroll">'
        + _table([_e(h) for h in header], rows, numeric=frozenset({2, 3, 6}))
        + "</div>"
    )


def _trial_duration(trial: TrialRow) -> float | None:
    if trial.duration_s is not None:
        return trial.duration_s
    if trial.history and trial.ended_ts is not None:
        return trial.ended_ts - trial.history[0].ts
    return None


def _epochs_text(trial: TrialRow) -> str:
    if trial.planned_epochs is None:
        return str(trial.epochs_run)
    return f"{trial.epochs_run} / {trial.planned_epochs}"


def _evaluation(data: ReportData) -> str:
    """The test-split scores ``ktc evaluate`` stored (``DIR/evaluation.json``), if any."""
    from orchestrator.errors import KtClusterError
    from orchestrator.evaluation_results import load_results

    try:
        results = load_results(data.search_dir)
    except KtClusterError as exc:
        return f'<h2>Test split</h2><p class="muted">{_e(exc)}</p>'
    if results is None:
        return ""
    names: list[str] = []
    scored = [t.metrics for t in results.trials]
    if results.retrain is not None:
        scored.append(results.retrain.metrics)
    for metrics in scored:
        names.extend(n for n in metrics if n not in names)
    rows = [
        [
            _e(t.rank),
            _e(t.trial_id),
            _num(t.score),
            *(_num(t.metrics.get(n)) for n in names),
            _e(t.test_examples),
            _e(", ".join(f"{k}={_value(v)}" for k, v in t.hyperparameters.items())),
        ]
        for t in results.trials
    ]
    r = results.retrain
    if r is not None:
        rows.append(
            [
                "",
                _e(f"retrained ({r.trial_id})"),
                "-",
                *(_num(r.metrics.get(n)) for n in names),
                _e(r.test_examples),
                _e(
                    f"{r.epochs} epochs on {r.train_examples}+{r.val_examples} samples, "
                    f"seed {r.seed}; model: {r.model_path}"
                ),
            ]
        )
    numeric = frozenset(range(2, 4 + len(names)))
    header = ["#", "trial", _e(results.objective), *(_e(f"test {n}") for n in names)]
    return (
        f'<h2>Test split</h2><p class="muted">Measured by <code>ktc evaluate</code> on '
        f"{_e(_when(results.evaluated_at))}, test split {_e(results.test_split or '-')}: each "
        "trial's best epoch, and the best hyperparameters retrained on training and "
        "validation merged.</p>"
        + _table([*header, "samples", "hyperparameters"], rows, numeric=numeric)
    )


def _space(space: Sequence[HyperparameterRow]) -> str:
    if not space:
        return (
            '<h2>Search space</h2><p class="muted">Not declared yet: the first worker '
            "declares it when it builds its first model.</p>"
        )
    rows = (
        [
            _e(hp.name),
            _e(hp.kind),
            _e(hp.range_text()),
            _e(_value(hp.default)),
            _e("; ".join(hp.conditions) or "-"),
        ]
        for hp in space
    )
    return f"<h2>Search space ({len(space)})</h2>" + _table(
        ["name", "type", "range or values", "default", "conditions"], rows
    )


def _stopped_text(trial: TrialRow) -> str:
    """The "stopped early" cell: by the trial scheduler, or by a callback."""
    if trial.stopped_by_scheduler:
        return "scheduler"
    return "yes" if trial.stopped_early else ""
