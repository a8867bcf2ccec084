"""ktcluster benchmarks: dispatch efficiency against Keras Tuner's distributed mode,
cost growth, latency under a slow oracle, worker memory and recovery.

Run them with ``python -m bench.run [--quick] [--only NAME ...]`` (``make bench``);
results go to ``BENCHMARKS.md``. These are measurements, not timed tests: every
module returns typed results and never asserts a target.
"""
