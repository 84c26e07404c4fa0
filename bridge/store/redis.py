"""The shared store: one Redis (7.x) for every instance of the bridge, e.g. on a PaaS.

Every atomic step of :class:`bridge.store.base.Store` is **one Lua script** (a module constant
below, registered once per client with ``register_script``). Redis runs a script alone, so any
number of processes on any number of machines sharing the Redis never double-page, never both
pass a limit and never both claim the same SMS. A script's writes are all-or-nothing as far as
Redis allows: a read-only replica or ``maxmemory`` refuses the *first* write of a script, before
anything was changed. The scripts are written for a single Redis (keys are derived from the
prefix inside the scripts, so they are not Redis-Cluster safe).

Durability is Redis's own: run it with ``appendonly yes`` (``appendfsync everysec`` loses at most
the last second on a power loss, ``always`` nothing) and with ``maxmemory-policy noeviction``
(an evicting policy would silently drop queued SMS and dedup records).
:meth:`RedisStore.config_warnings` reports both settings when the server lets it read them.

Times are UNIX seconds passed to the scripts as text (``repr(float)``) and stored as text, so a
float comes back exactly as it went in (Lua numbers are doubles; a number is never turned into
text inside a script, which would keep only 14 digits).

Key map (``{prefix}`` is ``bridge:`` unless configured; ``{m}`` a mobile, ``{id}`` an item id)::

    {prefix}seq                    string  INCR counter; item ids are its values, as text
    {prefix}item:{id}              hash    one stored notification: id mobile fingerprint status
                                           episode route alertname tpl_id variables (JSON text)
                                           state reason created_at updated_at due_at lease_until
                                           attempts [lease_token first_attempt_at sid fee]
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
    {prefix}pace                   zset    mobile -> end of its hold (a claim's lease) or of its
                                           pacing gap (last send that may have gone out +
                                           min_gap), as the last claim or mark set it
    {prefix}dedup:{key}            hash    dedup record of ``mobile|fingerprint|status|episode``:
                                           at (last recorded) paged (0/1); expires
                                           max(dedup_ttl, repeat_interval) after it was written
    {prefix}dedup                  zset    dedup keys, score = at (prune); trimmed on record to
                                           the last ``dedup_ttl`` seconds
    {prefix}day:{day}              string  SMS queued on that day (per_day); expires after 3 days
    {prefix}episode:{fingerprint}  string  the current episode of an alert without startsAt
                                           (legacy Grafana), as text (base.episode_text)
    {prefix}status                 hash    shared status notes (e.g. ``juhe_config``)
    {prefix}ping                   string  written by :meth:`RedisStore.ping`

Intake is O(batch) and a claim O(claimed items): claim reads the mobiles due from
``{prefix}due`` and each mobile's claimable ids from its ``pending`` set; nothing scans. What
grows with traffic is removed by :meth:`RedisStore.prune` in bounded steps (finished items,
dedup records, pacing and storm entries) or expires on its own (dedup, day counters).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast
from urllib.parse import unquote, urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.commands.core import Script
from redis.retry import Retry

from bridge.errors import StoreUnavailable
from bridge.plan import EpisodeMark, Notification
from bridge.privacy import redact_url
from bridge.store.base import STATES, Claim, Item, Outcome, Policy, State, Store, episode_text

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
-- record: settle episodes, then decide and store a webhook's notifications, in order,
-- atomically, by the paging policy table (bridge/store/base.py PAGING_POLICY; the comments
-- "policy row: <step>" below name its rows, in its order).
-- KEYS[1]  {prefix}seq       item id counter
-- KEYS[2]  {prefix}items     zset of all ids
-- KEYS[3]  {prefix}due       zset mobile -> claimable at
-- KEYS[4]  {prefix}pace      zset mobile -> end of hold or pacing gap
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
--          ri (repeat_interval seconds), state, reason, ut (1: untimed, the episode is
--          settled here)}
-- ARGV[13] JSON list of episode marks: {fp, f (1 firing, 0 resolved)}
-- ARGV[14] the episode text of an episode beginning now (UTC ISO, base.episode_text)
-- Returns one {state, reason, id, episode} per notification, in order; id is '' when nothing
-- was stored (duplicate, not paged).
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
local marks = cjson.decode(ARGV[13])
local touched = {}
local out = {}

local function key_of(n, status)
  return n.m .. '|' .. n.fp .. '|' .. status .. '|' .. n.ep
end

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

local function write_dedup(dk, paged, ttl)
  redis.call('HSET', P .. 'dedup:' .. dk, 'at', now_s)
  if paged then
    redis.call('HSET', P .. 'dedup:' .. dk, 'paged', 1)
  else
    redis.call('HSETNX', P .. 'dedup:' .. dk, 'paged', 0)
  end
  redis.call('EXPIRE', P .. 'dedup:' .. dk, ttl)
  redis.call('ZADD', KEYS[5], now_s, dk)
end

-- policy rows per_day, per_mobile_per_hour: the reason, or ''
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

-- policy row storm: count the notification in the mobile's window (opening one when none is
-- open); the window's end when it is past the threshold, else nil
local function storm_holds(m)
  if not storm_threshold or storm_window <= 0 then
    return nil
  end
  local sk = P .. 'mobile:' .. m .. ':storm'
  local window_end = redis.call('HGET', sk, 'end')
  if not window_end or tonumber(window_end) <= now then
    local e = now + storm_window
    redis.call('HSET', sk, 'start', now_s, 'end', e, 'count', 1)
    redis.call('ZADD', KEYS[7], e, m)
    return nil
  end
  if redis.call('HINCRBY', sk, 'count', 1) > storm_threshold then
    return window_end
  end
  return nil
end

-- one notification down the policy rows: state, reason, id ('' when only counted)
local function decide(n)
  local dk = key_of(n, n.st)
  -- policy row: planned
  if n.state == 'suppressed' then
    return 'suppressed', n.reason, store(n, 'suppressed', n.reason, now_s)
  end
  -- policy row: dedup
  local at = redis.call('HGET', P .. 'dedup:' .. dk, 'at')
  if at and (n.st == 'resolved' or now - tonumber(at) < n.ri) then
    return 'suppressed', 'duplicate', ''
  end
  if n.st == 'firing' then
    -- policy row: already_resolved
    if redis.call('EXISTS', P .. 'dedup:' .. key_of(n, 'resolved')) == 1 then
      return 'suppressed', 'already resolved', ''
    end
  else
    -- policy row: resolved_pairing
    local paged = redis.call('HGET', P .. 'dedup:' .. key_of(n, 'firing'), 'paged')
    if not paged or paged == '0' then
      write_dedup(dk, false, math.max(dedup_ttl, 1))
      return 'suppressed', 'not paged', ''
    end
  end
  -- policy rows: per_day, per_mobile_per_hour (the dedup record is written either way)
  local limit = limited(n.m)
  write_dedup(dk, limit == '', math.min(math.max(dedup_ttl, math.ceil(n.ri)), 3153600000))
  if limit ~= '' then
    return 'suppressed', limit, store(n, 'suppressed', limit, now_s)
  end
  -- policy row: storm
  local held = storm_holds(n.m)
  if held then
    return 'held', 'storm', store(n, 'held', 'storm', held)
  end
  -- policy row: queued
  if day ~= '' then
    redis.call('INCR', P .. 'day:' .. day)
    redis.call('EXPIRE', P .. 'day:' .. day, 259200)
  end
  return 'queued', '', store(n, 'queued', '', now_s)
end

-- sub-step episodes: settle the episode of alerts without startsAt
local wanted, order = {}, {}
for _, mk in ipairs(marks) do
  if wanted[mk.fp] == nil then
    order[#order + 1] = mk.fp
  end
  wanted[mk.fp] = (mk.f == 1)
end
for _, n in ipairs(notes) do
  if n.ut == 1 and wanted[n.fp] == nil then
    order[#order + 1] = n.fp
    wanted[n.fp] = (n.st == 'firing')
  end
end
local starts = {}
for _, fp in ipairs(order) do
  local ek = P .. 'episode:' .. fp
  local start = redis.call('GET', ek)
  if start and string.find(start, 'T', 1, true) then
    starts[fp] = start
  elseif wanted[fp] then
    -- (a value without 'T' is a start from before episodes were stored as text: replaced)
    redis.call('SET', ek, ARGV[14])
    starts[fp] = ARGV[14]
  end
end

for i, n in ipairs(notes) do
  if n.ut == 1 then
    n.ep = starts[n.fp] or ''
  end
  local state, reason, id = decide(n)
  out[i] = {state, reason, id, n.ep}
end

-- sub-step episodes: close the episodes of resolved marks
for _, mk in ipairs(marks) do
  if mk.f ~= 1 then
    redis.call('DEL', P .. 'episode:' .. mk.fp)
  end
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
-- KEYS[2]  {prefix}pace      zset mobile -> end of hold or pacing gap
-- ARGV[1]  prefix
-- ARGV[2]  now (UNIX seconds, text)
-- ARGV[3]  lease_until = now + lease: also the end of the hold each claimed mobile gets
-- ARGV[4]  max_mobiles (negative: no limit)
-- ARGV[5]  max_items per mobile (0: no limit)
-- ARGV[6..] one fresh lease token per mobile that may be claimed (at least max_mobiles)
-- Returns a list of {mobile, gapped (0/1), token, {item hash as HGETALL list, ...}}, items
-- oldest (lowest id) first.
local P = ARGV[1]
local lease_until = tonumber(ARGV[3])
local claims = {}
local mobiles = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, m in ipairs(mobiles) do
  local pk = P .. 'mobile:' .. m .. ':pending'
  local ids
  if tonumber(ARGV[5]) > 0 then
    ids = redis.call('ZRANGEBYSCORE', pk, '-inf', ARGV[2], 'LIMIT', 0, ARGV[5])
  else
    ids = redis.call('ZRANGEBYSCORE', pk, '-inf', ARGV[2])
  end
  if #ids > 0 then
    local token = ARGV[6 + #claims]
    table.sort(ids, function(a, b) return tonumber(a) < tonumber(b) end)
    local gap = redis.call('ZSCORE', KEYS[2], m)
    local oldest = nil
    local items = {}
    for _, id in ipairs(ids) do
      local key = P .. 'item:' .. id
      local row = redis.call('HMGET', key, 'due_at', 'created_at')
      local ready = math.max(tonumber(row[1]), lease_until)
      redis.call('HSET', key, 'lease_until', ARGV[3], 'lease_token', token)
      redis.call('ZADD', pk, ready, id)
      local created = tonumber(row[2])
      if oldest == nil or created < oldest then
        oldest = created
      end
      items[#items + 1] = redis.call('HGETALL', key)
    end
    -- the hold: no other claim of this mobile until a mark turns it into the gap
    redis.call('ZADD', KEYS[2], ARGV[3], m)
    local gapped = 0
    if gap and tonumber(gap) > oldest then
      gapped = 1
    end
    claims[#claims + 1] = {m, gapped, token, items}
  end
  refresh(P, KEYS[1], KEYS[2], m)
end
return claims
"""

MARK_LUA = _LUA_HELPERS + """
-- mark: one delivery outcome for some items of one claim, atomically; fenced by the claim's
-- lease token (items leased under another token are left alone); ends the items' lease.
-- KEYS[1]  {prefix}due       zset mobile -> claimable at
-- KEYS[2]  {prefix}pace      zset mobile -> end of hold or pacing gap
-- KEYS[3]  {prefix}done      zset finished id -> updated_at
-- KEYS[4]  {prefix}dedup     zset dedup key -> at
-- ARGV[1]  prefix
-- ARGV[2]  op: 'sent', 'retrying', 'failed' (new state; counts an attempt; 'failed' also
--          deletes the items' dedup records: a failed SMS did not page) or 'release'
--          (state unchanged, due again at ARGV[4])
-- ARGV[3]  now: updated_at, and first_attempt_at when unset (ignored by release)
-- ARGV[4]  due_at (retrying, release; '' otherwise)
-- ARGV[5]  reason (ignored by release)
-- ARGV[6]  sid (sent)
-- ARGV[7]  fee (sent)
-- ARGV[8]  lease token
-- ARGV[9]  pace_until: the end of the mobile's pacing gap from now on; '' leaves it
-- ARGV[10..] item ids; unknown ids are skipped
-- Returns the number of items changed.
local P = ARGV[1]
local op = ARGV[2]
local touched = {}
local changed = 0
for i = 10, #ARGV do
  local id = ARGV[i]
  local key = P .. 'item:' .. id
  local row = redis.call('HMGET', key, 'state', 'mobile', 'lease_token', 'first_attempt_at',
    'fingerprint', 'status', 'episode')
  local old, m = row[1], row[2]
  if old and row[3] == ARGV[8] then
    local pk = P .. 'mobile:' .. m .. ':pending'
    if op == 'release' then
      redis.call('HSET', key, 'due_at', ARGV[4], 'lease_until', 0, 'lease_token', '')
      if PENDING[old] then
        redis.call('ZADD', pk, ARGV[4], id)
      end
    else
      redis.call('HSET', key, 'state', op, 'reason', ARGV[5], 'updated_at', ARGV[3],
        'lease_until', 0, 'lease_token', '')
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
      if op == 'failed' then
        local dk = m .. '|' .. row[5] .. '|' .. row[6] .. '|' .. row[7]
        redis.call('DEL', P .. 'dedup:' .. dk)
        redis.call('ZREM', KEYS[4], dk)
      end
    end
    touched[m] = true
    changed = changed + 1
  end
end
for m in pairs(touched) do
  if ARGV[9] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[9], m)
  end
  refresh(P, KEYS[1], KEYS[2], m)
end
return changed
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


class RedisStore(Store):
    """:class:`Store` on the Redis at ``url`` (``redis://[[user]:password@]host:port/db``,
    ``rediss://`` for TLS, ``unix:///path.sock?db=N``); every key starts with ``prefix``.

    Nothing connects until the first call. Connections come from redis-py's pool, which is
    thread-safe, resets itself in a forked child and reconnects by itself when Redis comes
    back; an operation that fails raises :class:`StoreUnavailable` and leaves nothing behind
    that would fail the next one. ``dedup_ttl`` (seconds) is how long a dedup record lives at
    least (see the module docstring).
    """

    def __init__(self, url: str, prefix: str = "bridge:", *, socket_timeout: float = 3.0,
                 dedup_ttl: int = DEFAULT_DEDUP_TTL) -> None:
        self.url = url
        self.prefix = prefix
        self.dedup_ttl = int(dedup_ttl)
        parts = urlsplit(url)
        self._password = unquote(parts.password) if parts.password else ""
        # One quick retry of a failed connection or timeout: it replaces a connection Redis
        # closed (a restart) without the caller seeing an error. redis-py 6+ deprecates
        # ``retry_on_timeout=True``; the Retry below is its documented replacement.
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1,
                      supported_errors=(redis.ConnectionError, redis.TimeoutError))
        self._client: redis.Redis = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout, health_check_interval=15, retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError])
        self._lua_record = self._client.register_script(RECORD_LUA)
        self._lua_claim = self._client.register_script(CLAIM_LUA)
        self._lua_mark = self._client.register_script(MARK_LUA)
        self._lua_recent = self._client.register_script(RECENT_LUA)
        self._lua_prune = self._client.register_script(PRUNE_LUA)

    # -- plumbing ---------------------------------------------------------------------------
    def _k(self, name: str) -> str:
        return self.prefix + name

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn every redis-py error into :class:`StoreUnavailable` (without the password)."""
        try:
            yield
        except redis.RedisError as exc:
            if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
                # drop idle pooled connections too: after a restart they are all dead
                self._client.connection_pool.disconnect(inuse_connections=False)
            text = f"{type(exc).__name__}: {exc}"
            if self._password:
                text = text.replace(self._password, "***")
            raise StoreUnavailable(f"redis {redact_url(self.url)}: {text}") from None

    def _run(self, script: Script, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        with self._errors():
            return script(keys=list(keys), args=list(args))

    def close(self) -> None:
        self._client.close()

    # -- the contract -----------------------------------------------------------------------
    def record(self, notes: Sequence[Notification], policy: Policy, now: float,
               episodes: Sequence[EpisodeMark] = ()) -> list[Outcome]:
        payload = json.dumps([
            {"m": n.mobile, "fp": n.fingerprint, "st": n.status, "ep": n.episode,
             "route": n.route, "an": n.alertname, "tpl": int(n.tpl_id),
             "vars": json.dumps(n.variables, ensure_ascii=False, separators=(",", ":")),
             "ri": float(n.repeat_interval), "state": n.state, "reason": n.reason,
             "ut": 1 if n.untimed else 0}
            for n in notes], ensure_ascii=False, separators=(",", ":"))
        marks = json.dumps([{"fp": m.fingerprint, "f": 1 if m.firing else 0} for m in episodes],
                           ensure_ascii=False, separators=(",", ":"))
        keys = [self._k(k) for k in ("seq", "items", "due", "pace", "dedup", "done", "storms")]
        storm = policy.storm_threshold if policy.storm_window > 0 else None
        args: list[str | int] = [
            self.prefix, _t(now), "(" + _t(now - 3600), _opt(policy.per_mobile_per_hour),
            _opt(policy.per_day), _opt(storm), _t(policy.storm_window), policy.day,
            self.dedup_ttl, _t(now - self.dedup_ttl), _t(now - 7200), payload, marks,
            episode_text(now)]
        rows = self._run(self._lua_record, keys, args)
        return [Outcome(replace(n, episode=ep) if n.untimed else n, cast(State, state), reason,
                        id or None)
                for n, (state, reason, id, ep) in zip(notes, rows, strict=True)]

    def claim(self, now: float, lease: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(max_mobiles), 1))]
        rows = self._run(self._lua_claim, [self._k("due"), self._k("pace")],
                         [self.prefix, _t(now), _t(lease_until), int(max_mobiles),
                          max(int(max_items), 0), *tokens])
        return [Claim(mobile, [_item(flat) for flat in items], lease_until, bool(gapped), token)
                for mobile, gapped, token, items in rows]

    def _mark(self, op: str, ids: Sequence[str], token: str, pace_until: float | None,
              now: float | None, due_at: float | None, reason: str = "", sid: str = "",
              fee: int = 0) -> int:
        if not ids or not token:  # an unleased item carries no token: nothing may mark it
            return 0
        keys = [self._k("due"), self._k("pace"), self._k("done"), self._k("dedup")]
        return int(self._run(self._lua_mark, keys, [
            self.prefix, op, "" if now is None else _t(now), "" if due_at is None else _t(due_at),
            reason, sid, str(int(fee)), token, "" if pace_until is None else _t(pace_until),
            *[str(i) for i in ids]]))

    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float, reason: str = "",
                  *, token: str, pace_until: float | None) -> int:
        return self._mark("sent", ids, token, pace_until, now, None, reason, sid, fee)

    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float, *,
                   token: str, pace_until: float | None) -> int:
        return self._mark("retrying", ids, token, pace_until, now, due_at, reason)

    def mark_failed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                    pace_until: float | None) -> int:
        return self._mark("failed", ids, token, pace_until, now, None, reason)

    def release(self, ids: Sequence[str], due_at: float, *, token: str,
                pace_until: float | None = None) -> int:
        return self._mark("release", ids, token, pace_until, None, due_at)

    def episode_of(self, fingerprint: str) -> str | None:
        with self._errors():
            value = self._client.get(self._k(f"episode:{fingerprint}"))
        return str(value) if value is not None and "T" in str(value) else None

    def recent(self, limit: int = 50, state: str | None = None,
               mobile: str | None = None) -> list[Item]:
        rows = self._run(self._lua_recent, [self._k("items")],
                         [self.prefix, int(limit), state or "", mobile or ""])
        return [_item(flat) for flat in rows]

    def counts(self) -> dict[str, int]:
        with self._errors():
            pipe = self._client.pipeline(transaction=True)
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
                                      [self.prefix, "(" + _t(before), int(batch)])
            total += int(deleted)
            if not more:
                return total

    def set_status(self, key: str, value: str | None) -> None:
        with self._errors():
            if value is None:
                self._client.hdel(self._k("status"), key)
            else:
                self._client.hset(self._k("status"), key, value)

    def get_status(self, key: str) -> str | None:
        with self._errors():
            value = self._client.hget(self._k("status"), key)
        return None if value is None else str(value)

    def ping(self) -> None:
        with self._errors():
            self._client.set(self._k("ping"), "1")

    def config_warnings(self) -> list[str]:
        """What in the server's configuration breaks the durability promise (AOF off, an
        evicting ``maxmemory-policy``), as sentences for a log; empty when fine or when the
        server does not let ``INFO`` be read. Raises :class:`StoreUnavailable`."""
        with self._errors():
            try:
                info: dict[str, Any] = dict(self._client.info("persistence"))
                info.update(self._client.info("memory"))
            except redis.ResponseError:
                return []
        out = []
        if str(info.get("aof_enabled", "1")) == "0":
            out.append("redis runs without AOF (appendonly no): a restart of redis may lose "
                       "queued SMS and dedup records; set appendonly yes")
        policy = str(info.get("maxmemory_policy", "noeviction"))
        if policy != "noeviction":
            out.append(f"redis maxmemory-policy is {policy}: when full, redis may evict queued "
                       "SMS and dedup records; set maxmemory-policy noeviction")
        return out
