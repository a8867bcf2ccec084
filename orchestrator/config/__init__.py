"""Typed, frozen cluster and search specs, and the YAML loader that builds them.

See ``docs/config-reference.md`` for every key.
"""

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
    BUILTIN_DATASETS,
    BUILTIN_HYPERMODELS,
    DatasetSpec,
    EarlyStoppingSpec,
    FailurePolicy,
    HypermodelSpec,
    ObjectiveSpec,
    OracleSpec,
    OutputSpec,
    SearchSpec,
    TrainingSpec,
    check_importable,
)

__all__ = [
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
