"""Every bound a config file and its values may take, in one place.

A cluster or search file is often generated or written by hand, and
``ktc validate`` must answer quickly and without a traceback whatever it is
given. The YAML limits keep reading cheap (size, nesting, aliases); the value
limits keep every later step bounded (the worker map has one entry per worker,
so a node with ``cpus: 10**24`` must be refused before it is built). The
numbers are generous for real clusters and searches, and are listed in
docs/config-reference.md ("Limits").
"""

from __future__ import annotations

# --- the YAML document -------------------------------------------------------------
MAX_CONFIG_BYTES = 1024 * 1024
"""A config file is at most 1 MiB (the shipped examples are about 1 KB)."""

MAX_NESTING = 64
"""Mappings and lists nested at most this deep (the schema needs about 6)."""

ALIAS_EXPANSION_BUDGET = 10_000
"""At most this many nodes added by expanding YAML aliases (``*name``).

Each alias counts as a full copy of what it names, so a "billion laughs"
document of a few lines is refused at once instead of being expanded.
"""

MIN_INT = -(2**63)
MAX_INT = 2**63 - 1
"""Any integer in a config file fits in 64 bits (the ledger stores specs as JSON)."""

# --- cluster files -----------------------------------------------------------------
MAX_NODE_CPUS = 65_536
MAX_GPU_INDEX = 1_023
MAX_GPUS_PER_NODE = 1_024
MAX_GPU_MEMORY_MB = 16 * 1024 * 1024
MAX_WORKERS_PER_GPU = 64
MIN_CPUS_PER_WORKER = 0.001
"""Ray's CPU resource has a resolution of 0.0001; a thousandth keeps counts sane."""
MAX_CPUS_PER_WORKER = float(MAX_NODE_CPUS)
MAX_RECYCLE_AFTER_TRIALS = 1_000_000
MAX_STARTUP_TIMEOUT_S = 86_400.0
MAX_PORT = 65_535
MAX_PATH_CHARS = 4_096
"""A path in a cluster file (``storage``, ``shared_path``): Linux's PATH_MAX."""

DEFAULT_MAX_WORKERS = 1_024
"""The default ``fleet.max_workers``: the most workers one search may run."""
MAX_MAX_WORKERS = 65_536
"""The highest ``fleet.max_workers`` a cluster file may set."""

# --- search files ------------------------------------------------------------------
MAX_TRIALS = 1_000_000
MAX_EXECUTIONS_PER_TRIAL = 1_000
MAX_EPOCHS = 100_000
MAX_HYPERBAND_FACTOR = 1_000
MAX_HYPERBAND_ITERATIONS = 1_000
MAX_BATCH_SIZE = 1_048_576
MAX_SEED = 2**32 - 1
"""Seeds go to NumPy and scikit-learn, which take 0 .. 2**32 - 1."""
MAX_SUBSET = 2**31 - 1
MAX_IMAGE_SIDE = 16_384
MAX_RETRIES_PER_TRIAL = 1_000
MIN_LEASE_TIMEOUT_S = 1.0
"""A trial lease shorter than a second expires between two heartbeats of a busy worker."""
MAX_LEASE_TIMEOUT_S = 7 * 86_400.0
MIN_HEARTBEAT_INTERVAL_S = 0.1
"""Below this a worker does little but heartbeat (the default is a quarter of the lease)."""
MAX_BAYESIAN_COEFFICIENT = 1e6
"""``oracle.alpha`` and ``oracle.beta`` (Keras Tuner's 1e-4 and 2.6 by default): beyond
this the Gaussian process' noise or its exploration term swamps every score."""

# --- built-in hypermodels' options -------------------------------------------------
MAX_SLEEP_EPOCH_S = 86_400.0
"""``sleep``'s ``epoch_s``: a day per epoch (``time.sleep`` overflows past about 9e9 s)."""
MIN_TRANSFER_IMAGE_SIDE = 32
"""MobileNetV2 refuses inputs smaller than 32x32."""
MAX_TRANSFER_IMAGE_SIDE = 1_024
"""ImageNet weights exist up to 224; 1024x1024 already needs gigabytes per batch."""
MAX_TRANSFER_ALPHA = 4.0
"""MobileNetV2's width multiplier (ImageNet weights exist up to 1.4)."""
