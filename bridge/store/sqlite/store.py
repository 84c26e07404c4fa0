"""The embedded store: one SQLite file in WAL mode, shared by every process on one machine.

Each atomic step is one ``BEGIN IMMEDIATE`` transaction, so concurrent gunicorn workers and
``bridge worker`` processes serialise on SQLite's write lock (waiting up to ``busy_timeout``).
Connections are opened lazily, one per process for writes (its threads take turns) and one per
thread for reads, so none is inherited across a fork.
``synchronous=NORMAL`` in WAL mode: a commit survives any process crash (an OS crash or power
loss may lose the last commits).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from bridge.decide.episodes import (
    NOT_STARTED,
    Episode,
    Paged,
    Step,
    StepClaim,
    StepState,
    code_expired,
)
from bridge.decide.heartbeats import Action, HeartbeatClaim, HeartbeatRecord
from bridge.decide.types import EpisodeMark, Notification, Policy
from bridge.errors import StoreUnavailable
from bridge.store.base import (
    EPISODE_STALE,
    FOLDED,
    STATES,
    Claim,
    Item,
    Job,
    JobClaim,
    JobState,
    Outcome,
    Store,
    dedup_key,
    dumps_vars,
    episode_text,
    folds_into_call,
)
from bridge.store.sqlite.record import RecordStep, chunks, marks

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    mobile TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status TEXT NOT NULL,
    episode TEXT NOT NULL,
    route TEXT NOT NULL,
    alertname TEXT NOT NULL,
    tpl_id INTEGER NOT NULL,
    variables TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    due_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_token TEXT NOT NULL DEFAULT '',
    attempts INTEGER NOT NULL DEFAULT 0,
    first_attempt_at REAL,
    sid TEXT,
    fee INTEGER,
    counted INTEGER NOT NULL DEFAULT 0,
    template TEXT
);
CREATE INDEX IF NOT EXISTS items_pending ON items(due_at)
    WHERE state IN ('queued', 'retrying', 'held');
CREATE INDEX IF NOT EXISTS items_mobile_pending ON items(mobile, id)
    WHERE state IN ('queued', 'retrying', 'held');
CREATE INDEX IF NOT EXISTS items_mobile_counted ON items(mobile, created_at) WHERE counted = 1;
CREATE INDEX IF NOT EXISTS items_state ON items(state, id);
CREATE INDEX IF NOT EXISTS items_updated ON items(updated_at);
CREATE TABLE IF NOT EXISTS dedup (
    key TEXT PRIMARY KEY,
    at REAL NOT NULL,
    paged INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_at ON dedup(at);
-- a mobile's hold while a claim sends to it, then its pacing gap: not claimable before next_at
CREATE TABLE IF NOT EXISTS pacing (mobile TEXT PRIMARY KEY, next_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS storms (
    mobile TEXT PRIMARY KEY, window_start REAL NOT NULL, window_end REAL NOT NULL,
    count INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS episodes (fingerprint TEXT PRIMARY KEY, started_at REAL NOT NULL)
    WITHOUT ROWID;
-- alert episodes (bridge/decide/episodes.py): one row per firing episode that paged somebody
CREATE TABLE IF NOT EXISTS alert_episodes (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, episode TEXT NOT NULL,
    alertname TEXT NOT NULL, labels TEXT NOT NULL, summary TEXT NOT NULL, starts_at REAL,
    silence_url TEXT, route TEXT NOT NULL, state TEXT NOT NULL, acknowledged_by TEXT,
    acknowledged_at REAL, acknowledged_via TEXT, resolved_at REAL, created_at REAL NOT NULL,
    annotations TEXT NOT NULL DEFAULT '{}', source TEXT NOT NULL DEFAULT '', silence_id TEXT,
    UNIQUE (fingerprint, episode)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alert_episodes_created ON alert_episodes(created_at);
CREATE INDEX IF NOT EXISTS alert_episodes_resolved ON alert_episodes(resolved_at)
    WHERE state = 'resolved';
-- sent_at: when a firing SMS of the episode to the mobile was first sent; 0 while none was,
-- NULL in a row stored before it was kept (counts as sent at `at`: Paged.sent_at)
CREATE TABLE IF NOT EXISTS episode_paged (
    episode_id TEXT NOT NULL, mobile TEXT NOT NULL, route TEXT NOT NULL,
    resolved_template TEXT, at REAL NOT NULL, level INTEGER NOT NULL, item_id TEXT,
    code TEXT UNIQUE, sent_at REAL, PRIMARY KEY (episode_id, mobile)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS episode_steps (
    episode_id TEXT NOT NULL, idx INTEGER NOT NULL, after REAL NOT NULL, receiver TEXT NOT NULL,
    template TEXT, due_at REAL NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0, lease_token TEXT NOT NULL DEFAULT '', ran_at REAL,
    PRIMARY KEY (episode_id, idx)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS episode_steps_due ON episode_steps(due_at) WHERE state = 'pending';
CREATE TABLE IF NOT EXISTS unknown_codes (
    client TEXT NOT NULL, minute INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (client, minute)
) WITHOUT ROWID;
-- heartbeats (docs/heartbeats.md): one row from a heartbeat's first beat
CREATE TABLE IF NOT EXISTS heartbeats (
    name TEXT PRIMARY KEY, last_seen REAL NOT NULL, state TEXT NOT NULL, missing_since REAL,
    lease_until REAL NOT NULL DEFAULT 0, lease_token TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (key TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
-- durable background jobs (base.Job): silences in Alertmanager, shift notices
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY, kind TEXT NOT NULL, payload TEXT NOT NULL, state TEXT NOT NULL,
    due_at REAL NOT NULL, since REAL NOT NULL, keep_until REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0, lease_token TEXT NOT NULL DEFAULT ''
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS jobs_due ON jobs(due_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS jobs_kept ON jobs(keep_until) WHERE state != 'pending';
CREATE TABLE IF NOT EXISTS status (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
"""

#: WAL pages after which a commit checkpoints by itself (about 80 MB: only when no delivery
#: loop runs :meth:`SqliteStore.maintain`).
AUTOCHECKPOINT_PAGES = 20000
#: Seconds between two tries for the write lock while another process holds it
#: (:meth:`SqliteStore._begin`).
LOCK_POLL = 0.0005
#: Bytes the WAL file is cut back to after a checkpoint.
WAL_SIZE_LIMIT = 16 * 1024 * 1024
_PENDING_SQL = "('queued', 'retrying', 'held')"
_COLUMNS = ("id, mobile, fingerprint, status, episode, route, alertname, tpl_id, variables, state,"
            " reason, created_at, updated_at, due_at, attempts, first_attempt_at, sid, fee,"
            " template")


def _job(row: sqlite3.Row) -> Job:
    return Job(key=row["key"], kind=row["kind"], payload=json.loads(row["payload"]),
               state=row["state"], due_at=row["due_at"], since=row["since"],
               keep_until=row["keep_until"], attempts=row["attempts"], error=row["error"])


def _item(row: sqlite3.Row) -> Item:
    return Item(
        id=str(row["id"]), mobile=row["mobile"], fingerprint=row["fingerprint"],
        status=row["status"], episode=row["episode"], route=row["route"],
        alertname=row["alertname"], tpl_id=row["tpl_id"], variables=json.loads(row["variables"]),
        state=row["state"], reason=row["reason"], created_at=row["created_at"],
        updated_at=row["updated_at"], due_at=row["due_at"], attempts=row["attempts"],
        first_attempt_at=row["first_attempt_at"], sid=row["sid"], fee=row["fee"],
        template=row["template"],
    )


class SqliteStore(Store):
    """:class:`Store` on one SQLite file at ``path`` (created if missing; its folder must exist)."""

    def __init__(self, path: str, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._schema_ready = False
        #: the threads of this process write one at a time, through one connection (_tx)
        self._write_lock = threading.Lock()
        self._wconn: sqlite3.Connection | None = None
        self._wpid = 0

    # -- connection lifecycle -------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (for reads)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        self._local.conn = self._connect(same_thread=True)
        self._local.pid = os.getpid()
        return self._local.conn  # type: ignore[no-any-return]

    def _writer(self) -> sqlite3.Connection:
        """This process's write connection; only used with ``_write_lock`` held. It has no
        busy handler: :meth:`_begin` waits for the write lock itself."""
        if self._wconn is None or self._wpid != os.getpid():
            conn = self._connect(same_thread=False)
            conn.execute("PRAGMA busy_timeout=0")
            self._wconn, self._wpid = conn, os.getpid()
        return self._wconn

    def _begin(self, conn: sqlite3.Connection) -> None:
        """``BEGIN IMMEDIATE``: take the write lock, trying again every :data:`LOCK_POLL`
        seconds while another process holds it, for up to ``busy_timeout`` seconds.

        Not SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25 ... ms between tries:
        a webhook that found the lock taken a few times in a row (two web workers and the
        delivery process take turns on it) waited 50-80 ms although the lock was free again
        within a millisecond each time (the 70 ms p99 at 2 connections, bench/RESULTS.md).
        Raises ``sqlite3.OperationalError`` when it did not get the lock in time, or for
        another error."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(LOCK_POLL)

    def _connect(self, same_thread: bool) -> sqlite3.Connection:
        for attempt in range(5):
            started = time.monotonic()
            try:
                return self._open(same_thread)
            except sqlite3.OperationalError as exc:
                # switching a new file to WAL (or creating the schema) while other processes
                # do the same can answer "locked" at once, without the busy handler: tried
                # again; a lock that outlasted the busy handler is not (503 after busy_timeout,
                # not five times that)
                waited = time.monotonic() - started
                if "locked" not in str(exc) or attempt == 4 or waited > self.busy_timeout / 2:
                    raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None
                time.sleep(0.05 * (attempt + 1))
            except (sqlite3.Error, OSError) as exc:
                raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _open(self, same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=same_thread)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            # checkpoints are the delivery loop's (maintain); this is only the safety net when
            # no deliverer runs (SQLite's default, 1000 pages, checkpoints inside a webhook's
            # commit every few webhooks: a third of its commit time)
            conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
            # and the WAL file shrinks back to this once checkpointed (else it keeps the size
            # of the largest burst)
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            if not self._schema_ready:
                conn.executescript(SCHEMA)
                columns = {r[1] for r in conn.execute("PRAGMA table_info(items)")}
                if "lease_token" not in columns:  # a file from before lease fencing
                    conn.execute("ALTER TABLE items ADD COLUMN lease_token TEXT NOT NULL"
                                 " DEFAULT ''")
                if "template" not in columns:  # a file from before templates were kept
                    conn.execute("ALTER TABLE items ADD COLUMN template TEXT")
                self._add_columns(conn, "alert_episodes", {  # a file from before issue 25
                    "source": "TEXT NOT NULL DEFAULT ''", "silence_id": "TEXT"})
                # a file from before sent_at was kept: its rows stay NULL (sent, as they were)
                self._add_columns(conn, "episode_paged", {"sent_at": "REAL"})
                steps = {r[1] for r in conn.execute("PRAGMA table_info(episode_steps)")}
                if "ran_at" not in steps:  # a file from before issue 20
                    conn.execute("ALTER TABLE episode_steps ADD COLUMN ran_at REAL")
                self._schema_ready = True
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _add_columns(conn: sqlite3.Connection, table: str, columns: dict[str, str]) -> None:
        """Add the ``columns`` (name -> type) a file made by an older version lacks; another
        process adding one at the same moment is no error."""
        have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns.items():
            if name in have:
                continue
            try:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):
                    raise

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE ... COMMIT, rolled back on any error).

        The threads of one process take turns on a lock first and write through one connection
        of the process: without the lock, 32 threads of a worker wait for SQLite's write lock
        in its busy handler, which sleeps 1, 2, 5, 10 ... ms between tries instead of waking
        when the lock is free (bench: p99 near a second at 32 connections); with a connection
        per thread, each write finds its page cache stale from the other threads' writes and
        reads the pages again (bench: more than half the intake's CPU under gunicorn). Other
        processes still meet SQLite's own lock. Waiting longer than ``busy_timeout`` raises
        :class:`StoreUnavailable`, as SQLite's busy lock would."""
        if not self._write_lock.acquire(timeout=self.busy_timeout):
            raise StoreUnavailable(f"sqlite {self.path}: write lock busy for "
                                   f"{self.busy_timeout:g}s")
        try:
            with self._write_tx() as conn:
                yield conn
        finally:
            self._write_lock.release()

    @contextmanager
    def _write_tx(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = self._writer()
            self._begin(conn)
        except sqlite3.Error as exc:
            self._drop_writer()
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None
        try:
            yield conn
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            # reconnect next time: a connection opened while the file was read-only (or the
            # disk full) stays unusable even after the cause is gone
            self._rollback(conn)
            self._drop_writer()
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None
        except BaseException:
            self._rollback(conn)
            raise

    def _rollback(self, conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            self._drop_writer()

    def _drop_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    def _read(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        try:
            return list(self._conn().execute(sql, args))
        except sqlite3.Error as exc:
            self._drop()
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None

    def maintain(self) -> None:
        """A passive WAL checkpoint: copies what other connections committed into the database
        file without blocking them (the WAL is then reused from its start)."""
        self._read("PRAGMA wal_checkpoint(PASSIVE)")

    def close(self) -> None:
        self._drop()
        with self._write_lock:
            self._drop_writer()

    # -- the contract -----------------------------------------------------------------------
    def record(self, notes: Sequence[Notification], policy: Policy, now: float,
               episodes: Sequence[EpisodeMark] = (),
               resolved: Sequence[tuple[str, str]] = ()) -> list[Outcome]:
        """See :meth:`Store.record`; the policy runs in memory over rows read once per batch
        (:class:`bridge.store.sqlite.record.RecordStep`, which says why that is the same)."""
        out: list[Outcome] = []
        with self._tx() as db:
            starts = self._open_episodes(db, notes, episodes, now)
            settled = [replace(n, episode=starts.get(n.fingerprint, "")) if n.untimed else n
                       for n in notes]
            step = RecordStep(db, policy, now)
            step.load(settled, [(fp, ep or starts.get(fp, "")) for fp, ep in resolved])
            for n in settled:
                state, reason = step.decide(n)
                if state is None:
                    out.append(Outcome(n, "suppressed", reason))
                    continue
                n, ep_id, code = step.with_code(n, state)
                item_id = step.store(n, state, reason)
                if ep_id is not None:
                    step.episode_paged(ep_id, n, item_id, code)
                out.append(Outcome(n, state, reason, item_id, ep_id))
            step.resolved_close(resolved, starts)
            step.flush()
            self._close_episodes(db, episodes)
        return out

    # -- sub-step episodes of record (base.PAGING_POLICY) -------------------------------------
    @staticmethod
    def _open_episodes(db: sqlite3.Connection, notes: Sequence[Notification],
                       episodes: Sequence[EpisodeMark], now: float) -> dict[str, str]:
        """Sub-step ``episodes`` (base.PAGING_POLICY): fingerprint -> settled episode."""
        starts: dict[str, str] = {}
        wanted = {m.fingerprint: m.firing for m in episodes}
        for n in notes:
            if n.untimed:
                wanted.setdefault(n.fingerprint, n.status == "firing")
        for fp, firing in wanted.items():
            row = db.execute("SELECT started_at FROM episodes WHERE fingerprint=?",
                             (fp,)).fetchone()
            if row is not None:
                starts[fp] = episode_text(float(row[0]))
            elif firing:
                db.execute("INSERT INTO episodes VALUES (?,?)", (fp, now))
                starts[fp] = episode_text(now)
        return starts

    @staticmethod
    def _close_episodes(db: sqlite3.Connection, episodes: Sequence[EpisodeMark]) -> None:
        for m in episodes:
            if not m.firing:
                db.execute("DELETE FROM episodes WHERE fingerprint=?", (m.fingerprint,))

    def claim(self, now: float, lease: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        """See :meth:`Store.claim`. The mobiles that have something due are found by a read
        first, outside the write lock: that query walks every pending item (a backlog of
        thousands while a storm is sent), and inside ``BEGIN IMMEDIATE`` it held up every
        webhook for as long (bench/RESULTS.md, "Targets (issue 23)"). In the transaction each
        candidate's hold and items are checked again, so two deliverers still never claim one
        mobile or one item at once."""
        claims: list[Claim] = []
        mobiles = [str(r[0]) for r in self._read(
            f"SELECT DISTINCT mobile FROM items WHERE state IN {_PENDING_SQL}"
            " AND due_at <= ? AND lease_until <= ?"
            " AND mobile NOT IN (SELECT mobile FROM pacing WHERE next_at > ?) LIMIT ?",
            (now, now, now, max_mobiles))]
        if not mobiles:
            return claims
        with self._tx() as db:
            for mobile in mobiles:
                if db.execute("SELECT 1 FROM pacing WHERE mobile=? AND next_at > ?",
                              (mobile, now)).fetchone():
                    continue  # claimed by another deliverer since the read
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM items WHERE mobile=? AND state IN {_PENDING_SQL}"
                    " AND due_at <= ? AND lease_until <= ? ORDER BY id LIMIT ?",
                    (mobile, now, now, max_items if max_items > 0 else -1)
                ).fetchall()
                if not rows:
                    continue
                gap = db.execute("SELECT next_at FROM pacing WHERE mobile=?",
                                 (mobile,)).fetchone()
                ids = [r["id"] for r in rows]
                token = secrets.token_hex(8)
                db.execute("UPDATE items SET lease_until=?, lease_token=? WHERE id IN"
                           f" ({marks(len(ids))})", (now + lease, token, *ids))
                # the hold: no other claim of this mobile until a mark turns it into the gap
                db.execute("INSERT OR REPLACE INTO pacing VALUES (?,?)", (mobile, now + lease))
                items = [_item(r) for r in rows]
                gapped = gap is not None and gap[0] > min(i.created_at for i in items)
                claims.append(Claim(mobile, items, now + lease, gapped, token))
        return claims

    def _update(self, ids: Sequence[str], token: str, pace_until: float | None, sets: str,
                args: Sequence[Any], forget: bool = False,
                went_out: float | None = None, sent: bool = False,
                fold_at: float | None = None) -> int:
        """One mark: ``sets`` on the items of ``ids`` still leased under ``token``; ends their
        lease; books ``pace_until``; with ``forget`` deletes their dedup records; with
        ``went_out`` (the SMS were sent or ended failed then, or met a configuration error)
        starts escalation clocks (:meth:`_start_steps`), and with ``sent`` too notes the firing
        SMS sent in their mobiles' Paged entries (:meth:`_note_sent`); with ``fold_at`` (a call
        went out then) folds the calls waiting for the same number (:meth:`_fold`)."""
        if not ids or not token:  # an unleased item carries no token: nothing may mark it
            return 0
        with self._tx() as db:
            where = f"id IN ({marks(len(ids))}) AND lease_token=?"
            fenced = (*[int(i) for i in ids], token)
            rows = db.execute(f"SELECT mobile, fingerprint, status, episode FROM items"
                              f" WHERE {where}", fenced).fetchall()
            if not rows:
                return 0
            db.execute(f"UPDATE items SET {sets}, lease_until=0, lease_token='' WHERE {where}",
                       (*args, *fenced))
            if pace_until is not None:
                for mobile in {r[0] for r in rows}:
                    db.execute("INSERT OR REPLACE INTO pacing VALUES (?,?)",
                               (mobile, pace_until))
            if forget:
                db.executemany("DELETE FROM dedup WHERE key=?",
                               [(dedup_key(*tuple(r)),) for r in rows])
            if went_out is not None:
                self._start_steps(db, rows, went_out)
                if sent:
                    self._note_sent(db, rows, went_out)
            if fold_at is not None:
                return len(rows) + self._fold(db, ids, rows, token, fold_at)
            return len(rows)

    @staticmethod
    def _fold(db: sqlite3.Connection, ids: Sequence[str], rows: Sequence[sqlite3.Row],
              token: str, at: float) -> int:
        """A call to the addresses of ``rows`` went out at ``at``: their other items that
        :func:`folds_into_call` end ``suppressed`` (:data:`FOLDED`); returns how many."""
        sent = {int(i) for i in ids}
        folded: list[int] = []
        for mobile in {r[0] for r in rows}:
            folded += [r[0] for r in db.execute(
                "SELECT id, state, created_at, lease_until, lease_token FROM items"
                f" WHERE mobile=? AND state IN {_PENDING_SQL}", (mobile,))
                if r[0] not in sent and folds_into_call(r[1], r[2], r[3], r[4], sent_at=at,
                                                        token=token)]
        for part in chunks(folded):
            db.execute("UPDATE items SET state='suppressed', reason=?, updated_at=?,"
                       f" lease_until=0, lease_token='' WHERE id IN ({marks(len(part))})",
                       (FOLDED, at, *part))
        return len(folded)

    @staticmethod
    def _note_sent(db: sqlite3.Connection, rows: Sequence[sqlite3.Row], at: float) -> None:
        """A firing SMS of ``rows`` was sent at ``at``: the Paged entry of its mobile for its
        episode gets ``sent_at`` (the first send's; docs/oncall.md, "Resolved goes to who was
        paged")."""
        for mobile, fingerprint, status, episode in rows:
            if status == "firing":
                db.execute(
                    "UPDATE episode_paged SET sent_at=? WHERE sent_at=0 AND mobile=? AND"
                    " episode_id IN (SELECT id FROM alert_episodes WHERE fingerprint=? AND"
                    " episode=?)", (at, mobile, fingerprint, episode))

    @staticmethod
    def _start_steps(db: sqlite3.Connection, rows: Sequence[sqlite3.Row], at: float) -> None:
        """Start the escalation clock of the episodes whose route's own page (level 0) to a
        mobile of ``rows`` went out (or met a configuration error) at ``at``: their steps not
        started yet are due at ``at`` + ``after`` (docs/oncall.md, Escalation)."""
        for mobile, fingerprint, status, episode in rows:
            if status != "firing":
                continue
            db.execute(
                "UPDATE episode_steps SET due_at=?+after WHERE due_at=? AND state='pending'"
                " AND episode_id IN (SELECT e.id FROM alert_episodes e JOIN episode_paged p"
                " ON p.episode_id=e.id WHERE e.fingerprint=? AND e.episode=? AND p.mobile=?"
                " AND p.level=0)", (at, NOT_STARTED, fingerprint, episode, mobile))

    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float, reason: str = "",
                  *, token: str, pace_until: float | None, fold: bool = False) -> int:
        return self._update(ids, token, pace_until,
                            "state='sent', sid=?, fee=?, reason=?, updated_at=?,"
                            " attempts=attempts+1, first_attempt_at=coalesce(first_attempt_at, ?)",
                            (sid, fee, reason, now, now), went_out=now, sent=True,
                            fold_at=now if fold else None)

    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float, *,
                   token: str, pace_until: float | None, start_clock: bool = False) -> int:
        return self._update(ids, token, pace_until,
                            "state='retrying', due_at=?, reason=?, updated_at=?,"
                            " attempts=attempts+1, first_attempt_at=coalesce(first_attempt_at, ?)",
                            (due_at, reason, now, now), went_out=now if start_clock else None)

    def mark_failed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                    pace_until: float | None) -> int:
        return self._update(ids, token, pace_until,
                            "state='failed', reason=?, updated_at=?, attempts=attempts+1,"
                            " first_attempt_at=coalesce(first_attempt_at, ?)", (reason, now, now),
                            forget=True, went_out=now)

    def mark_suppressed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                        pace_until: float | None) -> int:
        return self._update(ids, token, pace_until, "state='suppressed', reason=?, updated_at=?",
                            (reason, now))

    def release(self, ids: Sequence[str], due_at: float, *, token: str,
                pace_until: float | None = None) -> int:
        return self._update(ids, token, pace_until, "due_at=?", (due_at,))

    def untimed_starts(self, fingerprints: Sequence[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in chunks(sorted(set(fingerprints))):
            for fp, start in self._read("SELECT fingerprint, started_at FROM episodes WHERE"
                                        f" fingerprint IN ({marks(len(part))})", part):
                out[str(fp)] = episode_text(float(start))
        return out

    def pending(self, address: str) -> list[Item]:
        return [_item(r) for r in self._read(
            f"SELECT {_COLUMNS} FROM items WHERE mobile=? AND state IN {_PENDING_SQL}"
            " ORDER BY id", (address,))]

    def recent(self, limit: int = 50, state: str | None = None,
               mobile: str | None = None) -> list[Item]:
        where, args = [], []
        if state:
            where.append("state=?")
            args.append(state)
        if mobile:
            where.append("mobile=?")
            args.append(mobile)
        sql = f"SELECT {_COLUMNS} FROM items"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        return [_item(r) for r in self._read(sql, (*args, limit))]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = dict.fromkeys(STATES, 0)
        for row in self._read("SELECT state, count(*) FROM items GROUP BY state"):
            out[row[0]] = row[1]
        return out

    def prune(self, before: float, batch: int = 5000) -> int:
        total = 0
        while True:
            with self._tx() as db:
                n = db.execute(
                    "DELETE FROM items WHERE id IN (SELECT id FROM items WHERE updated_at < ?"
                    " AND state IN ('sent', 'failed', 'suppressed') LIMIT ?)", (before, batch)
                ).rowcount
                d = db.execute("DELETE FROM dedup WHERE key IN (SELECT key FROM dedup"
                               " WHERE at < ? LIMIT ?)", (before, batch)).rowcount
                db.execute("DELETE FROM pacing WHERE next_at < ?", (before,))
                db.execute("DELETE FROM storms WHERE window_end < ?", (before,))
                db.execute("DELETE FROM jobs WHERE key IN (SELECT key FROM jobs WHERE"
                           " state != 'pending' AND keep_until < ? LIMIT ?)", (before, batch))
                gone = [r[0] for r in db.execute(
                    "SELECT id FROM alert_episodes WHERE (state='resolved' AND resolved_at < ?)"
                    " OR created_at < ? LIMIT ?", (before, before - EPISODE_STALE, batch))]
                for table, column in (("episode_paged", "episode_id"),
                                      ("episode_steps", "episode_id"), ("alert_episodes", "id")):
                    db.executemany(f"DELETE FROM {table} WHERE {column}=?",
                                   [(g,) for g in gone])
                db.execute("DELETE FROM unknown_codes WHERE minute < ?", (int(before // 60),))
            total += n
            if n < batch and d < batch and len(gone) < batch:
                return total

    # -- episodes ---------------------------------------------------------------------------
    @staticmethod
    def _episodes_of(db: sqlite3.Connection, rows: Sequence[sqlite3.Row]) -> list[Episode]:
        out = []
        for r in rows:
            paged = tuple(
                Paged(mobile=p["mobile"], route=p["route"],
                      resolved_template=p["resolved_template"], at=p["at"], level=p["level"],
                      item_id=p["item_id"], code=p["code"],
                      sent_at=p["at"] if p["sent_at"] is None else p["sent_at"] or None)
                for p in db.execute("SELECT * FROM episode_paged WHERE episode_id=?"
                                    " ORDER BY at, level, mobile", (r["id"],)))
            steps = tuple(
                Step(index=s["idx"], after=s["after"], receiver=s["receiver"],
                     template=s["template"],
                     due_at=None if s["due_at"] == NOT_STARTED else s["due_at"],
                     state=s["state"], reason=s["reason"], ran_at=s["ran_at"])
                for s in db.execute("SELECT * FROM episode_steps WHERE episode_id=?"
                                    " ORDER BY idx", (r["id"],)))
            out.append(Episode(
                id=r["id"], fingerprint=r["fingerprint"], episode=r["episode"],
                alertname=r["alertname"], labels=json.loads(r["labels"]), summary=r["summary"],
                starts_at=r["starts_at"], silence_url=r["silence_url"], route=r["route"],
                state=r["state"], acknowledged_by=r["acknowledged_by"],
                acknowledged_at=r["acknowledged_at"], acknowledged_via=r["acknowledged_via"],
                resolved_at=r["resolved_at"], created_at=r["created_at"], paged=paged,
                steps=steps, annotations=json.loads(r["annotations"]), source=r["source"],
                silence_id=r["silence_id"]))
        return out

    def _read_episodes(self, where: str, args: Sequence[Any], tail: str = "") -> list[Episode]:
        try:
            db = self._conn()
            # one read transaction, so an episode and its entries are one snapshot
            db.execute("BEGIN")
            try:
                rows = db.execute(f"SELECT * FROM alert_episodes WHERE {where} {tail}",
                                  args).fetchall()
                return self._episodes_of(db, rows)
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._drop()
            raise StoreUnavailable(f"sqlite {self.path}: {exc}") from None

    def episodes_by_key(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Episode]:
        out: dict[tuple[str, str], Episode] = {}
        for fp, ep in dict.fromkeys(keys):
            for e in self._read_episodes("fingerprint=? AND episode=?", (fp, ep)):
                out[(fp, ep)] = e
        return out

    def episode_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """See :meth:`Store.episode_states`: one indexed read per chunk of fingerprints, no
        paged entries or steps (the deliverer asks before each send)."""
        wanted = set(keys)
        out: dict[tuple[str, str], str] = {}
        for part in chunks(sorted({fp for fp, _ in wanted})):
            for fp, ep, state in self._read("SELECT fingerprint, episode, state FROM"
                                            f" alert_episodes WHERE fingerprint IN"
                                            f" ({marks(len(part))})", part):
                if (fp, ep) in wanted:
                    out[(str(fp), str(ep))] = str(state)
        return out

    def episodes(self, state: str | None = None, limit: int = 50) -> list[Episode]:
        where, args = ("state=?", [state]) if state else ("1=1", [])
        return self._read_episodes(where, (*args, limit),
                                   "ORDER BY created_at DESC, id LIMIT ?")

    def episode(self, id: str) -> Episode | None:
        found = self._read_episodes("id=?", (id,))
        return found[0] if found else None

    def episode_by_code(self, code: str, now: float) -> tuple[Episode, Paged] | None:
        if not code:
            return None
        rows = self._read("SELECT episode_id FROM episode_paged WHERE code=?", (code,))
        episode = self.episode(str(rows[0][0])) if rows else None
        if episode is None or code_expired(episode, now):
            return None
        paged = next((p for p in episode.paged if p.code == code), None)
        return None if paged is None else (episode, paged)

    def acknowledge(self, id: str, by: str, via: str, now: float) -> tuple[Episode, bool]:
        with self._tx() as db:
            row = db.execute("SELECT state FROM alert_episodes WHERE id=?", (id,)).fetchone()
            if row is None:
                raise KeyError(id)
            done = row[0] == "firing"
            if done:
                db.execute("UPDATE alert_episodes SET state='acknowledged', acknowledged_by=?,"
                           " acknowledged_at=?, acknowledged_via=? WHERE id=?",
                           (by, now, via, id))
                db.execute("UPDATE episode_steps SET state='cancelled', reason=?,"
                           " lease_until=0, lease_token='' WHERE episode_id=?"
                           " AND state='pending'", (f"acknowledged by {by}", id))
            rows = db.execute("SELECT * FROM alert_episodes WHERE id=?", (id,)).fetchall()
            return self._episodes_of(db, rows)[0], done

    def unknown_code_hit(self, client: str, now: float) -> int:
        with self._tx() as db:
            minute = int(now // 60)
            db.execute("INSERT INTO unknown_codes VALUES (?,?,1) ON CONFLICT(client, minute)"
                       " DO UPDATE SET n=n+1", (client, minute))
            row = db.execute("SELECT n FROM unknown_codes WHERE client=? AND minute=?",
                             (client, minute)).fetchone()
            return int(row[0])

    def unknown_code_hits(self, client: str, now: float) -> int:
        rows = self._read("SELECT n FROM unknown_codes WHERE client=? AND minute=?",
                          (client, int(now // 60)))
        return int(rows[0][0]) if rows else 0

    def claim_steps(self, now: float, lease: float, limit: int = 20) -> list[StepClaim]:
        out: list[StepClaim] = []
        # polled every delivery pass: a read first, the write lock only when something is due
        if not self._read("SELECT 1 FROM episode_steps WHERE state='pending' AND due_at <= ?"
                          " AND lease_until <= ? LIMIT 1", (now, now)):
            return out
        with self._tx() as db:
            rows = db.execute("SELECT episode_id, idx FROM episode_steps WHERE state='pending'"
                              " AND due_at <= ? AND lease_until <= ? ORDER BY due_at LIMIT ?",
                              (now, now, limit)).fetchall()
            for ep_id, idx in rows:
                token = secrets.token_hex(8)
                db.execute("UPDATE episode_steps SET lease_until=?, lease_token=?"
                           " WHERE episode_id=? AND idx=?", (now + lease, token, ep_id, idx))
                out.append(StepClaim(str(ep_id), int(idx), token, now + lease))
        return out

    def finish_step(self, claim: StepClaim, state: StepState, reason: str,
                    now: float) -> bool:
        with self._tx() as db:
            n = db.execute("UPDATE episode_steps SET state=?, reason=?, ran_at=?, lease_until=0,"
                           " lease_token='' WHERE episode_id=? AND idx=? AND lease_token=?"
                           " AND state='pending'",
                           (state, reason, now, claim.episode_id, claim.index,
                            claim.token)).rowcount
            return bool(n)

    def set_silence(self, id: str, silence_id: str | None) -> None:
        with self._tx() as db:
            db.execute("UPDATE alert_episodes SET silence_id=? WHERE id=?", (silence_id, id))

    # -- jobs -------------------------------------------------------------------------------
    def add_job(self, key: str, kind: str, payload: dict[str, Any], due_at: float,
                keep_until: float, now: float) -> bool:
        with self._tx() as db:
            return bool(db.execute(
                "INSERT INTO jobs (key, kind, payload, state, due_at, since, keep_until)"
                " VALUES (?,?,?,'pending',?,?,?) ON CONFLICT(key) DO NOTHING",
                (key, kind, dumps_vars(payload), due_at, now, keep_until)).rowcount)

    def claim_jobs(self, now: float, lease: float, limit: int = 20) -> list[JobClaim]:
        # polled every delivery pass: a read first, the write lock only when something is due
        if not self._read("SELECT 1 FROM jobs WHERE state='pending' AND due_at <= ?"
                          " AND lease_until <= ? LIMIT 1", (now, now)):
            return []
        out: list[JobClaim] = []
        with self._tx() as db:
            rows = db.execute("SELECT * FROM jobs WHERE state='pending' AND due_at <= ?"
                              " AND lease_until <= ? ORDER BY due_at LIMIT ?",
                              (now, now, limit)).fetchall()
            for r in rows:
                token = secrets.token_hex(8)
                db.execute("UPDATE jobs SET lease_until=?, lease_token=? WHERE key=?",
                           (now + lease, token, r["key"]))
                out.append(JobClaim(_job(r), token, now + lease))
        return out

    def settle_job(self, claim: JobClaim, state: JobState, now: float, *,
                   due_at: float | None = None, error: str = "") -> bool:
        with self._tx() as db:
            if state == "pending":
                n = db.execute("UPDATE jobs SET due_at=?, error=?, attempts=attempts+1,"
                               " lease_until=0, lease_token='' WHERE key=? AND lease_token=?"
                               " AND state='pending'",
                               (now if due_at is None else due_at, error, claim.job.key,
                                claim.token)).rowcount
            else:
                n = db.execute("UPDATE jobs SET state=?, error=?, lease_until=0,"
                               " lease_token='' WHERE key=? AND lease_token=?"
                               " AND state='pending'",
                               (state, error, claim.job.key, claim.token)).rowcount
            return bool(n)

    def job(self, key: str) -> Job | None:
        rows = self._read("SELECT * FROM jobs WHERE key=?", (key,))
        return _job(rows[0]) if rows else None

    def next_due(self) -> float | None:
        rows = self._read(
            "SELECT min(max(i.due_at, i.lease_until, coalesce(p.next_at, 0))) FROM items i"
            f" LEFT JOIN pacing p ON p.mobile = i.mobile WHERE i.state IN {_PENDING_SQL}")
        steps = self._read("SELECT min(max(due_at, lease_until)) FROM episode_steps"
                           " WHERE state='pending'")
        jobs = self._read("SELECT min(max(due_at, lease_until)) FROM jobs WHERE state='pending'")
        times = [float(r[0][0]) for r in (rows, steps, jobs) if r and r[0][0] is not None]
        return min(times) if times else None

    def oldest_due(self, now: float) -> float | None:
        rows = self._read(
            "SELECT min(max(i.due_at, i.lease_until, coalesce(p.next_at, 0))) FROM items i"
            f" LEFT JOIN pacing p ON p.mobile = i.mobile WHERE i.state IN {_PENDING_SQL}"
            " AND i.due_at <= ? AND i.lease_until <= ? AND coalesce(p.next_at, 0) <= ?",
            (now, now, now))
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- heartbeats -------------------------------------------------------------------------
    def beat(self, names: Sequence[str], now: float) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO heartbeats (name, last_seen, state) VALUES (?,?,'up')"
                           " ON CONFLICT(name) DO UPDATE SET"
                           " last_seen=max(last_seen, excluded.last_seen)",
                           [(n, now) for n in dict.fromkeys(names)])

    def heartbeats(self) -> dict[str, HeartbeatRecord]:
        return {r[0]: HeartbeatRecord(r[0], r[1], r[2], r[3], r[4]) for r in self._read(
            "SELECT name, last_seen, state, missing_since, lease_until FROM heartbeats")}

    def claim_heartbeat(self, name: str, action: Action, last_seen: float, since: float,
                        now: float, lease: float) -> HeartbeatClaim | None:
        with self._tx() as db:
            row = db.execute("SELECT last_seen, state, missing_since, lease_until FROM"
                             " heartbeats WHERE name=?", (name,)).fetchone()
            if row is None or row[3] > now:
                return None
            seen, state, pending = float(row[0]), str(row[1]), row[2]
            if action == "miss":
                if state != "up" or seen != last_seen:
                    return None
                if pending is not None and pending <= seen:  # a lapsed miss to resolve first
                    return None
                if pending is not None:  # a lapsed miss: the same moment
                    since = float(pending)
            elif pending is None or seen <= pending:
                return None
            else:
                since = float(pending)
            token = secrets.token_hex(8)
            db.execute("UPDATE heartbeats SET missing_since=?, lease_until=?, lease_token=?"
                       " WHERE name=?", (since, now + lease, token, name))
            return HeartbeatClaim(name, action, token, now + lease, since, seen)

    def finish_heartbeat(self, claim: HeartbeatClaim, now: float) -> bool:
        sets = ("state='missing'" if claim.action == "miss"
                else "state='up', missing_since=NULL")
        with self._tx() as db:
            return bool(db.execute(f"UPDATE heartbeats SET {sets}, lease_until=0,"
                                   " lease_token='' WHERE name=? AND lease_token=?",
                                   (claim.name, claim.token)).rowcount)

    def set_status(self, key: str, value: str | None) -> None:
        if value is None:
            # cheap when already clear: a read, no write lock (called after every send)
            if not self._read("SELECT 1 FROM status WHERE key=?", (key,)):
                return
            with self._tx() as db:
                db.execute("DELETE FROM status WHERE key=?", (key,))
            return
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO status VALUES (?,?)", (key, value))

    def get_status(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM status WHERE key=?", (key,))
        return str(rows[0][0]) if rows else None

    def ping(self) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO counters VALUES ('ping', 0)")

