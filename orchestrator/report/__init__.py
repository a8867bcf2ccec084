"""``ktc report``: a search's pictures and summary as an offline HTML page, and
its TensorBoard summaries, both read from the ledger alone.

- :mod:`.data`: the ledger into typed rows (the only reader of the ledger here);
- :mod:`.series`: the series every picture plots, as pure functions of those rows;
- :mod:`.plots`: matplotlib (Agg) pictures of those series, as PNG files;
- :mod:`.html`: ``index.html``, linking the pictures by relative path, no scripts;
- :mod:`.build`: all of it into ``DIR/report/``, replaced atomically;
- :mod:`.tensorboard`: per-trial epoch scalars and the HParams plugin's data
  under ``DIR/tensorboard/`` (TensorFlow-free);
- :mod:`.refresh`: the debounced refresher a running search starts, which
  renders in a child process (``python -m orchestrator.report``).
"""
