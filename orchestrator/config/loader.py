"""Loading cluster and search files: YAML -> typed, frozen specs, or a ConfigError.

Every failure is a :class:`~orchestrator.errors.ConfigError` whose message names
the file, the line and key path, what was expected, what was got and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from orchestrator.config.cluster import ClusterSpec
from orchestrator.config.errors_format import translate
from orchestrator.config.search import SearchSpec
from orchestrator.config.yaml_source import (
    YamlDocument,
    document_from,
    parse_yaml_text,
    read_config_text,
    read_yaml_file,
)
from orchestrator.errors import ConfigError

Kind = Literal["cluster", "search"]
CLUSTER_KEYS: tuple[str, ...] = ("nodes", "ray", "chief", "fleet")
SEARCH_KEYS: tuple[str, ...] = ("hypermodel", "oracle", "dataset", "objective", "training")

_M = TypeVar("_M", bound=BaseModel)


def detect_kind(doc: YamlDocument) -> Kind:
    """Tell a cluster file from a search file: ``kind:`` if present, else by its keys."""
    data: dict[str, Any] = doc.data
    explicit = data.get("kind")
    if explicit is not None:
        if explicit in ("cluster", "search"):
            return explicit  # type: ignore[no-any-return]
        line = doc.line_of(("kind",))
        raise ConfigError(
            f"{doc.source}:{line}: kind: expected 'cluster' or 'search', got {explicit!r}. "
            "Fix the kind or remove it (the kind is then inferred from the keys)."
        )
    cluster = [k for k in CLUSTER_KEYS if k in data]
    search = [k for k in SEARCH_KEYS if k in data]
    if cluster and search:
        # Point at whichever kind's first key comes second in the file.
        first = {k: doc.line_of((k,)) or 0 for k in (cluster[0], search[0])}
        later = max(first, key=lambda k: first[k])
        raise doc.error(
            (later,),
            f"mixes cluster keys ({', '.join(cluster)}) and search keys "
            f"({', '.join(search)}); expected a cluster file or a search file, not both. "
            "Split it into two files.",
        )
    if cluster:
        return "cluster"
    if search:
        return "search"
    keys = [str(k) for k in data]
    shown = ", ".join(keys[:10]) + (", ..." if len(keys) > 10 else "")
    raise doc.error(
        (keys[0],) if keys else (),
        f"cannot tell whether this is a cluster or a search file; expected "
        f"cluster keys ({', '.join(CLUSTER_KEYS)}) or search keys ({', '.join(SEARCH_KEYS)}), "
        f"got {shown or 'no keys'}. Add 'kind: cluster' or 'kind: search', "
        "or fix the key names.",
    )


def _validate(model: type[_M], doc: YamlDocument, context: dict[str, Any]) -> _M:
    try:
        return model.model_validate(doc.data, context={"base_dir": doc.base_dir, **context})
    except ValidationError as exc:
        raise translate(exc, model, doc) from None


def _expect(doc: YamlDocument, kind: Kind) -> None:
    found = detect_kind(doc)
    if found != kind:
        key = "kind" if "kind" in doc.data else next(iter(doc.data))
        raise doc.error(
            (key,),
            f"this is a {found} file, but a {kind} file was expected here. "
            f"Pass the {found} file where it belongs (check the order of the arguments).",
        )


def _cluster_from(doc: YamlDocument) -> ClusterSpec:
    _expect(doc, "cluster")
    return _validate(ClusterSpec, doc, {})


def _search_from(doc: YamlDocument, check_paths: bool) -> SearchSpec:
    _expect(doc, "search")
    return _validate(SearchSpec, doc, {"check_paths": check_paths})


def load_cluster(path: str | Path) -> ClusterSpec:
    """Load a cluster file. TLS paths are relative to the file's folder."""
    return _cluster_from(read_yaml_file(path))


def load_cluster_text(path: str | Path) -> tuple[ClusterSpec, str]:
    """:func:`load_cluster`, with the text it was read from (read once: what is
    checked is what ``ktc scale --apply`` sends)."""
    text = read_config_text(path)
    doc = parse_yaml_text(text, str(path), Path(path).resolve().parent)
    return _cluster_from(doc), text


def load_search(path: str | Path, *, check_paths: bool = True) -> SearchSpec:
    """Load a search file. Dataset paths are relative to the current directory."""
    return _search_from(read_yaml_file(path), check_paths)


def load_config(path: str | Path) -> ClusterSpec | SearchSpec:
    """Load either kind of file, telling them apart by ``kind:`` or by their keys."""
    return load_document(path)[0]


def load_document(path: str | Path) -> tuple[ClusterSpec | SearchSpec, YamlDocument]:
    """:func:`load_config`, with the document it came from (for errors found later
    that must still name the file and line)."""
    doc = read_yaml_file(path)
    if detect_kind(doc) == "cluster":
        return _validate(ClusterSpec, doc, {}), doc
    return _validate(SearchSpec, doc, {"check_paths": True}), doc


def load_search_document(
    path: str | Path, *, check_paths: bool = True
) -> tuple[SearchSpec, YamlDocument]:
    """:func:`load_search`, with the document it came from."""
    doc = read_yaml_file(path)
    return _search_from(doc, check_paths), doc


def parse_cluster(data: str | Mapping[str, Any], source: str = "<string>") -> ClusterSpec:
    """A cluster spec from YAML text or a mapping (e.g. sent by ``ktc scale --apply``).

    Relative TLS paths are resolved against the current directory.
    """
    return _cluster_from(document_from(data, source, Path.cwd()))


def parse_search(
    data: str | Mapping[str, Any], source: str = "<string>", *, check_paths: bool = True
) -> SearchSpec:
    """A search spec from YAML text or a mapping. ``check_paths=False`` skips existence checks."""
    return _search_from(document_from(data, source, Path.cwd()), check_paths)
