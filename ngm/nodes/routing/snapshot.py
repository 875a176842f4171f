"""The control plane's side of the routing table: the snapshot the router gets, read from the database."""

from __future__ import annotations

import json
import logging
from urllib.parse import urlsplit

from ngm.dataplane.limits.limiter import Limits
from ngm.dataplane.table import GatewayRoute, Policy, RoutingSnapshot, Target
from ngm.models.database import Queries
from ngm.nodes.gateways.validation import base_url
from ngm.nodes.secrets.keyring import Keyring

log = logging.getLogger("ngm.routing")


def _json_list(value) -> list:
    """A JSON list column as read back: text on SQLite, a list on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else list(value or [])


class SnapshotLoader:
    """Reads every gateway, deployment and policy into a RoutingSnapshot, decrypting each gateway key once."""

    def __init__(self, database: Queries, keyring: Keyring):
        self.database, self.keyring = database, keyring
        self._keys: dict[str, str | None] = {}  # encrypted token -> key (decrypt once)
        self._unroutable: set[str] = set()  # gateways already reported as left out

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
        gateways = {}
        rows = await self.database.rows(
            "SELECT id, organization_id, name, environment, region, status, health_status, api_url, api_port, "
            "api_key_encrypted, request_timeout, global_rate_limit, per_agent_rate_limit, per_user_rate_limit, "
            "rate_limit_window, rate_limit_algorithm, rate_limit_burst FROM gateways")
        live_tokens = {g["api_key_encrypted"] for g in rows}
        self._keys = {t: k for t, k in self._keys.items() if t in live_tokens}  # forget rotated keys
        for g in rows:
            try:
                url = urlsplit(base_url(g))
                port = url.port or (443 if url.scheme == "https" else 80)
                gateways[g["id"]] = GatewayRoute(
                    g["id"], g["organization_id"], g["name"], g["environment"], g["region"], g["status"],
                    g["health_status"], url.scheme, url.hostname or "", port, url.path.rstrip("/").encode(),
                    url.netloc.encode(), self._key(g["api_key_encrypted"]), float(g["request_timeout"] or 30.0),
                    Limits.of_gateway(g))
            except Exception as exc:  # one row that cannot be routed (stored by an older version, say) is skipped,
                # never the table: its agents answer 404 here, every other gateway routes
                if g["id"] not in self._unroutable:
                    self._unroutable.add(g["id"])
                    log.error("gateway %s cannot be routed to (%s): left out of the routing table", g["id"],
                              type(exc).__name__)
        targets: dict[tuple, list[Target]] = {}
        # inactive ones too: they are skipped with a reason, and an agent whose deployments are all
        # inactive answers 503 (temporarily nothing to serve it), not 404 (never deployed)
        for d in await self.database.rows(
                "SELECT id, organization_id, agent_id, agent_version, weight, status, gateway_id, rate_limit, "
                "rate_limit_failure_mode FROM gateway_deployments ORDER BY id"):
            gateway = gateways.get(d["gateway_id"])
            if gateway is not None:
                targets.setdefault((d["organization_id"], d["agent_id"], gateway.environment), []).append(
                    Target(d["id"], d["agent_version"], int(d["weight"]), d["status"], gateway,
                           None if d["rate_limit"] is None else int(d["rate_limit"]),
                           d["rate_limit_failure_mode"] == "closed", d["agent_id"]))
        policies = {}
        for p in await self.database.rows(
                "SELECT organization_id, agent_id, environment, strategy, sticky, sticky_header, fallback, "
                "fallback_regions FROM routing_policies"):
            policies[(p["organization_id"], p["agent_id"], p["environment"])] = Policy(
                p["strategy"], bool(p["sticky"]), p["sticky_header"], p["fallback"], _json_list(p["fallback_regions"]))
        return RoutingSnapshot(gateways, targets, policies)
