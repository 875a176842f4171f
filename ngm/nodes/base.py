"""Base for ngm's Kailash nodes: parameters declared as a compact table, the AppContext at hand, and the
operation's transaction (or, in a read-only operation, the database itself)."""

from __future__ import annotations

from typing import Any, Awaitable, Callable

from kailash.nodes.base import NodeParameter
from kailash.nodes.base_async import AsyncNode

from ngm.context import current, current_transaction
from ngm.models.database import Queries

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

    async def run_alone(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Run as the one node of a workflow would, without the workflow runtime: the node's configuration
        overlaid with the inputs it declares, defaults filled in. A one-node operation has nothing for the
        runtime to compose, and the runtime's per-run bookkeeping (tracking, output checks) cost 1.2 ms of a
        3.7 ms list of 50 gateways (bench/registry_latency.py)."""
        given = {**self.config, **inputs}
        kw = {}
        for name, (_, default) in self.PARAMS.items():
            if name in given:
                kw[name] = given[name]
            elif default is REQUIRED:
                raise TypeError(f"{type(self).__name__} needs input {name!r}")
            else:
                kw[name] = default
        return await self.async_run(**kw)

    @property
    def ctx(self):
        return current()

    @property
    def db(self) -> Queries:
        """Where this node reads and writes: the operation's transaction when it runs in one."""
        return current_transaction() or self.ctx.database

    async def after_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run `action` once the operation's change is committed (at once outside a transaction): what the
        rest of the system is told must be what the database holds."""
        tx = current_transaction()
        if tx is None:
            await action()
        else:
            tx.after_commit(action)
