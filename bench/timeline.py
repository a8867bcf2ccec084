"""Trial timelines written by benchmark workers, and what they add up to.

Every worker process (Keras Tuner's or ours) records, per trial, when the
trial's work started and ended and when its result was acknowledged by the
chief, plus how long the CreateTrial call that produced it took. All times are
``time.time()`` on the same machine, so spans from different processes compare.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from bench.stats import Distribution


@dataclass(frozen=True)
class TrialSpan:
    """One trial as one worker saw it."""

    worker: str
    trial_id: str
    start: float  # the trial's work begins (just after CreateTrial returned)
    end: float  # the trial's work is done
    recorded: float  # the chief acknowledged the result (EndTrial returned)
    create_rtt_s: float  # the CreateTrial call that handed this trial out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able mapping (workers print these)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrialSpan:
        """Parse what :meth:`to_json` produced."""
        return cls(
            worker=str(data["worker"]),
            trial_id=str(data["trial_id"]),
            start=float(data["start"]),
            end=float(data["end"]),
            recorded=float(data["recorded"]),
            create_rtt_s=float(data["create_rtt_s"]),
        )


@dataclass(frozen=True)
class DispatchResult:
    """One dispatch run (one system, one W): the headline numbers."""

    system: str
    workers: int
    trials: int
    trial_s: float
    completed: int
    wall_s: float  # first trial start -> last result recorded
    ideal_s: float  # ceil(T / W) * D
    efficiency: float  # ideal / wall
    refill_ms: Distribution  # per worker: one trial's end -> its next trial's start
    create_rtt_ms: Distribution
    startup_s: float  # spawn -> every worker ready (interpreter + imports + connect)
    chief_exit_s: float | None  # last result recorded -> chief process exited
    note: str = ""


def ideal_wall_s(trials: int, workers: int, trial_s: float) -> float:
    """The best possible wall time: ``ceil(T / W) * D``."""
    return math.ceil(trials / workers) * trial_s


def refill_gaps_s(spans: Iterable[TrialSpan]) -> list[float]:
    """Per worker, the gaps between one trial's end and the next one's start."""
    by_worker: dict[str, list[TrialSpan]] = {}
    for span in spans:
        by_worker.setdefault(span.worker, []).append(span)
    gaps: list[float] = []
    for worker_spans in by_worker.values():
        ordered = sorted(worker_spans, key=lambda s: s.start)
        gaps.extend(b.start - a.end for a, b in zip(ordered, ordered[1:], strict=False))
    return gaps


def summarize(
    *,
    system: str,
    workers: int,
    trials: int,
    trial_s: float,
    spans: Sequence[TrialSpan],
    startup_s: float,
    chief_exit_s: float | None,
    note: str = "",
) -> DispatchResult:
    """Turn the workers' spans into a :class:`DispatchResult`."""
    ideal = ideal_wall_s(trials, workers, trial_s)
    wall = max(s.recorded for s in spans) - min(s.start for s in spans) if spans else math.nan
    return DispatchResult(
        system=system,
        workers=workers,
        trials=trials,
        trial_s=trial_s,
        completed=len(spans),
        wall_s=wall,
        ideal_s=ideal,
        efficiency=ideal / wall if spans and wall > 0 else math.nan,
        refill_ms=Distribution.of(refill_gaps_s(spans)).scaled(1000.0),
        create_rtt_ms=Distribution.of([s.create_rtt_s for s in spans]).scaled(1000.0),
        startup_s=startup_s,
        chief_exit_s=chief_exit_s,
        note=note,
    )
