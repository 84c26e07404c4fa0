"""The heartbeat records of both stores (docs/heartbeats.md; the contract in
``bridge/store/base.py``): beats, and transitions leased once, fenced by their token, with the
moment of a lapsed miss kept. SQLite in ``tmp_path`` and a real redis-server; time is
injected."""

from __future__ import annotations

import threading

from bridge.decide.heartbeats import HeartbeatClaim, HeartbeatRecord
from bridge.store import Store, open_store

T0 = 1_790_000_000.125


def test_beats_keep_the_latest_and_make_a_record(store: Store) -> None:
    assert store.heartbeats() == {}
    store.beat(["a", "b", "a"], T0)
    store.beat(["a"], T0 + 5.5)
    store.beat(["a"], T0 + 1)  # a late (out of order) beat never moves it back
    assert store.heartbeats() == {"a": HeartbeatRecord("a", T0 + 5.5, "up", None, 0.0),
                                  "b": HeartbeatRecord("b", T0, "up", None, 0.0)}


def test_a_miss_is_leased_once_then_missing_then_back(store: Store) -> None:
    store.beat(["a"], T0)
    claim = store.claim_heartbeat("a", "miss", T0, T0 + 30, T0 + 30.5, 60)
    assert claim is not None
    assert (claim.action, claim.missing_since, claim.last_seen, claim.lease_until) == (
        "miss", T0 + 30, T0, T0 + 90.5)
    assert store.claim_heartbeat("a", "miss", T0, T0 + 31, T0 + 31, 60) is None  # leased
    assert store.heartbeats()["a"] == HeartbeatRecord("a", T0, "up", T0 + 30, T0 + 90.5)
    assert store.finish_heartbeat(claim, T0 + 31)
    assert store.heartbeats()["a"] == HeartbeatRecord("a", T0, "missing", T0 + 30, 0.0)
    # missing: no second page, and nothing to resolve until a beat
    assert store.claim_heartbeat("a", "miss", T0, T0 + 100, T0 + 100, 60) is None
    assert store.claim_heartbeat("a", "back", T0, T0 + 100, T0 + 100, 60) is None
    store.beat(["a"], T0 + 200)
    back = store.claim_heartbeat("a", "back", T0 + 200, T0 + 999, T0 + 200.5, 60)
    assert back is not None and back.missing_since == T0 + 30 and back.last_seen == T0 + 200
    assert store.finish_heartbeat(back, T0 + 201)
    assert store.heartbeats()["a"] == HeartbeatRecord("a", T0 + 200, "up", None, 0.0)


def test_a_miss_needs_the_last_beat_the_caller_read(store: Store) -> None:
    store.beat(["a"], T0)
    store.beat(["a"], T0 + 29)  # a beat between the timer's read and its claim
    assert store.claim_heartbeat("a", "miss", T0, T0 + 30, T0 + 30, 60) is None
    assert store.claim_heartbeat("nobody", "miss", T0, T0 + 30, T0 + 30, 60) is None


def test_a_lapsed_miss_is_decided_again_with_its_moment_and_fenced(store: Store) -> None:
    store.beat(["a"], T0)
    first = store.claim_heartbeat("a", "miss", T0, T0 + 30, T0 + 30, 60)
    assert first is not None
    again = store.claim_heartbeat("a", "miss", T0, T0 + 95, T0 + 95, 60)  # lease lapsed
    assert again is not None and again.missing_since == T0 + 30 and again.token != first.token
    assert not store.finish_heartbeat(first, T0 + 96)
    assert store.finish_heartbeat(again, T0 + 96)
    assert store.heartbeats()["a"].state == "missing"


def test_a_beat_after_a_lapsed_miss_resolves_it(store: Store) -> None:
    store.beat(["a"], T0)
    assert store.claim_heartbeat("a", "miss", T0, T0 + 30, T0 + 30, 60) is not None
    store.beat(["a"], T0 + 40)  # the runner died; beats came back
    assert store.claim_heartbeat("a", "miss", T0 + 40, T0 + 70, T0 + 100, 60) is None
    back = store.claim_heartbeat("a", "back", T0 + 40, T0 + 70, T0 + 100, 60)
    assert back is not None and back.missing_since == T0 + 30


def test_racing_runners_lease_a_miss_once(store: Store) -> None:
    store.beat(["a"], T0)
    stores = [open_store(store.url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    got: list[HeartbeatClaim | None] = []

    def run(s: Store) -> None:
        barrier.wait()
        got.append(s.claim_heartbeat("a", "miss", T0, T0 + 30, T0 + 30, 60))

    threads = [threading.Thread(target=run, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for s in stores:
        s.close()
    assert len(got) == 6 and sum(c is not None for c in got) == 1
