"""The record step of the SQLite store: read once, decide in memory, write once.

:meth:`bridge.store.sqlite.store.SqliteStore.record` runs the paging policy
(:data:`bridge.store.base.PAGING_POLICY`) over a webhook's notifications inside one
``BEGIN IMMEDIATE`` transaction. Asking SQLite once per policy row and notification cost about
ten statements per SMS (issue 14: the store was a quarter of the intake's CPU). Here the step
reads every row the policy can look at with one ``SELECT`` per table for the whole batch,
keeps those rows current in memory while it decides the notifications in order, and writes
what changed back with one ``executemany`` per table.

Why this is the same as asking SQLite each time: the transaction holds SQLite's write lock from
its first statement, so no other process writes between the reads and the writes, and every
decision of the batch reads the rows as the earlier decisions left them (the in-memory copy is
updated exactly where the old statements wrote). Item ids are assigned here, after the largest
id ever used (``sqlite_sequence``), which is what ``AUTOINCREMENT`` would have given them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.decide.episodes import NOT_STARTED, fill_code, has_placeholder, new_code, new_id
from bridge.decide.types import Notification, Policy, State
from bridge.rules.model import VOICE_PREFIX
from bridge.store.base import dedup_key, dumps_vars

#: Values per ``IN (...)`` list (SQLite allows 32,766 variables; a webhook may carry more).
CHUNK = 500


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``values`` in slices of at most ``size``, for one ``IN (...)`` list each."""
    for i in range(0, len(values), size):
        yield values[i:i + size]


def marks(n: int) -> str:
    """``?,?,...``: ``n`` SQL parameter marks."""
    return ",".join("?" * n)


@dataclass
class _Storm:
    """A mobile's storm window (table ``storms``), as the step leaves it."""

    start: float
    end: float
    count: int


@dataclass
class RecordStep:
    """One record transaction's working set. Use: :meth:`load` the settled notifications,
    :meth:`decide` / :meth:`store` / the episode sub-steps for each in order, then
    :meth:`flush`. ``db`` is inside ``BEGIN IMMEDIATE``; ``now`` is UNIX seconds."""

    db: sqlite3.Connection
    policy: Policy
    now: float
    #: dedup key -> (at, paged) for every key the batch may read (absent: no record)
    dedup: dict[str, tuple[float, int]] = field(default_factory=dict)
    #: (fingerprint, episode) -> [episode id, state] of the stored alert episodes
    episodes: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: (episode id, mobile) -> ack code ('' none) of the stored Paged entries
    codes: dict[tuple[str, str], str] = field(default_factory=dict)
    #: mobile -> SMS counted for per_mobile_per_hour in the last hour
    hour: dict[str, int] = field(default_factory=dict)
    storms: dict[str, _Storm | None] = field(default_factory=dict)
    day_count: int = 0
    next_id: int = 0
    # what flush writes
    dedup_writes: dict[str, tuple[float, int]] = field(default_factory=dict)
    day_added: int = 0
    storm_writes: set[str] = field(default_factory=set)
    items: list[tuple[Any, ...]] = field(default_factory=list)
    new_episodes: list[tuple[Any, ...]] = field(default_factory=list)
    new_steps: list[tuple[Any, ...]] = field(default_factory=list)
    paged: list[tuple[Any, ...]] = field(default_factory=list)
    new_codes: set[str] = field(default_factory=set)

    # -- reads, once per batch ---------------------------------------------------------------
    def load(self, notes: Sequence[Notification], resolved: Iterable[tuple[str, str]]) -> None:
        """Read every row the policy may look at for ``notes`` (episodes settled) and the
        ``resolved`` (fingerprint, episode) pairs."""
        keys: set[str] = set()
        for n in notes:
            keys.add(dedup_key(n.mobile, n.fingerprint, n.status, n.episode))
            other = "resolved" if n.status == "firing" else "firing"
            keys.add(dedup_key(n.mobile, n.fingerprint, other, n.episode))
        for part in chunks(sorted(keys)):
            for k, at, paged in self.db.execute(
                    f"SELECT key, at, paged FROM dedup WHERE key IN ({marks(len(part))})", part):
                self.dedup[k] = (float(at), int(paged))
        pairs = sorted({(n.fingerprint, n.episode) for n in notes} | set(resolved))
        for part in chunks(pairs):
            # a join, not "(fingerprint, episode) IN (VALUES ...)": SQLite 3.40 scans the
            # whole table for that row-value IN, and searches the unique index for the join
            sql = ("SELECT e.id, e.fingerprint, e.episode, e.state FROM"
                   f" (VALUES {','.join(['(?,?)'] * len(part))}) AS v JOIN alert_episodes e"
                   " ON e.fingerprint = v.column1 AND e.episode = v.column2")
            for eid, fp, ep, state in self.db.execute(sql, [v for p in part for v in p]):
                self.episodes[(fp, ep)] = [str(eid), str(state)]
        if any(has_placeholder(n.variables) for n in notes) and self.episodes:
            ids = sorted({e[0] for e in self.episodes.values()})
            for part in chunks(ids):
                for eid, mobile, code in self.db.execute(
                        "SELECT episode_id, mobile, code FROM episode_paged WHERE episode_id IN"
                        f" ({marks(len(part))})", part):
                    self.codes[(str(eid), str(mobile))] = str(code or "")
        self._load_limits(sorted({n.mobile for n in notes}))
        row = self.db.execute("SELECT seq FROM sqlite_sequence WHERE name='items'").fetchone()
        self.next_id = int(row[0]) + 1 if row is not None else 1

    def _load_limits(self, mobiles: list[str]) -> None:
        """The day counter, each mobile's queued SMS of the last hour and storm window, when
        the policy has those limits."""
        p = self.policy
        if p.per_day is not None:
            row = self.db.execute("SELECT n FROM counters WHERE key=?",
                                  (f"day:{p.day}",)).fetchone()
            self.day_count = int(row[0]) if row is not None else 0
        if p.per_mobile_per_hour is not None:
            self.hour = dict.fromkeys(mobiles, 0)
            for part in chunks(mobiles):
                for mobile, count in self.db.execute(
                        "SELECT mobile, count(*) FROM items WHERE mobile IN"
                        f" ({marks(len(part))}) AND counted=1 AND created_at > ?"
                        " GROUP BY mobile", (*part, self.now - 3600)):
                    self.hour[str(mobile)] = int(count)
        if p.storm_threshold is not None and p.storm_window > 0:
            self.storms = dict.fromkeys(mobiles)
            for part in chunks(mobiles):
                for mobile, start, end, count in self.db.execute(
                        "SELECT mobile, window_start, window_end, count FROM storms WHERE"
                        f" mobile IN ({marks(len(part))})", part):
                    self.storms[str(mobile)] = _Storm(float(start), float(end), int(count))

    # -- the policy rows ---------------------------------------------------------------------
    def decide(self, n: Notification) -> tuple[State | None, str]:
        """One notification down the rows of PAGING_POLICY. Returns ``(None, reason)`` for what
        is only counted, else the state to store; records the rows' effects (dedup record, day
        counter, storm window) for :meth:`flush`."""
        key = dedup_key(n.mobile, n.fingerprint, n.status, n.episode)
        # policy row: planned
        if n.state == "suppressed":
            return "suppressed", n.reason
        # policy row: dedup
        seen = self.dedup.get(key)
        if seen is not None and (n.status == "resolved"
                                 or self.now - seen[0] < n.repeat_interval):
            return None, "duplicate"
        stop = self._episode_rows(n, key)
        if stop is not None:
            return stop
        # policy rows: per_day, per_mobile_per_hour (the dedup record is written either way;
        # a call counts for neither)
        call = n.mobile.startswith(VOICE_PREFIX)
        limit_reason = "" if call else self._limited(n.mobile)
        self._write_dedup(key, max(seen[1] if seen else 0, 0 if limit_reason else 1))
        if limit_reason:
            return "suppressed", limit_reason
        # policy row: storm (never a call)
        if not call and self._storm_holds(n.mobile):
            return "held", "storm"
        # policy row: queued (a shift notice keeps its reason, "shift notice")
        if self.policy.day and not call:
            self.day_added += 1
            self.day_count += 1
        return "queued", n.reason if n.status == "notice" else ""

    def _episode_rows(self, n: Notification, key: str) -> tuple[State | None, str] | None:
        """Policy rows ``already_resolved`` and ``acknowledged`` (a firing) and
        ``resolved_pairing`` (a resolved): where the notification stops, or ``None`` (a shift
        notice passes them all)."""
        if n.status == "firing":
            # policy row: already_resolved
            if dedup_key(n.mobile, n.fingerprint, "resolved", n.episode) in self.dedup:
                return None, "already resolved"
            # policy row: acknowledged
            episode = self.episodes.get((n.fingerprint, n.episode))
            if episode is not None and episode[1] == "acknowledged":
                return "suppressed", "acknowledged"
        elif n.status == "resolved":
            # policy row: resolved_pairing
            firing = self.dedup.get(dedup_key(n.mobile, n.fingerprint, "firing", n.episode))
            if firing is None or not firing[1]:
                self._write_dedup(key, 0)
                return None, "not paged"
        return None

    def _write_dedup(self, key: str, paged: int) -> None:
        self.dedup[key] = self.dedup_writes[key] = (self.now, paged)

    def _limited(self, mobile: str) -> str:
        """Policy rows ``per_day`` then ``per_mobile_per_hour``: the reason, or ``""``."""
        p = self.policy
        if p.per_day is not None and self.day_count >= p.per_day:
            return "per_day limit"
        if p.per_mobile_per_hour is not None and self.hour[mobile] >= p.per_mobile_per_hour:
            return "per_mobile_per_hour limit"
        return ""

    def _storm_holds(self, mobile: str) -> bool:
        """Policy row ``storm``: count the notification in the mobile's window (opening one when
        none is open); true when it is past the threshold."""
        p = self.policy
        if p.storm_threshold is None or p.storm_window <= 0:
            return False
        self.storm_writes.add(mobile)
        storm = self.storms.get(mobile)
        if storm is None or storm.end <= self.now:
            self.storms[mobile] = _Storm(self.now, self.now + p.storm_window, 1)
            return False
        storm.count += 1
        return storm.count > p.storm_threshold

    # -- rows written ------------------------------------------------------------------------
    def store(self, n: Notification, state: State, reason: str) -> str:
        """One decided notification as an item row; returns its id. Queued ones count for the
        limits; held ones are due when their storm window ends."""
        storm = self.storms.get(n.mobile) if state == "held" else None
        due = storm.end if storm is not None else self.now
        item_id = self.next_id
        self.next_id += 1
        counted = state == "queued" and not n.mobile.startswith(VOICE_PREFIX)
        self.items.append((item_id, n.mobile, n.fingerprint, n.status, n.episode, n.route,
                           n.alertname, n.tpl_id, dumps_vars(n.variables), state, reason,
                           self.now, self.now, due, 1 if counted else 0, n.template))
        if counted and self.hour:
            self.hour[n.mobile] += 1
        return str(item_id)

    def episode_upsert(self, n: Notification) -> str:
        """Episode sub-step ``upsert``: the id of the notification's episode, created (with its
        steps, not started: due once the route's first SMS went out) when missing."""
        known = self.episodes.get((n.fingerprint, n.episode))
        if known is not None:
            return known[0]
        ep_id = new_id()
        self.episodes[(n.fingerprint, n.episode)] = [ep_id, "firing"]
        info = n.info
        self.new_episodes.append((
            ep_id, n.fingerprint, n.episode, n.alertname,
            dumps_vars(dict(info.labels) if info else {}), info.summary if info else "",
            info.starts_at if info else None, info.silence_url if info else None, n.route,
            self.now, dumps_vars(dict(info.annotations) if info else {}),
            info.source if info else ""))
        self.new_steps.extend((ep_id, i, s.after, s.receiver, s.template, NOT_STARTED)
                              for i, s in enumerate(n.steps, start=1))
        return ep_id

    def episode_code(self, ep_id: str, n: Notification) -> str | None:
        """Episode sub-step ``code``: the ack code of (episode, mobile) when the notification
        renders ``ack_code``: the stored one, else a new unique one (stored by ``paged``)."""
        if not has_placeholder(n.variables):
            return None
        stored = self.codes.get((ep_id, n.mobile))
        if stored:
            return stored
        while True:
            code = new_code()
            if code not in self.new_codes and self.db.execute(
                    "SELECT 1 FROM episode_paged WHERE code=?", (code,)).fetchone() is None:
                self.new_codes.add(code)
                return code

    def stored_code(self, n: Notification) -> str:
        """The code stored for the notification's (episode, mobile), else ``""``."""
        episode = self.episodes.get((n.fingerprint, n.episode))
        return self.codes.get((episode[0], n.mobile), "") if episode is not None else ""

    def episode_paged(self, ep_id: str, n: Notification, item_id: str, code: str | None) -> None:
        """Episode sub-step ``paged``: the mobile's Paged entry, once (a repeat keeps the first
        one; it only fills a code the first page had no use for)."""
        if code and not self.codes.get((ep_id, n.mobile)):
            self.codes[(ep_id, n.mobile)] = code
        self.paged.append((ep_id, n.mobile, n.route, n.resolved_template, self.now, n.level,
                           item_id, code))

    def with_code(self, n: Notification,
                  state: State) -> tuple[Notification, str | None, str | None]:
        """The notification with its ack code filled in, its episode id when it pages for one
        (a firing that ends queued or held: sub-steps ``upsert`` and ``code``) and the code of
        that page (``None`` when it renders no ``ack_code``)."""
        ep_id, code = None, None
        if n.status == "firing" and state in ("queued", "held"):
            ep_id = self.episode_upsert(n)
            code = self.episode_code(ep_id, n)
        elif has_placeholder(n.variables):
            code = self.stored_code(n)
        if code is not None:
            n = replace(n, variables=fill_code(n.variables, code))
        return n, ep_id, code if ep_id is not None else None

    def resolved_close(self, resolved: Sequence[tuple[str, str]], starts: dict[str, str]) -> None:
        """Episode sub-step ``resolved close``: each resolved alert's episode resolved at now,
        its pending steps cancelled (reason ``resolved``)."""
        closing = []
        for fp, ep in resolved:
            episode = self.episodes.get((fp, ep or starts.get(fp, "")))
            if episode is not None and episode[1] != "resolved":
                episode[1] = "resolved"
                closing.append((episode[0],))
        if not closing:
            return
        self.flush()
        self.db.executemany("UPDATE alert_episodes SET state='resolved', resolved_at=? WHERE id=?",
                            [(self.now, eid) for (eid,) in closing])
        self.db.executemany("UPDATE episode_steps SET state='cancelled', reason='resolved',"
                            " lease_until=0, lease_token='' WHERE episode_id=? AND"
                            " state='pending'", closing)

    def flush(self) -> None:
        """Write what the step decided so far: one statement per table."""
        db = self.db
        if self.dedup_writes:
            db.executemany("INSERT INTO dedup (key, at, paged) VALUES (?,?,?) ON CONFLICT(key)"
                           " DO UPDATE SET at=excluded.at, paged=excluded.paged",
                           [(k, at, paged) for k, (at, paged) in self.dedup_writes.items()])
            self.dedup_writes.clear()
        if self.day_added:
            db.execute("INSERT INTO counters VALUES (?,?) ON CONFLICT(key) DO UPDATE"
                       " SET n=n+excluded.n", (f"day:{self.policy.day}", self.day_added))
            self.day_added = 0
        for mobile in sorted(self.storm_writes):
            s = self.storms[mobile]
            if s is not None:
                db.execute("INSERT OR REPLACE INTO storms VALUES (?,?,?,?)",
                           (mobile, s.start, s.end, s.count))
        self.storm_writes.clear()
        self._flush_rows()

    def _flush_rows(self) -> None:
        db = self.db
        if self.new_episodes:
            db.executemany(
                "INSERT INTO alert_episodes (id, fingerprint, episode, alertname, labels, summary,"
                " starts_at, silence_url, route, state, created_at, annotations, source)"
                " VALUES (?,?,?,?,?,?,?,?,?,'firing',?,?,?)", self.new_episodes)
            self.new_episodes.clear()
        if self.new_steps:
            db.executemany(
                "INSERT INTO episode_steps (episode_id, idx, after, receiver, template, due_at,"
                " state) VALUES (?,?,?,?,?,?,'pending')", self.new_steps)
            self.new_steps.clear()
        if self.items:
            db.executemany(
                "INSERT INTO items (id, mobile, fingerprint, status, episode, route, alertname,"
                " tpl_id, variables, state, reason, created_at, updated_at, due_at, counted,"
                " template) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", self.items)
            self.items.clear()
        if self.paged:
            db.executemany(
                "INSERT INTO episode_paged (episode_id, mobile, route, resolved_template, at,"
                " level, item_id, code, sent_at) VALUES (?,?,?,?,?,?,?,?,0)"
                " ON CONFLICT(episode_id, mobile)"
                " DO UPDATE SET code=coalesce(code, excluded.code)", self.paged)
            self.paged.clear()
