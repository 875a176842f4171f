"""Build a Kailash workflow from a short list of steps (imports kailash only when called)."""

from __future__ import annotations

import importlib
from typing import Sequence


def chain(node_modules: list[str], steps: list[tuple], links: Sequence[tuple] = ()):
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


def audited(node_modules: list[str], step: tuple, action: str, sealed: bool = False):
    """[SealSecretNode ->] step -> RecordAuditNode: the shape of every change. The step outputs `audit`
    (and takes `record` from the seal when sealed)."""
    modules = [*node_modules, "ngm.nodes.audit.nodes"] + (["ngm.nodes.secrets.nodes"] if sealed else [])
    steps: list[tuple] = []
    links: list[tuple] = []
    if sealed:
        steps.append(("SealSecretNode", "seal", {}))
        links.append(("seal", "record", step[1], "record"))
    steps += [step, ("RecordAuditNode", "audit", {"action": action})]
    links.append((step[1], "audit", "audit", "entry"))
    return chain(modules, steps, links)
