"""The forwarding router: /api/v1/agents/{agent_id}/invoke/{path}, any method.

Runs in process for every request (no workflow execution): authenticate (the HTTP middleware), choose a
deployment with the policy's strategy node, forward to that gateway with the gateway's own key (the
caller's credential is never passed on), stream the answer back with X-Request-ID and X-NGM-Deployment.
A connection failure of an idempotent request is retried once on another deployment; consecutive
failures open the gateway's circuit; in-flight counts feed least-connections and draining.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, cast

from ngm.dataplane.memo import keep
from ngm.dataplane.strategies import Candidate, Decision, RoutingState
from ngm.dataplane.upstream import PoolBusy, UpstreamBroken, UpstreamError, UpstreamTimeout, UpstreamUnreachable
from ngm.errors import RateLimited, Refusal
from ngm.nodes.gateways.validation import ENVIRONMENTS

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from typing import TypeAlias

    from ngm.dataplane.circuit import CircuitBreakers
    from ngm.dataplane.inflight import InFlight
    from ngm.dataplane.limits.limiter import RateLimiter
    from ngm.dataplane.protocol import AgentRequest, AgentTraffic
    from ngm.dataplane.table import Policy, RoutingTable, Target
    from ngm.dataplane.traffic import TrafficStats
    from ngm.dataplane.upstream import UpstreamPool, UpstreamResponse, _Connection
    from ngm.nodes.auth.keys import Principal
    from ngm.nodes.routing.nodes import StrategyNode

    Scope: TypeAlias = tuple[str, str, str]  # (organization, agent, environment)
    # Redis's verdict on a request's limits: (lines, None) or (None, error)
    LimitsCame: TypeAlias = Callable[[bytes | None, Exception | None], None]

log = logging.getLogger("ngm.routing")
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization",
                         b"proxy-connection", b"te", b"trailer", b"trailers", b"transfer-encoding", b"upgrade"})
# never forwarded upstream: the caller's credentials, our own routing headers, what we set ourselves (who called:
# ngm/dataplane/invoke.py forwarded_lines, from what this router saw)
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"expect", b"authorization", b"x-api-key", b"content-length", b"x-request-id",
                                b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port",
                                b"forwarded", b"x-real-ip"}
_NOT_RETURNED = _HOP_BY_HOP | {b"date", b"server", b"x-request-id"}  # we send our own Date and id
_listed: dict[bytes, frozenset[bytes] | None] = {}


def connection_listed(value: bytes) -> frozenset[bytes] | None:
    """The header names a Connection header lists (hop-by-hop for this connection alone, RFC 9110 7.6.1):
    dropped like the standard ones. None when it lists none beyond those (keep-alive, close)."""
    found = _listed.get(value, _listed)
    if found is _listed:
        names = frozenset(t.strip().lower() for t in value.split(b",")) - {b"", b"close"} - _HOP_BY_HOP
        found = keep(_listed, value, names or None, 1024)
    return found  # type: ignore[return-value]  # never the sentinel, replaced above (a cast would be a call)


class Router:
    def __init__(self, table: RoutingTable, pool: UpstreamPool | None, breakers: CircuitBreakers,
                 stats: TrafficStats, inflight: InFlight, selectors: dict[str, StrategyNode]) -> None:
        # pool None: a router that only decides (AppContext.live_router outside the server), never forwards
        self.table, self.pool, self.breakers, self.stats, self.inflight = table, pool, breakers, stats, inflight
        self.selectors = selectors  # strategy -> Kailash node whose select() runs in process
        self.states: dict[Scope, RoutingState] = {}
        self.limiter: RateLimiter | None = None  # async check(...) -> header lines, or raises RateLimited

    # ------------------------------------------------------------ decisions

    def candidates(self, scope: Scope) -> list[Candidate]:
        here, elsewhere, breakers = self.inflight.counts, self.inflight.elsewhere, self.breakers
        out = []
        for t in self.table.targets.get(scope, ()):
            g, d = t.gateway, t.deployment_id
            out.append(Candidate(d, g.id, g.name, t.agent_version, t.weight, g.region, t.status, g.status,
                                 g.health_status, here.get(d, 0) + elsewhere.get(d, 0), breakers.state(g.id),
                                 target=t))
        return out

    def decide(self, organization_id: str, agent_id: str, environment: str, *, region: str | None = None,
               routing_key: str | None = None, key_source: str | None = None, exclude: frozenset[str] = frozenset(),
               commit: bool = True) -> Decision:
        """The decision; its chosen candidate's `target` is the table's Target to forward to."""
        scope = (organization_id, agent_id, environment)
        policy = self.table.policy(scope)
        return self.selectors[policy.strategy].select(
            policy, self.candidates(scope), self.state_of(scope), region=region, routing_key=routing_key,
            key_source=key_source, exclude=exclude, commit=commit)

    def state_of(self, scope: Scope) -> RoutingState:
        """What the strategies remember of one (organization, agent, environment)."""
        state = self.states.get(scope)
        if state is None:
            state = self.states[scope] = RoutingState()
        return state

    # ------------------------------------------------------------ forwarding
    #
    # Two ways through the same steps. forward_now() runs the exchange as plain calls and parser callbacks
    # when nothing has to be waited for on our side (the body came with the head, the key is cached, limits
    # are in memory, an idle connection to the gateway is open) and the answer comes whole, as most do: no
    # task, no coroutine, no future per request (-3% to -8% CPU per request in bench/router_ab.py runs of 30
    # rounds). Anything else hands the request over to the coroutine path at the step it reached.

    async def forward(self, request: AgentRequest, principal: Principal, request_id: str) -> None:
        """Serve one invoke request; `request` is the connection's AgentRequest (ngm/dataplane/protocol.py),
        which answers a Refusal raised here."""
        fw = self._prepare(request, principal, request_id)
        fw.body = request.complete_body()
        if fw.body is None:
            fw.body = await request.read_body()
        await self._attempts(fw)

    def forward_now(self, request: AgentRequest, principal: Principal, request_id: str, body: bytes,
                    owner: AgentTraffic) -> Coroutine[Any, Any, None] | None:
        """forward() without waiting where it can: None when the request was taken (then `owner`, the
        AgentTraffic, hears of it again: finished(request) once answered here, failed(request, exc) if that
        went wrong, or resume(request, coroutine) to go on in a task), else the coroutine that serves the
        rest of it. Raises Refusal like forward()."""
        fw = self._prepare(request, principal, request_id)
        fw.body, fw.owner = body, owner
        target = self._choose(fw, frozenset())
        limit_lines = self._limits_now(
            fw, target, lambda lines, error: self._limits_came(fw, target, lines, error))
        if limit_lines is None:  # Redis answers later: _limits_came goes on
            return None
        return self._send_or_hand_over(fw, target, limit_lines)

    def _limits_came(self, fw: "_Forwarding", target: Target, limit_lines: bytes | None,
                     error: Exception | None) -> None:
        """Redis's verdict on a request of forward_now."""
        request = fw.request
        assert fw.owner is not None  # forward_now's
        try:
            if error is not None:
                raise self._refused(target, error) if isinstance(error, RateLimited) else error
            assert limit_lines is not None  # no error: the lines
            rest = self._send_or_hand_over(fw, target, limit_lines)
        except Exception as exc:
            fw.owner.failed(request, exc)
            fw.owner.finished(request)
            return
        if rest is not None:
            fw.owner.resume(request, rest)

    def _send_or_hand_over(self, fw: "_Forwarding", target: Target,
                           limit_lines: bytes) -> Coroutine[Any, Any, None] | None:
        """Send on a kept-alive connection (None), or the coroutine that opens one and goes on."""
        g = target.gateway
        assert self.pool is not None  # a router that forwards
        conn = self.pool.idle_connection(g.scheme, g.host, g.port)
        if conn is None:
            return self._attempts(fw, target, limit_lines)
        self._send_now(fw, target, limit_lines, conn)
        return None

    def _prepare(self, request: AgentRequest, principal: Principal, request_id: str) -> "_Forwarding":
        fw = _Forwarding(request, principal, request_id)
        headers = request.header_map  # a repeated header: the last one counts
        environment: bytes | str | None
        environment = headers.get(b"x-ngm-environment")
        environment = "production" if environment is None else environment.decode("latin-1")
        region: bytes | str | None
        region = headers.get(b"x-ngm-region")
        if region is not None:
            region = region.decode("latin-1")
        if environment not in ENVIRONMENTS:
            raise Refusal(422, "validation_error", "X-NGM-Environment must be development, staging or production",
                          [{"field": "X-NGM-Environment", "message": "unknown environment"}])
        fw.scope = (principal.organization_id, request.agent_id, environment)
        if fw.scope not in self.table.targets:  # the table is kept current in the background, never here
            raise Refusal(404, "agent_not_deployed", f"agent {request.agent_id} has no deployments in {environment}",
                          [{"field": "agent_id", "message": "no deployments"}])
        policy = fw.policy = self.table.policy(fw.scope)
        sticky_value: bytes | str | None
        sticky_value = None
        if policy.sticky:
            sticky_value = headers.get(policy.sticky_key)
            if sticky_value is not None:
                sticky_value = sticky_value.decode("latin-1")
        fw.key, fw.key_source = (sticky_value, "header") if sticky_value else (principal.key_id, "api_key")
        fw.region = region
        return fw

    def _choose(self, fw: "_Forwarding", exclude: frozenset[str]) -> Target:
        assert fw.scope is not None and fw.policy is not None  # _prepare's
        if not exclude:
            scope, policy = fw.scope, fw.policy
            target = self.selectors[policy.strategy].pick(policy, self.table.targets.get(scope, ()),
                                                          self.state_of(scope), self.breakers.state, fw.key)
            if target is not None:
                return target
        decision = self.decide(*fw.scope, region=fw.region, routing_key=fw.key, key_source=fw.key_source,
                               exclude=exclude)
        if decision.chosen is None:
            raise Refusal(503, "no_healthy_deployment",
                          f"no healthy deployment of {fw.scope[1]} in {fw.scope[2]}: {decision.reason}",
                          [{"deployment_id": c.deployment_id, "reason": why} for c, why in decision.skipped],
                          [(b"retry-after", b"5")])
        return decision.chosen.target  # type: ignore[return-value]  # the table's Target (a cast would be a call)

    def _limits_now(self, fw: "_Forwarding", target: Target, then: LimitsCame | None = None) -> bytes | None:
        """The rate-limit header lines when they need no round trip to Redis (limits off or in memory, or Redis
        down). None: they are in Redis; then(lines, error) hears Redis's verdict if given, else the caller
        awaits _limits()."""
        limiter = self.limiter
        if limiter is None:
            return b""
        g = target.gateway
        try:
            if limiter.shared is None:
                return limiter.check_local(fw.principal, g.limits, g.id, fw.request.agent_id, target.rate_limit)
            if then is None:
                return None
            return limiter.check_then(fw.principal, g.limits, g.id, fw.request.agent_id, target.rate_limit,
                                      target.fail_closed, then)
        except RateLimited as refused:
            raise self._refused(target, refused) from None

    async def _limits(self, fw: "_Forwarding", target: Target) -> bytes:
        g = target.gateway
        assert self.limiter is not None  # _limits_now said the lines are in Redis: there is a limiter
        try:
            return await self.limiter.check(fw.principal, g.limits, g.id, fw.request.agent_id, target.rate_limit,
                                             target.fail_closed)
        except RateLimited as refused:
            raise self._refused(target, refused) from None

    def _refused(self, target: Target, refused: RateLimited) -> RateLimited:
        self.stats.record_rejected(target.deployment_id)
        return refused

    async def _attempts(self, fw: "_Forwarding", target: Target | None = None,
                        limit_lines: bytes | None = None) -> None:
        """From a chosen target (limits checked when `limit_lines` is given), or from the choice: one retry
        on another deployment for a connection failure of an idempotent request."""
        method = fw.request.method
        exclude: frozenset[str] = frozenset()
        unreachable: UpstreamUnreachable | None = None  # the first attempt's connection failure
        for attempt in (1, 2):
            if target is None:
                try:
                    target = self._choose(fw, exclude)
                except Refusal:
                    if unreachable is None:
                        raise
                    raise _unreachable(unreachable, fw) from None  # nowhere to retry: what went wrong, not a 503
            if limit_lines is None:
                limit_lines = self._limits_now(fw, target)
                if limit_lines is None:
                    limit_lines = await self._limits(fw, target)
            try:
                await self._exchange(fw, target, limit_lines)
                return
            except UpstreamUnreachable as exc:
                if method in IDEMPOTENT and attempt == 1:
                    exclude, unreachable = frozenset({target.deployment_id}), exc
                    target = limit_lines = None
                    log.info("retrying %s %s elsewhere: %s", method, fw.request.raw_path.decode("latin-1"), exc)
                    continue
                raise _unreachable(exc, fw) from None
            except (UpstreamTimeout, UpstreamBroken) as exc:  # before the answer's head
                raise _refusal(exc, fw) from None

    def _request_head(self, fw: "_Forwarding", target: Target) -> bytes:
        """The request for the gateway, serialised; from here the exchange counts as in flight (settled by
        _settle) and the gateway's circuit knows a request is on its way."""
        request, g = fw.request, target.gateway
        # AgentTraffic.begin refused a request without a target and made `forwarded`; forward() got the body
        assert request.target is not None and request.forwarded is not None and fw.body is not None
        self.inflight.start(target.deployment_id)
        self.breakers.admit(g.id)
        head = [request.method_bytes, b" ", g.base_path, request.target, b" HTTP/1.1\r\nhost: ", g.host_header,
                b"\r\n"]
        connection = request.connection  # every Connection header, joined: a second one must not hide the first
        listed = None if connection is None else connection_listed(connection)
        for name, value in request.headers:
            if (name not in _NOT_FORWARDED and not name.startswith(b"x-ngm-") and (listed is None or name not in listed)
                    and b"_" not in name):  # X_API_Key is X-API-Key to a CGI-style gateway: dropped, as nginx does
                head += [name, b": ", value, b"\r\n"]
        head += [target.upstream_headers, b"x-request-id: ", fw.rid, request.forwarded,
                 b"content-length: %d\r\n\r\n" % len(fw.body)]
        return b"".join(head)

    def _answer_head(self, fw: "_Forwarding", target: Target, limit_lines: bytes, response: UpstreamResponse) -> bool:
        """The circuit told, the answer's head handed to the caller; True when it is a failure (5xx)."""
        g = target.gateway
        failed = response.status >= 500
        if failed:
            self.breakers.failure(g.id)
        else:
            self.breakers.success(g.id)
        out = [target.answer_lines, b"x-request-id: ", fw.rid, b"\r\n"]
        has_length = False
        connection = response.connection
        listed = None if connection is None else connection_listed(connection)
        for name, value in response.headers:
            lower = name.lower()
            if lower not in _NOT_RETURNED and (listed is None or lower not in listed):
                out += [name, b": ", value, b"\r\n"]
                has_length = has_length or lower == b"content-length"
        out.append(limit_lines)
        fw.request.start(response.status, out, has_length)
        return failed

    def _settle(self, target: Target, response: UpstreamResponse | None, sent_at: float, failed: bool) -> None:
        if response is not None:
            response.release()
        dep = target.deployment_id
        self.inflight.finish(dep)
        self.stats.record(dep, (time.perf_counter() - sent_at) * 1000, failed)

    async def _exchange(self, fw: "_Forwarding", target: Target, limit_lines: bytes) -> None:
        g = target.gateway
        head = self._request_head(fw, target)
        assert fw.body is not None and self.pool is not None  # forward()'s; a router that forwards
        sent_at = time.perf_counter()
        try:
            response = await self.pool.request(g.scheme, g.host, g.port, head, fw.body,
                                               head_only=fw.request.method == "HEAD", timeout=g.timeout)
        except BaseException as exc:  # cancelled too: the in-flight count must come down
            if isinstance(exc, UpstreamError) and not isinstance(exc, PoolBusy):  # our queue, not its failure
                self.breakers.failure(g.id)
            self._settle(target, None, sent_at, True)
            raise
        await self._stream(fw, target, limit_lines, response, sent_at)

    async def _stream(self, fw: "_Forwarding", target: Target, limit_lines: bytes, response: UpstreamResponse,
                      sent_at: float) -> None:
        """The answer from its head on, through to the caller; then the exchange is settled."""
        failed = True
        try:
            failed = self._answer_head(fw, target, limit_lines, response)
            failed = await self._answer_body(fw, target, response, failed)
        finally:
            self._settle(target, response, sent_at, failed)

    async def _answer_body(self, fw: "_Forwarding", target: Target, response: UpstreamResponse, failed: bool) -> bool:
        """Stream the body to the caller and end the answer; True when the exchange failed."""
        request = fw.request
        if not response.chunks and not response.complete:
            request.flush()  # the body is not here yet: the caller gets the head at once
        try:
            while True:
                chunk = response.read_nowait()
                if chunk is None:
                    await response.wait()
                    continue
                if not chunk:
                    break
                if request.write(chunk, last=response.complete):
                    await request.drain()
                if request.disconnected:
                    return failed  # the caller left: the upstream connection is closed, not reused
        except UpstreamBroken as exc:
            self.breakers.failure(target.gateway.id)
            log.warning("gateway %s broke off its answer to %s: %s", target.gateway.id, fw.request_id, exc)
            request.abort()
            return True
        request.end()
        return failed

    # -- the exchange as callbacks (forward_now)

    def _send_now(self, fw: "_Forwarding", target: Target, limit_lines: bytes, conn: _Connection) -> None:
        g = target.gateway
        head = self._request_head(fw, target)
        assert fw.body is not None  # forward_now's
        fw.sent_at = time.perf_counter()
        fw.response = conn.send(head, fw.body, fw.request.method == "HEAD", conn.loop.time() + g.timeout, g.timeout)
        fw.router, fw.target, fw.limit_lines = self, target, limit_lines
        fw.response.callback = fw.upstream_news

    def _on_upstream(self, fw: "_Forwarding") -> None:
        """The gateway's connection has news of what _send_now sent: the whole answer (answered here), its head
        alone or a break after it (streamed on in a coroutine), or a failure before the head (the coroutine
        path takes over as if pool.request had met it)."""
        target, limit_lines, response, sent_at = fw.target, fw.limit_lines, fw.response, fw.sent_at
        # _send_now's; forward_now's owner
        assert target is not None and limit_lines is not None and response is not None and fw.owner is not None
        if response.error is None and not response.head_done:
            return  # not yet
        response.callback = None
        if response.error is not None and not response.head_done:
            fw.owner.resume(fw.request, self._after_send_failed(fw, target, limit_lines, response, sent_at))
            return
        if response.error is not None or not response.complete:
            fw.owner.resume(fw.request, self._stream(fw, target, limit_lines, response, sent_at))
            return
        request = fw.request
        failed = True
        try:
            failed = self._answer_head(fw, target, limit_lines, response)
            chunk = response.read_nowait()
            if chunk:
                request.write(chunk, last=True)  # the last write: nothing to wait for after it
            request.end()
        except Exception as exc:
            fw.owner.failed(request, exc)
        finally:
            self._settle(target, response, sent_at, failed)
            fw.owner.finished(request)

    async def _after_send_failed(self, fw: "_Forwarding", target: Target, limit_lines: bytes,
                                 response: UpstreamResponse, sent_at: float) -> None:
        error = response.error
        response.conn.response = None
        response.conn.transport.close()
        if isinstance(error, UpstreamUnreachable):
            # a kept-alive connection the gateway had closed: what pool.request retries on a new connection
            self.inflight.finish(target.deployment_id)
            await self._attempts(fw, target, limit_lines)
            return
        self.breakers.failure(target.gateway.id)
        self._settle(target, None, sent_at, True)
        # what the connection fails an exchange with, UpstreamUnreachable aside (and it failed: not None)
        raise _refusal(cast("UpstreamTimeout | UpstreamBroken", error), fw)


# The caller hears what kind of failure it was; where the gateway is (its address, its port) stays in the log.

def _unreachable(error: UpstreamUnreachable, fw: "_Forwarding") -> Refusal:
    log.warning("request %s: gateway unreachable: %s", fw.request_id, error)
    return Refusal(502, "gateway_unreachable", "the gateway could not be reached (the server log has the cause)")


def _refusal(error: UpstreamTimeout | UpstreamBroken, fw: "_Forwarding") -> Refusal:
    """The answer to a gateway that took too long or answered what is not HTTP."""
    log.warning("request %s: %s", fw.request_id, error)
    if isinstance(error, PoolBusy):
        return Refusal(504, "gateway_timeout", "every connection to the gateway stayed busy for its request_timeout")
    if isinstance(error, UpstreamTimeout):
        return Refusal(504, "gateway_timeout", "the gateway did not answer within its request_timeout")
    return Refusal(502, "gateway_bad_answer", "the gateway's answer was not valid HTTP (the server log has more)")


class _Forwarding:
    """One invoke request on its way: what every step needs."""

    __slots__ = ("request", "principal", "request_id", "rid", "scope", "policy", "region", "key", "key_source",
                 "body", "owner", "router", "target", "limit_lines", "response", "sent_at")

    def __init__(self, request: AgentRequest, principal: Principal, request_id: str) -> None:
        self.request, self.principal, self.request_id = request, principal, request_id
        self.rid = request_id.encode()
        # made by Router._prepare, but body and owner: forward() and forward_now()
        self.scope: Scope | None = None
        self.policy: Policy | None = None
        self.region: str | None = None
        self.key: str | None = None
        self.key_source: str | None = None
        self.body: bytes | None = None
        self.owner: AgentTraffic | None = None  # forward_now's (forward() has none)
        # sent by Router._send_now: what the gateway connection's news goes on with (a bound method of this
        # object, rather than a closure made for every request)
        self.router: Router | None = None
        self.target: Target | None = None
        self.limit_lines: bytes | None = None
        self.response: UpstreamResponse | None = None
        self.sent_at = 0.0

    def upstream_news(self) -> None:
        assert self.router is not None  # Router._send_now's, before the connection has news
        self.router._on_upstream(self)
