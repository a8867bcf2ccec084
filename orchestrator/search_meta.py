"""A search's meta in its ledger: what was searched, on which cluster, with which data.

The ledger's ``meta`` table holds JSON values by key. ``Chief.create`` writes
the search id, name, both specs, the creation time and ``test_split`` (which
held-out test set the search's dataset defines); the search session adds
``dataset_info`` once it has loaded the data. A ledger written before
``test_split`` existed reads as "no test split recorded": its training data
may include samples that are test samples today, so ``ktc evaluate`` refuses it. :meth:`SearchMeta.parse` is the
one reader (the chief's resume, ``ktc status``, ``ktc results`` and ``ktc
export`` all go through it), and :meth:`SearchMeta.to_meta` /
:meth:`DatasetInfo.to_meta` write the same keys, so reader and writer cannot
drift apart.

Parsing takes the meta as a mapping (``Ledger.meta()``) rather than opening the
ledger itself, so this module needs only ``config`` and ``errors`` and any
layer may use it. The meta's ``schema_version`` is the ledger's own (its event
encoding, which the chief's ledger code checks and migrates): it is neither
read nor written here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.config import ClusterSpec, SearchSpec, spec_data
from orchestrator.errors import LedgerError

# Oracle keys that belong to one oracle type (orchestrator.config.search._TYPE_KEYS).
_TYPE_ONLY_ORACLE_KEYS: dict[str, tuple[str, ...]] = {
    "hyperband": ("max_epochs", "factor", "hyperband_iterations"),
    "bayesian": ("num_initial_points", "alpha", "beta"),
}


@dataclass(frozen=True)
class DatasetInfo:
    """The ledger meta's ``dataset_info``: what the hypermodel was built for."""

    input_shape: tuple[int, ...]
    num_classes: int
    label_mode: str = "int"  # "int" | "onehot"
    train_examples: int | None = None
    val_examples: int | None = None
    test_examples: int | None = None  # None: no test split (or not recorded)

    def to_meta(self) -> dict[str, Any]:
        """The meta entry to store with ``Ledger.set_meta``."""
        info: dict[str, Any] = {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "label_mode": self.label_mode,
        }
        if self.train_examples is not None:
            info["train"] = self.train_examples
        if self.val_examples is not None:
            info["val"] = self.val_examples
        if self.test_examples is not None:
            info["test"] = self.test_examples
        return {"dataset_info": info}

    @classmethod
    def parse(cls, info: Any, *, source: Path | str) -> DatasetInfo:
        """Parse ``meta["dataset_info"]``; LedgerError showing the expected shape."""
        try:
            if not isinstance(info, Mapping):
                raise TypeError(f"expected a mapping, got {type(info).__name__}")
            train = info.get("train")
            val = info.get("val")
            test = info.get("test")
            return cls(
                input_shape=tuple(int(d) for d in info["input_shape"]),
                num_classes=int(info["num_classes"]),
                label_mode=str(info.get("label_mode", "int")),
                train_examples=None if train is None else int(train),
                val_examples=None if val is None else int(val),
                test_examples=None if test is None else int(test),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise LedgerError(
                f"{source}: the ledger's dataset_info is malformed ({exc!r}); expected "
                '{"input_shape": [...], "num_classes": n, "label_mode": "int"|"onehot"}, '
                f"got {info!r}"
            ) from exc


@dataclass(frozen=True)
class TestSplitInfo:
    """The ledger meta's ``test_split``: the held-out test set the search's dataset defines.

    ``definition`` names it (``digits:stratified-20%:seed=1797``,
    ``mnist:keras-test-set``, ``npz:<path>[x_test,y_test]``...): a later
    evaluation may trust a test split only when the definition it loads today
    is the one recorded here. ``present`` is True when the dataset has one,
    False when it has none, None when only loading tells (an npz's arrays, a
    function's third split).
    """

    __test__ = False  # not a pytest class, whatever its name says

    definition: str | None
    present: bool | None

    @classmethod
    def of(cls, search: SearchSpec) -> TestSplitInfo:
        """What ``search``'s dataset spec says about its test split."""
        if search.dataset is None:
            return cls(definition=None, present=False)
        definition, present = search.dataset.test_split()
        return cls(definition=definition, present=present)

    def to_meta(self) -> dict[str, Any]:
        """The meta entry to store with ``Ledger.set_meta``."""
        return {"test_split": {"definition": self.definition, "present": self.present}}

    @classmethod
    def parse(cls, info: Any, *, source: Path | str) -> TestSplitInfo:
        """Parse ``meta["test_split"]``; LedgerError showing the expected shape."""
        definition = info.get("definition") if isinstance(info, Mapping) else None
        present = info.get("present") if isinstance(info, Mapping) else None
        if (
            not isinstance(info, Mapping)
            or not (definition is None or isinstance(definition, str))
            or not (present is None or isinstance(present, bool))
        ):
            raise LedgerError(
                f"{source}: the ledger's test_split is malformed; expected "
                '{"definition": str | null, "present": true | false | null}, '
                f"got {info!r}"
            )
        return cls(definition=definition, present=present)


@dataclass(frozen=True)
class SearchMeta:
    """Everything the ledger meta says about a search, typed.

    The cluster spec is kept as stored and validated only by :meth:`cluster`:
    validating it checks that its TLS files exist, which holds on the chief's
    machine but need not where ``ktc status`` runs.
    """

    search_id: str
    name: str
    search: SearchSpec
    cluster_data: Mapping[str, Any] | None
    created_at: float | None
    dataset: DatasetInfo | None
    source: Path  # the ledger the meta came from, for error messages
    # None: a ledger from before test splits were recorded (treat as "none").
    test_split: TestSplitInfo | None = None

    @classmethod
    def new(
        cls,
        search: SearchSpec,
        cluster: ClusterSpec,
        *,
        search_id: str,
        created_at: float,
        source: Path | str,
    ) -> SearchMeta:
        """The meta of a search being created (store it with :meth:`to_meta`)."""
        return cls(
            search_id=search_id,
            name=search.name,
            search=search,
            cluster_data=spec_data(cluster),
            created_at=created_at,
            dataset=None,
            source=Path(source),
            test_split=TestSplitInfo.of(search),
        )

    def to_meta(self) -> dict[str, Any]:
        """The entries to store with ``Ledger.set_meta`` (the caller adds the
        ledger's ``schema_version``)."""
        meta: dict[str, Any] = {
            "search_id": self.search_id,
            "name": self.name,
            "search_spec": spec_data(self.search),
            "created_at": self.created_at,
        }
        if self.cluster_data is not None:
            meta["cluster_spec"] = dict(self.cluster_data)
        if self.dataset is not None:
            meta.update(self.dataset.to_meta())
        if self.test_split is not None:
            meta.update(self.test_split.to_meta())
        return meta

    @classmethod
    def parse(cls, meta: Mapping[str, Any], *, source: Path | str) -> SearchMeta:
        """Read ``Ledger.meta()``; LedgerError naming ``source`` when it is not a search's."""
        search = _search_spec(meta, source)
        cluster_data = meta.get("cluster_spec")
        if cluster_data is not None and not isinstance(cluster_data, Mapping):
            raise LedgerError(
                f"{source}: the stored cluster spec is not a mapping (got "
                f"{type(cluster_data).__name__}); the ledger may be damaged"
            )
        created_at = meta.get("created_at")
        dataset = meta.get("dataset_info")
        test_split = meta.get("test_split")
        return cls(
            search_id=str(meta.get("search_id", "")),
            name=str(meta.get("name") or search.name),
            search=search,
            cluster_data=cluster_data,
            created_at=None if created_at is None else float(created_at),
            dataset=None if dataset is None else DatasetInfo.parse(dataset, source=source),
            source=Path(source),
            test_split=(
                None if test_split is None else TestSplitInfo.parse(test_split, source=source)
            ),
        )

    def cluster(self) -> ClusterSpec:
        """The stored cluster spec, validated; LedgerError when absent or unreadable."""
        if self.cluster_data is None:
            raise LedgerError(
                f"{self.source}: no cluster spec in the ledger meta; pass --cluster "
                "CLUSTER.yaml to say where to run the search"
            )
        try:
            return ClusterSpec.model_validate(dict(self.cluster_data))
        except ValueError as exc:
            raise LedgerError(
                f"{self.source}: the stored cluster spec is unreadable ({exc}); pass "
                "--cluster CLUSTER.yaml to give it again"
            ) from exc


def _search_spec(meta: Mapping[str, Any], source: Path | str) -> SearchSpec:
    """The stored SearchSpec (``search_spec``).

    Ledgers written before ``spec_data`` hold a ``model_dump()`` with every
    default, which does not validate again: OracleSpec refuses another type's
    keys once they are *set*, and a full dump sets them all. Those keys (and
    hyperband's ``max_trials``) carry only defaults for other oracle types, so
    they are dropped before validating.
    """
    try:
        data = dict(meta["search_spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LedgerError(
            f"{source}: no search spec in the ledger meta ({exc!r}); expected a directory "
            "made by `ktc submit`"
        ) from exc
    oracle = dict(data.get("oracle") or {})
    kind = oracle.get("type", "random")
    for owner, keys in _TYPE_ONLY_ORACLE_KEYS.items():
        if owner != kind:
            for key in keys:
                oracle.pop(key, None)
    if kind == "hyperband":
        oracle.pop("max_trials", None)
    if oracle:
        data["oracle"] = oracle
    try:
        # The dataset paths were checked where the search ran; they need not
        # exist where its directory is read (a remote cluster's, or since deleted).
        return SearchSpec.model_validate(data, context={"check_paths": False})
    except ValueError as exc:
        raise LedgerError(
            f"{source}: the stored search spec is unreadable ({exc}); "
            "was this directory written by another ktcluster version?"
        ) from exc
