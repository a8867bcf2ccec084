"""The one reader of a search's ledger meta: specs, search id, dataset info."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.config import default_cluster, parse_cluster
from orchestrator.errors import LedgerError
from orchestrator.search_meta import DatasetInfo, SearchMeta
from tests.helpers import make_search

SOURCE = Path("/runs/s1/ledger.db")


def test_written_meta_reads_back_equal() -> None:
    search = make_search({"type": "bayesian", "max_trials": 4, "alpha": 0.01})
    cluster = default_cluster()
    meta = SearchMeta.new(search, cluster, search_id="abc", created_at=12.5, source=SOURCE)
    stored = meta.to_meta() | DatasetInfo((8, 8, 1), 10, "int", 100, 20).to_meta()
    read = SearchMeta.parse(stored, source=SOURCE)
    assert read.search == search and read.cluster() == cluster
    assert (read.search_id, read.name, read.created_at) == ("abc", "test", 12.5)
    assert read.dataset == DatasetInfo((8, 8, 1), 10, "int", 100, 20)
    assert read.to_meta() == stored


@pytest.mark.parametrize(
    "oracle",
    [
        {"type": "random", "max_trials": 4, "seed": 1},
        {"type": "hyperband", "max_epochs": 9, "factor": 3},
        {"type": "bayesian", "max_trials": 4, "alpha": 0.01},
    ],
)
def test_reads_a_full_dump_of_the_search_spec(oracle: dict[str, Any]) -> None:
    spec = make_search(oracle)
    # Ledgers written before spec_data hold model_dump(mode="json"): every default included.
    meta = SearchMeta.parse({"search_spec": spec.model_dump(mode="json")}, source=SOURCE)
    assert meta.search == spec
    assert meta.dataset is None and meta.search_id == ""


def test_missing_search_spec() -> None:
    with pytest.raises(LedgerError, match=r"/runs/s1/ledger.db: no search spec in the ledger meta"):
        SearchMeta.parse({}, source=SOURCE)


def test_unreadable_search_spec() -> None:
    with pytest.raises(LedgerError, match="the stored search spec is unreadable"):
        SearchMeta.parse({"search_spec": {"name": "x", "hypermodel": 3}}, source=SOURCE)


def test_malformed_dataset_info_shows_the_expected_shape() -> None:
    meta = {"search_spec": make_search().model_dump(mode="json"), "dataset_info": {"classes": 3}}
    with pytest.raises(
        LedgerError, match=r"dataset_info is malformed .*\"input_shape\": \[\.\.\.\]"
    ):
        SearchMeta.parse(meta, source=SOURCE)


def test_cluster_spec_is_validated_only_when_asked(tmp_path: Path) -> None:
    # A TLS file that exists on the chief's machine but not here: status still reads the meta.
    certs = tmp_path / "certs"
    certs.mkdir()
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (certs / name).write_text("x")
    cluster = parse_cluster(
        {
            "name": "tls",
            "chief": {"tls": {k: str(certs / f"{k}.pem") for k in ("cert", "key", "ca")}},
            "nodes": [{"name": "local", "cpus": 2, "cpu_workers": 1}],
        }
    )
    stored = SearchMeta.new(
        make_search(), cluster, search_id="s", created_at=0.0, source=SOURCE
    ).to_meta()
    for name in ("cert.pem", "key.pem", "ca.pem"):
        (certs / name).unlink()
    meta = SearchMeta.parse(stored, source=SOURCE)
    assert meta.search_id == "s"
    with pytest.raises(LedgerError, match="(?s)the stored cluster spec is unreadable .*TLS file"):
        meta.cluster()


def test_no_cluster_spec_says_to_pass_one() -> None:
    meta = SearchMeta.parse({"search_spec": make_search().model_dump(mode="json")}, source=SOURCE)
    with pytest.raises(LedgerError, match="no cluster spec in the ledger meta; pass --cluster"):
        meta.cluster()
