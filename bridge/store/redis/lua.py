"""The Lua scripts of the Redis store: one script per atomic step of
:class:`bridge.store.base.Store`, each opening with its ``KEYS``/``ARGV`` header and what it
returns. :class:`Script` is one script's text and the SHA1 ``EVALSHA`` names it by; the store
runs them (:meth:`bridge.store.redis.store.RedisStore._run`). Keys are those of
:mod:`bridge.store.redis.keys`, built from the prefix (``ARGV[1]``) inside the scripts.
"""

from __future__ import annotations

import hashlib


class Script:
    """One script: its text and the SHA1 that ``EVALSHA`` names it by."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8")).hexdigest()


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
# an empty list into an empty object), or only its state by its (fingerprint, episode) key.
# Pasted in front of every script that reads episodes.
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

-- The state of the episode of a "fingerprint|episode" key ('' when it has none).
local function episode_state(P, key)
  local eid = redis.call('GET', P .. 'epkey:' .. key)
  local raw = eid and redis.call('GET', P .. 'ep:' .. eid)
  return raw and cjson.decode(raw).state or ''
end
"""

RECORD_LUA = _LUA_HELPERS + _EPISODE_LUA + """
-- record: settle episodes, then decide and store a webhook's notifications, in order,
-- atomically, by the paging policy table (bridge/decide/types.py PAGING_POLICY; the comments
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
-- ARGV[15] the ack code placeholder (bridge.rules.render.ACK_PLACEHOLDER, utf-8)
-- ARGV[16] JSON list of fresh ack codes (from secrets; used in order, skipping taken ones)
-- ARGV[17] JSON list of fresh episode ids (used in order)
-- ARGV[18] JSON list of resolved alerts' {fingerprint, episode ('' = settled here)}
-- A notification also carries: rt (resolved_template, '' none), lv (level), steps (list of
-- {after, receiver, template}), info ({labels, summary, starts_at (text or
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

-- episode sub-step upsert: the notification's episode, created (steps not started: due once
-- the route's first SMS went out, see MARK_LUA)
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
      due_at = '', state = 'pending', reason = '', lease = '0', token = '', ran_at = ''}
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
      level = n.lv or 0, item = id, code = code or '', sent = ''}
  elseif p.code == '' and code then
    p.code = code
  end
  if code then
    redis.call('SET', P .. 'epcode:' .. code, e.id)
  end
  save_episode(e)
end

-- a call's address is voice:<mobile> (docs/providers.md, Calls): it counts for no SMS limit
-- and is never held for a storm
local function is_call(m)
  return string.sub(m, 1, 6) == 'voice:'
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
    'updated_at', now_s, 'due_at', due, 'lease_until', 0, 'attempts', 0, 'template', n.tn)
  zadd(KEYS[2], id, id)
  zadd(P .. 'state:' .. state, id, id)
  zadd(P .. 'mobile:' .. n.m .. ':items', id, id)
  if state == 'queued' and not is_call(n.m) then
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
  -- policy rows: per_day, per_mobile_per_hour (the dedup record is written either way;
  -- a call counts for neither)
  local call = is_call(n.m)
  local limit = call and '' or limited(n.m)
  write_dedup(dk, limit == '', seen[2],
    math.min(math.max(dedup_ttl, math.ceil(n.ri)), 3153600000))
  if limit ~= '' then
    return 'suppressed', limit, store(n, 'suppressed', limit, now_s)
  end
  -- policy row: storm (never a call)
  local held = (not call) and storm_holds(n.m)
  if held then
    return 'held', 'storm', store_paging(n, 'held', 'storm', held)
  end
  -- policy row: queued (a shift notice keeps its reason, 'shift notice')
  if day ~= '' and not call then
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
  redis.call('EXPIRE', P .. 'day:' .. day, 259200)  -- 3 days (the key map)
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
-- an SMS due now was stored: wake the deliverers of every instance (RedisStore.work_listener)
if next(hour_added) ~= nil then
  redis.call('PUBLISH', P .. 'wake', '1')
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

MARK_LUA = _LUA_HELPERS + _EPISODE_LUA + """
-- mark: one delivery outcome for some items of one claim, atomically; fenced by the claim's
-- lease token (items leased under another token are left alone); ends the items' lease.
-- KEYS[1]  {prefix}due       zset mobile -> claimable at
-- KEYS[2]  {prefix}pace      zset mobile -> end of hold or pacing gap
-- KEYS[3]  {prefix}done      zset finished id -> updated_at
-- KEYS[4]  {prefix}dedup     zset dedup key -> at
-- ARGV[1]  prefix
-- ARGV[2]  op: 'sent', 'retrying', 'failed' (new state; counts an attempt; 'failed' also
--          deletes the items' dedup records: a failed SMS did not page), 'suppressed' (new
--          state, not sent: no attempt) or 'release' (state unchanged, due again at ARGV[4])
-- ARGV[3]  now: updated_at, and first_attempt_at when unset (ignored by release)
-- ARGV[4]  due_at (retrying, release; '' otherwise)
-- ARGV[5]  reason (ignored by release)
-- ARGV[6]  sid (sent)
-- ARGV[7]  fee (sent)
-- ARGV[8]  lease token
-- ARGV[9]  pace_until: the end of the mobile's pacing gap from now on; '' leaves it
-- ARGV[10] '1': a 'retrying' firing SMS met a configuration/account error, which starts the
--          escalation clock like 'sent' and 'failed' (docs/oncall.md, Escalation); else ''
-- ARGV[11] '1': a call went out ('sent'): the other calls waiting for its number end
--          'suppressed', reason 'folded' (folds_into_call in bridge/store/base.py; counted in
--          the result; docs/providers.md, Calls); else ''
-- ARGV[12] n: how many item ids follow
-- ARGV[13..12+n] item ids; unknown ids are skipped
-- ARGV[13+n..] "fingerprint|episode" keys whose episode state is read after the mark (the
--          deliverer's check before its next send; Store.mark_sent_and_check)
-- Returns {number of items changed, one state per key ('' when the key has no episode)}.
local P = ARGV[1]
local last_id = 12 + tonumber(ARGV[12])
local op = ARGV[2]
local touched = {}
local changed = 0
local marked = {}

-- folds_into_call (bridge/store/base.py): pending, created at or before now, not leased by
-- another claim.
local function folds(key, now)
  local h = redis.call('HMGET', key, 'state', 'created_at', 'lease_until', 'lease_token')
  if not (h[1] and PENDING[h[1]]) or tonumber(h[2]) > now then
    return nil
  end
  if tonumber(h[3] or '0') <= now or h[4] == ARGV[8] then
    return h[1]
  end
  return nil
end

-- a call to m went out at now: fold the other calls waiting for m
local function fold(m)
  local now = tonumber(ARGV[3])
  local pk = P .. 'mobile:' .. m .. ':pending'
  for _, id in ipairs(redis.call('ZRANGE', pk, 0, -1)) do
    local key = P .. 'item:' .. id
    local old = not marked[id] and folds(key, now)
    if old then
      redis.call('HSET', key, 'state', 'suppressed', 'reason', 'folded', 'updated_at', ARGV[3],
        'lease_until', 0, 'lease_token', '')
      redis.call('ZREM', P .. 'state:' .. old, id)
      redis.call('ZADD', P .. 'state:suppressed', id, id)
      redis.call('ZREM', pk, id)
      redis.call('ZADD', KEYS[3], ARGV[3], id)
      changed = changed + 1
    end
  end
end

-- A firing SMS that went out ('sent' or 'failed', or 'retrying' after a configuration error:
-- ARGV[10]) to a mobile the episode's route paged itself
-- (level 0) starts the escalation clock: the steps not started yet are due at now + after
-- (docs/oncall.md, Escalation), formatted %.17g so that the time stays exact. One that was
-- sent also notes it in the mobile's Paged entry (sent: now, the first send's; '' until then;
-- an entry stored before it was kept has no sent and counts as sent): its resolved SMS goes
-- only then (docs/oncall.md, "Resolved goes to who was paged").
local function went_out(m, fp, ep, sent)
  local eid = redis.call('GET', P .. 'epkey:' .. fp .. '|' .. ep)
  local e = eid and load_episode(P, eid)
  if not e then
    return
  end
  local own = false
  local changed = false
  for _, p in ipairs(e.paged) do
    if p.mobile == m and tonumber(p.level) == 0 then
      own = true
    end
    if sent and p.mobile == m and p.sent == '' then
      p.sent = ARGV[3]
      changed = true
    end
  end
  for _, st in ipairs(e.steps) do
    if own and st.state == 'pending' and st.due_at == '' then
      st.due_at = string.format('%.17g', tonumber(ARGV[3]) + tonumber(st.after))
      redis.call('ZADD', P .. 'steps', st.due_at, eid .. '|' .. st.index)
      changed = true
    end
  end
  if changed then
    redis.call('SET', P .. 'ep:' .. eid, cjson.encode(e))
  end
end
for i = 13, last_id do
  marked[ARGV[i]] = true
end
for i = 13, last_id do
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
      if op ~= 'suppressed' then
        redis.call('HINCRBY', key, 'attempts', 1)
        if not row[4] then
          redis.call('HSET', key, 'first_attempt_at', ARGV[3])
        end
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
      local clock = op == 'sent' or op == 'failed' or (op == 'retrying' and ARGV[10] == '1')
      if clock and row[6] == 'firing' then
        went_out(m, row[5], row[7], op == 'sent')
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
  if op == 'sent' and ARGV[11] == '1' then
    fold(m)
  end
  if ARGV[9] ~= '' then
    redis.call('ZADD', KEYS[2], ARGV[9], m)
  end
  refresh(P, KEYS[1], KEYS[2], m)
end
local out = {changed}
for i = last_id + 1, #ARGV do
  out[#out + 1] = episode_state(P, ARGV[i])
end
return out
"""

PENDING_LUA = """
-- pending: one address's pending (queued/retrying/held) items, due or not (read only).
-- KEYS[1]  {prefix}mobile:{m}:pending
-- ARGV[1]  prefix
-- Returns a list of item hashes (HGETALL lists), in no order.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = redis.call('HGETALL', ARGV[1] .. 'item:' .. id)
  if #h > 0 then
    out[#out + 1] = h
  end
end
return out
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
-- ARGV[5] state, ARGV[6] reason, ARGV[7] now (text: ran_at)
-- Returns 1 when changed, else 0.
local P, eid, idx = ARGV[1], ARGV[2], tonumber(ARGV[3])
local e = load_episode(P, eid)
local st = e and e.steps[idx]
if not st or st.state ~= 'pending' or st.token ~= ARGV[4] then
  return 0
end
st.state, st.reason, st.token, st.lease, st.ran_at = ARGV[5], ARGV[6], '', '0', ARGV[7]
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

BEAT_LUA = """
-- beat: the last beat of each named heartbeat becomes now (never earlier), atomically; a first
-- beat makes its record, state up.
-- KEYS[1] {prefix}heartbeats; ARGV[1] now (text), ARGV[2..] names
-- Returns how many names.
for i = 2, #ARGV do
  local raw = redis.call('HGET', KEYS[1], ARGV[i])
  local h
  if raw then
    h = cjson.decode(raw)
    if tonumber(ARGV[1]) > tonumber(h.seen) then
      h.seen = ARGV[1]
    end
  else
    h = {seen = ARGV[1], state = 'up', since = '', lease = '0', token = ''}
  end
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(h))
end
return #ARGV - 1
"""

CLAIM_HEARTBEAT_LUA = """
-- claim_heartbeat: lease a heartbeat's transition (miss or back) when it is still as the
-- caller read it and no unexpired lease holds it, atomically (base.Store.claim_heartbeat).
-- KEYS[1] {prefix}heartbeats; ARGV[1] name, ARGV[2] action, ARGV[3] last beat as read (text),
-- ARGV[4] since (text), ARGV[5] now, ARGV[6] lease_until (text), ARGV[7] fresh token
-- Returns {missing_since, last beat} (text), or false.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return false
end
local h = cjson.decode(raw)
if tonumber(h.lease) > tonumber(ARGV[5]) then
  return false
end
local since = ARGV[4]
local pending = nil
if h.since ~= '' then
  pending = tonumber(h.since)
end
if ARGV[2] == 'miss' then
  if h.state ~= 'up' or h.seen ~= ARGV[3] then
    return false
  end
  if pending and pending <= tonumber(h.seen) then
    return false  -- a lapsed miss to resolve first
  end
  if pending then
    since = h.since  -- a lapsed miss: the same moment
  end
else
  if not pending or tonumber(h.seen) <= pending then
    return false
  end
  since = h.since
end
h.since, h.lease, h.token = since, ARGV[6], ARGV[7]
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(h))
return {since, h.seen}
"""

FINISH_HEARTBEAT_LUA = """
-- finish_heartbeat: a leased transition ends, fenced by its token: miss -> state missing;
-- back -> state up, since cleared.
-- KEYS[1] {prefix}heartbeats; ARGV[1] name, ARGV[2] action, ARGV[3] token
-- Returns 1 when changed, else 0.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then
  return 0
end
local h = cjson.decode(raw)
if h.token ~= ARGV[3] then
  return 0
end
if ARGV[2] == 'miss' then
  h.state = 'missing'
else
  h.state, h.since = 'up', ''
end
h.lease, h.token = '0', ''
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(h))
return 1
"""

EPISODE_STATES_LUA = _EPISODE_LUA + """
-- episode_states: the state of the episode of each (fingerprint, episode) key, in one step.
-- KEYS[1]  {prefix}episodes  (routes the script; not read)
-- ARGV[1]  prefix
-- ARGV[2..] "fingerprint|episode" keys
-- Returns one state per key ('' when the key has no episode).
local P = ARGV[1]
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = episode_state(P, ARGV[i])
end
return out
"""
