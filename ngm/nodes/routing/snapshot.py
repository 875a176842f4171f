"""The control plane's side of the routing table: the snapshot the router gets, read from the database."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ngm.dataplane.limits.limiter import Limits
from ngm.dataplane.table import GatewayRoute, Policy, RoutingSnapshot, Target
from ngm.models.changes import ROUTING_COLUMNS
from ngm.models.database import Queries
from ngm.nodes.gateways.validation import base_url
from ngm.nodes.secrets.keyring import Keyring

log = logging.getLogger("ngm.routing")


def _json_list(value) -> list:
    """A JSON list column as read back: text on SQLite, a list on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else list(value or [])


@dataclass
class _Holdings:
    """What one organization has in a snapshot: what to remove when it is read again."""

    gateways: set[str] = field(default_factory=set)  # ids
    targets: set[tuple[str, str, str]] = field(default_factory=set)  # keys
    policies: set[tuple[str, str, str]] = field(default_factory=set)  # keys
    tokens: set[str] = field(default_factory=set)  # its gateways' encrypted keys (decrypted ones are cached)


class _Owned(defaultdict[str, _Holdings]):
    def __init__(self) -> None:
        super().__init__(_Holdings)


PAGE = 150  # rows per statement of a full read: the event loop serves requests between pages (2-6 ms each)
_GATEWAYS, _DEPLOYMENTS, _POLICIES = (", ".join(ROUTING_COLUMNS[t]) for t in ROUTING_COLUMNS)


class SnapshotLoader:
    """Reads gateways, deployments and policies into a RoutingSnapshot, decrypting each gateway key once: all of
    them (`load`), or only some organizations' rows, put into the current snapshot (`reload`)."""

    def __init__(self, database: Queries, keyring: Keyring):
        self.database, self.keyring = database, keyring
        self._keys: dict[str, str | None] = {}  # encrypted token -> key (decrypt once)
        self._unroutable: set[str] = set()  # gateways already reported as left out
        self._owned = _Owned()  # what each organization has in the last snapshot made

    def _key(self, token: str | None) -> str | None:
        if not token:
            return None
        if token not in self._keys:
            try:
                self._keys[token] = self.keyring.decrypt(token)
            except Exception:  # reported once; the gateway gets requests without its key
                log.error("a gateway key cannot be decrypted with the configured keys")
                self._keys[token] = None
        return self._keys[token]

    async def load(self) -> RoutingSnapshot:
        """Every organization's rows, read and built PAGE rows at a time: at 100,000 gateways the event loop
        serves requests between pages instead of stalling for seconds."""
        snapshot, owned = RoutingSnapshot(), _Owned()
        async for page in self._pages(_GATEWAYS, "gateways"):
            self._add_gateways(page, snapshot, owned)
        async for page in self._pages(_DEPLOYMENTS, "gateway_deployments"):
            self._add_deployments(page, snapshot, owned)
        async for page in self._pages(_POLICIES, "routing_policies", key="organization_id, agent_id, environment"):
            self._add_policies(page, snapshot, owned)
        live = set().union(*(h.tokens for h in owned.values()))
        self._keys = {t: k for t, k in self._keys.items() if t in live}  # forget rotated keys
        self._owned = owned
        return snapshot

    async def reload(self, current: RoutingSnapshot, organizations: AbstractSet[str]) -> RoutingSnapshot:
        """`current` with the rows of `organizations` read again (and what they no longer have removed)."""
        gateways: list[dict[str, Any]] = []
        deployments: list[dict[str, Any]] = []
        policies: list[dict[str, Any]] = []
        ordered = sorted(organizations)
        for i in range(0, len(ordered), 200):
            params = {f"o{j}": org for j, org in enumerate(ordered[i:i + 200])}
            where = f" WHERE organization_id IN ({', '.join(':' + n for n in params)})"
            gateways += await self.database.rows(f"SELECT {_GATEWAYS} FROM gateways{where}", params)
            deployments += await self.database.rows(
                f"SELECT {_DEPLOYMENTS} FROM gateway_deployments{where} ORDER BY id", params)
            policies += await self.database.rows(f"SELECT {_POLICIES} FROM routing_policies{where}", params)
        snapshot = RoutingSnapshot(dict(current.gateways), dict(current.targets), dict(current.policies))
        gone: set[str] = set()  # the encrypted keys the organizations had
        for org in organizations:
            held = self._owned.pop(org, _Holdings())
            for gateway_id in held.gateways:
                snapshot.gateways.pop(gateway_id, None)
            for key in held.targets:
                snapshot.targets.pop(key, None)
            for key in held.policies:
                snapshot.policies.pop(key, None)
            gone |= held.tokens
        self._add_gateways(gateways, snapshot, self._owned)
        self._add_deployments(deployments, snapshot, self._owned)
        self._add_policies(policies, snapshot, self._owned)
        for token in gone.difference(*(self._owned[org].tokens for org in organizations if org in self._owned)):
            self._keys.pop(token, None)  # a deleted gateway's or a replaced key: not kept in memory
        return snapshot

    async def _pages(self, columns: str, table: str, key: str = "id") -> AsyncIterator[list[dict[str, Any]]]:
        names = [k.strip() for k in key.split(",")]
        after: dict[str, Any] = {}
        while True:
            where = f" WHERE ({key}) > ({', '.join(':a_' + n for n in names)})" if after else ""
            page = await self.database.rows(f"SELECT {columns} FROM {table}{where} ORDER BY {key} LIMIT {PAGE}",
                                            after)
            yield page
            if len(page) < PAGE:
                return
            after = {f"a_{n}": page[-1][n] for n in names}

    def _add_gateways(self, rows: list[dict[str, Any]], snapshot: RoutingSnapshot, owned: _Owned) -> None:
        """These rows into `snapshot`, which is new: nobody reads it yet (so are all _add_ methods')."""
        for g in rows:
            try:
                url = urlsplit(base_url(g))
                port = url.port or (443 if url.scheme == "https" else 80)
                snapshot.gateways[g["id"]] = GatewayRoute(
                    g["id"], g["organization_id"], g["name"], g["environment"], g["region"], g["status"],
                    g["health_status"], url.scheme, url.hostname or "", port, url.path.rstrip("/").encode(),
                    url.netloc.encode(), self._key(g["api_key_encrypted"]), float(g["request_timeout"] or 30.0),
                    Limits.of_gateway(g))
                held = owned[g["organization_id"]]
                held.gateways.add(g["id"])
                if g["api_key_encrypted"]:
                    held.tokens.add(g["api_key_encrypted"])
            except Exception as exc:  # one row that cannot be routed (stored by an older version, say) is skipped,
                # never the table: its agents answer 404 here, every other gateway routes
                if g["id"] not in self._unroutable:
                    self._unroutable.add(g["id"])
                    log.error("gateway %s cannot be routed to (%s): left out of the routing table", g["id"],
                              type(exc).__name__)

    @staticmethod
    def _add_deployments(rows: list[dict[str, Any]], snapshot: RoutingSnapshot, owned: _Owned) -> None:
        # inactive ones too: they are skipped with a reason, and an agent whose deployments are all
        # inactive answers 503 (temporarily nothing to serve it), not 404 (never deployed)
        for d in rows:
            gateway = snapshot.gateways.get(d["gateway_id"])
            if gateway is not None:
                scope = (d["organization_id"], d["agent_id"], gateway.environment)
                scopes = owned[d["organization_id"]].targets
                if scope not in scopes:  # a list of its own: the current snapshot's is not changed
                    snapshot.targets[scope] = []
                    scopes.add(scope)
                snapshot.targets[scope].append(
                    Target(d["id"], d["agent_version"], int(d["weight"]), d["status"], gateway,
                           None if d["rate_limit"] is None else int(d["rate_limit"]),
                           d["rate_limit_failure_mode"] == "closed", d["agent_id"]))

    @staticmethod
    def _add_policies(rows: list[dict[str, Any]], snapshot: RoutingSnapshot, owned: _Owned) -> None:
        for p in rows:
            scope = (p["organization_id"], p["agent_id"], p["environment"])
            snapshot.policies[scope] = Policy(p["strategy"], bool(p["sticky"]), p["sticky_header"], p["fallback"],
                                              _json_list(p["fallback_regions"]))
            owned[p["organization_id"]].policies.add(scope)
