"""Regenerate ktcluster_pb2.py and ktcluster_pb2_grpc.py from ktcluster.proto.

Run with ``python -m orchestrator.protocol.protos.generate`` (``make protos``). With
``--check DIR`` it writes into DIR instead, which the staleness test uses.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
PROTO_NAME = "ktcluster.proto"


def generate(out_dir: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) and make the grpc module import its pb2
    through the package, so it works without sys.path tricks."""
    from grpc_tools import protoc  # dev dependency

    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(PROTO_DIR / PROTO_NAME),
        ]
    )
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")
    grpc_file = out_dir / "ktcluster_pb2_grpc.py"
    text = grpc_file.read_text()
    text = re.sub(
        r"^import ktcluster_pb2 as ktcluster__pb2$",
        "from orchestrator.protocol.protos import ktcluster_pb2 as ktcluster__pb2",
        text,
        flags=re.M,
    )
    grpc_file.write_text(text)
    return [out_dir / "ktcluster_pb2.py", out_dir / "ktcluster_pb2.pyi", grpc_file]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_DIR)
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
