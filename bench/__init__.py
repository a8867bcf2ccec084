"""ktcluster benchmarks: dispatch efficiency against Keras Tuner's distributed mode,
cost growth, latency under a slow oracle, worker memory and recovery.

Run them with ``python -m bench.run [--quick] [--only NAME ...]`` (``make bench``);
results go to ``BENCHMARKS.md``. Issue 15's harnesses (``cnn_side_by_side``,
``runner_overhead``, ``schedulers_bench``, ``scheduler_cost``, ``user_clock``) run
on their own (``make bench-issue15``) and print their tables; BENCHMARKS.md
sections 10 to 13 hold them, hand-written. These are measurements, not timed tests: every
module returns typed results and never asserts a target.
"""
