"""The ``ktc`` command line. Each verb lives in its own module with a
``register(subparsers)`` function; ``main`` wires them together."""
