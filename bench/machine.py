"""The machine and software a benchmark run measured (for BENCHMARKS.md)."""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata

import psutil

_PACKAGES = (
    ("tensorflow", ("tensorflow", "tensorflow-cpu")),
    ("keras", ("keras",)),
    ("keras-tuner", ("keras-tuner",)),
    ("ray", ("ray",)),
    ("grpcio", ("grpcio",)),
    ("protobuf", ("protobuf",)),
    ("scikit-learn", ("scikit-learn",)),
)


@dataclass(frozen=True)
class MachineInfo:
    """Cores, memory, OS, versions and the date."""

    cores: int
    memory_gib: float
    cpu_model: str
    os: str
    python: str
    versions: tuple[tuple[str, str], ...]
    date: str
    load_1m: float

    @classmethod
    def collect(cls) -> MachineInfo:
        """Read everything from this machine."""
        versions = []
        for label, dists in _PACKAGES:
            found = "not installed"
            for dist in dists:
                try:
                    found = metadata.version(dist)
                    break
                except metadata.PackageNotFoundError:
                    continue
            versions.append((label, found))
        return cls(
            cores=os.cpu_count() or 0,
            memory_gib=psutil.virtual_memory().total / 2**30,
            cpu_model=_cpu_model(),
            os=f"{platform.system()} {platform.release()}",
            python=sys.version.split()[0],
            versions=tuple(versions),
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            load_1m=os.getloadavg()[0],
        )


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
