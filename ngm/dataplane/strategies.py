"""Routing strategies as plain code: which deployment serves a request, and why.

- weighted: smooth weighted round robin (nginx's algorithm) over weights reduced by their gcd, so a
  90/10 split sends exactly 9 of every 10 consecutive requests to the first deployment;
- round_robin: each eligible deployment in turn, weights ignored (beyond 0 = no traffic);
- least_connections: the fewest requests in flight per unit of weight;
- geographic: deployments in the caller's region (weighted among them); when none is eligible there,
  the policy's fallback regions in order, then any region (or a 503 when fallback is "none");
- sticky keys (any strategy but least_connections): weighted rendezvous hashing, so one key stays on
  one deployment while it is eligible, keys spread in proportion to the weights, and a weight change
  moves only the keys it must.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import reduce
from typing import TYPE_CHECKING, Any, TypeVar

from ngm.dataplane.memo import keep
from ngm.dataplane.table import Policy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Protocol

    from ngm.dataplane import table

    class _Weighted(Protocol):
        """What the weighted and round-robin picks read: a Candidate, or the router's Target."""

        @property
        def deployment_id(self) -> str: ...

        @property
        def weight(self) -> int: ...

_W = TypeVar("_W", bound="_Weighted")

STRATEGIES = ("round_robin", "least_connections", "weighted", "geographic")


@dataclass(slots=True)  # one per deployment of every routed request: slots make it cheaper to build
class Candidate:
    deployment_id: str
    gateway_id: str
    gateway_name: str
    agent_version: str
    weight: int
    region: str | None
    status: str = "active"  # deployment: active | draining | inactive
    gateway_status: str = "active"
    health_status: str = "unknown"
    in_flight: int = 0
    circuit: str = "closed"  # closed | open | half_open
    target: object = field(default=None, repr=False, compare=False)  # the router's Target (not in views)

    def view(self) -> dict[str, Any]:
        return {"deployment_id": self.deployment_id, "gateway_id": self.gateway_id, "gateway_name": self.gateway_name,
                "agent_version": self.agent_version, "weight": self.weight, "region": self.region,
                "health_status": self.health_status, "in_flight": self.in_flight, "circuit": self.circuit}


def ineligible_reason(c: Candidate) -> str | None:
    if c.status != "active":
        return f"deployment {c.status}"
    if c.weight <= 0:
        return "weight 0"
    if c.gateway_status != "active":
        return f"gateway {'in error' if c.gateway_status == 'error' else c.gateway_status}"
    if c.health_status == "unhealthy":
        return "gateway unhealthy"
    if c.circuit == "open":
        return "circuit open (recent failures)"
    return None


class SmoothWeighted:
    """Smooth weighted round robin; its state survives candidates coming and going."""

    def __init__(self) -> None:
        self.current: dict[str, int] = {}
        # weights -> (weights / their gcd, their sum): once per weight set
        self._reduced: dict[tuple[int, ...], tuple[tuple[int, ...], int]] = {}

    def pick(self, candidates: list[_W], commit: bool = True) -> _W:
        # One candidate (most agents): it is the pick and its value does not move; only departed deployments are
        # forgotten, as the loop below would do
        if len(candidates) == 1:
            only, current = candidates[0], self.current
            if commit and (len(current) != 1 or only.deployment_id not in current):
                self.current = {only.deployment_id: current.get(only.deployment_id, 0)}
            return only
        key = tuple([c.weight for c in candidates])
        reduced = self._reduced.get(key)
        if reduced is None:
            divisor = reduce(math.gcd, key)
            weights = tuple(w // divisor for w in key)
            reduced = keep(self._reduced, key, (weights, sum(weights)), 1000)
        weights, total = reduced
        current = self.current if commit else dict(self.current)
        best, best_value = None, 0
        for c, weight in zip(candidates, weights):
            value = current[c.deployment_id] = current.get(c.deployment_id, 0) + weight
            if best is None or value > best_value:
                best, best_value = c, value
        assert best is not None  # two candidates at least (one returned above; the callers pass none empty)
        current[best.deployment_id] = best_value - total
        if commit and len(current) > len(candidates):  # forget deployments that left
            for gone in set(current) - {c.deployment_id for c in candidates}:
                del current[gone]
        return best


class RoundRobin:
    def __init__(self) -> None:
        self.turn = 0

    def pick(self, candidates: list[_W], commit: bool = True) -> _W:
        chosen = sorted(candidates, key=lambda c: c.deployment_id)[self.turn % len(candidates)]
        if commit:
            self.turn += 1
        return chosen


class LeastConnections:
    """Fewest in flight per unit of weight; ties go round robin so idle deployments share the work."""

    def __init__(self) -> None:
        self.turn = 0

    def pick(self, candidates: list[Candidate], commit: bool = True) -> Candidate:
        load = {c.deployment_id: c.in_flight / c.weight for c in candidates}
        lowest = min(load.values())
        tied = sorted((c for c in candidates if load[c.deployment_id] == lowest), key=lambda c: c.deployment_id)
        chosen = tied[self.turn % len(tied)]
        if commit:
            self.turn += 1
        return chosen


def rendezvous(candidates: list[_W], key: str) -> _W:
    """Weighted rendezvous (highest random weight) hashing."""
    def score(c: _W) -> float:
        digest = hashlib.blake2b(f"{key}\x00{c.deployment_id}".encode(), digest_size=8).digest()
        u = (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 1)  # in (0, 1)
        return c.weight / -math.log(u)

    return max(candidates, key=score)


@dataclass(slots=True)
class Decision:
    chosen: Candidate | None
    strategy: str
    eligible: list[Candidate]
    skipped: list[tuple[Candidate, str]]
    reason: str
    region: str | None = None
    region_used: str | None = None  # geographic: the region the choice came from (None: any)
    sticky_key_source: str | None = None  # header | api_key | None

    def view(self) -> dict[str, Any]:
        total = sum(c.weight for c in self.eligible) or 1
        return {
            "deployment": self.chosen.view() if self.chosen else None,
            "strategy": self.strategy, "reason": self.reason, "region": self.region,
            "region_used": self.region_used, "sticky_key_source": self.sticky_key_source,
            "candidates": [c.view() | {"share_percent": round(100.0 * c.weight / total, 2)} for c in self.eligible],
            "skipped": [c.view() | {"reason": why} for c, why in self.skipped],
        }


class RoutingState:
    """What a strategy remembers between requests for one agent in one environment."""

    def __init__(self) -> None:
        self.weighted: dict[tuple[str | None, ...], SmoothWeighted] = {}
        self.round_robin = RoundRobin()
        self.least = LeastConnections()

    def smooth(self, scope: tuple[str | None, ...] = ()) -> SmoothWeighted:
        if scope not in self.weighted:
            self.weighted[scope] = SmoothWeighted()
        return self.weighted[scope]


def choose(policy: Policy, candidates: list[Candidate], state: RoutingState, *, region: str | None = None,
           routing_key: str | None = None, key_source: str | None = None, exclude: frozenset[str] = frozenset(),
           commit: bool = True) -> Decision:
    eligible, skipped = [], []
    for c in candidates:
        why = "failed on this request" if c.deployment_id in exclude else ineligible_reason(c)
        if why:
            skipped.append((c, why))
        else:
            eligible.append(c)
    sticky = policy.sticky and policy.strategy != "least_connections" and routing_key
    decision = Decision(None, policy.strategy, eligible, skipped, "", region=region,
                        sticky_key_source=key_source if sticky else None)
    if not eligible:
        decision.reason = "no eligible deployment"
        return decision
    pool, scope = eligible, ()  # type: list[Candidate], tuple[str | None, ...]
    if policy.strategy == "geographic":
        pool, decision.region_used = _by_region(policy, eligible, region)
        if not pool:
            decision.reason = f"no eligible deployment in region {region} and fallback is none"
            return decision
        scope = (decision.region_used,)
    if sticky:
        assert routing_key is not None  # sticky only with a key
        decision.chosen = rendezvous(pool, routing_key)
        decision.reason = f"sticky key from {key_source}, weighted rendezvous hashing"
    elif policy.strategy == "round_robin":
        decision.chosen = state.round_robin.pick(pool, commit)
        decision.reason = "next in turn"
    elif policy.strategy == "least_connections":
        decision.chosen = state.least.pick(pool, commit)
        decision.reason = f"fewest in flight per weight ({decision.chosen.in_flight} in flight)"
    else:
        decision.chosen = state.smooth(scope).pick(pool, commit)
        decision.reason = "smooth weighted round robin"
    if policy.strategy == "geographic":
        where = decision.region_used or "any region"
        decision.reason += f" in {where}" + (" (fallback)" if decision.region_used != region else "")
    return decision


def pick_target(policy: Policy, targets: Iterable[table.Target], state: RoutingState,
                circuit_state: Callable[[str], str], routing_key: str | None) -> table.Target | None:
    """choose()'s pick for the router's hot path, made on the routing table's Targets without a Candidate per
    deployment or a Decision (a tenth of the router's time went on building them): the same choice, with
    the same effect on `state`, for the weighted and round-robin strategies, sticky or not, with nothing
    excluded. None: choose() decides (least connections, geographic, or nothing eligible, when the
    answer must say why)."""
    if policy.strategy != "weighted" and policy.strategy != "round_robin":
        return None
    pool = []
    for t in targets:  # ineligible_reason() on a Target
        g = t.gateway
        if (t.status == "active" and t.weight > 0 and g.status == "active" and g.health_status != "unhealthy"
                and circuit_state(g.id) != "open"):
            pool.append(t)
    if not pool:
        return None
    if policy.sticky and routing_key:
        return rendezvous(pool, routing_key)
    if policy.strategy == "round_robin":
        return state.round_robin.pick(pool)
    return state.smooth().pick(pool)


def _by_region(policy: Policy, eligible: list[Candidate], region: str | None) -> tuple[list[Candidate], str | None]:
    for preferred in ([region] if region else []) + list(policy.fallback_regions):
        pool = [c for c in eligible if c.region == preferred]
        if pool:
            return pool, preferred
    if region and policy.fallback == "none":
        return [], None
    return eligible, None
