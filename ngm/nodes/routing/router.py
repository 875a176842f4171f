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

from ngm.nodes.gateways.validation import ENVIRONMENTS
from ngm.nodes.ratelimit.limiter import RateLimited
from ngm.nodes.routing.strategies import Candidate, Decision, RoutingState
from ngm.nodes.routing.upstream import UpstreamBroken, UpstreamTimeout, UpstreamUnreachable

log = logging.getLogger("ngm.routing")
PREFIX = "/api/v1/agents/"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
                         b"trailer", b"trailers", b"transfer-encoding", b"upgrade"})
# never forwarded upstream: the caller's credentials, our own routing headers, what we set ourselves
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"expect", b"authorization", b"x-api-key", b"content-length", b"x-request-id",
                                b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
_NOT_RETURNED = _HOP_BY_HOP | {b"date", b"server", b"x-request-id"}  # we send our own Date and id
MAX_BODY = 10 * 1024 * 1024


def parse_invoke_path(path: str) -> tuple[str, str] | None:
    """'/api/v1/agents/bot/invoke/a/b' -> ('bot', '/a/b'); None when not an invoke path."""
    if not path.startswith(PREFIX):
        return None
    agent, sep, rest = path[len(PREFIX):].partition("/invoke")
    if not agent or not sep or "/" in agent or (rest and not rest.startswith("/")):
        return None
    return agent, rest or "/"


def raw_target(raw_path: bytes) -> bytes:
    """The path after /invoke exactly as the caller sent it (percent-encoding intact)."""
    rest = raw_path[len(PREFIX):].partition(b"/invoke")[2]
    return rest or b"/"


class Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, details=None, headers: list | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


class Router:
    def __init__(self, table, pool, breakers, stats, inflight, selectors):
        self.table, self.pool, self.breakers, self.stats, self.inflight = table, pool, breakers, stats, inflight
        self.selectors = selectors  # strategy -> Kailash node whose select() runs in process
        self.states: dict[tuple, RoutingState] = {}
        self.limiter = None  # a RateLimiter: async check(...) -> headers, or raises RateLimited

    # ------------------------------------------------------------ decisions

    def candidates(self, scope: tuple) -> list[Candidate]:
        here, elsewhere, breakers = self.inflight.counts, self.inflight.elsewhere, self.breakers
        out = []
        for t in self.table.targets.get(scope, ()):
            g, d = t.gateway, t.deployment_id
            out.append(Candidate(d, g.id, g.name, t.agent_version, t.weight, g.region, t.status, g.status,
                                 g.health_status, here.get(d, 0) + elsewhere.get(d, 0), breakers.state(g.id),
                                 target=t))
        return out

    def decide(self, organization_id: str, agent_id: str, environment: str, *, region: str | None = None,
               routing_key: str | None = None, key_source: str | None = None, exclude: frozenset = frozenset(),
               commit: bool = True) -> Decision:
        """The decision; its chosen candidate's `target` is the table's Target to forward to."""
        scope = (organization_id, agent_id, environment)
        policy = self.table.policy(scope)
        state = self.states.get(scope)
        if state is None:
            state = self.states[scope] = RoutingState()
        return self.selectors[policy.strategy].select(
            policy, self.candidates(scope), state, region=region, routing_key=routing_key, key_source=key_source,
            exclude=exclude, commit=commit)

    # ------------------------------------------------------------ forwarding

    async def forward(self, request, principal, request_id: str) -> None:
        """Serve one invoke request; `request` is the connection's AgentRequest (ngm/channels/agent_http.py),
        which answers a Refusal raised here."""
        agent_id = request.agent_id
        path = raw_target(request.raw_path)
        headers = request.headers
        environment, region, sticky_value = "production", None, None
        for name, value in headers:
            if name == b"x-ngm-environment":
                environment = value.decode("latin-1")
            elif name == b"x-ngm-region":
                region = value.decode("latin-1")
        if environment not in ENVIRONMENTS:
            raise Refusal(422, "validation_error", "X-NGM-Environment must be development, staging or production",
                          [{"field": "X-NGM-Environment", "message": "unknown environment"}])
        policy_scope = (principal.organization_id, agent_id, environment)
        if policy_scope not in self.table.targets:  # the table is kept current in the background, never here
            raise Refusal(404, "agent_not_deployed", f"agent {agent_id} has no deployments in {environment}",
                          [{"field": "agent_id", "message": "no deployments"}])
        policy = self.table.policy(policy_scope)
        if policy.sticky:
            wanted = policy.sticky_header.lower().encode()
            sticky_value = next((v.decode("latin-1") for n, v in headers if n == wanted), None)
        key, key_source = (sticky_value, "header") if sticky_value else (principal.key_id, "api_key")
        body = request.complete_body()
        if body is None:
            body = await request.read_body()
        method = request.method
        exclude = frozenset()
        for attempt in (1, 2):
            decision = self.decide(*policy_scope, region=region, routing_key=key, key_source=key_source,
                                   exclude=exclude)
            if decision.chosen is None:
                raise Refusal(503, "no_healthy_deployment",
                              f"no healthy deployment of {agent_id} in {environment}: {decision.reason}",
                              [{"deployment_id": c.deployment_id, "reason": why} for c, why in decision.skipped],
                              [(b"retry-after", b"5")])
            target = decision.chosen.target
            limit_headers = []
            limiter = self.limiter
            if limiter is not None:
                g = target.gateway
                try:
                    if limiter.shared is None:  # in memory: no coroutine
                        limit_headers = limiter.check_local(principal, g.limits, g.id, agent_id, target.rate_limit)
                    else:
                        limit_headers = await limiter.check(principal, g.limits, g.id, agent_id, target.rate_limit,
                                                            target.fail_closed)
                except RateLimited as refused:
                    self.stats.record_rejected(target.deployment_id)
                    raise Refusal(refused.status, refused.code, refused.message, refused.details,
                                  refused.headers) from None
            try:
                await self._exchange(request, method, path, body, target, request_id, limit_headers)
                return
            except UpstreamUnreachable as exc:
                if method in IDEMPOTENT and attempt == 1:
                    exclude = frozenset({target.deployment_id})
                    log.info("retrying %s %s elsewhere: %s", method, path, exc)
                    continue
                raise Refusal(502, "gateway_unreachable", f"the gateway could not be reached: {exc}") from None
            except UpstreamTimeout as exc:
                raise Refusal(504, "gateway_timeout", str(exc)) from None

    async def _exchange(self, request, method: str, path: bytes, body: bytes, target, request_id: str,
                        limit_headers: list) -> None:
        g = target.gateway
        dep = target.deployment_id
        query = request.query
        head = [method.encode(), b" ", g.base_path, path, b"?" + query if query else b"",
                b" HTTP/1.1\r\nhost: ", g.host_header, b"\r\n"]
        for name, value in request.headers:
            if name not in _NOT_FORWARDED and not name.startswith(b"x-ngm-"):
                head += [name, b": ", value, b"\r\n"]
        client = request.client
        rid = request_id.encode()
        head += [target.upstream_headers, b"x-request-id: ", rid,
                 b"\r\nx-forwarded-proto: ", request.scheme.encode(),
                 b"\r\nx-forwarded-for: ", (client[0] if client else "").encode(),
                 b"\r\ncontent-length: %d\r\n\r\n" % len(body)]
        self.inflight.start(dep)
        self.breakers.admit(g.id)
        start = time.perf_counter()
        failed = True
        response = None
        try:
            try:
                response = await self.pool.request(g.scheme, g.host, g.port, b"".join(head), body,
                                                   head_only=method == "HEAD", timeout=g.timeout)
            except (UpstreamUnreachable, UpstreamTimeout):
                self.breakers.failure(g.id)
                raise
            failed = response.status >= 500
            if failed:
                self.breakers.failure(g.id)
            else:
                self.breakers.success(g.id)
            out = [*target.answer_headers, (b"x-request-id", rid), *limit_headers]
            has_length = False
            for name, value in response.headers:
                lower = name.lower()
                if lower not in _NOT_RETURNED:
                    out.append((name, value))
                    has_length = has_length or lower == b"content-length"
            request.start(response.status, out, has_length)
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
                        return  # the caller left: the upstream connection is closed, not reused
            except UpstreamBroken as exc:
                failed = True
                self.breakers.failure(g.id)
                log.warning("gateway %s broke off its answer to %s: %s", g.id, request_id, exc)
                request.abort()
                return
            request.end()
        finally:
            if response is not None:
                response.release()
            self.inflight.finish(dep)
            self.stats.record(dep, (time.perf_counter() - start) * 1000, failed)
