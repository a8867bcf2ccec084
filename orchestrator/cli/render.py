"""Rich renderables shared by the ``ktc`` verbs (status, results, submit's progress).

Everything here builds renderables from the
:class:`~orchestrator.protocol.status_document.StatusDocument` (the same live
or offline) or from :class:`~orchestrator.protocol.trials.TrialView`s; nothing
prints. The verbs decide where the output goes.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from orchestrator.protocol.status_document import StatusDocument, WorkerState, WorkerStatus
from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView, rank_trials

if TYPE_CHECKING:
    from orchestrator.config import SearchSpec

STATE_STYLES: dict[SearchState, str] = {
    SearchState.RUNNING: "bold cyan",
    SearchState.COMPLETED: "bold green",
    SearchState.FAILED: "bold red",
    SearchState.CANCELLED: "bold yellow",
    SearchState.INTERRUPTED: "bold magenta",
}

WORKER_STATE_STYLES: dict[WorkerState, str] = {
    WorkerState.RUNNING: "green",
    WorkerState.IDLE: "dim",
    WorkerState.PENDING: "yellow",
    WorkerState.DRAINING: "cyan",
    WorkerState.STARTING: "blue",
    WorkerState.STOPPED: "dim",
    WorkerState.DEAD: "red",
}

TRIAL_STATUS_STYLES: dict[TrialStatus, str] = {
    TrialStatus.PENDING: "dim",
    TrialStatus.RUNNING: "cyan",
    TrialStatus.COMPLETED: "green",
    TrialStatus.FAILED: "red",
}


def format_score(score: float | None) -> str:
    """A score with enough digits to tell trials apart, or ``-``."""
    return "-" if score is None else f"{score:.4f}"


def printable(text: str) -> str:
    """``text`` with every character the terminal would act on (control and
    format characters: ESC, BEL, bidi overrides) shown as its escape instead.
    The chief refuses them in names and values now; a ledger written before
    that may still hold them."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_value(value: Any) -> str:
    """A hyperparameter value, short."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return printable(str(value))


TERMINAL_HP_CHARS = 120


def format_hyperparameters(values: Mapping[str, Any], *, max_chars: int | None = None) -> str:
    """``name=value`` pairs, without Keras Tuner's bookkeeping (``tuner/...``).

    Cut to ``max_chars`` with ``…``; by default to :data:`TERMINAL_HP_CHARS` when
    stdout is a terminal (a screen of trials stays readable), and never in a pipe
    or a log, where every value must be there to be read back."""
    text = " ".join(
        f"{printable(str(name))}={format_value(value)}"
        for name, value in values.items()
        if not str(name).startswith("tuner/")
    )
    if max_chars is None:
        if not sys.stdout.isatty():
            return text
        max_chars = TERMINAL_HP_CHARS
    return text if len(text) <= max_chars else text[: max_chars - 1] + "…"


def format_duration(seconds: float | None) -> str:
    """``12.3s``, ``4m05s`` or ``-``."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def state_line(document: StatusDocument) -> Text:
    """``search <dir>: RUNNING - message`` with the state coloured."""
    line = Text()
    line.append("search ", style="bold")
    line.append(str(document.search_dir))
    line.append(": ")
    line.append(document.state.value.upper(), style=STATE_STYLES.get(document.state, "bold"))
    if document.message:
        line.append(f" - {document.message}")
    return line


def counts_line(document: StatusDocument) -> Text:
    """Trials by status, out of ``max_trials``."""
    line = Text("trials: ", style="bold")
    for i, status in enumerate(TrialStatus):
        if i:
            line.append(", ")
        count = document.counts.get(status, 0)
        label = status.value.lower()
        if status is TrialStatus.RUNNING and count and document.state is not SearchState.RUNNING:
            # The ledger's in-flight trials, with no chief to run them: resume re-runs them.
            label = "interrupted (to re-run on resume)"
        line.append(f"{count} {label}", style=TRIAL_STATUS_STYLES[status])
    if document.max_trials is not None:
        line.append(f" (max_trials {document.max_trials})")
    return line


def best_line(document: StatusDocument) -> Text:
    """The best trial so far, or a note that there is none yet."""
    best = document.best
    line = Text("best: ", style="bold")
    if best is None:
        line.append("no completed trial yet", style="dim")
        return line
    line.append(f"{document.objective} = {format_score(best.score)}", style="bold green")
    line.append(f"  trial {best.trial_id}  ")
    line.append(format_hyperparameters(best.hyperparameters), style="dim")
    return line


def workers_table(workers: Sequence[WorkerStatus]) -> Table:
    """One row per worker slot: node, GPUs, state, trial, epoch, its warm spare
    (a column only while some slot has one), pending reason."""
    table = Table(title="workers", title_justify="left", expand=False)
    spares = any(worker.spare for worker in workers)  # the column only while one exists
    columns = ("worker", "node", "GPUs", "state", "trial", "epoch")
    for column in (*columns, *(("spare",) if spares else ()), "pending reason"):
        table.add_column(column, no_wrap=column != "pending reason")
    for worker in workers:
        cells: list[str | Text] = [
            worker.worker_id,
            worker.node,
            ",".join(str(g) for g in worker.gpus) if worker.gpus else "cpu",
            Text(worker.state.value, style=WORKER_STATE_STYLES[worker.state]),
            worker.trial_id or "-",
            # Counted from 1, as Keras prints "Epoch 6/30" (the document has its index).
            "-" if worker.epoch is None else str(worker.epoch + 1),
        ]
        if spares:
            cells.append(Text(worker.spare or "-", style="dim"))
        table.add_row(*cells, worker.pending_reason or "")
    return table


def render_status(document: StatusDocument) -> RenderableType:
    """The whole ``ktc status`` view of a status document."""
    parts: list[RenderableType] = [state_line(document), counts_line(document)]
    paused = paused_line(document)
    if paused is not None:
        parts.append(paused)
    if document.workers:
        parts.append(workers_table(document.workers))
    elif document.state is not SearchState.RUNNING:
        parts.append(Text("workers: none (no live chief)", style="dim"))
    else:
        parts.append(Text("workers: none reported", style="dim"))
    parts.append(best_line(document))
    if document.last_failure is not None:
        parts.append(last_failure_line(document))
    return Group(*parts)


def paused_line(document: StatusDocument) -> Text | None:
    """While a running search's fleet is asked for no worker (``ktc scale DIR
    --workers 0``), the line that says nothing will progress and how to resume."""
    if document.state is not SearchState.RUNNING or document.workers_wanted != 0:
        return None
    return Text(
        f"0 workers wanted: no progress until `ktc scale {document.search_dir} --workers N`",
        style="bold yellow",
    )


def last_failure_line(document: StatusDocument) -> Text:
    """The trial that failed last and its error (the real cause, in one line)."""
    failure = document.last_failure
    line = Text("last failure: ", style="bold")
    if failure is not None:
        line.append(f"trial {failure.trial_id}  ")
        line.append(
            failure.error.strip().splitlines()[0] if failure.error.strip() else "-", style="red"
        )
    return line


def trials_table(
    trials: Sequence[TrialView],
    *,
    objective: str,
    title: str | None = None,
    numbered: bool = True,
) -> Table:
    """Trials in the order given: rank, id, status, score, hyperparameters, attempts, worker, time."""
    table = Table(title=title, title_justify="left")
    if numbered:
        table.add_column("#", justify="right")
    table.add_column("trial", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column(objective, justify="right", no_wrap=True)
    table.add_column("hyperparameters")
    table.add_column("attempts", justify="right")
    table.add_column("worker", no_wrap=True)
    table.add_column("time", justify="right", no_wrap=True)
    for i, trial in enumerate(trials, start=1):
        # Text, not markup: an error's "[...]" (shapes, lists) must print as written.
        hp_text = Text(format_hyperparameters(trial.values))
        if trial.status is TrialStatus.FAILED and trial.error_message:
            # The last line: the error itself (one line since workers write it
            # so; older ledgers stored whole tracebacks).
            error = trial.error_message.strip().splitlines()[-1][:400]
            hp_text.append("\nerror: ", style="bold red")
            hp_text.append(error, style="red")
        status = Text(trial.status.value, style=TRIAL_STATUS_STYLES[trial.status])
        if trial.stopped_early:
            status.append("\n" + stopped_early_text(trial), style="dim")
        row: list[Any] = [
            trial.trial_id,
            status,
            format_score(trial.score),
            hp_text,
            str(trial.attempts),
            trial.worker_id or "-",
            format_duration(trial.duration_s),
        ]
        if numbered:
            row.insert(0, str(i) if trial.status is TrialStatus.COMPLETED else "")
        table.add_row(*row)
    return table


def scheduler_line(trials: Sequence[TrialView], spec: SearchSpec) -> str | None:
    """What the search's trial scheduler did, in one line; None without one.

    "Not trained" counts, for each trial it stopped, the epochs from where it
    stopped to the scheduler's ``max_epochs`` (as ``ktc_scheduler_stopped_epochs_total``
    does): what those trials would have trained without it."""
    scheduler, max_epochs = spec.scheduler, spec.scheduler_max_epochs
    if scheduler is None or max_epochs is None:
        return None
    stopped = [t for t in trials if t.stopped_early]
    saved = sum(max(0, max_epochs - (t.epochs_trained or 0)) for t in stopped)
    judged = sum(1 for t in trials if t.status is TrialStatus.COMPLETED)
    return (
        f"trial scheduler ({scheduler.type}): stopped {len(stopped)} of {judged} completed "
        f"trial(s) early, {saved} epoch(s) not trained"
    )


def stopped_early_text(trial: TrialView) -> str:
    """ "stopped at epoch N" (the epochs it trained), or "stopped early" when unknown."""
    epochs = trial.epochs_trained
    return "stopped early" if epochs is None else f"stopped at epoch {epochs}"


def trial_end_line(trial: TrialView, objective: str) -> str:
    """One line for a trial that just ended (``--no-progress``): id, status,
    the score or the error's first line, attempts when retried, duration."""
    parts = [f"trial {trial.trial_id}", trial.status.value]
    if trial.status is TrialStatus.COMPLETED:
        parts.append(f"{objective}={format_score(trial.score)}")
        if trial.stopped_early:
            parts.append(f"{stopped_early_text(trial)} by the trial scheduler")
    elif trial.error_message:
        lines = trial.error_message.strip().splitlines()
        parts.append(lines[0][:300] if lines else "")
    if trial.attempts > 1:
        parts.append(f"attempts={trial.attempts}")
    if trial.duration_s is not None:
        parts.append(format_duration(trial.duration_s))
    return "  ".join(parts)


def top_trials_table(
    trials: Sequence[TrialView], *, objective: str, direction: str, n: int = 5
) -> RenderableType:
    """The ``n`` best completed trials, best first (submit's final table); with
    no completed trial, a line that says so instead of an empty table."""
    ranked = [t for t in rank_trials(list(trials), direction) if t.status is TrialStatus.COMPLETED]
    if not ranked:
        ended = sum(1 for t in trials if t.status is TrialStatus.FAILED)
        why = f" ({ended} failed)" if ended else ""
        return Text(f"no trial completed{why}: there is no best trial to show", style="yellow")
    return trials_table(
        ranked[: max(n, 0)], objective=objective, title=f"top {min(n, len(ranked))} trials"
    )


LOG_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    """A console for the CLI. In a terminal it follows the terminal's width; in a
    log or a pipe rich would assume 80 columns and cut the tables, so use 160."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else LOG_WIDTH)
