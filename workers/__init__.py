"""ktcluster workers: the Ray actor, trial runner, device setup, hypermodels and datasets.

Importing this package is cheap: TensorFlow and Keras Tuner are imported only by
the modules that build or train models, so the chief and CPU-only tools can use
the light parts (``needs_tensorflow``, ``validate_overrides``, the sleep model).
"""
