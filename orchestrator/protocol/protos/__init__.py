"""Generated gRPC code for ktcluster's protocol. Regenerate with `make protos`;
tests/unit/test_protos.py fails when the committed code is stale."""
