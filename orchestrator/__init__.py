"""ktcluster's chief side: configs, the trial service, the ledger, the fleet and the CLI."""

__version__ = "0.1.0"
