"""Base for ngm's Kailash nodes: parameters declared as a compact table, the AppContext at hand."""

from __future__ import annotations

from typing import Any

from kailash.nodes.base import NodeParameter
from kailash.nodes.base_async import AsyncNode

from ngm.context import current

REQUIRED = object()


class ContextNode(AsyncNode):
    """Subclasses set PARAMS = {name: (type, default or REQUIRED)} and implement `async_run`."""

    PARAMS: dict[str, tuple[type, Any]] = {}

    def get_parameters(self):
        return {
            name: NodeParameter(name=name, type=typ, required=default is REQUIRED,
                                default=None if default is REQUIRED else default)
            for name, (typ, default) in self.PARAMS.items()
        }

    @property
    def ctx(self):
        return current()
