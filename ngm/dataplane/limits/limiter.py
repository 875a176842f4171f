"""The limiter the router and the management API call for every request.

Scopes of a forwarded request: the gateway (global_rate_limit), the agent on that gateway
(per_agent_rate_limit, or the deployment's override) and the caller on that gateway (per_user_rate_limit,
or the API key's override); 0 means unlimited and the scope is left out. All are decided together: a
request refused by one scope is counted in none.

With Redis the decision is shared by every instance; an instance that a sliding window keeps busy takes its
quota a few units at a time (leases.py), near the limit one request at a time. When Redis fails, each
deployment's policy applies: fail-open (default) decides locally at limit / live instances, fail-closed
answers 503. Once Redis has failed, requests stop trying it; a watcher probes it twice a second and switches
back when it answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from redis.exceptions import RedisError

from ngm.dataplane.limits.algorithms import SLIDING_WINDOW, Outcome, Scope
from ngm.dataplane.limits.leases import LEASE_SHARE
from ngm.dataplane.limits.memory import MemoryBackend
from ngm.dataplane.memo import keep
from ngm.errors import RateLimited
from ngm.tasks import stop_tasks

if TYPE_CHECKING:
    import redis.asyncio

    from ngm.dataplane.limits.redis_backend import RedisBackend, Result
    from ngm.nodes.auth.keys import Principal

log = logging.getLogger("ngm.ratelimit")
_REDIS_DOWN = (OSError, asyncio.TimeoutError, ConnectionError, RedisError)
_MEMO = 100_000  # callers whose scopes are kept


@dataclass(frozen=True)
class Limits:
    """What a gateway's table entry carries for the limiter."""

    global_limit: int = 0
    per_agent: int = 0
    per_user: int = 0
    window_ms: int = 60_000
    algorithm: str = SLIDING_WINDOW
    burst: int = 0

    @classmethod
    def of_gateway(cls, g: Mapping[str, Any]) -> "Limits":
        """From a gateway row (the router's table) or view (the usage report)."""
        return cls(int(g["global_rate_limit"] or 0), int(g["per_agent_rate_limit"] or 0),
                   int(g["per_user_rate_limit"] or 0), int(float(g["rate_limit_window"] or 60) * 1000),
                   g["rate_limit_algorithm"] or SLIDING_WINDOW, int(g["rate_limit_burst"] or 0))


class CallerScopes(NamedTuple):
    """What the router's check needs of one caller at one gateway for one agent, built once (_request_scopes)."""

    scopes: list[Scope]
    policy: bytes  # their RateLimit-Policy header
    limits: Limits  # the routing table's object they were made from (a new table makes them again)
    keys: tuple[str, ...] | None  # sliding windows: the scopes' keys and limits for MemoryBackend.admit_sliding
    scope_limits: tuple[int, ...] | None
    templates: tuple[bytes, ...]  # each scope's _lines_template


def request_scopes(limits: Limits, gateway_id: str, agent_id: str, key_id: str, agent_override: int | None,
                   user_override: int | None) -> list[Scope]:
    kind = f"{'w' if limits.algorithm == SLIDING_WINDOW else 't'}{limits.window_ms}"
    agent_limit = agent_override if agent_override is not None else limits.per_agent
    user_limit = user_override if user_override is not None else limits.per_user
    wanted = (("gateway", f"g:{gateway_id}", limits.global_limit), ("agent", f"a:{gateway_id}:{agent_id}", agent_limit),
              ("user", f"u:{gateway_id}:{key_id}", user_limit))
    return [Scope(name, f"{key}:{kind}", limit, limits.window_ms, limits.algorithm, limits.burst)
            for name, key, limit in wanted if limit and limit > 0]


def policy_header(scopes: list[Scope]) -> bytes:
    return ", ".join(f'"{x.name}";q={x.limit};w={max(1, x.window_ms // 1000)}' for x in scopes).encode()


def tightest_scope(scopes: list[Scope], outcomes: list[Outcome]) -> int:
    """The index of the scope the headers name: the refusal with the longest wait, else the least remaining."""
    i, o = 0, outcomes[0]
    for j in range(1, len(outcomes)):
        c = outcomes[j]
        if o.allowed:
            if not c.allowed or c.remaining < o.remaining or (c.remaining == o.remaining and c.reset_ms > o.reset_ms):
                i, o = j, c
        elif not c.allowed and c.retry_ms > o.retry_ms:
            i, o = j, c
    return i


def headers_for(scopes: list[Scope], outcomes: list[Outcome], policy: bytes | None = None) -> list[tuple[bytes, bytes]]:
    """X-RateLimit-* of the tightest scope (the refusing one when refused) and the IETF draft's fields."""
    i = tightest_scope(scopes, outcomes)
    o = outcomes[i]
    out = _scope_headers(scopes[i], o.remaining, o.reset_ms if o.allowed else o.retry_ms,
                         policy or policy_header(scopes))
    if not o.allowed:
        out.append((b"retry-after", out[2][1]))
    return out


def header_lines(headers: list[tuple[bytes, bytes]]) -> bytes:
    """Headers as they go on the wire: what the router adds to its answer's head."""
    return b"".join([b"%b: %b\r\n" % header for header in headers])


_SCOPE_LINES = (b"x-ratelimit-limit: %d\r\nx-ratelimit-remaining: %%d\r\nx-ratelimit-reset: %%d\r\n"
                b'ratelimit-policy: %b\r\nratelimit: "%b";r=%%d;t=%%d\r\n')


def _lines_template(s: Scope, policy: bytes) -> bytes:
    """An admitted request's header lines when `s` is the tightest scope, all but its remaining and reset
    (for _scope_lines; made once per caller)."""
    return _SCOPE_LINES % (s.limit, policy.replace(b"%", b"%%"), s.name.encode().replace(b"%", b"%%"))


def _scope_lines(template: bytes, remaining: int, reset_ms: int) -> bytes:
    """header_lines(_scope_headers(...)) in one step: an admitted request's headers on the router, where five
    header pairs built and serialised one by one cost 5% of its CPU per request (bench/router_ab.py)."""
    reset = -(-reset_ms // 1000)  # whole seconds, rounded up
    return template % (remaining, reset, remaining, reset)


def _scope_headers(s: Scope, remaining: int, reset_ms: int, policy: bytes) -> list[tuple[bytes, bytes]]:
    reset = -(-reset_ms // 1000)  # whole seconds, rounded up
    return [(b"x-ratelimit-limit", b"%d" % s.limit), (b"x-ratelimit-remaining", b"%d" % remaining),
            (b"x-ratelimit-reset", b"%d" % reset), (b"ratelimit-policy", policy),
            (b"ratelimit", b'"%s";r=%d;t=%d' % (s.name.encode(), remaining, reset))]


def _refused(scopes: list[Scope], outcomes: list[Outcome], headers: list[tuple[bytes, bytes]]) -> RateLimited:
    names = [s.name for s, o in zip(scopes, outcomes) if not o.allowed]
    return RateLimited(f"rate limit exceeded ({', '.join(names)} scope)", headers=headers,
                       details=[{"scope": s.name, "limit": s.limit, "window_seconds": s.window_ms / 1000,
                                 "retry_after_ms": o.retry_ms} for s, o in zip(scopes, outcomes) if not o.allowed])


def _verdict(scopes: list[Scope], outcomes: list[Outcome], policy: bytes) -> list[tuple[bytes, bytes]]:
    """The headers of an admitted request; raises RateLimited for a refused one."""
    headers = headers_for(scopes, outcomes, policy)
    for o in outcomes:  # a loop, not all(<generator>): this runs for every request checked through Redis
        if not o.allowed:
            raise _refused(scopes, outcomes, headers)
    return headers


def refusal_of(scopes: list[Scope], outcomes: list[Outcome]) -> RateLimited | None:
    """The router's refusal for these outcomes (what check() raises), or None when they admit."""
    try:
        _verdict(scopes, outcomes, policy_header(scopes))
    except RateLimited as refused:
        return refused
    return None


class RateLimiter:
    def __init__(self, redis_backend: RedisBackend | None = None, api_limit: int = 0, api_window_ms: int = 60_000,
                 instance: str = "local", redis: redis.asyncio.Redis | None = None, namespace: str = "ngm",
                 clock: Callable[[], float] = time.time) -> None:
        self.local = MemoryBackend(clock)
        self.shared = redis_backend
        self.leases = redis_backend.leases if redis_backend is not None else None
        self.redis, self.instance, self.namespace = redis, instance, namespace
        self.api_limit, self.api_window_ms = api_limit, api_window_ms
        self.redis_up = True
        self.live_instances = 1
        self.counters = {"redis_failures": 0, "switched_to_local": 0, "recovered": 0, "decided_locally": 0,
                         "refused_unavailable": 0}
        self._task: asyncio.Task[None] | None = None
        # a caller's scopes, built once: the router's keyed by (Limits id, gateway, agent, key id, agent and
        # user overrides), the management API's by ("api", key id, limit): CallerScopes for the router's, (scopes,
        # policy, None) for the API's (typed where they are read)
        self._scopes: dict[tuple[Any, ...], Any] = {}

    # ------------------------------------------------------------------ deciding

    async def decide(self, scopes: list[Scope], counter: str, fail_closed: bool = False,
                     peek: bool = False) -> list[Outcome]:
        if self.shared is None:
            return self.local.check_now(scopes, counter, peek)
        if self.redis_up:
            try:
                return await self.shared.check(scopes, counter, peek)
            except _REDIS_DOWN as exc:
                self._went_down(exc)
        return self._decide_without_redis(scopes, counter, fail_closed, peek)

    def _decide_without_redis(self, scopes: list[Scope], counter: str, fail_closed: bool,
                              peek: bool) -> list[Outcome]:
        if fail_closed:  # a peek hears it too: it asks what a request would get
            if not peek:
                self.counters["refused_unavailable"] += 1
            raise RateLimited("rate limits cannot be checked right now (Redis unavailable) and this deployment "
                              "fails closed", status=503, code="rate_limiter_unavailable",
                              details=[{"field": "rate_limit_failure_mode", "message": "closed"}],
                              headers=[(b"retry-after", b"1")])
        self.counters["decided_locally"] += 1
        return self.local.check_now([s.divided(self.live_instances) for s in scopes], counter, peek)

    async def check(self, principal: Principal, limits: Limits, gateway_id: str, agent_id: str,
                    agent_override: int | None, fail_closed: bool) -> bytes:
        """The router's check before a request leaves: -> the answer's header lines (header_lines()), or raises
        RateLimited (429/503)."""
        mine = self._request_scopes(principal, limits, gateway_id, agent_id, agent_override)
        if not mine.scopes:
            return b""
        return header_lines(_verdict(mine.scopes, await self.decide(mine.scopes, gateway_id, fail_closed), mine.policy))

    def check_then(self, principal: Principal, limits: Limits, gateway_id: str, agent_id: str,
                   agent_override: int | None, fail_closed: bool,
                   done: Callable[[bytes | None, Exception | None], None]) -> bytes | None:
        """check() without a coroutine: the header lines now (or RateLimited raised) when no round trip is
        needed (a lease admits it, or Redis is down), else None, and done(lines, None) or done(None, exception)
        once Redis has answered."""
        scopes, policy, _, keys, scope_limits, templates = self._request_scopes(principal, limits, gateway_id,
                                                                                agent_id, agent_override)
        if not scopes:
            return b""
        if not self.redis_up:
            return header_lines(_verdict(scopes, self._decide_without_redis(scopes, gateway_id, fail_closed, False),
                                         policy))
        wishes = None
        if keys is not None:  # sliding windows: leased quota first
            # the router calls check_then only with Redis (self.shared, whose leases these are); the limits come
            # with the keys
            assert self.leases is not None and scope_limits is not None
            admitted = self.leases.admit(keys, scope_limits)
            if admitted is not None:
                return _scope_lines(templates[admitted[0]], admitted[1], admitted[2])
            wishes = self.leases.wishes(keys)

        def answered(result: Result, error: BaseException | None) -> None:
            try:
                if error is not None:
                    if not isinstance(error, _REDIS_DOWN):
                        raise error
                    self._went_down(error)
                    result = self._decide_without_redis(scopes, gateway_id, fail_closed, False)
                if type(result) is tuple:  # admitted: the tightest scope's index, remaining, reset ms
                    lines = _scope_lines(templates[result[0]], result[1], result[2])
                else:  # Outcomes (`type(...) is tuple` narrows only its own branch; a cast would be a call)
                    lines = header_lines(_verdict(scopes, result, policy))  # type: ignore[arg-type]
            except Exception as exc:  # RateLimited among them
                done(None, exc)
                return
            done(lines, None)

        assert self.shared is not None  # the router calls check_then only with Redis
        self.shared.check_then(scopes, gateway_id, answered, wishes)
        return None

    def check_local(self, principal: Principal, limits: Limits, gateway_id: str, agent_id: str,
                    agent_override: int | None) -> bytes:
        """check() on an instance without Redis, as a plain call (no coroutine: it runs for every request).
        Sliding windows that all admit take the backend's short path (in situ the general one cost the router
        17-19% of its CPU per request)."""
        scopes, policy, _, keys, scope_limits, templates = self._request_scopes(principal, limits, gateway_id,
                                                                                agent_id, agent_override)
        if not scopes:
            return b""
        if keys is not None:
            assert scope_limits is not None  # made with the keys
            admitted = self.local.admit_sliding(keys, scope_limits, limits.window_ms)
            if admitted is not None:
                i, remaining, reset_ms = admitted
                return _scope_lines(templates[i], remaining, reset_ms)
        return header_lines(_verdict(scopes, self.local.check_now(scopes, gateway_id), policy))

    def _request_scopes(self, principal: Principal, limits: Limits, gateway_id: str, agent_id: str,
                        agent_override: int | None) -> "CallerScopes":
        """The caller's CallerScopes at this gateway for this agent, built once per caller."""
        # keyed by the Limits object's identity (the routing table makes one per refresh; hashing its
        # fields per request cost more than the check), guarded against a reused id by `is`
        which = (id(limits), gateway_id, agent_id, principal.key_id, agent_override, principal.rate_limit)
        cached: CallerScopes | None = self._scopes.get(which)
        if cached is None or cached.limits is not limits:
            scopes = request_scopes(limits, gateway_id, agent_id, principal.key_id, agent_override,
                                    principal.rate_limit)
            sliding, policy = limits.algorithm == SLIDING_WINDOW, policy_header(scopes)
            cached = keep(self._scopes, which, CallerScopes(scopes, policy, limits,
                                                            tuple([s.key for s in scopes]) if sliding else None,
                                                            tuple([s.limit for s in scopes]) if sliding else None,
                                                            tuple([_lines_template(s, policy) for s in scopes])),
                          _MEMO)
        return cached

    async def peek(self, key_id: str, user_override: int | None, limits: Limits, gateway_id: str, agent_id: str,
                   agent_override: int | None, fail_closed: bool) -> tuple[list[Scope], list[Outcome]]:
        """What check() would decide for this caller now, counting nothing: the scopes and each one's outcome;
        raises RateLimited (503) as check() does when the limiter cannot decide and the deployment fails closed."""
        scopes = request_scopes(limits, gateway_id, agent_id, key_id, agent_override, user_override)
        return scopes, (await self.decide(scopes, gateway_id, fail_closed, peek=True) if scopes else [])

    async def check_api(self, principal: Principal) -> list[tuple[bytes, bytes]]:
        """The management API's own per-key limit (the key's api_rate_limit, else NGM_API_RATE_LIMIT)."""
        limit = principal.api_rate_limit if principal.api_rate_limit is not None else self.api_limit
        if not limit:
            return []
        which = ("api", principal.key_id, limit)
        cached: tuple[list[Scope], bytes, None] | None = self._scopes.get(which)
        if cached is None:  # the same list every call: the Redis backend packs a caller's request once per list
            scopes = [Scope("api", f"api:{principal.key_id}:w{self.api_window_ms}", limit, self.api_window_ms)]
            cached = keep(self._scopes, which, (scopes, policy_header(scopes), None), _MEMO)
        scopes, policy, _ = cached
        outcomes = await self.decide(scopes, "api")
        headers = headers_for(scopes, outcomes, policy)
        if not outcomes[0].allowed:
            raise RateLimited("too many management API requests for this key", headers=headers,
                              details=[{"scope": "api", "limit": limit, "window_seconds": self.api_window_ms / 1000,
                                        "retry_after_ms": outcomes[0].retry_ms}])
        return headers

    async def rejections(self, counter: str) -> dict[str, int]:
        local = await self.local.rejections(counter)
        if self.shared is None or not self.redis_up:
            return local
        try:
            shared = await self.shared.rejections(counter)
        except _REDIS_DOWN:
            return local
        return {k: shared.get(k, 0) + local.get(k, 0) for k in set(shared) | set(local)}

    async def users_seen(self, gateway_id: str, limits: Limits) -> list[str]:
        """Key ids with counts under the gateway's user scope now (shared ones when Redis answers)."""
        kind = f"{'w' if limits.algorithm == SLIDING_WINDOW else 't'}{limits.window_ms}"
        prefix = f"u:{gateway_id}:"
        found = {k[len(prefix):].split(":")[0] for k in self.local.keys() if k.startswith(prefix) and f":{kind}" in k}
        if self.shared is not None and self.redis_up:
            try:
                found |= {k[len(prefix):].split(":")[0] for k in await self.shared.keys(prefix, kind)}
            except _REDIS_DOWN:
                pass
        return sorted(found)

    # ------------------------------------------------------------------ Redis health

    def _went_down(self, exc: BaseException) -> None:
        self.counters["redis_failures"] += 1
        if self.redis_up:
            self.redis_up = False
            self.counters["switched_to_local"] += 1
            log.warning("rate limits: Redis unreachable (%s); deciding locally at limit/%d (fail-open) or "
                        "refusing (fail-closed) until it answers", type(exc).__name__, self.live_instances)

    async def start(self) -> None:
        if self.redis is not None:
            await self._beat()
            self._task = asyncio.create_task(self._watch(), name="ngm-ratelimit-watch")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_tasks([self._task])
        if self.shared is not None and self.redis_up:
            try:  # leased units not used would count until their window ends
                await asyncio.wait_for(self.shared.give_back_all(), 1)
            except _REDIS_DOWN as exc:
                log.info("rate limits: unused lease units not given back at stop (%s)", type(exc).__name__)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            await self._beat()

    async def _beat(self) -> None:
        """Announce this instance, count the live ones (fail-open divides by them), notice recovery."""
        assert self.redis is not None  # start() runs it (and _watch) only with Redis
        try:
            await self.redis.set(f"{self.namespace}:instances:{self.instance}", "1", px=3000)
            live = 0
            async for _ in self.redis.scan_iter(match=f"{self.namespace}:instances:*", count=100):
                live += 1
            self.live_instances = max(1, live)
            if self.leases is not None:
                self.leases.share = LEASE_SHARE * self.live_instances
            if not self.redis_up:
                self.redis_up = True
                self.counters["recovered"] += 1
                log.warning("rate limits: Redis answers again; limits are shared across instances again")
        except _REDIS_DOWN as exc:
            self._went_down(exc)

    def status(self) -> dict[str, Any]:
        leases = {} if self.leases is None else {"leases_granted": self.leases.granted,
                                                 "lease_units_given_back": self.leases.given_back}
        return {"ok": True, "backend": "redis" if self.shared is not None else "memory",
                "mode": "shared" if self.shared is not None and self.redis_up else "local",
                "live_instances": self.live_instances, **self.counters, **leases,
                **({"connection": self.shared.connection} if self.shared is not None else {})}

