"""The deliverer in one process, on a real SQLite store and the fake Juhe: how a claim is
worked through (leases, backlogs, stop)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from conftest import CATCH_ALL, KEY
from fakejuhe import FakeJuhe

from bridge.config import Settings
from bridge.delivery import Deliverer, DeliveryPolicy
from bridge.juhe import JuheClient
from bridge.plan import Notification
from bridge.rules.load import load_rules
from bridge.store.base import Policy
from bridge.store.sqlite import SqliteStore


def backlog(store: SqliteStore, n: int) -> None:
    notes = [Notification(mobile="13800138000", fingerprint=f"fp{i}", status="firing",
                          episode="e", route="r", alertname=f"A{i}", tpl_id=111,
                          variables={"name": f"A{i}"}) for i in range(n)]
    store.record(notes, Policy(), time.time())


def test_a_backlog_goes_out_within_the_lease_once_each(tmp_path: Path,
                                                       fake_juhe: FakeJuhe) -> None:
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    backlog(store, 6)
    fake_juhe.delay = 0.15
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        policy = DeliveryPolicy.from_settings(Settings(), lease=0.5)
        d = Deliverer(store, client, lambda: rules, policy)
        assert d.run_once() == 1
        # half the 0.5 s lease allows two sends of 0.15 s; the rest was given back at once
        assert len(fake_juhe.messages) == 2
        assert store.counts()["queued"] == 4
        while d.run_once():
            pass
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == [f"A{i}" for i in range(6)]
    assert store.counts()["sent"] == 6


def test_stop_gives_the_rest_back(tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    backlog(store, 5)
    fake_juhe.delay = 0.2
    stop = threading.Event()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules)
        t = threading.Thread(target=d.run_forever, args=(stop, 0.05))
        t.start()
        assert fake_juhe.wait_for(1, timeout=5)
        stop.set()
        t.join(5)
    assert not t.is_alive()
    counts = store.counts()
    assert counts["sent"] + counts["queued"] == 5
    assert counts["sent"] == len(fake_juhe.messages) < 5
    # given back, not leased: due again at once
    assert len(store.claim(time.time(), 60, 10)[0].items) == counts["queued"]
