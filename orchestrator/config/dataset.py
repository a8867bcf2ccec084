"""The search file's ``dataset:``: a built-in, ``npz``, ``image_directory`` or
the user's ``module:function``, and the held-out test split it defines.

Relative dataset paths are resolved against the current working directory (the
folder ``ktc submit`` runs in), not against the YAML's folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, StrictInt, ValidationInfo, field_validator, model_validator

from orchestrator.config import limits
from orchestrator.config.errors_format import FieldProblems, Problem
from orchestrator.config.local_paths import path_problem
from orchestrator.config.spec_base import (
    FrozenModel,
    ImageSide,
    Seed,
    check_path_text,
    check_reference,
    shorthand,
)

BUILTIN_DATASETS: tuple[str, ...] = ("digits", "mnist", "fashion_mnist", "cifar10")
FILE_DATASETS: tuple[str, ...] = ("npz", "image_directory")
# The digits test split: a fixed, stratified hold-out taken before the
# train/validation split. Fixed (not dataset.seed) so every search on digits
# holds out the same samples and a test accuracy means the same thing.
DIGITS_TEST_FRACTION = 0.2
DIGITS_TEST_SEED = 1797
LABEL_FORMS: tuple[str, ...] = ("int", "one_hot")


def _resolve_cwd_path(
    value: str | None, info: ValidationInfo, key: str, kind: Literal["file", "directory"]
) -> str | None:
    if value is None:
        return None
    check_path_text(value)
    path = Path(value).expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if (info.context or {}).get("check_paths", True):
        problem = path_problem(path, kind)
        if problem is not None:
            raise ValueError(
                f"{key} {value!r} {problem} (looked for {path}; relative paths are relative "
                f"to the current directory); expected an existing, readable {kind}. Fix the "
                "path or run from the right folder."
            )
    return str(path)


class DatasetSpec(FrozenModel):
    """Training data: a built-in, ``npz``, ``image_directory`` or ``module:function``.

    The shorthand ``dataset: digits`` means ``{source: digits}``.
    """

    source: str
    path: str | None = None
    image_size: tuple[ImageSide, ImageSide] | None = None
    color_mode: Literal["rgb", "grayscale"] = "rgb"
    validation_split: float = Field(0.2, gt=0, lt=1)
    validation_path: str | None = None
    test_path: str | None = None
    subset: StrictInt | None = Field(None, gt=0, le=limits.MAX_SUBSET)
    seed: Seed = 0
    # None: labels as the source gives them (integers for every built-in).
    labels: Literal["int", "one_hot"] | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return shorthand(data, "source")

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        check_reference(value, (*BUILTIN_DATASETS, *FILE_DATASETS), "dataset")
        return value

    @field_validator("path", "validation_path", "test_path")
    @classmethod
    def _paths(cls, value: str | None, info: ValidationInfo) -> str | None:
        # An npz is a file and an image_directory a folder: a folder given as an
        # npz would otherwise pass here and fail in every worker after Ray started.
        kind: Literal["file", "directory"] = (
            "directory" if info.data.get("source") == "image_directory" else "file"
        )
        return _resolve_cwd_path(value, info, info.field_name or "path", kind)

    @model_validator(mode="after")
    def _combination(self) -> DatasetSpec:
        problems: list[Problem] = []
        needs_path = self.source in FILE_DATASETS
        if needs_path and self.path is None:
            problems.append(
                Problem(
                    ("path",),
                    f"source {self.source!r} needs a path; expected 'path: ...' next to it, "
                    "got none. Add the path.",
                )
            )
        if not needs_path and self.path is not None:
            problems.append(
                Problem(
                    ("path",),
                    f"path is only used by sources npz and image_directory, not {self.source!r}; "
                    "expected no path here. Remove it.",
                )
            )
        if self.source == "image_directory" and self.image_size is None:
            problems.append(
                Problem(
                    ("image_size",),
                    "source 'image_directory' needs image_size: [height, width]; expected it "
                    "next to the source, got none. Add it.",
                )
            )
        if self.source != "image_directory" and self.image_size is not None:
            problems.append(
                Problem(
                    ("image_size",),
                    "image_size is only used by source image_directory; expected no image_size "
                    f"for {self.source!r}. Remove it.",
                )
            )
        if self.test_path is not None and not needs_path:
            problems.append(
                Problem(
                    ("test_path",),
                    f"test_path is only used by sources npz and image_directory, not "
                    f"{self.source!r}; expected no test_path here (built-ins bring their own "
                    "test split, and a function returns its own). Remove it.",
                )
            )
        if self.validation_path is not None and "validation_split" in self.model_fields_set:
            problems.append(
                Problem(
                    ("validation_split",),
                    "expected either validation_split or validation_path, got both. "
                    "Remove one of them.",
                )
            )
        if problems:
            raise FieldProblems(problems)
        return self

    @property
    def is_builtin(self) -> bool:
        """True for a built-in dataset name."""
        return self.source in BUILTIN_DATASETS

    @property
    def is_user_function(self) -> bool:
        """True when the source is the user's own ``module:function``."""
        return ":" in self.source

    def test_split(self) -> tuple[str | None, bool | None]:
        """``(definition, present)`` of the held-out test split this spec describes.

        ``definition`` names the held-out set (two searches with the same
        definition have the same test samples); ``present`` is True when the
        source always has one, False when it has none, None when only loading
        tells (an npz's x_test/y_test, a function's third split).
        """
        if self.source == "digits":
            percent = f"{DIGITS_TEST_FRACTION * 100:g}%"
            return f"digits:stratified-{percent}:seed={DIGITS_TEST_SEED}", True
        if self.source in BUILTIN_DATASETS:
            return f"{self.source}:keras-test-set", True
        if self.test_path is not None:
            return f"{self.source}:test_path={self.test_path}", True
        if self.source == "npz":
            return f"npz:{self.path}[x_test,y_test]", None
        if self.source == "image_directory":
            return None, False
        return f"{self.source}:third-split", None
