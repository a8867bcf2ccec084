"""Trial schedulers at a real chief over gRPC (TrialClient workers, instant
epochs, no TF): known learning curves -> the right trials get STOP at the right
epochs, end COMPLETED marked stopped early with their best score so far, the
oracle learns that score, and a chief resumed in the middle of a rung decides
as the one before the restart would have."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from orchestrator.chief.chief import Chief
from orchestrator.chief.ledger import Ledger
from orchestrator.chief.replay import replay
from orchestrator.protocol.client import (
    AssignmentKind,
    LeasedTrial,
    ReportAction,
    TrialClient,
)
from orchestrator.protocol.trials import SearchState, TrialStatus
from tests.helpers import float_space, make_search

StartChief = Callable[..., tuple[Chief, Any]]

EPOCHS = 9
# The i-th trial handed out follows base + 0.01 * epoch. With ASHA (grace 1,
# factor 3, 9 epochs) the rungs are after 1 and 3 epochs: report epochs 0 and 2.
BASES = (0.5, 0.4, 0.6, 0.55, 0.52)
# Hand-computed (see test_schedulers for the rule):
#   rung 0: a 0.50 first -> on; b 0.40 (n=2, keep 1) -> STOP; c 0.60 best -> on;
#           d 0.55 (n=4, keep 2, 1 better) -> on; e 0.52 (n=5, keep 2, 2 better) -> STOP
#   rung 2: a 0.52 first -> on; c 0.62 (n=2, keep 1) best -> on;
#           d 0.57 (n=3, keep 1, c better) -> STOP
EXPECTED_STOP_EPOCH = {0: None, 1: 0, 2: None, 3: 2, 4: 0}


def _search(scheduler: dict[str, Any]) -> Any:
    oracle = {"type": "random", "max_trials": len(BASES), "seed": 1}
    return make_search(oracle, name="sched", epochs=EPOCHS, scheduler=scheduler)


def _train(
    client: TrialClient, trial: LeasedTrial, base: float, first_epoch: int = 0
) -> tuple[int | None, float]:
    """Report base + 0.01 * epoch per epoch, as the light runner does: a
    scheduler STOP ends COMPLETED with the best epoch. (stop epoch, best score)."""
    best: tuple[float, int] | None = None
    stop_epoch = None
    for epoch in range(first_epoch, EPOCHS):
        score = round(base + 0.01 * epoch, 6)
        if best is None or score > best[0]:
            best = (score, epoch)
        action = client.report(trial, epoch, {"score": score})
        assert action is not ReportAction.STOP
        if action is ReportAction.STOP_EARLY:
            stop_epoch = epoch
            break
    assert best is not None
    client.end_trial(trial, "COMPLETED", metrics={"score": best[0]}, best_step=best[1])
    return stop_epoch, best[0]


def _next(client: TrialClient) -> LeasedTrial:
    assignment = client.create_trial(wait_s=1.0)
    assert assignment.kind is AssignmentKind.TRIAL and assignment.trial is not None
    return assignment.trial


def test_asha_stops_the_trials_outside_the_top_third_at_each_rung(
    start_chief: StartChief, search_dir: Path
) -> None:
    chief, ep = start_chief(
        _search({"type": "asha", "grace_epochs": 1, "reduction_factor": 3}),
        initial_space=float_space(),
        long_poll_s=1.0,
    )
    stops: dict[int, int | None] = {}
    bests: dict[str, float] = {}
    order: list[str] = []
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        for i, base in enumerate(BASES):
            trial = _next(client)
            order.append(trial.trial_id)
            stops[i], bests[trial.trial_id] = _train(client, trial, base)
        assert client.create_trial(wait_s=1.0).kind is AssignmentKind.STOP
    assert chief.wait(10) is SearchState.COMPLETED
    assert stops == EXPECTED_STOP_EPOCH

    chief.broker.apply_pending_ends()
    oracle = chief.broker.oracle_host.oracle
    with Ledger(search_dir / "ledger.db", read_only=True) as ledger:
        replayed = replay(ledger)
    for i, trial_id in enumerate(order):
        rec = replayed.records[trial_id]
        assert rec.status is TrialStatus.COMPLETED
        assert rec.stopped_early is (EXPECTED_STOP_EPOCH[i] is not None)
        assert rec.score == bests[trial_id]
        # The oracle learned the best score so far (Bayesian search learns from it).
        assert oracle.trials[trial_id].score == bests[trial_id]
    assert bests[order[3]] == 0.57  # d: its epoch-2 score, the best of its 3 epochs
    # Prometheus: epochs saved = 9 - 1 (b) + 9 - 1 (e) + 9 - 3 (d).
    saved = chief.metrics.registry.get_sample_value("ktc_scheduler_stopped_epochs_total")
    assert saved == 22
    # The live book says the same as the replayed one.
    assert {t: r.stopped_early for t, r in chief.broker.book.records.items()} == {
        t: r.stopped_early for t, r in replayed.records.items()
    }


def test_median_stopping_over_grpc_with_a_min_objective(
    start_chief: StartChief, search_dir: Path
) -> None:
    search = make_search(
        {"type": "random", "max_trials": 3, "seed": 1},
        objective={"name": "loss", "direction": "min"},
        name="median",
        epochs=4,
        scheduler={"type": "median", "grace_epochs": 2, "min_trials": 2},
    )
    chief, ep = start_chief(search, initial_space=float_space(), long_poll_s=1.0)
    curves = ([1.0, 0.8, 0.6, 0.5], [0.9, 0.7, 0.5, 0.4], [1.2, 1.1, 1.0, 0.9])
    stopped_at: list[int | None] = []
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        for curve in curves:
            trial = _next(client)
            stop = None
            for epoch, loss in enumerate(curve):
                if client.report(trial, epoch, {"loss": loss}) is ReportAction.STOP_EARLY:
                    stop = epoch
                    break
            best = min(curve[: (stop if stop is not None else 3) + 1])
            client.end_trial(trial, "COMPLETED", metrics={"loss": best})
            stopped_at.append(stop)
    assert chief.wait(10) is SearchState.COMPLETED
    # The third trial: after 2 epochs its best (1.1) is worse than the median
    # of the others' bests there (0.8 and 0.7 -> 0.75).
    assert stopped_at == [None, None, 1]
    third = chief.broker.book.records[chief.broker.book.start_order[2]]
    assert third.stopped_early and third.score == 1.1


def test_a_chief_resumed_in_the_middle_of_a_rung_decides_as_before(
    start_chief: StartChief, search_dir: Path
) -> None:
    """a, b, c run; d reports its first rung and the chief dies (closed with d
    in flight). The resumed chief rebuilds the rungs from the ledger: d, still
    holding its lease, is stopped at the second rung as without the restart
    (with empty rungs it would be first there and go on), and e at the first."""
    chief, ep = start_chief(
        _search({"type": "asha", "grace_epochs": 1, "reduction_factor": 3}),
        initial_space=float_space(),
        long_poll_s=1.0,
    )
    with TrialClient(ep.address, ep.token, worker_id="w0") as client:
        for base in BASES[:3]:
            _train(client, _next(client), base)
        d = _next(client)
        assert client.report(d, 0, {"score": 0.55}) is ReportAction.CONTINUE
        assert client.report(d, 1, {"score": 0.56}) is ReportAction.CONTINUE
    assert chief.broker.scheduler is not None
    before = chief.broker.scheduler.state()
    chief.close(grace_s=0.2)  # no interrupt: as if the chief died

    resumed = Chief.resume(search_dir, long_poll_s=1.0)
    try:
        assert resumed.broker.scheduler is not None
        assert resumed.broker.scheduler.state() == before
        rep = resumed.start()
        with TrialClient(rep.address, rep.token, worker_id="w0") as client:
            stop_epoch, best = _train(client, d, BASES[3], first_epoch=2)
            assert (stop_epoch, best) == (2, 0.57)
            e = _next(client)
            assert _train(client, e, BASES[4]) == (0, 0.52)
            assert client.create_trial(wait_s=1.0).kind is AssignmentKind.STOP
        assert resumed.wait(10) is SearchState.COMPLETED
        records = resumed.broker.book.records
        assert records[d.trial_id].stopped_early and records[e.trial_id].stopped_early
        assert sum(r.stopped_early for r in records.values()) == 3
    finally:
        resumed.close(grace_s=0.2)
