"""Typed, frozen cluster and search specs, and the YAML loader that builds them.

See ``docs/config-reference.md`` for every key.
"""

from typing import Any

from orchestrator.config.cluster import (
    ChiefSpec,
    ClusterSpec,
    FleetSpec,
    NodeSpec,
    RaySpec,
    TlsSpec,
    WorkerEntry,
    default_cluster,
)
from orchestrator.config.dataset import BUILTIN_DATASETS, DatasetSpec
from orchestrator.config.layout import WorkerSlot, node_resource_name
from orchestrator.config.loader import (
    detect_kind,
    load_cluster,
    load_config,
    load_search,
    parse_cluster,
    parse_search,
)
from orchestrator.config.search import (
    BUILTIN_HYPERMODELS,
    EarlyStoppingSpec,
    FailurePolicy,
    HypermodelSpec,
    ObjectiveSpec,
    OracleSpec,
    OutputSpec,
    SearchSpec,
    TrainingSpec,
)
from orchestrator.config.user_code import check_importable


def spec_data(spec: ClusterSpec | SearchSpec) -> dict[str, Any]:
    """A spec as JSON-able data that validates back to an equal spec.

    Only what was given (or set by ``model_copy``) is written: values the
    validators derive (a node's default ``cpu_workers``) are derived again on
    load instead of being re-checked as if the user had written them. Use this
    (or :func:`spec_json`) wherever a spec is stored or shipped.
    """
    data: dict[str, Any] = spec.model_dump(mode="json", exclude_unset=True)
    return data


def spec_json(spec: ClusterSpec | SearchSpec) -> str:
    """:func:`spec_data` as a JSON string."""
    return spec.model_dump_json(exclude_unset=True)


__all__ = [
    "spec_data",
    "spec_json",
    "BUILTIN_DATASETS",
    "BUILTIN_HYPERMODELS",
    "ChiefSpec",
    "ClusterSpec",
    "DatasetSpec",
    "EarlyStoppingSpec",
    "FailurePolicy",
    "FleetSpec",
    "HypermodelSpec",
    "NodeSpec",
    "ObjectiveSpec",
    "OracleSpec",
    "OutputSpec",
    "RaySpec",
    "SearchSpec",
    "TlsSpec",
    "TrainingSpec",
    "WorkerEntry",
    "WorkerSlot",
    "check_importable",
    "default_cluster",
    "detect_kind",
    "load_cluster",
    "load_config",
    "load_search",
    "node_resource_name",
    "parse_cluster",
    "parse_search",
]
