"""The shared store: one Redis (7.x) for every instance of the bridge, e.g. on a PaaS.

Every atomic step of :class:`bridge.store.base.Store` is **one Lua script** (a module constant
below, run by its SHA1 with ``EVALSHA`` and loaded when the server answers ``NOSCRIPT``).
Redis runs a script alone, so any number of processes on any number of machines sharing the
Redis never double-page, never both pass a limit and never both claim the same SMS. A script's
writes are all-or-nothing as far as Redis allows: a read-only replica or ``maxmemory`` refuses
the *first* write of a script, before anything was changed. Key names are derived from the
prefix inside the scripts, all under one hash tag (see Topologies below).

Durability is Redis's own: run it with ``appendonly yes`` (``appendfsync everysec`` loses at most
the last second on a power loss, ``always`` nothing) and with ``maxmemory-policy noeviction``
(an evicting policy would silently drop queued SMS and dedup records).
:meth:`RedisStore.config_warnings` reports both settings when the server lets it read them.
AOF protects against a restart of the server; against losing the master itself (a failover to a
replica, which copies writes asynchronously) ``BRIDGE_REDIS_WAIT`` makes each write step wait for
replicas (``WAIT``) before the webhook is answered (see :class:`RedisStore`).

Topologies (:func:`bridge.config.parse_redis_url`): one server, the master that Redis Sentinel
names, or a Redis Cluster. **Every key starts with the prefix's hash tag** (``{bridge}:``), so all
of them live in one cluster slot, on one master: each script stays one atomic step there, and a
proxy that accepts only scripts whose keys share a slot accepts them. Scripts build most key
names from the prefix (``ARGV[1]``) inside Lua; every script also passes at least one real key
(``KEYS[1]``), by which a cluster routes it to that slot's master. The bridge's load is therefore
not spread over a cluster's shards.

Times are UNIX seconds passed to the scripts as text (``repr(float)``) and stored as text, so a
float comes back exactly as it went in (Lua numbers are doubles; a number is never turned into
text inside a script, which would keep only 14 digits).

Key map (``{prefix}`` is ``{bridge}:`` unless configured, always starting with a hash tag; ``{m}``
a mobile, ``{id}`` an item id; with ``BRIDGE_REDIS_WAIT`` > 0 the steps record, episode_start,
mark_sent/retry/failed and ping are followed by ``WAIT``)::

    {prefix}seq                    string  INCR counter; item ids are its values, as text
    {prefix}item:{id}              hash    one stored notification: id mobile fingerprint status
                                           episode route alertname tpl_id variables (JSON text)
                                           state reason created_at updated_at due_at lease_until
                                           attempts [first_attempt_at sid fee]
    {prefix}items                  zset    every item id, score = id            (recent)
    {prefix}state:{state}          zset    item ids in that state, score = id   (counts, recent)
    {prefix}done                   zset    finished (sent/failed/suppressed) ids,
                                           score = updated_at                   (prune)
    {prefix}mobile:{m}:items       zset    the mobile's item ids, score = id    (recent ?mobile=)
    {prefix}mobile:{m}:pending     zset    the mobile's pending (queued/retrying/held) ids,
                                           score = max(due_at, lease_until): claimable at
    {prefix}mobile:{m}:hour        zset    ids recorded ``queued`` (they count against
                                           per_mobile_per_hour), score = created_at; trimmed to
                                           the last two hours whenever one is added
    {prefix}mobile:{m}:storm       hash    the mobile's storm window: start end count
    {prefix}storms                 zset    mobiles with a storm window, score = its end (prune)
    {prefix}due                    zset    mobiles with pending items, score = when the mobile
                                           can next be claimed = max(its first claimable item,
                                           its pacing gap's end)                (claim)
    {prefix}pace                   zset    mobile -> end of its pacing gap (last claim + min_gap)
    {prefix}dedup:{key}            hash    dedup record of ``mobile|fingerprint|status|episode``:
                                           at (last recorded) paged (0/1); expires
                                           max(dedup_ttl, repeat_interval) after it was written
    {prefix}dedup                  zset    dedup keys, score = at (prune); trimmed on record to
                                           the last ``dedup_ttl`` seconds
    {prefix}day:{day}              string  SMS queued on that day (per_day); expires after 3 days
    {prefix}episode:{fingerprint}  string  start of the alert's current episode (legacy Grafana)
    {prefix}status                 hash    shared status notes (e.g. ``juhe_config``)
    {prefix}ping                   string  written by :meth:`RedisStore.ping`

Intake is O(batch) and a claim O(claimed items): claim reads the mobiles due from
``{prefix}due`` and each mobile's claimable ids from its ``pending`` set; nothing scans. What
grows with traffic is removed by :meth:`RedisStore.prune` in bounded steps (finished items,
dedup records, pacing and storm entries) or expires on its own (dedup, day counters).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    TryAgainError,
)
from redis.retry import Retry
from redis.sentinel import Sentinel

from bridge.config import parse_redis_url, redact_url
from bridge.errors import StoreUnavailable, StoreUnconfirmed
from bridge.store.base import STATES, Claim, Item, Notification, Outcome, Policy, State, Store

#: The default key prefix: one hash tag, so every key of the bridge is in one cluster slot.
DEFAULT_PREFIX = "{bridge}:"
#: A prefix must start with a hash tag (``{...}``, not empty): Redis hashes only what is inside.
_HASH_TAG = re.compile(r"^[^{]*(\{[^}]+\})")
#: Seconds a dedup record lives in Redis at least (longer when its repeat_interval is longer).
DEFAULT_DEDUP_TTL = 7 * 86400
#: Seconds a per-day counter lives.
DAY_TTL = 3 * 86400

# Lua helpers shared by the scripts that change a mobile's pending items (pasted in front).
_LUA_HELPERS = """
-- Recompute a mobile's score in the due zset: when it can next be claimed, i.e. the later of
-- its first claimable item and the end of its pacing gap; no entry without pending items.
local function refresh(prefix, due_key, pace_key, m)
  local first = redis.call('ZRANGE', prefix .. 'mobile:' .. m .. ':pending', 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', due_key, m)
    return
  end
  local at = tonumber(first[2])
  local pace = redis.call('ZSCORE', pace_key, m)
  if pace and tonumber(pace) > at then
    at = tonumber(pace)
  end
  redis.call('ZADD', due_key, at, m)
end

local PENDING = {queued = true, retrying = true, held = true}
"""

RECORD_LUA = _LUA_HELPERS + """
-- record: decide and store a webhook's notifications, in order, atomically.
-- KEYS[1]  {prefix}seq       item id counter
-- KEYS[2]  {prefix}items     zset of all ids
-- KEYS[3]  {prefix}due       zset mobile -> claimable at
-- KEYS[4]  {prefix}pace      zset mobile -> end of pacing gap
-- KEYS[5]  {prefix}dedup     zset dedup key -> at
-- KEYS[6]  {prefix}done      zset finished id -> updated_at
-- KEYS[7]  {prefix}storms    zset mobile -> storm window end
-- ARGV[1]  prefix
-- ARGV[2]  now (UNIX seconds, text)
-- ARGV[3]  '(' .. (now - 3600): exclusive lower bound of the per-hour window
-- ARGV[4]  per_mobile_per_hour, or '' for no limit
-- ARGV[5]  per_day, or '' for no limit
-- ARGV[6]  storm threshold, or '' for no storm folding
-- ARGV[7]  storm window, seconds
-- ARGV[8]  day (e.g. '2026-11-29'), the unit of per_day; '' counts nothing
-- ARGV[9]  dedup_ttl, seconds (integer)
-- ARGV[10] now - dedup_ttl: dedup index entries older than this are trimmed
-- ARGV[11] now - 7200: per-hour entries older than this are trimmed
-- ARGV[12] JSON list of notifications: {m, fp, st, ep, route, an, tpl, vars (JSON text),
--          ri (repeat_interval seconds), state, reason, dk (dedup key), fk (firing key),
--          rk (resolved key)}
-- Returns one {state, reason, id} per notification, in order; id is '' when nothing was
-- stored (duplicate, not paged).
local P = ARGV[1]
local now_s = ARGV[2]
local now = tonumber(now_s)
local per_hour = tonumber(ARGV[4])
local per_day = tonumber(ARGV[5])
local storm_threshold = tonumber(ARGV[6])
local storm_window = tonumber(ARGV[7])
local day = ARGV[8]
local dedup_ttl = tonumber(ARGV[9])
local notes = cjson.decode(ARGV[12])
local touched = {}
local out = {}

local function store(n, state, reason, due)
  local id = redis.call('INCR', KEYS[1])
  local key = P .. 'item:' .. id
  redis.call('HSET', key, 'id', id, 'mobile', n.m, 'fingerprint', n.fp, 'status', n.st,
    'episode', n.ep, 'route', n.route, 'alertname', n.an, 'tpl_id', n.tpl,
    'variables', n.vars, 'state', state, 'reason', reason, 'created_at', now_s,
    'updated_at', now_s, 'due_at', due, 'lease_until', 0, 'attempts', 0)
  redis.call('ZADD', KEYS[2], id, id)
  redis.call('ZADD', P .. 'state:' .. state, id, id)
  redis.call('ZADD', P .. 'mobile:' .. n.m .. ':items', id, id)
  if state == 'queued' then
    local hour = P .. 'mobile:' .. n.m .. ':hour'
    redis.call('ZADD', hour, now_s, id)
    redis.call('ZREMRANGEBYSCORE', hour, '-inf', ARGV[11])
  end
  if PENDING[state] then
    redis.call('ZADD', P .. 'mobile:' .. n.m .. ':pending', due, id)
    touched[n.m] = true
  else
    redis.call('ZADD', KEYS[6], now_s, id)
  end
  return tostring(id)
end

local function limited(m)
  if per_day then
    local c = redis.call('GET', P .. 'day:' .. day)
    if c and tonumber(c) >= per_day then
      return 'per_day limit'
    end
  end
  if per_hour then
    local c = redis.call('ZCOUNT', P .. 'mobile:' .. m .. ':hour', ARGV[3], '+inf')
    if c >= per_hour then
      return 'per_mobile_per_hour limit'
    end
  end
  return ''
end

for i, n in ipairs(notes) do
  local state, reason, id = 'suppressed', '', ''
  if n.state == 'suppressed' then
    reason = n.reason
    id = store(n, 'suppressed', reason, now_s)
  else
    local dk = P .. 'dedup:' .. n.dk
    local at = redis.call('HGET', dk, 'at')
    if n.st == 'firing' then
      if at and now - tonumber(at) < n.ri then
        reason = 'duplicate'
      elseif redis.call('EXISTS', P .. 'dedup:' .. n.rk) == 1 then
        reason = 'already resolved'
      end
    elseif at then
      reason = 'duplicate'
    else
      local paged = redis.call('HGET', P .. 'dedup:' .. n.fk, 'paged')
      if not paged or paged == '0' then
        reason = 'not paged'
        -- remember the episode resolved, so a late firing of it pages nobody
        redis.call('HSET', dk, 'at', now_s, 'paged', 0)
        redis.call('EXPIRE', dk, math.max(dedup_ttl, 1))
        redis.call('ZADD', KEYS[5], now_s, n.dk)
      end
    end
    if reason == '' then
      local limit = limited(n.m)
      redis.call('HSET', dk, 'at', now_s)
      if limit == '' then
        redis.call('HSET', dk, 'paged', 1)
      else
        redis.call('HSETNX', dk, 'paged', 0)
      end
      redis.call('EXPIRE', dk, math.min(math.max(dedup_ttl, math.ceil(n.ri)), 3153600000))
      redis.call('ZADD', KEYS[5], now_s, n.dk)
      if limit ~= '' then
        reason = limit
        id = store(n, 'suppressed', reason, now_s)
      else
        local held = nil
        if storm_threshold and storm_window > 0 then
          local sk = P .. 'mobile:' .. n.m .. ':storm'
          local window_end = redis.call('HGET', sk, 'end')
          if not window_end or tonumber(window_end) <= now then
            local e = now + storm_window
            redis.call('HSET', sk, 'start', now_s, 'end', e, 'count', 1)
            redis.call('ZADD', KEYS[7], e, n.m)
          elseif redis.call('HINCRBY', sk, 'count', 1) > storm_threshold then
            held = window_end
          end
        end
        if held then
          state, reason = 'held', 'storm'
          id = store(n, 'held', reason, held)
        else
          if day ~= '' then
            redis.call('INCR', P .. 'day:' .. day)
            redis.call('EXPIRE', P .. 'day:' .. day, 259200)
          end
          state = 'queued'
          id = store(n, 'queued', '', now_s)
        end
      end
    end
  end
  out[i] = {state, reason, id}
end

-- keep the dedup index bounded (the records themselves expire)
local old = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[10], 'LIMIT', 0, 256)
if #old > 0 then
  redis.call('ZREM', KEYS[5], unpack(old))
end
for m in pairs(touched) do
  refresh(P, KEYS[3], KEYS[4], m)
end
return out
"""

CLAIM_LUA = _LUA_HELPERS + """
-- claim: lease the due items of up to max_mobiles mobiles, grouped by mobile, atomically.
-- KEYS[1]  {prefix}due       zset mobile -> claimable at
-- KEYS[2]  {prefix}pace      zset mobile -> end of pacing gap
-- ARGV[1]  prefix
-- ARGV[2]  now (UNIX seconds, text)
-- ARGV[3]  lease_until = now + lease
-- ARGV[4]  now + min_gap: the end of the pacing gap each claimed mobile starts
-- ARGV[5]  max_mobiles (negative: no limit)
-- ARGV[6]  max_items per mobile (0: no limit)
-- Returns a list of {mobile, gapped (0/1), {item hash as HGETALL list, ...}}, items oldest
-- (lowest id) first.
local P = ARGV[1]
local now = tonumber(ARGV[2])
local lease_until = tonumber(ARGV[3])
local claims = {}
local mobiles = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[5])
for _, m in ipairs(mobiles) do
  local pk = P .. 'mobile:' .. m .. ':pending'
  local ids
  if tonumber(ARGV[6]) > 0 then
    ids = redis.call('ZRANGEBYSCORE', pk, '-inf', ARGV[2], 'LIMIT', 0, ARGV[6])
  else
    ids = redis.call('ZRANGEBYSCORE', pk, '-inf', ARGV[2])
  end
  if #ids > 0 then
    table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
    local gap = redis.call('ZSCORE', KEYS[2], m)
    local oldest = nil
    local items = {}
    for _, id in ipairs(ids) do
      local key = P .. 'item:' .. id
      local row = redis.call('HMGET', key, 'due_at', 'created_at')
      local ready = math.max(tonumber(row[1]), lease_until)
      redis.call('HSET', key, 'lease_until', ARGV[3])
      redis.call('ZADD', pk, ready, id)
      local created = tonumber(row[2])
      if oldest == nil or created < oldest then
        oldest = created
      end
      items[#items + 1] = redis.call('HGETALL', key)
    end
    redis.call('ZADD', KEYS[2], ARGV[4], m)
    local gapped = 0
    if gap and tonumber(gap) > oldest then
      gapped = 1
    end
    claims[#claims + 1] = {m, gapped, items}
  end
  refresh(P, KEYS[1], KEYS[2], m)
end
return claims
"""

MARK_LUA = _LUA_HELPERS + """
-- mark: one delivery outcome for some items, atomically; every op ends the items' lease.
-- KEYS[1]  {prefix}due       zset mobile -> claimable at
-- KEYS[2]  {prefix}pace      zset mobile -> end of pacing gap
-- KEYS[3]  {prefix}done      zset finished id -> updated_at
-- ARGV[1]  prefix
-- ARGV[2]  op: 'sent', 'retrying', 'failed' (new state; counts an attempt) or 'release'
--          (state unchanged, due again at ARGV[4])
-- ARGV[3]  now: updated_at, and first_attempt_at when unset (ignored by release)
-- ARGV[4]  due_at (retrying, release; '' otherwise)
-- ARGV[5]  reason (ignored by release)
-- ARGV[6]  sid (sent)
-- ARGV[7]  fee (sent)
-- ARGV[8..] item ids; unknown ids are skipped
-- Returns the number of items changed.
local P = ARGV[1]
local op = ARGV[2]
local touched = {}
local changed = 0
for i = 8, #ARGV do
  local id = ARGV[i]
  local key = P .. 'item:' .. id
  local row = redis.call('HMGET', key, 'state', 'mobile', 'due_at', 'first_attempt_at')
  local old, m = row[1], row[2]
  if old then
    local pk = P .. 'mobile:' .. m .. ':pending'
    if op == 'release' then
      redis.call('HSET', key, 'due_at', ARGV[4], 'lease_until', 0)
      if PENDING[old] then
        redis.call('ZADD', pk, ARGV[4], id)
      end
    else
      redis.call('HSET', key, 'state', op, 'reason', ARGV[5], 'updated_at', ARGV[3],
        'lease_until', 0)
      redis.call('HINCRBY', key, 'attempts', 1)
      if not row[4] then
        redis.call('HSET', key, 'first_attempt_at', ARGV[3])
      end
      if op == 'sent' then
        redis.call('HSET', key, 'sid', ARGV[6], 'fee', ARGV[7])
      end
      redis.call('ZREM', P .. 'state:' .. old, id)
      redis.call('ZADD', P .. 'state:' .. op, id, id)
      if op == 'retrying' then
        redis.call('HSET', key, 'due_at', ARGV[4])
        redis.call('ZADD', pk, ARGV[4], id)
        redis.call('ZREM', KEYS[3], id)
      else
        redis.call('ZREM', pk, id)
        redis.call('ZADD', KEYS[3], ARGV[3], id)
      end
    end
    touched[m] = true
    changed = changed + 1
  end
end
for m in pairs(touched) do
  refresh(P, KEYS[1], KEYS[2], m)
end
return changed
"""

EPISODE_LUA = """
-- episode_start: get-or-set (firing) or get-and-close (resolved) an alert's episode start.
-- KEYS[1]  {prefix}episode:{fingerprint}
-- ARGV[1]  '1' firing, '0' resolved
-- ARGV[2]  now (UNIX seconds, text)
-- Returns the start (text), or false (nil) when resolved and never seen firing.
local start = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if start then
    return start
  end
  redis.call('SET', KEYS[1], ARGV[2])
  return ARGV[2]
end
if start then
  redis.call('DEL', KEYS[1])
end
return start
"""

RECENT_LUA = """
-- recent: the newest items, optionally of one state and/or one mobile (read only).
-- KEYS[1]  {prefix}items     zset of all ids
-- ARGV[1]  prefix
-- ARGV[2]  limit (negative: no limit)
-- ARGV[3]  state, or '' for any
-- ARGV[4]  mobile, or '' for any
-- Returns a list of item hashes (HGETALL lists), newest (highest id) first.
local P = ARGV[1]
local limit = tonumber(ARGV[2])
local state, mobile = ARGV[3], ARGV[4]
local index, filter = KEYS[1], nil
if mobile ~= '' then
  index = P .. 'mobile:' .. mobile .. ':items'
  if state ~= '' then
    filter = state
  end
elseif state ~= '' then
  index = P .. 'state:' .. state
end
local out = {}
if limit == 0 then
  return out
end
local chunk = 200
if filter == nil and limit > 0 then
  chunk = limit
end
local start = 0
while true do
  local ids = redis.call('ZREVRANGE', index, start, start + chunk - 1)
  if #ids == 0 then
    return out
  end
  for _, id in ipairs(ids) do
    local key = P .. 'item:' .. id
    if filter == nil or redis.call('HGET', key, 'state') == filter then
      local row = redis.call('HGETALL', key)
      if #row > 0 then
        out[#out + 1] = row
        if limit > 0 and #out >= limit then
          return out
        end
      end
    end
  end
  start = start + chunk
end
"""

PRUNE_LUA = _LUA_HELPERS + """
-- prune: one bounded step of deleting what is older than `before`, atomically.
-- KEYS[1]  {prefix}done      zset finished id -> updated_at
-- KEYS[2]  {prefix}items     zset of all ids
-- KEYS[3]  {prefix}dedup     zset dedup key -> at
-- KEYS[4]  {prefix}pace      zset mobile -> end of pacing gap
-- KEYS[5]  {prefix}storms    zset mobile -> storm window end
-- KEYS[6]  {prefix}due       zset mobile -> claimable at
-- ARGV[1]  prefix
-- ARGV[2]  '(' .. before: exclusive upper bound (UNIX seconds)
-- ARGV[3]  batch: at most this many of each kind per step
-- Returns {items deleted, 1 if any kind filled its batch (call again) else 0}.
local P = ARGV[1]
local batch = tonumber(ARGV[3])
local more = 0
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, batch)
for _, id in ipairs(ids) do
  local key = P .. 'item:' .. id
  local row = redis.call('HMGET', key, 'state', 'mobile')
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
  if row[1] then
    redis.call('ZREM', P .. 'state:' .. row[1], id)
  end
  if row[2] then
    redis.call('ZREM', P .. 'mobile:' .. row[2] .. ':items', id)
    redis.call('ZREM', P .. 'mobile:' .. row[2] .. ':hour', id)
  end
end
if #ids >= batch then
  more = 1
end
local keys = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[2], 'LIMIT', 0, batch)
for _, k in ipairs(keys) do
  redis.call('DEL', P .. 'dedup:' .. k)
  redis.call('ZREM', KEYS[3], k)
end
if #keys >= batch then
  more = 1
end
local paced = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[2], 'LIMIT', 0, batch)
for _, m in ipairs(paced) do
  redis.call('ZREM', KEYS[4], m)
  refresh(P, KEYS[6], KEYS[4], m)
end
if #paced >= batch then
  more = 1
end
local storms = redis.call('ZRANGEBYSCORE', KEYS[5], '-inf', ARGV[2], 'LIMIT', 0, batch)
for _, m in ipairs(storms) do
  redis.call('DEL', P .. 'mobile:' .. m .. ':storm')
  redis.call('ZREM', KEYS[5], m)
end
if #storms >= batch then
  more = 1
end
return {#ids, more}
"""

def _t(x: float) -> str:
    """A time or duration as exact text for a script (``repr`` round-trips a float)."""
    return repr(float(x))


def _opt(x: int | None) -> str:
    return "" if x is None else str(int(x))


def _item(flat: Sequence[str]) -> Item:
    """An :class:`Item` from an HGETALL reply (``[field, value, ...]``)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    first = h.get("first_attempt_at")
    fee = h.get("fee")
    return Item(
        id=h["id"], mobile=h["mobile"], fingerprint=h["fingerprint"], status=h["status"],
        episode=h["episode"], route=h["route"], alertname=h["alertname"],
        tpl_id=int(h["tpl_id"]), variables=json.loads(h["variables"]),
        state=cast(State, h["state"]), reason=h.get("reason", ""),
        created_at=float(h["created_at"]), updated_at=float(h["updated_at"]),
        due_at=float(h["due_at"]), attempts=int(h.get("attempts", "0")),
        first_attempt_at=None if first is None else float(first), sid=h.get("sid"),
        fee=None if fee is None else int(fee),
    )


def _untyped(f: Any) -> Any:
    """``f`` for a call mypy cannot check (redis-py leaves these functions unannotated)."""
    return f


class _Lua:
    """One script: its text and the SHA1 that ``EVALSHA`` names it by."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()


#: redis-py errors after which the connections (or the cluster's slot map) are renewed.
_RECONNECT = (redis.ConnectionError, redis.TimeoutError, ClusterError, AskError,
              TryAgainError, RedisClusterException)


class RedisStore(Store):
    """:class:`Store` on the Redis named by ``url`` (SPEC ``BRIDGE_STORE``, read by
    :func:`bridge.config.parse_redis_url`); every key starts with ``prefix``, which must hold a
    hash tag (``{bridge}:`` by default) so that every key lives in one Redis Cluster slot.

    * ``redis://[[user]:password@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=N``:
      one server, through ``redis.Redis.from_url``;
    * ``redis+sentinel://[:password@]host:port[,host:port...]/SERVICE[/db]``: the master that
      the sentinels name for SERVICE, through ``redis.sentinel.Sentinel(...).master_for``: every
      new connection asks the sentinels, so after a failover the next call reaches the new
      master (a demoted master's ``READONLY`` drops the connection);
    * ``redis+cluster://[:password@]host:port[,...]``: ``redis.cluster.RedisCluster`` finds the
      master of the bridge's slot and every step runs there; after a connection error,
      ``MOVED`` or ``CLUSTERDOWN`` the slot map is read again (on the next call).

    ``wait`` (``BRIDGE_REDIS_WAIT``) > 0: each write step that a webhook's answer or a delivery
    result depends on (record, episode start, marks, ping) is followed on the same connection
    by ``WAIT wait wait_timeout``; fewer confirmations raise :class:`StoreUnconfirmed` (a
    :class:`StoreUnavailable`: the write stands on the master but a failover may lose it).
    Claims, releases, pruning and status notes are not waited for: losing one in a failover only
    ends a lease early, gives a pacing gap back or keeps an old record a little longer.

    Nothing connects until the first call. Connections come from redis-py's pools, which are
    thread-safe, reset themselves in a forked child and reconnect by themselves when Redis comes
    back; an operation that fails raises :class:`StoreUnavailable` (never with the password)
    and leaves nothing behind that would fail the next one. A script the server does not know
    (``NOSCRIPT``: a new master after a failover, a restart, ``SCRIPT FLUSH``) is loaded and run
    again. ``dedup_ttl`` (seconds) is how long a dedup record lives at least; ``socket_timeout``
    (seconds) bounds every connect and reply. Raises ``ValueError`` for a bad URL or prefix.
    """

    def __init__(self, url: str, prefix: str = DEFAULT_PREFIX, *, socket_timeout: float = 3.0,
                 dedup_ttl: int = DEFAULT_DEDUP_TTL, wait: int = 0,
                 wait_timeout: float = 1.0) -> None:
        if not _HASH_TAG.match(prefix):
            raise ValueError(f"the key prefix must start with a hash tag like {{bridge}}:, "
                             f"not {prefix!r}")
        self.url = url
        self.target = parse_redis_url(url)
        self.prefix = prefix
        self.dedup_ttl = int(dedup_ttl)
        self.wait = int(wait)
        self.wait_timeout = float(wait_timeout)
        self._secrets = [p for p in (self.target.password, self.target.sentinel_password) if p]
        self._lock = threading.Lock()
        # One quick retry of a failed connection or timeout: it replaces a connection Redis
        # closed (a restart) without the caller seeing an error. redis-py 6+ deprecates
        # ``retry_on_timeout=True``; the Retry below is its documented replacement.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1,
                      supported_errors=(redis.ConnectionError, redis.TimeoutError))
        # a reply may take the WAIT timeout longer: never cut it off (a timed-out step would be
        # sent again by the retry)
        self._options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": socket_timeout + (self.wait_timeout if self.wait else 0.0),
            "socket_connect_timeout": socket_timeout, "health_check_interval": 15}
        self._sentinel: Sentinel | None = None
        self._cluster: RedisCluster | None = None
        self._cluster_stale = False
        self._client: redis.Redis | None = None
        t = self.target
        if t.topology == "redis":
            self._client = redis.Redis.from_url(url, retry=retry, retry_on_error=[
                redis.ConnectionError, redis.TimeoutError], **self._options)
        elif t.topology == "sentinel":
            self._sentinel = _untyped(Sentinel)(
                list(t.hosts), sentinel_kwargs={
                    "socket_timeout": min(socket_timeout, 1.0),
                    "socket_connect_timeout": min(socket_timeout, 1.0),
                    "password": t.sentinel_password, "decode_responses": True,
                    # a sentinel that does not answer: ask the next one (redis-py's default
                    # retries each for seconds)
                    "retry": Retry(NoBackoff(), 0)})
            self._client = _untyped(self._sentinel.master_for)(
                t.service, redis_class=redis.Redis, db=t.db, username=t.username,
                password=t.password, retry=retry,
                retry_on_error=[redis.ConnectionError, redis.TimeoutError], **self._options)
        self._lua_record = _Lua(RECORD_LUA)
        self._lua_claim = _Lua(CLAIM_LUA)
        self._lua_mark = _Lua(MARK_LUA)
        self._lua_episode = _Lua(EPISODE_LUA)
        self._lua_recent = _Lua(RECENT_LUA)
        self._lua_prune = _Lua(PRUNE_LUA)

    # -- plumbing ---------------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return self.prefix + name

    def _node(self) -> redis.Redis:
        """The client of the master that holds the bridge's keys: the one server, the master
        the sentinels name, or the cluster master of the prefix's slot (the cluster client is
        made on first use, and its slot map read again after an error)."""
        if self._client is not None:
            return self._client
        with self._lock:
            if self._cluster is None:
                t = self.target
                self._cluster = RedisCluster(
                    startup_nodes=[_untyped(ClusterNode)(h, p) for h, p in t.hosts],
                    username=t.username, password=t.password, require_full_coverage=False,
                    retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1),
                    **self._options)
                self._cluster_stale = False
            elif self._cluster_stale:
                self._cluster_stale = False
                self._cluster.nodes_manager.initialize()
            cluster = self._cluster
        node = _untyped(cluster.get_node_from_key)(self._k("seq"))
        return cluster.get_redis_connection(node)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every redis-py error into :class:`StoreUnavailable` (without the password)."""
        try:
            yield
        except (redis.RedisError, RedisClusterException) as exc:
            if isinstance(exc, _RECONNECT):
                self._reconnect()
            raise StoreUnavailable(
                f"redis {redact_url(self.url)}: {self._scrub(f'{type(exc).__name__}: {exc}')}"
            ) from None

    def _reconnect(self) -> None:
        """Drop idle pooled connections (after a restart or failover they are all dead), or
        have the cluster's slot map read again on the next call."""
        if self._client is not None:
            self._client.connection_pool.disconnect(inuse_connections=False)
        else:
            self._cluster_stale = True

    def _run(self, script: _Lua, keys: Sequence[str], args: Sequence[str | int],
             confirm: bool = True) -> Any:
        """Run ``script`` on the master; with ``confirm`` and ``wait`` > 0 followed on the same
        connection by ``WAIT``. ``keys`` must hold at least one key of the bridge: a cluster
        routes the script by it (every key shares the prefix's slot). A ``NOSCRIPT`` answer
        loads the script and runs it again. Raises :class:`StoreUnavailable` /
        :class:`StoreUnconfirmed`."""
        if not keys:
            raise ValueError("a script needs at least one key to be routed by")
        waiting = confirm and self.wait > 0
        with self._errors():
            for attempt in range(3):
                client = self._node()
                pipe = client.pipeline(transaction=False)
                pipe.evalsha(script.sha, len(keys), *keys, *args)
                if waiting:
                    pipe.wait(self.wait, int(self.wait_timeout * 1000))
                replies = pipe.execute(raise_on_error=False)
                if isinstance(replies[0], NoScriptError) and attempt < 2:
                    client.script_load(script.text)
                    continue
                if isinstance(replies[0], MovedError) and attempt < 2:
                    self._cluster_stale = True  # the slot moved: read the map, run it there
                    continue
                for reply in replies:
                    if isinstance(reply, Exception):
                        raise reply
                if waiting:
                    self._confirmed(replies[1])
                return replies[0]
        raise StoreUnavailable(f"redis {redact_url(self.url)}: script kept failing")

    def _confirmed(self, acks: Any) -> None:
        """Raise :class:`StoreUnconfirmed` when fewer than ``wait`` replicas confirmed."""
        if int(acks) < self.wait:
            raise StoreUnconfirmed(
                f"redis {redact_url(self.url)}: {int(acks)} of {self.wait} replicas confirmed "
                f"the write within {self.wait_timeout:g}s (BRIDGE_REDIS_WAIT); it stands on "
                "the master, which may lose it in a failover")

    def describe(self) -> str:
        """The topology in use, for the start-up line, e.g. ``redis sentinel mymaster via 3
        sentinels, wait 1 replica``."""
        t = self.target
        n = len(t.hosts)
        if t.topology == "sentinel":
            text = (f"redis sentinel {t.service} via {n} sentinel{'s' if n != 1 else ''}"
                    + (f", db {t.db}" if t.db else ""))
        elif t.topology == "cluster":
            text = (f"redis cluster via {n} seed node{'s' if n != 1 else ''}, every key "
                    f"under {_HASH_TAG.match(self.prefix).group(1)}")  # type: ignore[union-attr]
        else:
            text = f"redis {redact_url(self.url)}"
        if self.wait:
            text += f", wait {self.wait} replica{'s' if self.wait != 1 else ''}"
            if self.wait_timeout != 1.0:
                text += f" within {self.wait_timeout:g}s"
        return text

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        if self._sentinel is not None:
            for s in self._sentinel.sentinels:
                s.close()
        with self._lock:
            if self._cluster is not None:
                self._cluster.close()
                self._cluster = None

    # -- the contract -----------------------------------------------------------------------
    def record(self, notes: Sequence[Notification], policy: Policy, now: float) -> list[Outcome]:
        payload = json.dumps([
            {"m": n.mobile, "fp": n.fingerprint, "st": n.status, "ep": n.episode,
             "route": n.route, "an": n.alertname, "tpl": int(n.tpl_id),
             "vars": json.dumps(n.variables, ensure_ascii=False, separators=(",", ":")),
             "ri": float(n.repeat_interval), "state": n.state, "reason": n.reason,
             "dk": n.dedup_key, "fk": n.firing_key,
             "rk": n.resolved_key}
            for n in notes], ensure_ascii=False, separators=(",", ":"))
        keys = [self._k(k) for k in ("seq", "items", "due", "pace", "dedup", "done", "storms")]
        storm = policy.storm_threshold if policy.storm_window > 0 else None
        args: list[str | int] = [
            self.prefix, _t(now), "(" + _t(now - 3600), _opt(policy.per_mobile_per_hour),
            _opt(policy.per_day), _opt(storm), _t(policy.storm_window), policy.day,
            self.dedup_ttl, _t(now - self.dedup_ttl), _t(now - 7200), payload]
        rows = self._run(self._lua_record, keys, args)
        return [Outcome(n, cast(State, state), reason, id or None)
                for n, (state, reason, id) in zip(notes, rows, strict=True)]

    def claim(self, now: float, lease: float, min_gap: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        lease_until = now + lease
        rows = self._run(self._lua_claim, [self._k("due"), self._k("pace")],
                         [self.prefix, _t(now), _t(lease_until), _t(now + min_gap),
                          int(max_mobiles), max(int(max_items), 0)], confirm=False)
        return [Claim(mobile, [_item(flat) for flat in items], lease_until, bool(gapped))
                for mobile, gapped, items in rows]

    def _mark(self, op: str, ids: Sequence[str], now: float | None, due_at: float | None,
              reason: str = "", sid: str = "", fee: int = 0) -> None:
        if not ids:
            return
        self._run(self._lua_mark, [self._k("due"), self._k("pace"), self._k("done")],
                  [self.prefix, op, "" if now is None else _t(now),
                   "" if due_at is None else _t(due_at), reason, sid, str(int(fee)),
                   *[str(i) for i in ids]], confirm=op != "release")

    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float,
                  reason: str = "") -> None:
        self._mark("sent", ids, now, None, reason, sid, fee)

    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float) -> None:
        self._mark("retrying", ids, now, due_at, reason)

    def mark_failed(self, ids: Sequence[str], reason: str, now: float) -> None:
        self._mark("failed", ids, now, None, reason)

    def release(self, ids: Sequence[str], due_at: float) -> None:
        self._mark("release", ids, None, due_at)

    def episode_start(self, fingerprint: str, firing: bool, now: float) -> float | None:
        start = self._run(self._lua_episode, [self._k(f"episode:{fingerprint}")],
                          ["1" if firing else "0", _t(now)])
        return None if start is None else float(start)

    def recent(self, limit: int = 50, state: str | None = None,
               mobile: str | None = None) -> list[Item]:
        rows = self._run(self._lua_recent, [self._k("items")],
                         [self.prefix, int(limit), state or "", mobile or ""], confirm=False)
        return [_item(flat) for flat in rows]

    def counts(self) -> dict[str, int]:
        with self._errors():
            pipe = self._node().pipeline(transaction=True)
            for s in STATES:
                pipe.zcard(self._k(f"state:{s}"))
            sizes = pipe.execute()
        return {s: int(n) for s, n in zip(STATES, sizes, strict=True)}

    def prune(self, before: float, batch: int = 1000) -> int:
        """See :meth:`Store.prune`; each step (one script call) deletes at most ``batch`` of
        each kind, so webhooks wait at most one short step."""
        keys = [self._k(k) for k in ("done", "items", "dedup", "pace", "storms", "due")]
        total = 0
        while True:
            deleted, more = self._run(self._lua_prune, keys,
                                      [self.prefix, "(" + _t(before), int(batch)],
                                      confirm=False)
            total += int(deleted)
            if not more:
                return total

    def set_status(self, key: str, value: str | None) -> None:
        with self._errors():
            if value is None:
                self._node().hdel(self._k("status"), key)
            else:
                self._node().hset(self._k("status"), key, value)

    def get_status(self, key: str) -> str | None:
        with self._errors():
            value = self._node().hget(self._k("status"), key)
        return None if value is None else str(value)

    def ping(self) -> None:
        """See :meth:`Store.ping`; with ``wait`` > 0 the write must also be confirmed by that
        many replicas (:class:`StoreUnconfirmed` otherwise), so ``/readyz`` says why webhooks
        get 503."""
        with self._errors():
            pipe = self._node().pipeline(transaction=False)
            pipe.set(self._k("ping"), "1")
            if self.wait:
                pipe.wait(self.wait, int(self.wait_timeout * 1000))
            replies = pipe.execute()
        if self.wait:
            self._confirmed(replies[1])

    def config_warnings(self) -> list[str]:
        """What in the server's configuration weakens the guarantees, as sentences for the
        start-up log: AOF off, an evicting ``maxmemory-policy``, fewer connected replicas than
        ``wait``, and (sentinel, cluster) ``wait`` 0, under which a failover may take back a
        200. Empty when fine; the ``INFO`` checks are left out when the server refuses
        ``INFO``. Raises :class:`StoreUnavailable`."""
        out = []
        if self.wait == 0 and self.target.topology != "redis":
            out.append("BRIDGE_REDIS_WAIT=0: replicas copy writes asynchronously, so a failover "
                       "may lose webhooks answered 200 just before it; set BRIDGE_REDIS_WAIT=1")
        with self._errors():
            node = self._node()
            try:
                info: dict[str, Any] = dict(node.info("persistence"))
                info.update(node.info("memory"))
                info.update(node.info("replication"))
            except redis.ResponseError:
                return out
        if str(info.get("aof_enabled", "1")) == "0":
            out.append("redis runs without AOF (appendonly no): a restart of redis may lose "
                       "queued SMS and dedup records; set appendonly yes")
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            out.append(f"redis maxmemory-policy is {policy}: when full, redis may evict queued "
                       "SMS and dedup records; set maxmemory-policy noeviction")
        replicas = int(info.get("connected_slaves", 0))
        if self.wait and replicas < self.wait:
            out.append(f"the redis master has {replicas} connected replicas but "
                       f"BRIDGE_REDIS_WAIT={self.wait}: webhooks get 503 until enough connect")
        return out
