"""What the router knows, in memory: deployments by (organization, agent, environment), their gateways
(with decrypted keys) and the routing policies, as the control plane last published them
(ngm/nodes/routing/snapshot.py); health transitions from the event bus (any instance) apply immediately."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from ngm.dataplane.limits.limiter import Limits


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

    def view(self) -> dict[str, Any]:
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

    def __post_init__(self) -> None:
        g = self.gateway
        self.upstream_headers = ((b"x-api-key: " + g.api_key.encode() + b"\r\n" if g.api_key else b"")
                                 + b"x-ngm-agent: %b\r\nx-ngm-agent-version: %b\r\nx-ngm-deployment: %b\r\n"
                                 % (self.agent_id.encode(), self.agent_version.encode(), self.deployment_id.encode()))
        self.answer_lines = b"x-ngm-deployment: %b\r\nx-ngm-gateway: %b\r\n" % (self.deployment_id.encode(),
                                                                                g.id.encode())


@dataclass(frozen=True)
class RoutingSnapshot:
    """What the control plane publishes to the router: every gateway (with its decrypted key and limits), the
    deployments of each (organization, agent, environment) and the routing policies. Replaced whole, never
    changed; only health and status, which the monitor reports between snapshots, change on a GatewayRoute."""

    gateways: dict[str, GatewayRoute] = field(default_factory=dict)
    targets: dict[tuple[str, str, str], list[Target]] = field(default_factory=dict)
    policies: dict[tuple[str, str, str], Policy] = field(default_factory=dict)


class RoutingTable:
    """The snapshot the router reads now. The control plane publishes a new one after every change it makes
    and every refresh_every seconds."""

    def __init__(self, refresh_every: float = 2.0):
        self.refresh_every = refresh_every
        self.gateways: dict[str, GatewayRoute] = {}
        self.targets: dict[tuple[str, str, str], list[Target]] = {}
        self.policies: dict[tuple[str, str, str], Policy] = {}
        self.refreshed_at = float("-inf")
        self.changed = asyncio.Event()  # set by invalidate(): the control plane publishes again at once

    def publish(self, snapshot: RoutingSnapshot) -> None:
        self.gateways, self.targets, self.policies = snapshot.gateways, snapshot.targets, snapshot.policies
        self.refreshed_at = time.monotonic()

    def stale(self) -> bool:
        return time.monotonic() - self.refreshed_at >= self.refresh_every

    def invalidate(self) -> None:
        self.refreshed_at = float("-inf")
        self.changed.set()

    def policy(self, scope: tuple[str, str, str]) -> Policy:
        return self.policies.get(scope) or _DEFAULT_POLICY

    def apply_transition(self, data: dict[str, Any]) -> None:
        """A health transition from the bus: route around (or back to) the gateway at once."""
        gateway = self.gateways.get(data.get("gateway_id"))  # type: ignore[arg-type]  # no id: get(None) finds none
        if gateway is not None:
            gateway.health_status, gateway.status = data["to_health"], data["to_status"]
