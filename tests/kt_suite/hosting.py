"""Host a Keras Tuner oracle object in a real chief, and attach tuners to it.

The chief is built by :meth:`Chief.create` exactly as ``ktc submit`` builds
one: ledger, broker, oracle host, gRPC server on a free 127.0.0.1 port, search
token. Only its oracle differs: ``Chief.create`` builds one from a SearchSpec,
and :func:`host_oracle` puts the caller's own oracle object in its place, with
what the chief turns off on every oracle it builds turned off on it too
(KT's own persistence, its consecutive-failure check that raises inside
``end_trial``, its progress display). So any oracle a test builds (a KT
subclass, a custom ``populate_space``, ``allow_new_entries=False``...) decides
the trials, and every trial travels over real gRPC.

:class:`ChiefPerTuner` hosts a deep copy of each tuner's oracle, so the chief
owns its oracle as a chief in another process would, and nothing the worker
side does reaches it except over gRPC. A test that reads the oracle object it
built therefore sees it as it was when its tuner was attached: the KT suite
leaves such tests out (see ``tests/kt_suite/conftest.py``).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.chief.chief import Chief, ChiefEndpoint
from orchestrator.config import SearchSpec, parse_search
from orchestrator.protocol.client import TrialClient

# KT's Hyperband (and a custom oracle) may have no trial cap; the spec needs one.
_NO_CAP = 10**6


def search_spec_for(oracle: Any, *, lease_timeout_s: float = 600.0) -> SearchSpec:
    """A SearchSpec whose objective, cap and failure policy are ``oracle``'s.

    The oracle type is ``random`` whatever ``oracle`` is: the spec's type only
    picks the stand-in that :func:`host_oracle` replaces, and the decision
    state a random oracle snapshots (seed, seed state) every KT oracle has.
    """
    objective = oracle.objective
    return parse_search(
        {
            "name": "kt-suite",
            "hypermodel": "mlp",
            "objective": {"name": objective.name, "direction": objective.direction},
            "oracle": {"type": "random", "max_trials": oracle.max_trials or _NO_CAP},
            "failure": {
                "retries_per_trial": int(oracle.max_retries_per_trial),
                "max_consecutive_failed_trials": int(oracle.max_consecutive_failed_trials),
                "lease_timeout_s": lease_timeout_s,
            },
        }
    )


def host_oracle(oracle: Any, search_dir: Path, *, long_poll_s: float = 1.0) -> Chief:
    """A started chief in ``search_dir`` whose oracle is ``oracle`` itself."""
    chief = Chief.create(search_spec_for(oracle), search_dir, long_poll_s=long_poll_s)
    host = chief.broker.oracle_host
    host.close()  # the stand-in Chief.create built
    # What the chief turns off on the oracles it builds (oracle_host, oracles.py).
    oracle.save = lambda *a, **k: None
    oracle._save_trial = lambda *a, **k: None
    oracle._check_consecutive_failures = lambda *a, **k: None
    oracle._display.verbose = 0
    host.oracle = oracle
    space = host.space_config()
    if space.get("space"):
        chief.broker.record_space(space)
    chief.start()
    return chief


@dataclass
class HostedSearch:
    """One chief and the clients attached to it."""

    chief: Chief
    clients: list[TrialClient] = field(default_factory=list)

    @property
    def endpoint(self) -> ChiefEndpoint:
        return self.chief.endpoint

    def client(self, worker_id: str) -> TrialClient:
        """A new TrialClient for this chief (closed with the search)."""
        ep = self.endpoint
        client = TrialClient(ep.address, ep.token, worker_id=worker_id)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
        with contextlib.suppress(Exception):
            self.chief.cancel(now=True)
        with contextlib.suppress(Exception):
            self.chief.close(grace_s=0.2)


class ChiefPerTuner:
    """Hosts each tuner's oracle in its own chief and swaps in a RemoteOracle.

    ``attach(tuner)`` is what the KT suite runs at the end of every
    ``BaseTuner.__init__``: after the tuner's constructor has built its oracle
    and declared the search space, exactly where a KT user calls
    ``RemoteOracle.attach``.
    """

    def __init__(self, root: Path, *, long_poll_s: float = 1.0, wait_s: float = 1.0) -> None:
        self.root = root
        self.long_poll_s = long_poll_s
        self.wait_s = wait_s
        self.searches: list[HostedSearch] = []
        self._ids = itertools.count()

    def host(self, oracle: Any) -> HostedSearch:
        """A chief for ``oracle`` (closed by :meth:`close`)."""
        n = next(self._ids)
        chief = host_oracle(oracle, self.root / f"search-{n}", long_poll_s=self.long_poll_s)
        search = HostedSearch(chief)
        self.searches.append(search)
        return search

    def attach(self, tuner: Any) -> Any:
        """Host a copy of ``tuner.oracle`` in a new chief; ``tuner.oracle`` becomes a
        RemoteOracle."""
        from orchestrator.protocol.oracle_client import RemoteOracle

        if isinstance(tuner.oracle, RemoteOracle):
            return tuner.oracle
        search = self.host(copy.deepcopy(tuner.oracle))
        client = search.client(f"tuner-{len(self.searches) - 1}")
        return RemoteOracle.attach(tuner, client, wait_s=self.wait_s)

    def close(self) -> None:
        for search in self.searches:
            search.close()
        self.searches.clear()


@contextlib.contextmanager
def chief_per_tuner(root: Path, **kwargs: Any) -> Iterator[ChiefPerTuner]:
    """:class:`ChiefPerTuner` with every BaseTuner constructed inside attached.

    Patches ``BaseTuner.__init__`` for the duration (tests pass pytest's
    ``monkeypatch`` instead where they can; this is for code that has none).
    """
    from keras_tuner.src.engine import base_tuner

    hosting = ChiefPerTuner(root, **kwargs)
    original = base_tuner.BaseTuner.__init__

    def init(self: Any, *args: Any, **kw: Any) -> None:
        original(self, *args, **kw)
        hosting.attach(self)

    base_tuner.BaseTuner.__init__ = init
    try:
        yield hosting
    finally:
        base_tuner.BaseTuner.__init__ = original
        hosting.close()
