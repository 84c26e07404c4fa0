"""Fill a store fast with finished notifications, in the store's own layout, for the growth
benchmark (``bench/run.py``): what a busy week leaves behind before ``prune`` runs.

Each filled item is an SMS that went out (``sent``) about six days ago (``updated_at`` spread
over ``[now - 6.5 d, now - 6 d]``), with its dedup record, to one of 1,000 mobiles. Six days
is inside the default retention (7 d) and the dedup TTL (7 d), so neither the served
processes' periodic prune nor the Redis store's own dedup-index trimming touches the fill
during the benchmark; ``prune(before=now - 5 d)`` then removes all of it.

* SQLite: direct ``INSERT`` s of ``items`` and ``dedup`` rows in batches (one transaction each);
* Redis: a Lua script run in batches that writes the keys :mod:`bridge.store.redis.store` documents
  (``item:{id}`` hash, ``items``, ``state:sent``, ``done``, ``mobile:{m}:items``,
  ``dedup:{key}`` with its TTL, the ``dedup`` index, ``pace``, ``seq``).
"""

from __future__ import annotations

import json
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator

MOBILES = 1000
AGE_OLDEST = 6.5 * 86400
AGE_NEWEST = 6.0 * 86400
EPISODE = "2026-01-01T00:00:00.123456+00:00"
VARIABLES = json.dumps({"name": "DiskFull", "host": "db-17:9100",
                        "summary": "disk /var 97% full o…", "at": "01-01 08:00"},
                       ensure_ascii=False, separators=(",", ":"))

Progress = Callable[[int, int], None]


def progress_printer(label: str) -> Progress:
    """A progress callback printing ``label: done/total (rate)`` on one line."""
    t0 = time.monotonic()

    def show(done: int, total: int) -> None:
        rate = done / max(time.monotonic() - t0, 1e-9)
        end = "\n" if done >= total else ""
        sys.stdout.write(f"\r    {label}: {done:,}/{total:,} ({rate:,.0f}/s)   {end}")
        sys.stdout.flush()

    return show


def _mobile(i: int) -> str:
    return str(13000000000 + i % MOBILES)


def _rows(first: int, count: int, total: int, now: float) -> Iterator[tuple[object, ...]]:
    span = AGE_OLDEST - AGE_NEWEST
    for i in range(first, first + count):
        t = now - AGE_OLDEST + span * i / total
        yield (_mobile(i), f"{i:016x}", "firing", EPISODE, "db-critical", "DiskFull", 111,
               VARIABLES, "sent", "", t, t + 0.5, t, 0, 1, t + 0.2, f"{10**17 + i}", 1, 1)


def fill_sqlite(path: str, total: int, batch: int = 50_000,
                progress: Progress | None = None) -> None:
    """Append ``total`` sent items (and their dedup rows) to the SQLite store at ``path``.

    The schema must exist (open the store once first)."""
    now = time.time()
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        done = 0
        while done < total:
            n = min(batch, total - done)
            rows = list(_rows(done, n, total, now))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO items (mobile, fingerprint, status, episode, route, alertname,"
                " tpl_id, variables, state, reason, created_at, updated_at, due_at, lease_until,"
                " attempts, first_attempt_at, sid, fee, counted)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
            conn.executemany(
                "INSERT OR REPLACE INTO dedup (key, at, paged) VALUES (?,?,1)",
                ((f"{r[0]}|{r[1]}|firing|{EPISODE}", r[10]) for r in rows))
            conn.execute("COMMIT")
            done += n
            if progress:
                progress(done, total)
        conn.executemany("INSERT OR REPLACE INTO pacing VALUES (?,?)",
                         ((_mobile(i), now - AGE_NEWEST) for i in range(MOBILES)))
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


FILL_LUA = """
-- fill: write ARGV[3] sent items with ids ARGV[2].. in bridge.store.redis.store's key layout.
-- ARGV[1] prefix; ARGV[2] first id; ARGV[3] count; ARGV[4] total (for the time spread);
-- ARGV[5] oldest time; ARGV[6] span (s); ARGV[7] mobiles; ARGV[8] episode; ARGV[9] variables;
-- ARGV[10] dedup TTL left (s). Returns the last id written.
local P = ARGV[1]
local first, count, total = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local oldest, span, nm = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ep, vars, ttl = ARGV[8], ARGV[9], tonumber(ARGV[10])
local last = first
for id = first, first + count - 1 do
  local m = string.format('%d', 13000000000 + (id % nm))
  local fp = string.format('%016x', id)
  local t = oldest + span * id / total
  local ts = string.format('%.6f', t)
  local tu = string.format('%.6f', t + 0.5)
  local sid = string.format('%d', 100000000000000000 + id)
  local sid_ = tostring(id)
  local key = P .. 'item:' .. sid_
  redis.call('HSET', key, 'id', sid_, 'mobile', m, 'fingerprint', fp, 'status', 'firing',
    'episode', ep, 'route', 'db-critical', 'alertname', 'DiskFull', 'tpl_id', 111,
    'variables', vars, 'state', 'sent', 'reason', '', 'created_at', ts, 'updated_at', tu,
    'due_at', ts, 'lease_until', 0, 'attempts', 1, 'first_attempt_at', ts, 'sid', sid,
    'fee', 1)
  redis.call('ZADD', P .. 'items', id, sid_)
  redis.call('ZADD', P .. 'state:sent', id, sid_)
  redis.call('ZADD', P .. 'done', tu, sid_)
  redis.call('ZADD', P .. 'mobile:' .. m .. ':items', id, sid_)
  local dk = m .. '|' .. fp .. '|firing|' .. ep
  redis.call('HSET', P .. 'dedup:' .. dk, 'at', ts, 'paged', 1)
  redis.call('EXPIRE', P .. 'dedup:' .. dk, ttl)
  redis.call('ZADD', P .. 'dedup', ts, dk)
  last = id
end
local seq = tonumber(redis.call('GET', P .. 'seq') or '0')
if last > seq then
  redis.call('SET', P .. 'seq', last)
end
return last
"""


def fill_redis(url: str, total: int, batch: int = 20_000, prefix: str = "{bridge}:",
               progress: Progress | None = None) -> None:
    """Write ``total`` sent items (ids 1..total) into the Redis store at ``url``."""
    import redis

    now = time.time()
    client = redis.Redis.from_url(url, socket_timeout=120)
    try:
        script = client.register_script(FILL_LUA)
        done = 0
        while done < total:
            n = min(batch, total - done)
            script(args=[prefix, done + 1, n, total, repr(now - AGE_OLDEST),
                         repr(AGE_OLDEST - AGE_NEWEST), MOBILES, EPISODE, VARIABLES,
                         int(7 * 86400 - AGE_NEWEST)])
            done += n
            if progress:
                progress(done, total)
        pipe = client.pipeline(transaction=False)
        for i in range(MOBILES):
            pipe.zadd(prefix + "pace", {_mobile(i): now - AGE_NEWEST})
        pipe.execute()
    finally:
        client.close()
