"""TLS end to end on loopback: the chief serves with certificates made by
`ktc cluster certs`; a worker that trusts the CA connects, one without the CA
or with another CA is refused, and the search token is still required."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.chief.chief import Chief
from orchestrator.config import parse_cluster
from orchestrator.errors import AuthenticationError, ChiefUnavailableError
from orchestrator.protocol.client import AssignmentKind, TrialClient
from tests.helpers import float_space, make_search


@pytest.fixture
def tls_chief(tmp_path: Path):
    from deploy.certs import generate_certs

    certs = generate_certs(tmp_path / "certs", ["127.0.0.1", "localhost"])
    cluster = parse_cluster(
        {
            "chief": {
                "host": "127.0.0.1",
                "port": 0,
                "tls": {"cert": str(certs.cert), "key": str(certs.key), "ca": str(certs.ca)},
            },
            "nodes": [{"name": "local", "cpus": 2, "cpu_workers": 1}],
        }
    )
    chief = Chief.create(
        make_search({"type": "random", "max_trials": 2}),
        tmp_path / "search",
        cluster=cluster,
        initial_space=float_space(),
        long_poll_s=0.5,
    )
    endpoint = chief.start()
    yield chief, endpoint, certs
    chief.cancel()
    chief.close()


def test_worker_with_the_ca_connects_and_runs_a_trial(tls_chief) -> None:
    chief, endpoint, certs = tls_chief
    assert endpoint.tls_ca == str(certs.ca)
    with TrialClient(
        endpoint.address, endpoint.token, worker_id="w0", ca_pem=certs.ca.read_bytes()
    ) as client:
        assignment = client.create_trial(wait_s=1.0)
        assert assignment.kind is AssignmentKind.TRIAL
        assert client.end_trial(assignment.trial, "COMPLETED", metrics={"score": 0.5})
    assert chief.broker.summary().trials_by_status["COMPLETED"] == 1


def test_client_from_search_dir_uses_the_recorded_ca(tls_chief) -> None:
    chief, _, _ = tls_chief
    with TrialClient.from_search_dir(chief.search_dir, worker_id="cli") as client:
        assert client.search_state().objective == "score"


def test_plaintext_client_is_refused(tls_chief) -> None:
    _, endpoint, _ = tls_chief
    with (
        TrialClient(
            endpoint.address, endpoint.token, worker_id="w0", reconnect_timeout_s=1.0
        ) as client,
        pytest.raises(ChiefUnavailableError, match="no chief answers"),
    ):
        client.create_trial(wait_s=0.1)


def test_wrong_ca_is_refused(tls_chief, tmp_path: Path) -> None:
    from deploy.certs import generate_certs

    chief, endpoint, _ = tls_chief
    other = generate_certs(tmp_path / "other", ["127.0.0.1"])
    with (
        TrialClient(
            endpoint.address,
            endpoint.token,
            worker_id="w0",
            ca_pem=other.ca.read_bytes(),
            reconnect_timeout_s=1.0,
        ) as client,
        pytest.raises(ChiefUnavailableError),
    ):
        client.create_trial(wait_s=0.1)
    # Nothing was handed out over the refused connection.
    assert chief.broker.summary().trials_by_status["RUNNING"] == 0


def test_token_is_still_required_over_tls(tls_chief) -> None:
    chief, endpoint, certs = tls_chief
    with (
        TrialClient(
            endpoint.address, "not-the-token", worker_id="w0", ca_pem=certs.ca.read_bytes()
        ) as client,
        pytest.raises(AuthenticationError, match="refused the token"),
    ):
        client.create_trial(wait_s=0.1)
    assert chief.broker.summary().trials_by_status["RUNNING"] == 0
