"""Redis backend: every scope of a request decided and counted by one Lua script, atomically, on Redis's
clock (TIME), so instances with skewed clocks share the same windows. The script mirrors `algorithms.py`;
nothing is counted unless every scope of the request allows, and refusals are counted per scope.

The requests of one event-loop turn go as one script call (each still decided on its own, in arrival
order), written at once on a pipelined connection (pipe.py) without waiting for earlier calls' replies:
under load one call serves many requests and no request queues behind another's round trip.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from redis.exceptions import NoScriptError

from ngm.dataplane.limits.algorithms import SLIDING_WINDOW, Outcome, Scope
from ngm.dataplane.limits.leases import LEASE_MIN, LEASE_SECONDS, Leases
from ngm.dataplane.limits.pipe import Pipe, pack_items, resolve
from ngm.dataplane.memo import keep

if TYPE_CHECKING:
    from typing import TypeAlias

    import redis.asyncio

    # a check's result: an admitted brief request's (index of the tightest scope, its remaining, reset ms), else
    # its Outcomes; None when Redis failed
    Result: TypeAlias = list[Outcome] | tuple[int, int, int] | None
    Answered: TypeAlias = Callable[[Result, BaseException | None], None]  # answered(result, error)

log = logging.getLogger("ngm.ratelimit")
MAX_BATCH = 128

# KEYS: per request, one per scope then its refusal counter (a hash: scope name -> count).
# ARGV: now in ms ('' = Redis's clock; tests pass their own), then per request: its mode, number of scopes,
# and per scope: algorithm (w|t), limit, window ms, burst, name.
# The reply, per request by its mode: '0' (check) and '1' (peek) five numbers per scope (allowed, used,
# remaining, reset ms, retry ms); '2' (brief, the router's) when admitted three: the tightest scope's index
# (1-based), its remaining and reset ms (all its headers need), else 0 and the five per scope; '3' (brief, asking
# for leases: leases.py) as '2', its arguments followed by the units wished for per scope, the share of what is
# left a lease may take (1/share), the least time left in the window (ms) and the least units worth a lease, and
# when admitted its reply by four numbers per scope: units granted, remaining, the window's index, reset ms.
#
# The requests of a call are decided one after the other, each on the state the ones before it left, but
# Redis is read once (one MGET of every key the call needs) and each key written once at the end, and a
# window's count gets its expiry when it is created: the script had spent most of Redis's CPU per request
# (a third of the router's own, on the same cores) on PEXPIREs, GETs and turning numbers into key names.
# A window's key names are made once per call, and an admitted brief request answers 3 numbers, not 15, which
# also spares the router an Outcome per scope (its CPU per request 0.92x through Redis).
_SCRIPT = """
local ARGV, KEYS, tonumber, floor, ceil, max, call = ARGV, KEYS, tonumber, math.floor, math.ceil, math.max, redis.call
local now
if ARGV[1] ~= '' then
  now = tonumber(ARGV[1])
else
  local t = call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end
local nowi = floor(now)

-- pass 1: the key of every count and bucket the call reads (a window's two key names made once per call)
local windows, wanted, value, absent = {}, {}, {}, {}
local cur_keys, prev_keys = {}, {}
local function want(key)
  if value[key] == nil then value[key] = 0; wanted[#wanted + 1] = key end
end
local k, a, j = 0, 1, 0
while a < #ARGV do
  local leasing = ARGV[a + 1] == '3'
  local n = tonumber(ARGV[a + 2])
  a = a + 2
  for i = 1, n do
    j = j + 1
    local key = KEYS[k + i]
    if ARGV[a + 1] == 'w' then
      local window = ARGV[a + 3]
      local w = windows[window]  -- {current suffix, previous suffix, key -> its two names}
      if w == nil then
        local index = floor(nowi / tonumber(window))
        w = {':' .. index, ':' .. (index - 1), {}}
        windows[window] = w
      end
      local names = w[3][key]
      if names == nil then
        names = {key .. w[1], key .. w[2]}
        w[3][key] = names
        want(names[1]); want(names[2])
      end
      cur_keys[j], prev_keys[j] = names[1], names[2]
    else
      want(key)
    end
    a = a + 5
  end
  if leasing then a = a + n + 3 end
  k = k + n + 1
end
if #wanted > 0 then
  local stored = call('MGET', unpack(wanted))
  for i, key in ipairs(wanted) do
    if stored[i] then value[key] = tonumber(stored[i]) else absent[key] = true end
  end
end

-- pass 2: each request decided, in order, on `value` (which its admitted predecessors have moved on)
local added, added_order, expiry = {}, {}, {}
local tat_order, tat_written = {}, {}
local refused, refused_order = {}, {}
local commit_key, commit_value = {}, {}
local out, o, v = {}, 0, {}  -- the reply and its length; v: the request's five numbers per scope
k, a, j = 0, 1, 0
while a < #ARGV do
  local mode = ARGV[a + 1]
  local peek = mode == '1'
  local n = tonumber(ARGV[a + 2])
  a = a + 2
  local commits, all = 0, true
  for i = 1, n do
    j = j + 1
    local algo, limit, window = ARGV[a + 1], tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
    local allowed, used, remaining, reset, retry
    if algo == 'w' then
      local elapsed = nowi % window
      local cur, prev = value[cur_keys[j]], value[prev_keys[j]]
      local u = prev * (window - elapsed) / window + cur
      reset = window - elapsed
      if u < limit then
        allowed, used, remaining, retry = 1, ceil(u + 1), max(0, floor(limit - u - 1)), 0
        commits = commits + 1
        commit_key[commits], commit_value[commits] = cur_keys[j], false
      else
        allowed, used, remaining = 0, ceil(u), 0
        if cur >= limit then
          retry = reset + floor(window * (1 - limit / cur)) + 1
        else
          retry = floor(window - (limit - cur) * window / prev) + 1 - elapsed
        end
        if retry < 1 then retry = 1 end
      end
    else
      local key = KEYS[k + i]
      local interval = window / limit
      local size = tonumber(ARGV[a + 4])
      if size == 0 then size = limit end
      local tat = value[key]
      if tat < now then tat = now end
      local new_tat = tat + interval
      local allow_at = new_tat - size * interval
      if now < allow_at then
        allowed, used, remaining, reset = 0, size, 0, ceil(tat - now)
        retry = ceil(allow_at - now)
        if retry < 1 then retry = 1 end
      else
        remaining = floor((now - allow_at) / interval)
        allowed, used, reset, retry = 1, size - remaining, ceil(new_tat - now), 0
        commits = commits + 1
        commit_key[commits], commit_value[commits] = key, new_tat
      end
    end
    if allowed == 0 then all = false end
    v[i * 5 - 4] = allowed; v[i * 5 - 3] = used; v[i * 5 - 2] = remaining; v[i * 5 - 1] = reset; v[i * 5] = retry
    if algo == 'w' then expiry[cur_keys[j]] = window * 2 + 1000 end
    a = a + 5
  end
  local brief = mode == '2' or mode == '3'
  if brief and all then
    local t = 1  -- the tightest: the least remaining, then the longest reset (as headers_for picks it)
    for i = 2, n do
      local r, rt = v[i * 5 - 2], v[t * 5 - 2]
      if r < rt or (r == rt and v[i * 5 - 1] > v[t * 5 - 1]) then t = i end
    end
    out[o + 1] = t; out[o + 2] = v[t * 5 - 2]; out[o + 3] = v[t * 5 - 1]
    o = o + 3
  else
    if brief then o = o + 1; out[o] = 0 end
    for x = 1, n * 5 do out[o + x] = v[x] end
    o = o + n * 5
  end
  if not peek then
    if all then
      for c = 1, commits do
        local key, tat = commit_key[c], commit_value[c]
        if tat then
          value[key] = tat
          if not tat_written[key] then tat_written[key] = true; tat_order[#tat_order + 1] = key end
        else
          value[key] = value[key] + 1
          if added[key] == nil then added[key] = 0; added_order[#added_order + 1] = key end
          added[key] = added[key] + 1
        end
      end
      if mode == '3' then  -- leases (leases.py): per scope, units wished for at ARGV[a + i], then three limits
        local share, life, least = tonumber(ARGV[a + n + 1]), tonumber(ARGV[a + n + 2]), tonumber(ARGV[a + n + 3])
        for i = 1, n do
          local wish, grant, index, s = tonumber(ARGV[a + i]), 0, 0, j - n + i
          if wish > 0 and ARGV[a - (n - i) * 5 - 4] == 'w' and v[i * 5 - 1] >= life then
            local limit, window = tonumber(ARGV[a - (n - i) * 5 - 3]), tonumber(ARGV[a - (n - i) * 5 - 2])
            local key = cur_keys[s]
            local u = value[prev_keys[s]] * (window - nowi % window) / window + value[key]
            grant = floor((limit - u) / share)
            if grant > wish then grant = wish end
            if grant < least then
              grant = 0
            else
              value[key] = value[key] + grant
              added[key] = added[key] + grant
              index = floor(nowi / window)
            end
          end
          out[o + 1] = grant; out[o + 2] = v[i * 5 - 2]; out[o + 3] = index; out[o + 4] = v[i * 5 - 1]
          o = o + 4
        end
      end
    else
      local counter = KEYS[k + n + 1]
      for i = 1, n do
        if v[i * 5 - 4] == 0 then
          local name = ARGV[a - (n - i) * 5]
          local counts = refused[counter]
          if counts == nil then counts = {}; refused[counter] = counts; refused_order[#refused_order + 1] = counter end
          counts[name] = (counts[name] or 0) + 1
        end
      end
    end
  end
  if mode == '3' then a = a + n + 3 end
  k = k + n + 1
end

-- the writes: one per key
for _, key in ipairs(added_order) do
  if absent[key] then  -- a window's count lives until it no longer weighs
    call('SET', key, added[key], 'PX', expiry[key])
  else
    call('INCRBY', key, added[key])
  end
end
for _, key in ipairs(tat_order) do
  call('SET', key, string.format('%.3f', value[key]), 'PX', ceil(value[key] - now) + 1000)
end
for _, counter in ipairs(refused_order) do
  for name, count in pairs(refused[counter]) do call('HINCRBY', counter, name, count) end
end
return out
"""


# A lease's unused units given back: subtracted from the window's count unless it has expired meanwhile (its
# count no longer weighs, and a key made by DECRBY would never expire).
_GIVE_BACK = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, ARGV[i]) end
end
"""


class _Request(NamedTuple):
    """What one check sends: its keys and arguments, and the same already in RESP (pipe.pack) for the pipe."""

    keys: list[str]
    args: list[str | int]
    packed_keys: bytes
    packed_args: bytes
    scopes: list[Scope]  # the list these were built from (the cache's guard)
    brief: bool  # admitted: (tightest scope's index, its remaining, reset ms) rather than every Outcome
    wishes: tuple[int, ...] | None = None  # units of a lease asked for per scope (leases.py)


if TYPE_CHECKING:
    # a check waiting for this turn's script call: (request, number of scopes, peek, answered(result, error))
    _Queued: TypeAlias = tuple[_Request, int, bool, Answered]


def _joined(batch: list[_Queued]) -> tuple[list[str], list[str | int]]:
    """One script call's KEYS and ARGV for a batch ('' first: Redis's own clock)."""
    keys: list[str]
    args: list[str | int]
    keys, args = [], [""]
    for request, *_ in batch:
        keys += request.keys
        args += request.args
    return keys, args


class RedisBackend:
    def __init__(self, redis: redis.asyncio.Redis, namespace: str) -> None:
        self.redis, self.prefix = redis, f"{namespace}:rl:"
        self._script = redis.register_script(_SCRIPT)
        self._pipe = Pipe.for_client(redis)
        self._queue: list[_Queued] = []  # (request, number of scopes, peek, answered(outcomes, error)) this turn
        self._flush_soon = False
        self._requests: dict[tuple[int, str, bool, bool], _Request] = {}
        self.leases = Leases(self.give_back)
        self._give_back_script = redis.register_script(_GIVE_BACK)
        self._returns: list[tuple[str, int]] = []  # (window's key, units) to give back this turn

    def _request(self, scopes: list[Scope], counter: str, peek: bool, brief: bool = False) -> _Request:
        """Built once per list of scopes (the limiter keeps one per caller): a check then packs nothing."""
        which = (id(scopes), counter, peek, brief)
        made = self._requests.get(which)
        if made is None or made.scopes is not scopes:
            keys = [self.prefix + s.key for s in scopes] + [self.prefix + "rejected:" + counter]
            args: list[str | int] = ["2" if brief else "1" if peek else "0", len(scopes)]
            for s in scopes:
                args += ["w" if s.algorithm == SLIDING_WINDOW else "t", s.limit, s.window_ms, s.burst, s.name]
            made = keep(self._requests, which, _Request(keys, args, pack_items(keys), pack_items(args), scopes, brief),
                        100_000)
        return made

    async def check(self, scopes: list[Scope], counter: str = "", peek: bool = False,
                    now_ms: float | None = None) -> list[Outcome]:
        request = self._request(scopes, counter, peek)
        if now_ms is not None:  # a test's own clock: sent alone
            flat = await self._call(request.keys, [repr(float(now_ms)), *request.args])
            return self._outcomes(flat, peek)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._enqueue(request, len(scopes), peek, lambda outcomes, error: resolve(future, outcomes, error))
        return await future

    def check_then(self, scopes: list[Scope], counter: str, answered: Answered,
                   wishes: tuple[int, ...] | None = None) -> None:
        """check() without a coroutine: answered(result, error) once Redis has replied (or failed). The result of
        an admitted request is (index of the tightest scope, its remaining, ms until its reset), all its headers
        need; of a refused one, its Outcomes. `wishes`: leases asked for with it (Leases.wishes())."""
        request = self._request(scopes, counter, False, True)
        if wishes is not None:  # its own arguments: asked for once a lease at most, not worth keeping
            args = ["3", *request.args[1:], *wishes, self.leases.share, int(LEASE_SECONDS * 1000), LEASE_MIN]
            request = request._replace(args=args, packed_args=pack_items(args), wishes=wishes)
        self._enqueue(request, len(scopes), False, answered)

    def _enqueue(self, request: _Request, n: int, peek: bool, answered: Answered) -> None:
        self._queue.append((request, n, peek, answered))
        if not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    @property
    def connection(self) -> str:
        """How checks reach Redis (/readyz says): our pipelined connection, or redis-py's for a unix socket."""
        if self._pipe is None:
            return "redis-py (a unix socket: no pipelined connection)"
        return "pipelined, TLS" if self._pipe.tls is not None else "pipelined"

    def _flush(self) -> None:
        """The requests of one loop turn go as one script call, without waiting for earlier calls' replies."""
        self._flush_soon = False
        queue, self._queue = self._queue, []
        sent_at = time.monotonic()
        for start in range(0, len(queue), MAX_BATCH):
            batch = queue[start:start + MAX_BATCH]
            if self._pipe is not None:
                nkeys = sum(len(r.keys) for r, *_ in batch)
                nargs = 1 + sum(len(r.args) for r, *_ in batch)
                head = b"*%d\r\n" % (3 + nkeys + nargs) + pack_items(["EVALSHA", self._script.sha, nkeys])
                self._pipe.send(b"".join([head, *(r.packed_keys for r, *_ in batch), b"$0\r\n\r\n",
                                          *(r.packed_args for r, *_ in batch)]),
                                # mypy matches a lambda to OnReply only without the default that binds `batch`
                                lambda reply, error, batch=batch:  # type: ignore[misc]
                                self._answer(batch, reply, error, sent_at))
            else:
                self._call_later(batch, self._call(*_joined(batch)))

    def _call_later(self, batch: list[_Queued], call: Awaitable[list[Any]]) -> None:
        sent_at = time.monotonic()

        def done(f: asyncio.Future[list[Any]]) -> None:
            error = ConnectionError("cancelled") if f.cancelled() else f.exception()
            self._answer(batch, None if error else f.result(), error, sent_at)

        asyncio.ensure_future(call).add_done_callback(done)

    def _answer(self, batch: list[_Queued], reply: list[Any] | None, error: BaseException | None,
                sent_at: float) -> None:
        if isinstance(error, NoScriptError):  # Redis restarted (or flushed its scripts): load it, call again
            keys, args = _joined(batch)
            self._call_later(batch, self._script(keys=keys, args=args))
            return
        result: Result
        at, result = 0, None
        for request, n, peek, answered in batch:  # every waiting request learns its result, or that Redis failed
            grants = None
            if error is None:
                assert reply is not None  # Redis answered: with a list, or with the error
                if not request.brief:
                    result = self._outcomes(reply[at:at + n * 5], peek)
                    at += n * 5
                elif reply[at]:
                    result = (reply[at] - 1, reply[at + 1], reply[at + 2])
                    at += 3
                    if request.wishes is not None:
                        grants = reply[at:at + n * 4]
                        at += n * 4
                else:
                    result = self._outcomes(reply[at + 1:at + 1 + n * 5], False)
                    at += 1 + n * 5
            if request.wishes is not None:  # granted or not, the scopes may ask again
                self.leases.granted_in(tuple([s.key for s in request.scopes]),
                                       tuple([s.limit for s in request.scopes]), request.wishes, grants, sent_at)
            try:
                answered(result, error)
            except Exception:  # one caller's bug must not leave the rest of the batch unanswered
                log.exception("rate-limit check's continuation failed")

    def give_back(self, key: str, index: int, units: int) -> None:
        """A lease's unused units taken off the count of the window it was counted in (the turn's in one call)."""
        if not self._returns:
            asyncio.get_running_loop().call_soon(self._send_returns)
        self._returns.append((f"{self.prefix}{key}:{index}", units))

    def _send_returns(self) -> None:
        def done(f: asyncio.Future[None]) -> None:
            if f.cancelled() or f.exception() is not None:  # the count stays high: fewer admitted, never more
                log.info("rate limits: unused lease units not given back (%s)",
                         "cancelled" if f.cancelled() else type(f.exception()).__name__)

        asyncio.ensure_future(self._give_back_now()).add_done_callback(done)

    async def give_back_all(self) -> None:
        """Every lease's unused units given back now (the instance stops)."""
        self.leases.release_all()
        await self._give_back_now()

    async def _give_back_now(self) -> None:
        returns, self._returns = self._returns, []
        if returns:
            await self._give_back_script(keys=[key for key, _ in returns], args=[units for _, units in returns])

    async def _call(self, keys: list[str], args: list[str | int]) -> list[Any]:
        try:  # EVALSHA straight away: redis-py's Script wrapper costs a tenth of a check
            return cast("list[Any]", await self.redis.evalsha(self._script.sha, len(keys), *keys, *args))
        except NoScriptError:
            return cast("list[Any]", await self._script(keys=keys, args=args))

    def close(self) -> None:
        if self._pipe is not None:
            self._pipe.close()

    @staticmethod
    def _outcomes(flat: list[Any], peek: bool) -> list[Outcome]:
        outcomes = [Outcome(bool(flat[i]), int(flat[i + 1]), int(flat[i + 2]), int(flat[i + 3]), int(flat[i + 4]))
                    for i in range(0, len(flat), 5)]
        return [o.before() for o in outcomes] if peek else outcomes

    async def keys(self, prefix: str, kind: str) -> list[str]:
        """Scope keys (without our prefix) that start with `prefix` and count in `kind` (w60000, t1000...)."""
        found: list[str] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}{prefix}*:{kind}*", count=500):
            found.append(key.decode()[len(self.prefix):])
        return found

    async def rejections(self, counter: str) -> dict[str, int]:
        raw = cast("dict[bytes, bytes]", await self.redis.hgetall(self.prefix + "rejected:" + counter))  # not decoded
        return {k.decode(): int(v) for k, v in raw.items()}

