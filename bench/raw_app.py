#!/usr/bin/env python3
"""The raw-storage intake baseline (issue 14): a bare handler that parses the same Alertmanager
body as the bridge and writes the same number of rows in one atomic step, under the same
gunicorn settings as ``bridge serve`` (gthread workers, 32 threads each, keepalive 2, timeout
30, no access log), bound to 127.0.0.1.

    python bench/raw_app.py --port 18002 --store sqlite:/tmp/raw.db [--rows-per-alert 1]
    python bench/raw_app.py --port 18002 --store redis://127.0.0.1:6379/0 --rows-per-alert 2

Rows: one per alert and mobile (``--rows-per-alert``: 1 for the 10-SMS body, 2 for the
20-SMS body where two routes each page one mobile). SQLite: WAL, ``synchronous=NORMAL``, one
``executemany`` upsert in one transaction per request (one connection per thread; the threads
of a worker take turns on a lock around the transaction, as the bridge's SQLite store does,
rather than in SQLite's sleeping busy handler). Redis: one
``EVALSHA`` per request that ``HSET``s each row and ``ZADD``s it to a queue (run redis-server
with ``--appendonly yes``). The answer is the same small JSON as the bridge's.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import threading
from typing import Any

import redis
from bare_app import BareApplication  # bench/ is on sys.path when run as a script
from flask import Flask, jsonify, request

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS item (key TEXT PRIMARY KEY, mobile TEXT NOT NULL,"
    " fingerprint TEXT NOT NULL, status TEXT NOT NULL, vars TEXT NOT NULL, created REAL NOT NULL)"
)
UPSERT = (
    "INSERT INTO item (key, mobile, fingerprint, status, vars, created) VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT(key) DO UPDATE SET status = excluded.status, vars = excluded.vars"
)
LUA = """
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], 'mobile', ARGV[3*i-2], 'vars', ARGV[3*i-1], 'status', 'queued')
  redis.call('ZADD', 'raw:queue', ARGV[3*i], KEYS[i])
end
return #KEYS
"""
MOBILES = ("13800138000", "13900139000")


def _rows(body: dict[str, Any], per_alert: int) -> list[tuple[str, str, str, str]]:
    """(key, mobile, fingerprint, vars JSON) for each alert x mobile of an Alertmanager body."""
    out = []
    for alert in body.get("alerts", []):
        labels = alert.get("labels", {})
        fp = str(alert.get("fingerprint", ""))
        vars_json = json.dumps({"name": labels.get("alertname", ""),
                                "instance": labels.get("instance", ""),
                                "summary": alert.get("annotations", {}).get("summary", ""),
                                "status": alert.get("status", "")}, ensure_ascii=False)
        for mobile in MOBILES[:per_alert]:
            out.append((f"{fp}:{mobile}", mobile, fp, vars_json))
    return out


def create_app(store: str, per_alert: int) -> Flask:
    """The baseline app on ``sqlite:PATH`` or a ``redis://`` URL."""
    app = Flask("raw")
    local = threading.local()
    if store.startswith("sqlite:"):
        path = store[len("sqlite:"):]
        init = sqlite3.connect(path)
        init.execute("PRAGMA journal_mode=WAL")
        init.execute(SCHEMA)
        init.commit()
        init.close()

        lock = threading.Lock()  # the threads of a worker take turns, as the bridge's do

        def write(rows: list[tuple[str, str, str, str]], now: float) -> None:
            db = getattr(local, "db", None)
            if db is None:
                db = local.db = sqlite3.connect(path, timeout=5, isolation_level=None)
                db.execute("PRAGMA synchronous=NORMAL")
            with lock:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(UPSERT, [(k, m, f, "queued", v, now) for k, m, f, v in rows])
                db.execute("COMMIT")
    else:
        client = redis.Redis.from_url(store)
        script = client.register_script(LUA)

        def write(rows: list[tuple[str, str, str, str]], now: float) -> None:
            args: list[Any] = []
            for _, mobile, _, vars_json in rows:
                args += [mobile, vars_json, now]
            script(keys=[f"raw:item:{k}" for k, _, _, _ in rows], args=args)

    @app.post("/webhook/<source>")
    def webhook(source: str) -> Any:
        import time
        body = json.loads(request.get_data(cache=False))
        rows = _rows(body, per_alert)
        write(rows, time.time())
        return jsonify({"alerts": len(body.get("alerts", [])), "queued": len(rows),
                        "suppressed": 0, "held": 0})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    ap.add_argument("--store", required=True, help="sqlite:PATH or redis://HOST:PORT/DB")
    ap.add_argument("--rows-per-alert", type=int, default=1, choices=(1, 2))
    args = ap.parse_args()
    BareApplication(args.port, args.workers, args.threads,
                    lambda: create_app(args.store, args.rows_per_alert)).run()


if __name__ == "__main__":
    main()
