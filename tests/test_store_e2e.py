"""The stores under the real ``bridge serve``: once-only paging across workers and across
instances sharing Redis, and 503 (then recovery without a restart) when the store is down."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Any

from conftest import (
    CATCH_ALL,
    DB_DOWN,
    SPEC_RULES,
    RedisServer,
    fixture_bytes,
    post_many,
    wait_until,
)
from fakejuhe import FakeJuhe


def test_twenty_at_once_two_workers_sqlite(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(SPEC_RULES)
    answers = post_many([bridge], DB_DOWN, 20)
    assert {a.status_code for a in answers} == {200}
    assert sum(a.json()["queued"] for a in answers) == 3
    fake_juhe.wait_for(3, timeout=10)
    time.sleep(1.0)
    assert sorted(m["mobile"] for m in fake_juhe.messages) == [
        "13800138000", "13800138001", "13900139000"]


def test_twenty_at_once_two_instances_on_redis(make_bridge: Any, fake_juhe: FakeJuhe,
                                               redis_url: str) -> None:
    a = make_bridge(SPEC_RULES, BRIDGE_STORE=redis_url)
    b = make_bridge(SPEC_RULES, BRIDGE_STORE=redis_url)
    answers = post_many([a, b], DB_DOWN, 20)
    assert {r.status_code for r in answers} == {200}
    assert sum(r.json()["queued"] for r in answers) == 3
    assert sum(r.json()["suppressed"] for r in answers) == 57
    fake_juhe.wait_for(3, timeout=10)
    time.sleep(1.0)
    assert sorted(m["mobile"] for m in fake_juhe.messages) == [
        "13800138000", "13800138001", "13900139000"]
    # both instances list the same notifications
    assert len(a.get("/api/notifications").json()["notifications"]) == 3
    assert len(b.get("/api/notifications").json()["notifications"]) == 3


def test_fixtures_on_redis(make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str) -> None:
    bridge = make_bridge(CATCH_ALL, BRIDGE_STORE=redis_url)
    body = fixture_bytes("17-gf-datasourceerror-values-null-redelivered.json")
    assert bridge.post("/webhook/grafana", body).json()["queued"] == 3
    assert bridge.post("/webhook/grafana", body).json()["suppressed"] == 3
    legacy = fixture_bytes("22-gf-legacy-alerting-evalmatches.json")
    assert bridge.post("/webhook/grafana", legacy).json()["queued"] == 1
    # its page goes out first (a firing SMS still waiting when its episode resolves is not sent)
    fake_juhe.wait_for(4, timeout=10)
    assert bridge.post("/webhook/grafana",
                       fixture_bytes("23-gf-legacy-ok.json")).json()["queued"] == 1
    msgs = fake_juhe.wait_for(5, timeout=10)
    time.sleep(0.8)
    assert len(fake_juhe.messages) == 5
    assert sorted(m["tpl_id"] for m in msgs) == ["111"] * 4 + ["222"]


def test_redis_down_gives_503_then_recovers(make_bridge: Any, fake_juhe: FakeJuhe,
                                            redis_url: str, redis_server: RedisServer) -> None:
    bridge = make_bridge(CATCH_ALL, BRIDGE_STORE=redis_url)
    assert bridge.get("/readyz").status_code == 200
    redis_server.stop()
    try:
        r = bridge.post("/webhook/alertmanager", DB_DOWN)
        assert r.status_code == 503
        assert r.json()["error"].startswith("store unavailable")
        ready = bridge.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["problems"][0].startswith("store unavailable")
        assert bridge.get("/healthz").status_code == 200
    finally:
        redis_server.start()
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 15)
    assert bridge.post("/webhook/alertmanager", DB_DOWN).json()["queued"] == 1
    [msg] = fake_juhe.wait_for(1, timeout=15)
    assert msg["vars"]["name"] == "DBDown"


def test_sqlite_locked_gives_503_then_recovers(make_bridge: Any, fake_juhe: FakeJuhe,
                                               tmp_path: Path) -> None:
    """A SQLite file another process holds the write lock on (or a full disk): 503, then 200
    once the lock is gone, without a restart."""
    import sqlite3

    bridge = make_bridge(CATCH_ALL)
    db = sqlite3.connect(tmp_path / "bridge.db", isolation_level=None, timeout=1)
    db.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        r = bridge.post("/webhook/alertmanager", DB_DOWN)
        assert r.status_code == 503, r.text
        # after the 5 s busy timeout once, not once per connection attempt (it was 25 s)
        assert time.monotonic() - t0 < 9
        assert r.json()["error"].startswith("store unavailable")
        assert bridge.get("/readyz").status_code == 503
    finally:
        db.execute("ROLLBACK")
        db.close()
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 15)
    assert bridge.post("/webhook/alertmanager", DB_DOWN).json()["queued"] == 1
    [msg] = fake_juhe.wait_for(1, timeout=15)
    assert msg["vars"]["name"] == "DBDown"
    assert stat.S_ISREG(os.stat(tmp_path / "bridge.db").st_mode)


def test_redis_dedup_records_live_as_long_as_bridge_retention(
        make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str, redis_server: RedisServer) -> None:
    """Issue 20.12: dedup records on Redis lived max(7 days, repeat_interval) whatever
    BRIDGE_RETENTION said; they live BRIDGE_RETENTION (at least the longest repeat_interval,
    which start-up checks), as on SQLite."""
    bridge = make_bridge(CATCH_ALL, BRIDGE_STORE=redis_url, BRIDGE_RETENTION="5h")
    assert bridge.post("/webhook/alertmanager", DB_DOWN).json()["queued"] == 1
    client = redis_server.client()
    keys = client.keys("{bridge}:dedup:*")
    assert len(keys) == 1
    assert 5 * 3600 - 30 <= client.ttl(keys[0]) <= 5 * 3600
    client.close()
