"""The ledger meta records the search's test split (issue 14.3); old ledgers still load."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.config import default_cluster, parse_search
from orchestrator.errors import LedgerError
from orchestrator.search_meta import DatasetInfo, SearchMeta, TestSplitInfo

SOURCE = Path("/runs/s1/ledger.db")


def test_new_meta_records_the_test_split_definition() -> None:
    search = parse_search("hypermodel: cnn\ndataset: digits\n")
    meta = SearchMeta.new(search, default_cluster(), search_id="a", created_at=1.0, source=SOURCE)
    stored = meta.to_meta()
    assert stored["test_split"] == {
        "definition": "digits:stratified-20%:seed=1797",
        "present": True,
    }
    read = SearchMeta.parse(stored, source=SOURCE)
    assert read.test_split == TestSplitInfo("digits:stratified-20%:seed=1797", True)
    no_data = parse_search("hypermodel: sleep\n")
    none = SearchMeta.new(no_data, default_cluster(), search_id="b", created_at=1.0, source=SOURCE)
    assert none.test_split == TestSplitInfo(None, False)


def test_old_ledger_without_test_split_loads_as_not_recorded() -> None:
    search = parse_search("hypermodel: cnn\ndataset: digits\n")
    meta = SearchMeta.new(search, default_cluster(), search_id="a", created_at=1.0, source=SOURCE)
    stored = meta.to_meta() | DatasetInfo((8, 8, 1), 10, "int", 100, 20).to_meta()
    del stored["test_split"]
    read = SearchMeta.parse(stored, source=SOURCE)
    assert read.test_split is None
    assert read.dataset is not None and read.dataset.test_examples is None
    with_test = DatasetInfo((8, 8, 1), 10, "int", 100, 20, test_examples=360)
    assert DatasetInfo.parse(with_test.to_meta()["dataset_info"], source=SOURCE) == with_test


def test_malformed_test_split_names_the_ledger() -> None:
    search = parse_search("hypermodel: cnn\ndataset: digits\n")
    meta = SearchMeta.new(search, default_cluster(), search_id="a", created_at=1.0, source=SOURCE)
    stored = meta.to_meta() | {"test_split": {"definition": 3, "present": True}}
    with pytest.raises(
        LedgerError, match=r"/runs/s1/ledger.db: the ledger's test_split is malformed"
    ):
        SearchMeta.parse(stored, source=SOURCE)
