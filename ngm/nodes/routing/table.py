"""What the router knows, in memory: deployments by (organization, agent, environment), their gateways
(with decrypted keys) and the routing policies. Re-read every couple of seconds and at once after a
change in this process; health transitions from the event bus (any instance) apply immediately."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ngm.nodes.gateways.validation import base_url
from ngm.nodes.ratelimit.limiter import Limits

log = logging.getLogger("ngm.routing")


@dataclass
class Policy:
    """How one agent's requests in one environment are routed (the strategies' input)."""

    strategy: str = "weighted"
    sticky: bool = False
    sticky_header: str = "X-Routing-Key"
    fallback: str = "any_region"
    fallback_regions: list[str] = field(default_factory=list)
    # the sticky header's name as a request's header map holds it (lowercase bytes): made once per policy, not
    # per routed request (policies are replaced whole, never changed)
    sticky_key: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.sticky_key = self.sticky_header.lower().encode()

    def view(self) -> dict:
        return {"strategy": self.strategy, "sticky": self.sticky, "sticky_header": self.sticky_header,
                "fallback": self.fallback, "fallback_regions": list(self.fallback_regions)}


_DEFAULT_POLICY = Policy()  # an agent without a policy of its own (never changed: policies are replaced whole)


@dataclass
class GatewayRoute:
    id: str
    organization_id: str
    name: str
    environment: str
    region: str | None
    status: str
    health_status: str
    scheme: str
    host: str
    port: int
    base_path: bytes
    host_header: bytes
    api_key: str | None
    timeout: float
    limits: Limits = Limits()


@dataclass
class Target:
    deployment_id: str
    agent_version: str
    weight: int
    status: str
    gateway: GatewayRoute
    rate_limit: int | None = None  # the deployment's override of the gateway's per-agent limit
    fail_closed: bool = False  # Redis down: refuse (503) rather than limit locally
    agent_id: str = ""
    # what every forwarded request to this target carries, serialised once per table snapshot
    upstream_headers: bytes = b""  # to the gateway: its key, the agent, version and deployment
    answer_lines: bytes = b""  # back to the caller: which deployment and gateway answered

    def __post_init__(self):
        g = self.gateway
        self.upstream_headers = ((b"x-api-key: " + g.api_key.encode() + b"\r\n" if g.api_key else b"")
                                 + b"x-ngm-agent: %b\r\nx-ngm-agent-version: %b\r\nx-ngm-deployment: %b\r\n"
                                 % (self.agent_id.encode(), self.agent_version.encode(), self.deployment_id.encode()))
        self.answer_lines = b"x-ngm-deployment: %b\r\nx-ngm-gateway: %b\r\n" % (self.deployment_id.encode(),
                                                                                g.id.encode())


def _json_list(value) -> list:
    """A JSON list column as read back: text on SQLite, a list on PostgreSQL."""
    return json.loads(value) if isinstance(value, str) else list(value or [])


class RoutingTable:
    def __init__(self, database, keyring, refresh_every: float = 2.0):
        self.database, self.keyring, self.refresh_every = database, keyring, refresh_every
        self.gateways: dict[str, GatewayRoute] = {}
        self.targets: dict[tuple, list[Target]] = {}
        self.policies: dict[tuple, Policy] = {}
        self.refreshed_at = float("-inf")
        self.changed = asyncio.Event()  # set by invalidate(): the refresher wakes at once
        self._keys: dict[str, str] = {}  # encrypted token -> key (decrypt once)
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

    async def refresh(self) -> None:
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
                    g["health_status"], url.scheme, url.hostname, port, url.path.rstrip("/").encode(),
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
        self.gateways, self.targets, self.policies = gateways, targets, policies
        self.refreshed_at = time.monotonic()

    def stale(self) -> bool:
        return time.monotonic() - self.refreshed_at >= self.refresh_every

    def invalidate(self) -> None:
        self.refreshed_at = float("-inf")
        self.changed.set()

    def policy(self, scope: tuple) -> Policy:
        return self.policies.get(scope) or _DEFAULT_POLICY

    def apply_transition(self, data: dict) -> None:
        """A health transition from the bus: route around (or back to) the gateway at once."""
        gateway = self.gateways.get(data.get("gateway_id"))
        if gateway is not None:
            gateway.health_status, gateway.status = data["to_health"], data["to_status"]
