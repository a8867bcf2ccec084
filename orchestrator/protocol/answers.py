"""The chief's answers to the trial RPCs, as typed values.

The broker returns these; the service turns them into protocol messages, and
the client turns the messages back into its own views of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from orchestrator.protocol.trials import SearchState, TrialStatus, TrialView


class AssignmentKind(str, Enum):
    TRIAL = "TRIAL"
    WAIT = "WAIT"
    STOP = "STOP"


@dataclass(frozen=True)
class Assignment:
    """The answer to CreateTrial."""

    kind: AssignmentKind
    trial_id: str | None = None
    attempt: int = 0
    token: str = ""
    values: dict[str, Any] | None = None
    trial_state: dict[str, Any] | None = None
    lease_timeout_s: float = 0.0
    reports_async: bool = False  # no trial scheduler: see Trial.reports_async
    reason: str = ""


@dataclass(frozen=True)
class ReportDecision:
    """The answer to Report.

    ``scheduler``: the stop is the trial scheduler's (the worker ends the
    attempt COMPLETED with its best score so far); otherwise a stop requeues
    the trial (preemption, cancel, the search's end).
    """

    stop: bool
    reason: str
    lease_expires_in_s: float
    scheduler: bool = False


@dataclass(frozen=True)
class EndOutcome:
    """The answer to EndTrial."""

    recorded: bool  # False when this exact call had already been recorded
    final_status: TrialStatus


@dataclass(frozen=True)
class SearchSummary:
    """The search as a whole, for status displays."""

    state: SearchState
    message: str
    trials_by_status: dict[str, int]
    max_trials: int | None
    objective: str
    direction: str
    best: TrialView | None
