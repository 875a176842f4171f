"""The operations: name, typed input, required role, and the Kailash workflow that does each.

Importing this package must stay cheap (no kailash, no dataflow): the remote CLI imports it to build its
commands. Workflows are built lazily, on first execution.
"""

from ngm.workflows.registry import REGISTRY, Operation, operation


def load_operations():
    """Import every module that declares operations and return the registry."""
    from ngm.workflows import audit, deployments, events, gateways, keys, ratelimits, routing  # noqa: F401 (declared on import)

    return REGISTRY


__all__ = ["REGISTRY", "Operation", "operation", "load_operations"]
