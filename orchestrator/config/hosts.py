"""Host names and addresses in a cluster file, checked by syntax only.

Nothing here resolves a name: ``ktc validate`` must answer offline and at
once, and a name that resolves on the laptop may not on the cluster (or the
other way round). What is refused is what no resolver could accept: spaces,
punctuation, empty labels, labels over 63 characters, names over 253, and
dotted numbers that are not an IPv4 address (``999.1.1.1``).
"""

from __future__ import annotations

import ipaddress
import re

_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_HOST_PORT_RE = re.compile(r"^(?P<host>\[[^\]]*\]|[^:\[\]]*):(?P<port>[0-9]{1,9})$")
LOOPBACK_NAMES = frozenset({"localhost"})


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a valid host name or IP address, or None when it is.

    IPv6 addresses may be written bare (``::1``) or in brackets (``[::1]``).
    """
    if not host:
        return "it is empty"
    bracketed = host.startswith("[") and host.endswith("]")
    bare = host[1:-1] if bracketed else host
    try:
        ipaddress.ip_address(bare)
        return None
    except ValueError:
        pass
    if bracketed or ":" in host:
        return "it is not a valid IPv6 address"
    if len(host) > 253:
        return f"it is {len(host)} characters long (a host name has at most 253)"
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if all(label.isdigit() for label in labels):
        return "it looks like an IPv4 address but is not one (four numbers 0-255)"
    for label in labels:
        if not label:
            return "it has an empty part between dots"
        if len(label) > 63:
            return f"the part {label[:20]!r}... is longer than 63 characters"
        if not _LABEL_RE.match(label):
            bad = sorted({c for c in label if not (c.isascii() and (c.isalnum() or c in "-_"))})
            if bad:
                return f"it contains {', '.join(repr(c) for c in bad)}"
            return f"the part {label!r} starts or ends with '-'"
    return None


def check_host(host: str, what: str) -> str:
    """``host`` unchanged when valid; else a ValueError naming ``what`` and the fix."""
    problem = host_problem(host)
    if problem is not None:
        raise ValueError(
            f"expected a host name (letters, digits, '-' and '.') or an IP address for the "
            f"{what}, got {host!r}: {problem}. Fix the {what} (only its spelling is checked; "
            "no DNS lookup is made)."
        )
    return host


def split_host_port(value: str) -> tuple[str, int] | None:
    """``(host, port)`` from ``HOST:PORT`` or ``[V6]:PORT``; None without a port."""
    match = _HOST_PORT_RE.match(value)
    if match is None:
        return None
    return match["host"], int(match["port"])


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare.lower().rstrip(".") in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False
