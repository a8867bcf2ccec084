"""The chief at fleet scale (issue 13): 256 async workers, 208 of them parked.

A real chief in its own process (``bench.chief_proc``) and two client
processes of ``bench.scale_clients``, each worker with its own connection.
T = 48 trials run at once (the oracle is capped there), 96 in all, so at least
208 workers sit in a CreateTrial long-poll while the others report every
0.2 s and heartbeat every 1 s under a 10-s lease. The chief's bound on
parked calls in all is raised so that every idle worker parks: a chief whose
parked long-polls hold RPC threads then makes Report wait for them (seconds),
which this test catches.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.scale import gaps_after_first, run_scale
from orchestrator.protocol.trials import SearchState

WORKERS = 256
RUNNING = 48  # 208 parked
REPORT_LIMIT_MS = 1000.0


def test_refill_gap_is_from_the_latest_end_before_each_later_start() -> None:
    starts = [0.0, 0.0, 1.05, 1.5, 2.2]
    ends = [1.0, 1.4, 2.0]
    assert gaps_after_first(starts, ends, first=2) == pytest.approx([0.05, 0.1, 0.2])


@pytest.mark.timeout(150)
def test_256_workers_with_208_parked_get_fast_reports_and_no_expired_lease(
    tmp_path: Path,
) -> None:
    run = run_scale(workers=WORKERS, running=RUNNING, procs=2, work_dir=tmp_path, timeout_s=45.0)

    assert run.heartbeat_ms is not None
    slowest_ms = max(run.report_ms.max, run.heartbeat_ms.max)
    assert slowest_ms <= REPORT_LIMIT_MS, (
        f"a Report took {slowest_ms:.0f} ms with {WORKERS - RUNNING} workers parked "
        f"(at most {REPORT_LIMIT_MS:g} ms expected): Report p50/p99/max "
        f"{run.report_ms.p50:.0f}/{run.report_ms.p99:.0f}/{run.report_ms.max:.0f} ms, heartbeat "
        f"p99/max {run.heartbeat_ms.p99:.0f}/{run.heartbeat_ms.max:.0f} ms, EndTrial p99 "
        f"{run.end_ms.p99:.0f} ms"
    )
    assert run.expired_leases == 0, f"{run.expired_leases} leases expired"
    assert run.errors == {}, f"calls failed: {run.errors}; e.g. {run.error_samples}"
    assert run.timed_out_workers == 0
    assert run.report_ms.count == 10 * run.trials
    assert run.completed == run.trials == 2 * RUNNING
    assert run.search_state == SearchState.COMPLETED.value
    assert run.answers.get("STOP") == WORKERS  # every worker was told the search ended
