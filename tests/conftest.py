"""Shared fixtures for the chief's tests: a search directory, a fake clock, a
unit-level broker factory (no network) and a started chief (real gRPC on a free
port)."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Property tests: a fixed budget in CI, a longer search behind
# KTC_HYPOTHESIS_PROFILE=long (e.g. `make test-long-properties`).
settings.register_profile(
    "ci",
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)
settings.register_profile(
    "long",
    max_examples=400,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("KTC_HYPOTHESIS_PROFILE", "ci"))

# The chief and its tests never need a GPU; keep TF off any that exist.
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# The user's own settings stay out of the tests: a cluster file remembered with
# `ktc use` would send every test's `ktc submit` (and a search id given as DIR)
# to that cluster. Every process the tests start inherits this empty folder;
# tests of `ktc use` set their own.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="ktc-test-config-")
atexit.register(shutil.rmtree, os.environ["XDG_CONFIG_HOME"], True)


@pytest.fixture(autouse=True)
def _close_gp_helpers() -> Iterator[None]:
    """Reap the Bayesian oracle's GP helper processes a test started (tests
    rarely close their oracle hosts; the processes are this process's children,
    which other tests count)."""
    yield
    module = sys.modules.get("orchestrator.chief.gp_process")
    if module is not None:
        module.close_all()


@pytest.fixture
def search_dir(tmp_path: Path) -> Path:
    """An empty directory for one search (the chief creates it)."""
    return tmp_path / "search"


@pytest.fixture
def fake_clock() -> Any:
    """A clock that moves only when the test advances it."""
    from orchestrator.clock import FakeClock

    return FakeClock()


@pytest.fixture
def make_broker(tmp_path: Path, fake_clock: Any) -> Iterator[Callable[..., Any]]:
    """Build a TrialBroker over a real Ledger in tmp_path and a real OracleHost.

    ``make_broker(search, initial_space=None, ledger_name="ledger.db")`` records
    the initial space and the RUNNING state, as Chief.create does.
    """
    from orchestrator.chief.broker import TrialBroker
    from orchestrator.chief.ledger import Ledger
    from orchestrator.chief.oracle_host import OracleHost

    ledgers: list[Any] = []

    def build(search: Any, *, initial_space: Any = None, ledger_name: str = "ledger.db") -> Any:
        ledger = Ledger(tmp_path / ledger_name, clock=fake_clock)
        ledgers.append(ledger)
        host = OracleHost(search, initial_space=initial_space)
        broker = TrialBroker(
            search=search, ledger=ledger, oracle_host=host, clock=fake_clock, long_poll_s=0.0
        )
        space = host.space_config()
        if space.get("space"):
            broker.record_space(space)
        broker.set_running("search started")
        return broker

    yield build
    for ledger in ledgers:
        with contextlib.suppress(Exception):  # already closed by the test
            ledger.close()


@pytest.fixture
def start_chief(search_dir: Path) -> Iterator[Callable[..., Any]]:
    """``start_chief(search, **create_kwargs) -> (chief, endpoint)``: a Chief
    created in ``search_dir`` and started on a free 127.0.0.1 port. Closed at
    teardown (after cancelling, so no worker thread stays blocked)."""
    from orchestrator.chief.chief import Chief

    chiefs: list[Any] = []

    def start(search: Any, directory: Path | None = None, **kwargs: Any) -> tuple[Any, Any]:
        chief = Chief.create(search, directory or search_dir, **kwargs)
        chiefs.append(chief)
        endpoint = chief.start()
        return chief, endpoint

    yield start
    for chief in chiefs:
        with contextlib.suppress(Exception):
            chief.cancel(now=True)
        with contextlib.suppress(Exception):
            chief.close(grace_s=0.2)
