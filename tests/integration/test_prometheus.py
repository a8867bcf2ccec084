"""Metrics for Prometheus (issue 15, item 4): a live chief's endpoint, scraped
over HTTP and parsed with prometheus-client's own parser, says what the ledger
and the RPCs did; its labels carry no secret; it is off unless asked for."""

from __future__ import annotations

import json
import re
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.cli.submit import with_metrics_port
from orchestrator.config import default_cluster
from orchestrator.errors import ConfigError, InvalidRequestError
from orchestrator.protocol.client import TrialClient
from tests.helpers import float_space, make_search

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_a_live_chief_serves_what_its_trials_and_rpcs_did(
    start_chief: Callable[..., tuple[Any, Any]], search_dir: Path
) -> None:
    port = _free_port()
    cluster = with_metrics_port(default_cluster(), port)
    search = make_search(
        {"type": "random", "max_trials": 4, "seed": 1}, failure={"retries_per_trial": 2}
    )
    chief, ep = start_chief(search, cluster=cluster, initial_space=float_space())
    chief.worker_states = lambda: {"running": 1, "idle": 2}
    client = TrialClient(ep.address, ep.token, worker_id="w0")
    first = client.create_trial(wait_s=1.0).trial
    assert first is not None
    for epoch in range(3):
        client.report(first, epoch, {"score": 0.1 * epoch})
    client.end_trial(first, "INVALID", error_message="x")  # requeued, counted
    again = client.create_trial(wait_s=1.0).trial  # the same trial, attempt 2: a refill
    assert again is not None and again.trial_id == first.trial_id
    client.end_trial(again, "COMPLETED", metrics={"score": 0.5})
    with pytest.raises(InvalidRequestError):
        client.get_trial("no such trial")
    running = client.create_trial(wait_s=1.0).trial
    assert running is not None

    samples = _scrape(port)

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert value("ktc_trials", status="completed") == 1
    assert value("ktc_trials", status="running") == 1
    assert value("ktc_leases") == 1
    assert value("ktc_queue_depth") == 0
    assert value("ktc_requeues_total", cause="attempt_failed") == 1
    assert value("ktc_rpc_duration_seconds_count", method="Report", code="OK") == 3
    assert value("ktc_rpc_duration_seconds_count", method="EndTrial", code="OK") == 2
    assert value("ktc_rpc_duration_seconds_count", method="GetTrial", code="INVALID_ARGUMENT") == 1
    assert value("ktc_slot_refill_seconds_count") == 2  # w0: after attempt 1, after the end
    assert value("ktc_workers", state="idle") == 2
    assert value("ktc_parked_create_trials") == 0
    # No label carries a secret or a path.
    label_values = {v for _, labels in samples for _, v in labels}
    assert not any(ep.token in v or str(search_dir) in v or "/" in v for v in label_values)
    # Every series the shipped Grafana dashboard queries is one the chief serves.
    dashboard = json.loads((REPO / "deploy" / "grafana" / "ktcluster-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(ktc_[a-z_]+)", target["expr"])
    }
    served = {name for name, _ in samples}
    assert queried and queried <= served, queried - served
    # Loopback only.
    with socket.socket() as probe:
        probe.settimeout(2)
        assert probe.connect_ex(("127.0.0.1", port)) == 0
    client.close()
    chief.close()
    with pytest.raises(OSError):
        _scrape(port)  # closed with the chief


def test_the_endpoint_is_off_by_default_and_a_bad_port_is_refused(
    start_chief: Callable[..., tuple[Any, Any]],
) -> None:
    chief, _ = start_chief(make_search(), initial_space=float_space())
    assert chief.metrics.port == 0  # nothing served
    with pytest.raises(ConfigError, match=r"--metrics-port: expected a port 0..65535"):
        with_metrics_port(default_cluster(), 70000)


def test_a_metrics_port_in_use_is_refused_and_the_chief_does_not_serve(
    search_dir: Path,
) -> None:
    import logging

    from orchestrator.chief.chief import Chief

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        chief = Chief.create(
            make_search(),
            search_dir,
            cluster=with_metrics_port(default_cluster(), port),
            initial_space=float_space(),
        )
        with pytest.raises(ConfigError, match=rf"could not serve metrics on 127\.0\.0\.1:{port}"):
            chief.start()
    assert chief._server is None and chief._pools is None  # the gRPC server was stopped
    assert logging.getLogger("orchestrator").level == logging.NOTSET  # its log detached
    chief.close()


def test_submit_with_a_taken_metrics_port_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orchestrator.cli.main import main

    search_file = tmp_path / "search.yaml"
    search_file.write_text(
        "name: sleepy\n"
        "hypermodel: {name: sleep, options: {epoch_s: 0.01}}\n"
        "objective: val_accuracy\n"
        "oracle: {type: random, max_trials: 2, seed: 1}\n"
    )
    target = tmp_path / "search"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["submit", str(search_file), "--dir", str(target), "--metrics-port", str(port)])
    assert code == 2
    assert f"could not serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err
    assert not target.exists()  # no search directory, no ledger, no chief, no Ray
