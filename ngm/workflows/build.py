"""Build a Kailash workflow from a short list of steps (imports kailash only when called)."""

from __future__ import annotations

import importlib


def chain(node_modules: list[str], steps: list[tuple], links: list[tuple] = ()):
    """steps: (node type, node id, config); links: (from id, output, to id, input).

    node_modules are imported first so that their @register_node classes are known by name.
    """
    from kailash.workflow.builder import WorkflowBuilder

    for module in node_modules:
        importlib.import_module(module)
    wb = WorkflowBuilder()
    for node_type, node_id, config in steps:
        wb.add_node(node_type, node_id, config)
    for link in links:
        wb.add_connection(*link)
    return wb.build()
