"""The trial protocol: what workers and the CLI may import.

The proto and its generated code, the trial client, Keras Tuner's Oracle
interface over it (``RemoteOracle``), the search token, the trial and search
states, the shared answer types and the one exception <-> gRPC code table.
Nothing here imports the chief's internals.
"""
