"""The chief: one search's typed events, ledger, trial book, broker, leases,
oracle host, Bayesian helper, gRPC service, artifacts and lifecycle."""
