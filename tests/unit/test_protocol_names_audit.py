"""Strict names, the audit log and the upload throttle, without a chief."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from orchestrator.chief.audit import AuditLog
from orchestrator.chief.limits import PeerSlots, UploadThrottle
from orchestrator.clock import FakeClock
from orchestrator.errors import InvalidRequestError, LimitExceededError
from orchestrator.protocol.names import (
    check_artifact_name,
    check_trial_id,
    is_artifact_name,
    is_trial_id,
    is_worker_id,
)


@pytest.mark.parametrize("value", ["00", "01", "1000", "a3f9c2", "trial_1.v2"])
def test_keras_tuner_trial_ids_are_accepted(value: str) -> None:
    assert is_trial_id(value)


@pytest.mark.parametrize("value", ["local-w0", "gpu-node-1-w3", "cli", "n" * 128 + "-w99"])
def test_fleet_worker_ids_are_accepted(value: str) -> None:
    assert is_worker_id(value)


@pytest.mark.parametrize(
    "value", ["", "..", ".", "a..b", "../x", "a/b", "-x", "x\n", "x y", "é", "7" * 129]
)
def test_malformed_trial_ids_are_refused(value: str) -> None:
    assert not is_trial_id(value)
    with pytest.raises(InvalidRequestError, match=r"^trial_id: expected a trial id matching"):
        check_trial_id(value)


@pytest.mark.parametrize(
    "value", ["..", "a/../b", "/abs", "a//b", ".hidden", "a/", "a\\b", "x" * 256, "a/" * 8 + "b"]
)
def test_malformed_artifact_names_are_refused(value: str) -> None:
    assert not is_artifact_name(value)
    with pytest.raises(InvalidRequestError, match=r"^name: expected an artifact name"):
        check_artifact_name(value)


def test_the_audit_log_is_private_redacts_the_token_and_stops_when_full(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditLog(path, redact=("s3cret",), clock=FakeClock(), max_bytes=600)
    audit("EndTrial", "ipv4:127.0.0.1:5", "local-w0", "token s3cret was wrong")
    entry = json.loads(path.read_text().splitlines()[0])
    assert entry["reason"] == "token <redacted> was wrong"
    assert (entry["method"], entry["peer"], entry["worker_id"]) == (
        "EndTrial",
        "ipv4:127.0.0.1:5",
        "local-w0",
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    for _ in range(20):
        audit.record("Report", "p", "w", "x" * 100)
    lines = path.read_text().splitlines()
    assert "audit log full" in lines[-1] and path.stat().st_size < 800
    audit.close()


def test_peer_slots_refuse_past_the_peer_bound_and_stop_parking_past_the_total() -> None:
    slots = PeerSlots(per_peer=1, total=2, what="parked CreateTrial calls")
    with slots.hold("a") as parked_a, slots.hold("b") as parked_b:
        assert parked_a and parked_b
        with (
            pytest.raises(LimitExceededError, match=r"connection \(a\) already holds 1"),
            slots.hold("a"),
        ):
            pass
        with slots.hold("c") as parked_c:
            assert not parked_c  # past the total: served without parking
    assert slots.held() == 0


def test_the_upload_throttle_allows_a_second_of_burst_then_the_rate() -> None:
    clock = FakeClock()
    throttle = UploadThrottle(100.0, clock)
    assert throttle.delay_s("p", 100) == 0.0
    assert throttle.delay_s("p", 50) == pytest.approx(0.5)
    assert throttle.delay_s("q", 100) == 0.0  # per peer
    clock.advance(10)
    assert throttle.delay_s("p", 100) == 0.0
