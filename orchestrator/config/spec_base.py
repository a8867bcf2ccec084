"""What the cluster and search files' models share: a frozen, strict pydantic
base, the name pattern, bounded number types, and the checks of references
(``module:attribute``) and path text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from orchestrator.config import limits

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REFERENCE_RE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*:{_IDENT}(?:\.{_IDENT})*$")

Seed = Annotated[StrictInt, Field(ge=0, le=limits.MAX_SEED)]
Epochs = Annotated[StrictInt, Field(ge=1, le=limits.MAX_EPOCHS)]
ImageSide = Annotated[StrictInt, Field(ge=1, le=limits.MAX_IMAGE_SIDE)]
LeaseSeconds = Annotated[float, Field(ge=limits.MIN_LEASE_TIMEOUT_S, le=limits.MAX_LEASE_TIMEOUT_S)]
HeartbeatSeconds = Annotated[
    float, Field(ge=limits.MIN_HEARTBEAT_INTERVAL_S, le=limits.MAX_LEASE_TIMEOUT_S)
]


class FrozenModel(BaseModel):
    """Unknown keys refused, values frozen, no NaN or infinity."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def check_reference(value: str, builtins: Sequence[str], what: str) -> None:
    """A built-in name, or the user's own ``package.module:attribute``."""
    if value in builtins or _REFERENCE_RE.match(value):
        return
    hint = ""
    if value.count(":") != 1 and "." in value and ":" not in value:
        module, _, attr = value.rpartition(".")
        hint = f" Did you mean '{module}:{attr}'?"
    raise ValueError(
        f"expected a built-in name ({', '.join(builtins)}) or 'package.module:attribute', "
        f"got {value!r}.{hint} Use a built-in {what}, or name your own code as "
        "module:attribute (dotted module path, exactly one colon)."
    )


def shorthand(data: Any, key: str) -> Any:
    """``key: value`` for a bare string (``dataset: digits`` -> ``{source: digits}``)."""
    return {key: data} if isinstance(data, str) else data


def check_path_text(value: str) -> None:
    """Refuse what no filesystem call can take (a NUL byte makes os.stat raise ValueError)."""
    if not value.strip():
        raise ValueError(f"expected a file system path, got {value!r}. Write the path.")
    if "\x00" in value:
        raise ValueError(
            f"expected a file system path, got {value!r}, which contains a NUL character. "
            "Remove the character."
        )
