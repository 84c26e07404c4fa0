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
a mobile, ``{id}`` an item id; with ``BRIDGE_REDIS_WAIT`` > 0 the steps record, acknowledge,
finish_step, mark_sent/retry/failed and ping are followed by ``WAIT``)::

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
    {prefix}ep:{eid}               string  one alert episode (bridge/episodes.py) as JSON text:
                                           id fp ep alertname labels annotations summary
                                           starts_at source silence_id
                                           silence_url route state ack_by ack_at ack_via
                                           resolved_at created_at paged[] steps[]; times are
                                           text ("" for none); paged: mobile route rt at level
                                           item code; steps: index after receiver template
                                           due_at state reason lease token
    {prefix}epkey:{fp}|{episode}   string  the episode id of (fingerprint, episode)
    {prefix}epcode:{code}          string  the episode id an ack code was sent for
    {prefix}episodes               zset    episode ids, score = created_at   (episodes())
    {prefix}epstate:{state}        zset    episode ids in that state, score = created_at
    {prefix}epresolved             zset    resolved episode ids, score = resolved_at (prune)
    {prefix}steps                  zset    ``{eid}|{index}`` of pending steps, score = when
                                           claimable = max(due_at, lease)   (claim_steps)
    {prefix}job:{key}              hash    one background job (base.Job): kind payload (JSON text)
                                           state due_at since keep_until attempts error
                                           lease token
    {prefix}jobs                   zset    pending job keys, score = when claimable =
                                           max(due_at, lease)                  (claim_jobs)
    {prefix}jobskept               zset    finished job keys, score = keep_until (prune)
    {prefix}unknown:{client}:{min} string  unknown ack codes tried by a client in one minute
                                           (min = now // 60); expires after 120 s
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
import secrets
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
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

from bridge.config import parse_redis_url
from bridge.episodes import (
    ACK_PLACEHOLDER,
    Episode,
    Paged,
    Step,
    StepClaim,
    StepState,
    code_expired,
    has_placeholder,
    new_code,
    new_id,
)
from bridge.errors import StoreUnavailable, StoreUnconfirmed
from bridge.plan import EpisodeMark, Notification
from bridge.privacy import redact_url
from bridge.store.base import (
    EPISODE_STALE,
    STATES,
    Claim,
    Item,
    Job,
    JobClaim,
    JobState,
    Outcome,
    Policy,
    State,
    Store,
    dumps_vars,
    episode_text,
)

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

# Reads an episode record (JSON at {prefix}ep:{id}) with empty lists restored (cjson turns
# an empty list into an empty object). Pasted in front of every script that reads episodes.
_EPISODE_LUA = """
local function load_episode(P, eid)
  local raw = redis.call('GET', P .. 'ep:' .. eid)
  if not raw then
    return nil
  end
  local e = cjson.decode(raw)
  if e.paged == nil or next(e.paged) == nil then
    e.paged = {}
  end
  if e.steps == nil or next(e.steps) == nil then
    e.steps = {}
  end
  return e
end
"""

RECORD_LUA = _LUA_HELPERS + _EPISODE_LUA + """
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
-- ARGV[15] the ack code placeholder (bridge.episodes.ACK_PLACEHOLDER, utf-8)
-- ARGV[16] JSON list of fresh ack codes (from secrets; used in order, skipping taken ones)
-- ARGV[17] JSON list of fresh episode ids (used in order)
-- ARGV[18] JSON list of resolved alerts' {fingerprint, episode ('' = settled here)}
-- A notification also carries: rt (resolved_template, '' none), lv (level), steps (list of
-- {after, receiver, template, due (text)}), info ({labels, summary, starts_at (text or
-- ''), silence_url}) for firing ones.
-- Returns one {state, reason, id, episode, episode id, variables} per notification, in order;
-- id is '' when nothing was stored (duplicate, not paged), episode id '' when it paged for
-- none, variables the stored JSON when an ack code was filled in, else ''.
--
-- Writes that only add to sorted sets (indexes, queues) are collected and sent once per key
-- with a variadic ZADD (zadd / flush_zadds); the item counter, the day counter, the hour
-- windows' trimming and the episode records are written once per webhook. Each write command
-- of a script is replicated and appended to the AOF on its own, so this is most of the
-- script's cost (issue 14). Every read of those keys inside the script happens after a flush
-- or adds what is still collected (limited), so decisions see the batch's own writes.
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

-- ZADDs collected per key, sent by flush_zadds (before anything reads those keys)
local zq, zorder = {}, {}
local function zadd(key, score, member)
  local q = zq[key]
  if q == nil then
    q = {}
    zq[key] = q
    zorder[#zorder + 1] = key
  end
  q[#q + 1] = score
  q[#q + 1] = member
end
local function flush_zadds()
  for _, key in ipairs(zorder) do
    local q = zq[key]
    for i = 1, #q, 1000 do
      redis.call('ZADD', key, unpack(q, i, math.min(i + 999, #q)))
    end
  end
  zq, zorder = {}, {}
end

-- the item id counter, read once and written back at the end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq_start = seq
-- SMS queued by this webhook: per_day (all mobiles) and per mobile (the hour window)
local day_added = 0
local hour_added = {}

local function key_of(n, status)
  return n.m .. '|' .. n.fp .. '|' .. status .. '|' .. n.ep
end

local PH = ARGV[15]
local fresh_codes = cjson.decode(ARGV[16])
local fresh_ids = cjson.decode(ARGV[17])
local resolved_keys = cjson.decode(ARGV[18])
local next_code, next_id = 1, 1

-- the ack code placeholder in a notification's variables (JSON text) replaced by code
local function fill(s, code)
  local parts, i = {}, 1
  while true do
    local a, b = string.find(s, PH, i, true)
    if not a then
      break
    end
    parts[#parts + 1] = string.sub(s, i, a - 1)
    parts[#parts + 1] = code
    i = b + 1
  end
  parts[#parts + 1] = string.sub(s, i)
  return table.concat(parts)
end

-- episode records read once and written once (save_episode marks them; flush_episodes)
local eps, dirty = {}, {}
local function episode(eid)
  if eps[eid] == nil then
    eps[eid] = load_episode(P, eid) or false
  end
  return eps[eid] or nil
end
local function save_episode(e)
  eps[e.id] = e
  if not dirty[e.id] then
    dirty[e.id] = true
    dirty[#dirty + 1] = e.id
  end
end
local function flush_episodes()
  for _, eid in ipairs(dirty) do
    redis.call('SET', P .. 'ep:' .. eid, cjson.encode(eps[eid]))
  end
  dirty = {}
end

local function episode_id_of(fp, ep)
  return redis.call('GET', P .. 'epkey:' .. fp .. '|' .. ep)
end

local function paged_entry(e, m)
  for _, p in ipairs(e.paged) do
    if p.mobile == m then
      return p
    end
  end
  return nil
end

-- episode sub-step upsert: the notification's episode, created (steps due at now + after)
-- when missing
local function episode_upsert(n)
  local eid = n.known_eid
  if eid == nil then
    eid = episode_id_of(n.fp, n.ep)
  end
  if eid then
    return episode(eid)
  end
  eid = fresh_ids[next_id]
  next_id = next_id + 1
  local info = n.info or {}
  local e = {id = eid, fp = n.fp, ep = n.ep, alertname = n.an, labels = info.labels or {},
    summary = info.summary or '', starts_at = info.starts_at or '',
    silence_url = info.silence_url or '', annotations = info.annotations or {},
    source = info.source or '', silence_id = '',
    route = n.route, state = 'firing', ack_by = '',
    ack_at = '', ack_via = '', resolved_at = '', created_at = now_s, paged = {}, steps = {}}
  for i, st in ipairs(n.steps or {}) do
    e.steps[i] = {index = i, after = st.after, receiver = st.receiver, template = st.template,
      due_at = st.due, state = 'pending', reason = '', lease = '0', token = ''}
    zadd(P .. 'steps', st.due, eid .. '|' .. i)
  end
  redis.call('SET', P .. 'epkey:' .. n.fp .. '|' .. n.ep, eid)
  zadd(P .. 'episodes', now_s, eid)
  zadd(P .. 'epstate:firing', now_s, eid)
  save_episode(e)
  return e
end

-- episode sub-step code: the stored code of (episode, mobile), else a fresh unique one
local function episode_code(e, n)
  local p = paged_entry(e, n.m)
  if p and p.code ~= '' then
    return p.code
  end
  while true do
    local c = fresh_codes[next_code]
    next_code = next_code + 1
    if redis.call('EXISTS', P .. 'epcode:' .. c) == 0 then
      return c
    end
  end
end

-- episode sub-step paged: the mobile's Paged entry, once (a repeat only fills a missing code)
local function episode_paged(e, n, id, code)
  local p = paged_entry(e, n.m)
  if p == nil then
    e.paged[#e.paged + 1] = {mobile = n.m, route = n.route, rt = n.rt or '', at = now_s,
      level = n.lv or 0, item = id, code = code or ''}
  elseif p.code == '' and code then
    p.code = code
  end
  if code then
    redis.call('SET', P .. 'epcode:' .. code, e.id)
  end
  save_episode(e)
end

local function store(n, state, reason, due)
  if string.find(n.vars, PH, 1, true) then
    -- a template reading ack_code that pages for no episode: the stored code, else ''
    local code = ''
    local eid = episode_id_of(n.fp, n.ep)
    local e = eid and episode(eid)
    local p = e and paged_entry(e, n.m)
    if p then
      code = p.code
    end
    n.vars = fill(n.vars, code)
    n.filled = true
  end
  seq = seq + 1
  local id = seq
  local key = P .. 'item:' .. id
  redis.call('HSET', key, 'id', id, 'mobile', n.m, 'fingerprint', n.fp, 'status', n.st,
    'episode', n.ep, 'route', n.route, 'alertname', n.an, 'tpl_id', n.tpl,
    'variables', n.vars, 'state', state, 'reason', reason, 'created_at', now_s,
    'updated_at', now_s, 'due_at', due, 'lease_until', 0, 'attempts', 0)
  zadd(KEYS[2], id, id)
  zadd(P .. 'state:' .. state, id, id)
  zadd(P .. 'mobile:' .. n.m .. ':items', id, id)
  if state == 'queued' then
    zadd(P .. 'mobile:' .. n.m .. ':hour', now_s, id)
    hour_added[n.m] = (hour_added[n.m] or 0) + 1
  end
  if PENDING[state] then
    zadd(P .. 'mobile:' .. n.m .. ':pending', due, id)
    touched[n.m] = true
  else
    zadd(KEYS[6], now_s, id)
  end
  return tostring(id)
end

-- the dedup record at now; paged once paged (was_paged: the record's paged before)
local function write_dedup(dk, paged, was_paged, ttl)
  redis.call('HSET', P .. 'dedup:' .. dk, 'at', now_s, 'paged',
    (paged or was_paged == '1') and 1 or 0)
  redis.call('EXPIRE', P .. 'dedup:' .. dk, ttl)
  zadd(KEYS[5], now_s, dk)
end

-- policy rows per_day, per_mobile_per_hour: the reason, or ''
local function limited(m)
  if per_day then
    local c = tonumber(redis.call('GET', P .. 'day:' .. day) or '0') + day_added
    if c >= per_day then
      return 'per_day limit'
    end
  end
  if per_hour then
    local c = redis.call('ZCOUNT', P .. 'mobile:' .. m .. ':hour', ARGV[3], '+inf')
      + (hour_added[m] or 0)
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
    zadd(KEYS[7], e, m)
    return nil
  end
  if redis.call('HINCRBY', sk, 'count', 1) > storm_threshold then
    return window_end
  end
  return nil
end

-- store a firing that pages (queued or held) with its episode sub-steps
local function store_paging(n, state, reason, due)
  if n.st ~= 'firing' then
    return store(n, state, reason, due)
  end
  local e = episode_upsert(n)
  local code = nil
  if string.find(n.vars, PH, 1, true) then
    code = episode_code(e, n)
    n.vars = fill(n.vars, code)
    n.filled = true
  end
  local id = store(n, state, reason, due)
  episode_paged(e, n, id, code)
  n.eid = e.id
  return id
end

-- one notification down the policy rows: state, reason, id ('' when only counted)
local function decide(n)
  local dk = key_of(n, n.st)
  -- policy row: planned
  if n.state == 'suppressed' then
    return 'suppressed', n.reason, store(n, 'suppressed', n.reason, now_s)
  end
  -- policy row: dedup
  local seen = redis.call('HMGET', P .. 'dedup:' .. dk, 'at', 'paged')
  local at = seen[1]
  if at and (n.st == 'resolved' or now - tonumber(at) < n.ri) then
    return 'suppressed', 'duplicate', ''
  end
  if n.st == 'firing' then
    -- policy row: already_resolved
    if redis.call('EXISTS', P .. 'dedup:' .. key_of(n, 'resolved')) == 1 then
      return 'suppressed', 'already resolved', ''
    end
    -- policy row: acknowledged
    local eid = episode_id_of(n.fp, n.ep)
    if eid and redis.call('ZSCORE', P .. 'epstate:acknowledged', eid) then
      return 'suppressed', 'acknowledged', store(n, 'suppressed', 'acknowledged', now_s)
    end
    n.known_eid = eid or false
  elseif n.st == 'resolved' then
    -- policy row: resolved_pairing
    local paged = redis.call('HGET', P .. 'dedup:' .. key_of(n, 'firing'), 'paged')
    if not paged or paged == '0' then
      write_dedup(dk, false, nil, math.max(dedup_ttl, 1))
      return 'suppressed', 'not paged', ''
    end
  end
  -- policy rows: per_day, per_mobile_per_hour (the dedup record is written either way)
  local limit = limited(n.m)
  write_dedup(dk, limit == '', seen[2],
    math.min(math.max(dedup_ttl, math.ceil(n.ri)), 3153600000))
  if limit ~= '' then
    return 'suppressed', limit, store(n, 'suppressed', limit, now_s)
  end
  -- policy row: storm
  local held = storm_holds(n.m)
  if held then
    return 'held', 'storm', store_paging(n, 'held', 'storm', held)
  end
  -- policy row: queued (a shift notice keeps its reason, 'shift notice')
  if day ~= '' then
    day_added = day_added + 1
  end
  local why = ''
  if n.st == 'notice' then
    why = n.reason
  end
  return 'queued', why, store_paging(n, 'queued', why, now_s)
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
  out[i] = {state, reason, id, n.ep, n.eid or '', (n.filled and id ~= '') and n.vars or ''}
end

-- what was collected for the batch, before anything below reads those keys
flush_zadds()
if seq ~= seq_start then
  redis.call('SET', KEYS[1], seq)
end
if day_added > 0 then
  redis.call('INCRBY', P .. 'day:' .. day, day_added)
  redis.call('EXPIRE', P .. 'day:' .. day, 259200)
end
for m in pairs(hour_added) do
  redis.call('ZREMRANGEBYSCORE', P .. 'mobile:' .. m .. ':hour', '-inf', ARGV[11])
end

-- episode sub-step resolved close: each resolved alert's episode resolved at now, its
-- pending steps cancelled (reason 'resolved')
for _, rk in ipairs(resolved_keys) do
  local ep = rk[2]
  if ep == '' then
    ep = starts[rk[1]] or ''
  end
  local eid = episode_id_of(rk[1], ep)
  local e = eid and episode(eid)
  if e and e.state ~= 'resolved' then
    redis.call('ZREM', P .. 'epstate:' .. e.state, eid)
    redis.call('ZADD', P .. 'epstate:resolved', e.created_at, eid)
    redis.call('ZADD', P .. 'epresolved', now_s, eid)
    e.state = 'resolved'
    e.resolved_at = now_s
    for _, st in ipairs(e.steps) do
      if st.state == 'pending' then
        st.state = 'cancelled'
        st.reason = 'resolved'
        st.token = ''
        redis.call('ZREM', P .. 'steps', eid .. '|' .. st.index)
      end
    end
    save_episode(e)
  end
end

flush_episodes()

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


ACK_LUA = _EPISODE_LUA + """
-- acknowledge: a firing episode acknowledged, its pending steps cancelled, atomically.
-- ARGV[1] prefix, ARGV[2] episode id, ARGV[3] by, ARGV[4] via, ARGV[5] now (text)
-- Returns {episode JSON, 1 if this call acknowledged it else 0}, or false for an unknown id.
local P, eid = ARGV[1], ARGV[2]
local e = load_episode(P, eid)
if not e then
  return false
end
local done = 0
if e.state == 'firing' then
  done = 1
  redis.call('ZREM', P .. 'epstate:firing', eid)
  redis.call('ZADD', P .. 'epstate:acknowledged', e.created_at, eid)
  e.state = 'acknowledged'
  e.ack_by, e.ack_via, e.ack_at = ARGV[3], ARGV[4], ARGV[5]
  for _, st in ipairs(e.steps) do
    if st.state == 'pending' then
      st.state = 'cancelled'
      st.reason = 'acknowledged by ' .. ARGV[3]
      st.token = ''
      redis.call('ZREM', P .. 'steps', eid .. '|' .. st.index)
    end
  end
  redis.call('SET', P .. 'ep:' .. eid, cjson.encode(e))
end
return {cjson.encode(e), done}
"""

CLAIM_STEPS_LUA = _EPISODE_LUA + """
-- claim_steps: lease pending steps due at now, atomically.
-- KEYS[1] {prefix}steps; ARGV[1] prefix, ARGV[2] now, ARGV[3] lease_until (text),
-- ARGV[4] limit, ARGV[5..] fresh tokens (at least limit)
-- Returns a list of {episode id, index, token}.
local P = ARGV[1]
local out = {}
local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, member in ipairs(members) do
  local sep = string.find(member, '|', 1, true)
  local eid, idx = string.sub(member, 1, sep - 1), tonumber(string.sub(member, sep + 1))
  local e = load_episode(P, eid)
  local st = e and e.steps[idx]
  if st and st.state == 'pending' then
    local token = ARGV[5 + #out]
    st.lease, st.token = ARGV[3], token
    redis.call('SET', P .. 'ep:' .. eid, cjson.encode(e))
    redis.call('ZADD', KEYS[1], ARGV[3], member)
    out[#out + 1] = {eid, idx, token}
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""

FINISH_STEP_LUA = _EPISODE_LUA + """
-- finish_step: a leased pending step ends done or cancelled, fenced by its token.
-- KEYS[1] {prefix}steps; ARGV[1] prefix, ARGV[2] episode id, ARGV[3] index, ARGV[4] token,
-- ARGV[5] state, ARGV[6] reason
-- Returns 1 when changed, else 0.
local P, eid, idx = ARGV[1], ARGV[2], tonumber(ARGV[3])
local e = load_episode(P, eid)
local st = e and e.steps[idx]
if not st or st.state ~= 'pending' or st.token ~= ARGV[4] then
  return 0
end
st.state, st.reason, st.token, st.lease = ARGV[5], ARGV[6], '', '0'
redis.call('SET', P .. 'ep:' .. eid, cjson.encode(e))
redis.call('ZREM', KEYS[1], eid .. '|' .. idx)
return 1
"""

PRUNE_EPISODES_LUA = _EPISODE_LUA + """
-- prune episodes: one bounded step deleting episodes resolved before `before`, atomically.
-- KEYS[1] {prefix}epresolved; KEYS[2] {prefix}episodes; ARGV[1] prefix,
-- ARGV[2] '(' .. before, ARGV[3] batch, ARGV[4] '(' .. stale bound (unresolved episodes
-- created before it are deleted too: base.EPISODE_STALE)
-- Returns how many were deleted.
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, ARGV[3])
for _, eid in ipairs(stale) do
  ids[#ids + 1] = eid
end
for _, eid in ipairs(ids) do
  local e = load_episode(P, eid)
  if e then
    for _, p in ipairs(e.paged) do
      if p.code ~= '' then
        redis.call('DEL', P .. 'epcode:' .. p.code)
      end
    end
    for _, st in ipairs(e.steps) do
      redis.call('ZREM', P .. 'steps', eid .. '|' .. st.index)
    end
    redis.call('DEL', P .. 'epkey:' .. e.fp .. '|' .. e.ep)
    redis.call('ZREM', P .. 'epstate:' .. e.state, eid)
  end
  redis.call('DEL', P .. 'ep:' .. eid)
  redis.call('ZREM', P .. 'episodes', eid)
  redis.call('ZREM', KEYS[1], eid)
end
return #ids
"""

SET_SILENCE_LUA = _EPISODE_LUA + """
-- set_silence: keep an Alertmanager silence id with an episode ('' clears it).
-- ARGV[1] prefix, ARGV[2] episode id, ARGV[3] silence id. Returns 1 when the episode exists.
local e = load_episode(ARGV[1], ARGV[2])
if not e then
  return 0
end
e.silence_id = ARGV[3]
redis.call('SET', ARGV[1] .. 'ep:' .. ARGV[2], cjson.encode(e))
return 1
"""

ADD_JOB_LUA = """
-- add_job: a pending job, unless one of that key exists (pending or kept).
-- KEYS[1] {prefix}jobs; ARGV[1] prefix, ARGV[2] key, ARGV[3] kind, ARGV[4] payload (JSON),
-- ARGV[5] due_at, ARGV[6] keep_until, ARGV[7] now. Returns 1 when added, else 0.
local jk = ARGV[1] .. 'job:' .. ARGV[2]
if redis.call('EXISTS', jk) == 1 then
  return 0
end
redis.call('HSET', jk, 'key', ARGV[2], 'kind', ARGV[3], 'payload', ARGV[4], 'state', 'pending',
  'due_at', ARGV[5], 'since', ARGV[7], 'keep_until', ARGV[6], 'attempts', 0, 'error', '',
  'lease', 0, 'token', '')
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
return 1
"""

CLAIM_JOBS_LUA = """
-- claim_jobs: lease pending jobs due at now.
-- KEYS[1] {prefix}jobs; ARGV[1] prefix, ARGV[2] now, ARGV[3] lease_until (text),
-- ARGV[4] limit, ARGV[5..] fresh tokens (at least limit)
-- Returns a list of {token, job hash as HGETALL list}.
local out = {}
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
for _, key in ipairs(keys) do
  local jk = ARGV[1] .. 'job:' .. key
  if redis.call('HGET', jk, 'state') == 'pending' then
    local token = ARGV[5 + #out]
    redis.call('HSET', jk, 'lease', ARGV[3], 'token', token)
    redis.call('ZADD', KEYS[1], ARGV[3], key)
    out[#out + 1] = {token, redis.call('HGETALL', jk)}
  else
    redis.call('ZREM', KEYS[1], key)
  end
end
return out
"""

SETTLE_JOB_LUA = """
-- settle_job: end a claimed job's lease, fenced by its token: 'pending' again at due_at (one
-- more attempt), or finished 'done' / 'failed' (kept until keep_until).
-- KEYS[1] {prefix}jobs; KEYS[2] {prefix}jobskept; ARGV[1] prefix, ARGV[2] key, ARGV[3] token,
-- ARGV[4] state, ARGV[5] due_at, ARGV[6] error. Returns 1 when changed, else 0.
local jk = ARGV[1] .. 'job:' .. ARGV[2]
local row = redis.call('HMGET', jk, 'state', 'token', 'keep_until')
if row[1] ~= 'pending' or row[2] ~= ARGV[3] then
  return 0
end
redis.call('HSET', jk, 'lease', 0, 'token', '', 'error', ARGV[6])
if ARGV[4] == 'pending' then
  redis.call('HSET', jk, 'due_at', ARGV[5])
  redis.call('HINCRBY', jk, 'attempts', 1)
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[2])
else
  redis.call('HSET', jk, 'state', ARGV[4])
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('ZADD', KEYS[2], row[3], ARGV[2])
end
return 1
"""

PRUNE_JOBS_LUA = """
-- prune jobs: one bounded step deleting finished jobs kept until before `before`.
-- KEYS[1] {prefix}jobskept; ARGV[1] prefix, ARGV[2] '(' .. before, ARGV[3] batch.
-- Returns how many were deleted.
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, key in ipairs(keys) do
  redis.call('DEL', ARGV[1] .. 'job:' .. key)
  redis.call('ZREM', KEYS[1], key)
end
return #keys
"""


def _opt_t(x: Any) -> float | None:
    """A time stored as text ("" for none) as a float or ``None``."""
    return None if x in ("", None) else float(x)


def _list(x: Any) -> list[Any]:
    """A JSON list from Lua (cjson writes an empty one as ``{}``)."""
    return list(x) if isinstance(x, list) else []


def _episode(raw: str) -> Episode:
    """An :class:`Episode` from its JSON text (see the key map)."""
    e = json.loads(raw)
    return Episode(
        id=e["id"], fingerprint=e["fp"], episode=e["ep"], alertname=e["alertname"],
        labels=dict(e["labels"] or {}), summary=e["summary"],
        starts_at=_opt_t(e["starts_at"]), silence_url=e["silence_url"] or None,
        route=e["route"], state=e["state"], acknowledged_by=e["ack_by"] or None,
        acknowledged_at=_opt_t(e["ack_at"]), acknowledged_via=e["ack_via"] or None,
        resolved_at=_opt_t(e["resolved_at"]), created_at=float(e["created_at"]),
        paged=tuple(Paged(mobile=p["mobile"], route=p["route"],
                          resolved_template=p["rt"] or None, at=float(p["at"]),
                          level=int(p["level"]), item_id=p["item"] or None,
                          code=p["code"] or None) for p in _list(e["paged"])),
        steps=tuple(Step(index=int(st["index"]), after=float(st["after"]),
                         receiver=st["receiver"], template=st["template"] or None,
                         due_at=float(st["due_at"]), state=st["state"], reason=st["reason"])
                    for st in _list(e["steps"])),
        annotations=dict(e.get("annotations") or {}), source=e.get("source") or "",
        silence_id=e.get("silence_id") or None)


def _job(flat: Sequence[str]) -> Job:
    """A :class:`Job` from an HGETALL reply of ``{prefix}job:{key}`` (its key in ``key``)."""
    h = dict(zip(flat[::2], flat[1::2], strict=True))
    return Job(key=h["key"], kind=h["kind"], payload=json.loads(h["payload"]),
               state=cast(JobState, h["state"]), due_at=float(h["due_at"]),
               since=float(h["since"]), keep_until=float(h["keep_until"]),
               attempts=int(h.get("attempts", "0")), error=h.get("error", ""))


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


def _codes_needed(notes: Sequence[Notification]) -> int:
    """Fresh ack codes the record script may need: two per notification that renders
    ``ack_code`` (a taken code is skipped), and a few spare; none when no template reads it."""
    k = sum(1 for n in notes if has_placeholder(n.variables))
    return 2 * k + 4 if k else 0


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
    result depends on (record, acknowledge, finish_step, mark_sent/retry/failed, ping) is
    followed on the same connection by ``WAIT wait wait_timeout``; fewer confirmations raise
    :class:`StoreUnconfirmed` (a :class:`StoreUnavailable`: the write stands on the master but a
    failover may lose it). A claim is waited for too but never refused for too few
    confirmations: a claim lost in a failover would let a second deliverer send what the first
    is sending (its lease token is unknown to the new master, so the first one's marks change
    nothing and the items come due again); with the replica's confirmation the claim survives.
    Releases, pruning and status notes are not waited for: losing one only keeps a mobile held
    until its lease lapses or an old record a little longer.

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
        self._lua_recent = _Lua(RECENT_LUA)
        self._lua_prune = _Lua(PRUNE_LUA)
        self._lua_ack = _Lua(ACK_LUA)
        self._lua_claim_steps = _Lua(CLAIM_STEPS_LUA)
        self._lua_finish_step = _Lua(FINISH_STEP_LUA)
        self._lua_prune_episodes = _Lua(PRUNE_EPISODES_LUA)
        self._lua_set_silence = _Lua(SET_SILENCE_LUA)
        self._lua_add_job = _Lua(ADD_JOB_LUA)
        self._lua_claim_jobs = _Lua(CLAIM_JOBS_LUA)
        self._lua_settle_job = _Lua(SETTLE_JOB_LUA)
        self._lua_prune_jobs = _Lua(PRUNE_JOBS_LUA)

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
             confirm: bool | str = True) -> Any:
        """Run ``script`` on the master; with ``confirm`` and ``wait`` > 0 followed on the same
        connection by ``WAIT`` (``confirm="soft"``: waited for, but too few confirmations are
        not an error). ``keys`` must hold at least one key of the bridge: a cluster
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
                if waiting and confirm != "soft":
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
    def record(self, notes: Sequence[Notification], policy: Policy, now: float,
               episodes: Sequence[EpisodeMark] = (),
               resolved: Sequence[tuple[str, str]] = ()) -> list[Outcome]:
        payload = dumps_vars([
            {"m": n.mobile, "fp": n.fingerprint, "st": n.status, "ep": n.episode,
             "route": n.route, "an": n.alertname, "tpl": int(n.tpl_id),
             "vars": dumps_vars(n.variables),
             "ri": float(n.repeat_interval), "state": n.state, "reason": n.reason,
             "ut": 1 if n.untimed else 0, "rt": n.resolved_template or "", "lv": int(n.level),
             "steps": [{"after": _t(st.after), "receiver": st.receiver,
                        "template": st.template, "due": _t(now + st.after)}
                       for st in n.steps],
             "info": {} if n.info is None else {
                 "labels": dict(n.info.labels), "summary": n.info.summary,
                 "starts_at": "" if n.info.starts_at is None else _t(n.info.starts_at),
                 "silence_url": n.info.silence_url or "",
                 "annotations": dict(n.info.annotations), "source": n.info.source}}
            for n in notes])
        marks = dumps_vars([{"fp": m.fingerprint, "f": 1 if m.firing else 0} for m in episodes])
        keys = [self._k(k) for k in ("seq", "items", "due", "pace", "dedup", "done", "storms")]
        storm = policy.storm_threshold if policy.storm_window > 0 else None
        args: list[str | int] = [
            self.prefix, _t(now), "(" + _t(now - 3600), _opt(policy.per_mobile_per_hour),
            _opt(policy.per_day), _opt(storm), _t(policy.storm_window), policy.day,
            self.dedup_ttl, _t(now - self.dedup_ttl), _t(now - 7200), payload, marks,
            episode_text(now), ACK_PLACEHOLDER,
            json.dumps([new_code() for _ in range(_codes_needed(notes))]),
            json.dumps([new_id() for _ in range(len(notes) + 1)]),
            json.dumps([[fp, ep] for fp, ep in resolved])]
        rows = self._run(self._lua_record, keys, args)
        out = []
        for n, (state, reason, id, ep, eid, filled) in zip(notes, rows, strict=True):
            if n.untimed:
                n = replace(n, episode=ep)
            if filled:  # what was stored, with the ack code filled in
                n = replace(n, variables=json.loads(str(filled)))
            out.append(Outcome(n, cast(State, state), reason, id or None, eid or None))
        return out

    # -- episodes ---------------------------------------------------------------------------
    def _get_episodes(self, ids: Sequence[str]) -> list[Episode]:
        if not ids:
            return []
        with self._errors():
            raws = self._node().mget([self._k(f"ep:{i}") for i in ids])
        return [_episode(str(r)) for r in raws if r is not None]

    def episodes_for(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Episode]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        with self._errors():
            ids = self._node().mget([self._k(f"epkey:{fp}|{ep}") for fp, ep in wanted])
        found = {str(i): k for k, i in zip(wanted, ids, strict=True) if i is not None}
        return {found[e.id]: e for e in self._get_episodes(list(found)) if e.id in found}

    def episodes(self, state: str | None = None, limit: int = 50) -> list[Episode]:
        index = self._k(f"epstate:{state}") if state else self._k("episodes")
        with self._errors():
            ids = self._node().zrevrange(index, 0, max(int(limit), 1) - 1)
        return self._get_episodes([str(i) for i in ids])[:limit]

    def episode(self, id: str) -> Episode | None:
        found = self._get_episodes([id])
        return found[0] if found else None

    def episode_by_code(self, code: str, now: float) -> tuple[Episode, Paged] | None:
        if not code:
            return None
        with self._errors():
            eid = self._node().get(self._k(f"epcode:{code}"))
        episode = self.episode(str(eid)) if eid is not None else None
        if episode is None or code_expired(episode, now):
            return None
        paged = next((p for p in episode.paged if p.code == code), None)
        return None if paged is None else (episode, paged)

    def acknowledge(self, id: str, by: str, via: str, now: float) -> tuple[Episode, bool]:
        row = self._run(self._lua_ack, [self._k(f"ep:{id}")],
                        [self.prefix, id, by, via, _t(now)])
        if not row:
            raise KeyError(id)
        return _episode(str(row[0])), bool(int(row[1]))

    def unknown_code_hit(self, client: str, now: float) -> int:
        key = self._k(f"unknown:{client}:{int(now // 60)}")
        with self._errors():
            pipe = self._node().pipeline(transaction=True)
            pipe.incr(key)
            pipe.expire(key, 120)
            n, _ = pipe.execute()
        return int(n)

    def claim_steps(self, now: float, lease: float, limit: int = 20) -> list[StepClaim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(limit), 1))]
        rows = self._run(self._lua_claim_steps, [self._k("steps")],
                         [self.prefix, _t(now), _t(lease_until), int(limit), *tokens],
                         confirm=False)
        return [StepClaim(str(eid), int(idx), str(token), lease_until)
                for eid, idx, token in rows]

    def finish_step(self, claim: StepClaim, state: StepState, reason: str,
                    now: float) -> bool:
        return bool(self._run(self._lua_finish_step, [self._k("steps")], [
            self.prefix, claim.episode_id, str(claim.index), claim.token, state, reason]))

    def set_silence(self, id: str, silence_id: str | None) -> None:
        self._run(self._lua_set_silence, [self._k(f"ep:{id}")],
                  [self.prefix, id, silence_id or ""])

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, key: str, kind: str, payload: dict[str, Any], due_at: float,
                keep_until: float, now: float) -> bool:
        return bool(self._run(self._lua_add_job, [self._k("jobs")], [
            self.prefix, key, kind, dumps_vars(payload), _t(due_at), _t(keep_until), _t(now)]))

    def claim_jobs(self, now: float, lease: float, limit: int = 20) -> list[JobClaim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(limit), 1))]
        rows = self._run(self._lua_claim_jobs, [self._k("jobs")],
                         [self.prefix, _t(now), _t(lease_until), int(limit), *tokens],
                         confirm=False)
        return [JobClaim(_job(flat), str(token), lease_until) for token, flat in rows]

    def settle_job(self, claim: JobClaim, state: JobState, now: float, *,
                   due_at: float | None = None, error: str = "") -> bool:
        return bool(self._run(self._lua_settle_job, [self._k("jobs"), self._k("jobskept")], [
            self.prefix, claim.job.key, claim.token, state,
            _t(now if due_at is None else due_at), error]))

    def job(self, key: str) -> Job | None:
        with self._errors():
            h = _untyped(self._node().hgetall)(self._k(f"job:{key}"))
        if not h:
            return None
        return _job([str(x) for kv in dict(h).items() for x in kv])

    def claim(self, now: float, lease: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        lease_until = now + lease
        tokens = [secrets.token_hex(8) for _ in range(max(int(max_mobiles), 1))]
        rows = self._run(self._lua_claim, [self._k("due"), self._k("pace")],
                         [self.prefix, _t(now), _t(lease_until), int(max_mobiles),
                          max(int(max_items), 0), *tokens], confirm="soft")
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
            *[str(i) for i in ids]], confirm=op != "release"))

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

    def episodes_of(self, fingerprints: Sequence[str]) -> dict[str, str]:
        wanted = list(dict.fromkeys(fingerprints))
        if not wanted:
            return {}
        with self._errors():
            values = self._node().mget([self._k(f"episode:{fp}") for fp in wanted])
        # (a value without 'T' is a start from before episodes were stored as text)
        return {fp: str(v) for fp, v in zip(wanted, values, strict=True)
                if v is not None and "T" in str(v)}

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
                break
        while int(self._run(self._lua_prune_episodes,
                            [self._k("epresolved"), self._k("episodes")],
                            [self.prefix, "(" + _t(before), int(batch),
                             "(" + _t(before - EPISODE_STALE)], confirm=False)) >= batch:
            pass
        while int(self._run(self._lua_prune_jobs, [self._k("jobskept")],
                            [self.prefix, "(" + _t(before), int(batch)],
                            confirm=False)) >= batch:
            pass
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
