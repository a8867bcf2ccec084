"""Cluster bring-up from a cluster YAML.

- :mod:`deploy.render`: Ray cluster-launcher YAML, KubeRay manifest and plain
  ``ray start`` commands generated from a :class:`~orchestrator.config.ClusterSpec`;
- :mod:`deploy.launcher`: ``ray up`` / ``ray down`` with a rendered file;
- :mod:`deploy.local`: a multi-node Ray cluster simulated on this machine;
- :mod:`deploy.certs`: a CA and a server certificate for the chief's TLS endpoint.

Library code here never prints; ``orchestrator.cli.cluster`` renders.
"""
