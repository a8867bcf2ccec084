"""User code named in a search file (``package.module:attribute``), imported to check it.

The hypermodel and the dataset may be the user's own functions or classes.
``ktc validate`` and ``ktc submit`` import them from the current directory, the
folder Ray ships to the workers (``ray.working_dir``), so that a typo or an
import error is reported against the key and line of the search file instead
of crashing every worker.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from orchestrator.config.dataset import DatasetSpec
from orchestrator.config.errors_format import suggest
from orchestrator.config.search import HypermodelSpec, SearchSpec
from orchestrator.config.yaml_source import YamlDocument
from orchestrator.errors import ConfigError


class UserCodeError(ValueError):
    """A ``module:attribute`` reference that does not resolve; the message says
    what is wrong and the fix, without the key (each caller names its key)."""


def import_reference(reference: str) -> Any:
    """Import ``module:attribute`` (the attribute may be dotted) and return it.

    The one resolver of user code for ``ktc validate``, the hypermodel and the
    dataset loaders: any failure while importing the user's module, or a
    missing attribute, is a :class:`UserCodeError` chained to the real cause.
    """
    module_name, _, attr_path = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:  # any failure in user code is a config problem
        raise UserCodeError(
            f"cannot import module {module_name!r} for {reference!r}: "
            f"{type(exc).__name__}: {exc}. Add the module's folder to PYTHONPATH or run from it "
            f"(cwd here is {os.getcwd()}; sys.path starts with {sys.path[:3]}): it must be "
            "importable on every worker, and ktc ships the working directory to the cluster "
            "with Ray's runtime_env."
        ) from exc
    target: Any = module
    for part in attr_path.split("."):
        if not hasattr(target, part):
            found = sorted(n for n in dir(module) if not n.startswith("_"))
            raise UserCodeError(
                f"module {module_name!r} has no attribute {attr_path!r}{suggest(part, found)} "
                f"Found: {', '.join(found[:20]) or '(nothing)'}. Fix the name after ':'."
            )
        target = getattr(target, part)
    return target


def _import_callable(reference: str, *, hypermodel_instance_ok: bool = False) -> None:
    target = import_reference(reference)
    if callable(target):
        return
    # A keras_tuner.HyperModel instance is a hypermodel too (Keras Tuner takes
    # one). Its module imported keras_tuner to make it, so no import here.
    keras_tuner = sys.modules.get("keras_tuner")
    if (
        hypermodel_instance_ok
        and keras_tuner is not None
        and isinstance(target, keras_tuner.HyperModel)
    ):
        return
    expected = (
        "a build_model(hp) function, a keras_tuner.HyperModel subclass or instance"
        if hypermodel_instance_ok
        else "a function or class"
    )
    raise UserCodeError(
        f"{reference!r} is a {type(target).__name__}, not callable; expected {expected}. "
        "Name one after ':'."
    )


@contextlib.contextmanager
def user_code_path(search_path: Sequence[str]) -> Iterator[None]:
    """Put ``search_path`` entries (typically the current directory) first on
    ``sys.path`` for the block, and take them away after: user code named as
    ``module:attribute`` imports from there, as ``ktc submit`` ships it."""
    added = [p for p in search_path if p not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def check_importable(
    spec: SearchSpec | HypermodelSpec | DatasetSpec,
    search_path: Sequence[str],
    source: str = "search file",
    doc: YamlDocument | None = None,
) -> None:
    """Check that user ``module:attribute`` references import and exist.

    ``search_path`` entries (typically the current directory) are put first on
    ``sys.path`` for the check and removed after. Built-ins are not imported.
    Raises :class:`ConfigError` with the module's own error otherwise, naming
    the key (and its line when ``doc``, the file it was loaded from, is given).
    """
    refs: list[tuple[str, tuple[str, str]]] = []
    hypermodel = spec.hypermodel if isinstance(spec, SearchSpec) else spec
    dataset = spec.dataset if isinstance(spec, SearchSpec) else spec
    if isinstance(hypermodel, HypermodelSpec) and not hypermodel.is_builtin:
        refs.append((hypermodel.name, ("hypermodel", "name")))
    if isinstance(dataset, DatasetSpec) and dataset.is_user_function:
        refs.append((dataset.source, ("dataset", "source")))
    if not refs:
        return
    with user_code_path(search_path):
        for reference, key in refs:
            try:
                _import_callable(reference, hypermodel_instance_ok=key[0] == "hypermodel")
            except ValueError as exc:
                if doc is not None:
                    raise doc.error(key, str(exc)) from None
                raise ConfigError(f"{source}: {'.'.join(key)}: {exc}") from None
