"""One contract suite for every store (huey's ``StorageTests``): SQLite in ``tmp_path``, a real
redis-server (``conftest.redis_url``), a master watched by three sentinels and a real Redis
Cluster. Time is injected (``now``); nothing sleeps for it to pass.

The concurrency tests start 8 processes (``spawn``: each opens its own store from ``store.url``)
that call the store at the same moment, behind a barrier.
"""

from __future__ import annotations

import multiprocessing
import queue
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.decide.episodes import EpisodeInfo, StepSpec, valid_code
from bridge.decide.types import EpisodeMark, Notification
from bridge.errors import StoreUnavailable
from bridge.rules.render import ACK_PLACEHOLDER
from bridge.store import PAGING_POLICY, Claim, Item, Outcome, Policy, PolicyRow, Store, open_store
from bridge.store.base import STATES, episode_text
from bridge.store.redis.store import RedisStore
from bridge.store.sqlite.store import SqliteStore

#: A fixed "now" with a fraction, to check that times come back exactly.
T0 = 1_790_000_000.125
M1, M2, M3 = "13800138000", "13800138001", "13900139000"
EP = "2026-09-21T12:00:00+00:00"
NO_LIMITS = Policy()


def note(mobile: str = M1, fp: str = "fp-disk", status: str = "firing", episode: str = EP,
         **kw: Any) -> Notification:
    """A notification with sensible defaults; ``kw`` overrides any other field."""
    fields: dict[str, Any] = {
        "route": "db-critical", "alertname": f"alert-{fp}", "tpl_id": 111,
        "variables": {"name": f"alert-{fp}", "summary": "磁盘 95% & #1"},
        "repeat_interval": 4 * 3600.0,
    }
    fields.update(kw)
    return Notification(mobile=mobile, fingerprint=fp, status=status,  # type: ignore[arg-type]
                        episode=episode, **fields)


def states(outcomes: list[Outcome]) -> list[tuple[str, str]]:
    return [(o.state, o.reason) for o in outcomes]


def ids_of(claims: list[Claim]) -> dict[str, list[str]]:
    return {c.mobile: [i.id for i in c.items] for c in claims}


def leases(claims: list[Claim]) -> dict[str, str]:
    """Item id -> the lease token of the claim that holds it."""
    return {i.id: c.token for c in claims for i in c.items}


def lease_all(store: Store, now: float = T0, lease: float = 3600) -> dict[str, str]:
    """Claim everything due at ``now``; item id -> lease token."""
    return leases(store.claim(now, lease, 100))


def by_id(store: Store, item_id: str) -> Item:
    found = [i for i in store.recent(limit=-1) if i.id == item_id]
    assert len(found) == 1, item_id
    return found[0]


#: The fixture giving each Redis topology's URL (tests/conftest.py).
REDIS_URLS = {"redis": "redis_url", "redis-sentinel": "sentinel_url",
              "redis-cluster": "cluster_url"}


@pytest.fixture(params=["sqlite", *REDIS_URLS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Every store: SQLite, one redis-server, the master three sentinels watch, and a
    three-master Redis Cluster (the last two started once for this module)."""
    s: Store
    if request.param == "sqlite":
        s = SqliteStore(str(tmp_path / "bridge.db"))
    else:
        s = RedisStore(request.getfixturevalue(REDIS_URLS[request.param]))
    yield s
    s.close()


# -- record: the paging policy table, one test per row ---------------------------------------
DAY = Policy(per_day=1, day="2026-09-21")
#: For each row of PAGING_POLICY: what was recorded before (one record call each, a second
#: apart from T0), then the notification and policy that must end in that row (at T0 + 100).
ROW_SCENARIOS: dict[str, tuple[list[tuple[Notification, Policy]], Notification, Policy]] = {
    "planned": ([(note(), NO_LIMITS)], note(state="suppressed", reason="muted"), NO_LIMITS),
    "dedup": ([(note(), NO_LIMITS)], note(), DAY),
    "already_resolved": ([(note(repeat_interval=10.0), NO_LIMITS),
                          (note(status="resolved"), NO_LIMITS)],
                         note(repeat_interval=10.0), NO_LIMITS),
    # (the test acknowledges the episode after the records before)
    "acknowledged": ([(note(repeat_interval=10.0), NO_LIMITS)], note(repeat_interval=10.0),
                     NO_LIMITS),
    "resolved_pairing": ([(note(fp="other"), NO_LIMITS)], note(status="resolved"), NO_LIMITS),
    "per_day": ([(note(mobile=M2, fp="a"), DAY)], note(), DAY),
    "per_mobile_per_hour": ([(note(fp="a"), NO_LIMITS)], note(), Policy(per_mobile_per_hour=1)),
    "storm": ([(note(fp="a"), Policy(storm_threshold=1, storm_window=600.0))], note(),
              Policy(storm_threshold=1, storm_window=600.0)),
    "queued": ([(note(mobile=M2), NO_LIMITS)], note(), Policy(per_mobile_per_hour=1, per_day=5,
                                                            storm_threshold=1,
                                                            storm_window=600.0, day="d")),
}


def test_every_policy_row_has_a_scenario() -> None:
    assert list(ROW_SCENARIOS) == [row.step for row in PAGING_POLICY]


@pytest.mark.parametrize("row", PAGING_POLICY, ids=[row.step for row in PAGING_POLICY])
def test_policy_row(store: Store, row: PolicyRow) -> None:
    """The row's condition holds (and no earlier row's): its state and reason, stored or only
    counted, as base.PAGING_POLICY says."""
    before, n, policy = ROW_SCENARIOS[row.step]
    for k, (b, p) in enumerate(before):
        store.record([b], p, T0 + k)
    if row.step == "acknowledged":
        [episode] = store.episodes()
        store.acknowledge(episode.id, "li", "api", T0 + 50)
    [o] = store.record([n], policy, T0 + 100)
    reason = n.reason if row.reason is None else row.reason
    assert (o.state, o.reason) == (row.state, reason)
    assert (o.id is not None) == row.stored
    if o.id is not None:
        item = by_id(store, o.id)
        assert (item.state, item.reason, item.fingerprint, item.episode) == (
            row.state, reason, n.fingerprint, n.episode)


def test_policy_rows_apply_in_order(store: Store) -> None:
    """A notification that meets several rows ends in the first: a duplicate over a spent
    day budget is a duplicate; a muted duplicate is stored muted."""
    store.record([note()], DAY, T0)
    out = store.record([note(), note(state="suppressed", reason="muted")], DAY, T0 + 1)
    assert states(out) == [("suppressed", "duplicate"), ("suppressed", "muted")]


# -- record: dedup ----------------------------------------------------------------------------
def test_record_stores_what_it_queues(store: Store) -> None:
    n = note()
    [out] = store.record([n], NO_LIMITS, T0)
    assert (out.notification, out.state, out.reason) == (n, "queued", "")
    assert out.id is not None
    [item] = store.recent()
    assert item == Item(
        id=out.id, mobile=M1, fingerprint="fp-disk", status="firing", episode=EP,
        route="db-critical", alertname="alert-fp-disk", tpl_id=111,
        variables={"name": "alert-fp-disk", "summary": "磁盘 95% & #1"}, state="queued",
        reason="", created_at=T0, updated_at=T0, due_at=T0, attempts=0, first_attempt_at=None,
        sid=None, fee=None)


def test_firing_is_deduplicated_within_repeat_interval(store: Store) -> None:
    first = store.record([note(), note()], NO_LIMITS, T0)
    assert states(first) == [("queued", ""), ("suppressed", "duplicate")]
    assert first[1].id is None
    assert states(store.record([note()], NO_LIMITS, T0 + 60)) == [("suppressed", "duplicate")]
    almost = T0 + 4 * 3600 - 0.5
    assert states(store.record([note()], NO_LIMITS, almost)) == [("suppressed", "duplicate")]
    # a repeat_interval later it pages again, and the interval counts from that page
    again = store.record([note()], NO_LIMITS, T0 + 4 * 3600)
    assert states(again) == [("queued", "")]
    assert again[0].id not in (None, first[0].id)
    assert states(store.record([note()], NO_LIMITS, T0 + 5 * 3600)) == [
        ("suppressed", "duplicate")]
    # a shorter repeat_interval of another route is honoured
    assert states(store.record([note(repeat_interval=600.0)], NO_LIMITS, T0 + 4 * 3600 + 600)
                  ) == [("queued", "")]
    # other mobiles, fingerprints and episodes are other notifications
    others = [note(mobile=M2), note(fp="fp-cpu"), note(episode="2026-09-22T00:00:00+00:00")]
    assert states(store.record(others, NO_LIMITS, T0 + 60)) == [("queued", "")] * 3
    assert store.counts()["queued"] == 6


def test_resolved_only_after_a_paged_firing_once(store: Store) -> None:
    resolved = note(status="resolved")
    never = note(fp="fp-never", status="resolved")
    assert states(store.record([never], NO_LIMITS, T0)) == [("suppressed", "not paged")]
    assert states(store.record([note()], NO_LIMITS, T0 + 1)) == [("queued", "")]
    out = store.record([resolved, resolved, note(mobile=M2, status="resolved"),
                        note(status="resolved", episode="2026-09-20T00:00:00+00:00")],
                       NO_LIMITS, T0 + 2)
    assert states(out) == [("queued", ""), ("suppressed", "duplicate"),
                           ("suppressed", "not paged"), ("suppressed", "not paged")]
    assert out[0].id is not None and [o.id for o in out[1:]] == [None, None, None]
    assert states(store.record([resolved], NO_LIMITS, T0 + 86400)) == [
        ("suppressed", "duplicate")]
    assert [(i.status, i.state) for i in store.recent()] == [("resolved", "queued"),
                                                            ("firing", "queued")]


def test_a_resolved_episode_never_pages_firing_again(store: Store) -> None:
    """Stale or out-of-order redeliveries (Grafana re-sends old bodies for days)."""
    assert states(store.record([note()], NO_LIMITS, T0)) == [("queued", "")]
    assert states(store.record([note(status="resolved")], NO_LIMITS, T0 + 60)) == [
        ("queued", "")]
    # the same firing body again, after repeat_interval: the episode is over
    assert states(store.record([note()], NO_LIMITS, T0 + 5 * 3600)) == [
        ("suppressed", "already resolved")]
    # resolved before firing (out of order): neither pages
    late = note(fp="fp-late")
    assert states(store.record([note(fp="fp-late", status="resolved")], NO_LIMITS, T0)) == [
        ("suppressed", "not paged")]
    assert states(store.record([late], NO_LIMITS, T0 + 1)) == [
        ("suppressed", "already resolved")]
    # a new episode of the same alert pages as usual
    assert states(store.record([note(episode="2026-09-22T00:00:00+00:00")], NO_LIMITS,
                               T0 + 5 * 3600)) == [("queued", "")]
    assert store.counts()["queued"] == 3


def test_resolved_not_paged_when_the_firing_was_held_back_by_a_limit(store: Store) -> None:
    policy = Policy(per_mobile_per_hour=1)
    out = store.record([note(fp="a"), note(fp="b")], policy, T0)
    assert states(out) == [("queued", ""), ("suppressed", "per_mobile_per_hour limit")]
    out = store.record([note(fp="a", status="resolved"), note(fp="b", status="resolved")],
                       NO_LIMITS, T0 + 10)
    assert states(out) == [("queued", ""), ("suppressed", "not paged")]


def test_muted_is_stored_as_suppressed_and_keeps_no_dedup(store: Store) -> None:
    muted = note(state="suppressed", reason="muted")
    out = store.record([muted, muted], NO_LIMITS, T0)
    assert states(out) == [("suppressed", "muted")] * 2
    assert out[0].id is not None and out[1].id is not None and out[0].id != out[1].id
    assert [(i.state, i.reason, i.due_at) for i in store.recent()] == [
        ("suppressed", "muted", T0)] * 2
    assert store.claim(T0 + 1, 60, 10) == []
    # muting did not record a page: unmuted, it pages; its resolved is not "not paged"
    assert states(store.record([note()], NO_LIMITS, T0 + 5)) == [("queued", "")]
    assert states(store.record([note(status="resolved")], NO_LIMITS, T0 + 6)) == [("queued", "")]


# -- record: limits -----------------------------------------------------------------------------
def test_per_mobile_per_hour(store: Store) -> None:
    policy = Policy(per_mobile_per_hour=3)
    out = store.record([note(fp=f"fp{i}") for i in range(10)] + [note(mobile=M2)], policy, T0)
    assert states(out) == [("queued", "")] * 3 + [
        ("suppressed", "per_mobile_per_hour limit")] * 7 + [("queued", "")]
    assert all(o.id is not None for o in out)
    assert store.counts() == {**dict.fromkeys(STATES, 0), "queued": 4, "suppressed": 7}
    limited = store.recent(limit=-1, state="suppressed")
    assert {i.reason for i in limited} == {"per_mobile_per_hour limit"}
    # suppressed by a limit still counts as recorded: no second try within repeat_interval
    assert states(store.record([note(fp="fp5")], NO_LIMITS, T0 + 10)) == [
        ("suppressed", "duplicate")]
    # the hour slides: at T0 + 3599.9 the three still count, at T0 + 3600 they no longer do
    assert states(store.record([note(fp="x")], policy, T0 + 3599.9)) == [
        ("suppressed", "per_mobile_per_hour limit")]
    assert states(store.record([note(fp="y")], policy, T0 + 3600)) == [("queued", "")]


def test_per_day(store: Store) -> None:
    policy = Policy(per_day=5, day="2026-09-21")
    out = store.record([note(mobile=m, fp=f"fp{i}") for i in range(4) for m in (M1, M2)],
                       policy, T0)
    assert states(out) == [("queued", "")] * 5 + [("suppressed", "per_day limit")] * 3
    later = store.record([note(mobile=M3)], policy, T0 + 3600)
    assert states(later) == [("suppressed", "per_day limit")]
    tomorrow = Policy(per_day=5, day="2026-09-22")
    assert states(store.record([note(mobile=M3, fp="n")], tomorrow, T0 + 86400)) == [
        ("queued", "")]


def test_storm_holds_what_passes_the_threshold_until_the_window_ends(store: Store) -> None:
    policy = Policy(storm_threshold=3, storm_window=120.0)
    out = store.record([note(fp=f"fp{i}") for i in range(10)] + [note(mobile=M2)], policy, T0)
    assert states(out) == [("queued", "")] * 3 + [("held", "storm")] * 7 + [("queued", "")]
    held = store.recent(limit=-1, state="held")
    assert len(held) == 7 and {(i.due_at, i.mobile) for i in held} == {(T0 + 120, M1)}
    assert states(store.record([note(fp="late")], policy, T0 + 119)) == [("held", "storm")]
    assert store.recent(limit=1)[0].due_at == T0 + 120
    # the held ones are due when the window ends, not before
    first = store.claim(T0, 300, 10)
    assert sorted((c.mobile, len(c.items)) for c in first) == [(M1, 3), (M2, 1)]
    for c in first:
        store.mark_sent([i.id for i in c.items], "s", 1, T0, token=c.token, pace_until=T0)
    assert store.claim(T0 + 119, 300, 10) == []
    [at_end] = store.claim(T0 + 120, 300, 10)
    assert at_end.mobile == M1 and {i.state for i in at_end.items} == {"held"}
    assert len(at_end.items) == 8
    # a new window starts after the old one ended
    out = store.record([note(fp=f"new{i}") for i in range(4)], policy, T0 + 120)
    assert states(out) == [("queued", "")] * 3 + [("held", "storm")]
    assert store.recent(limit=1)[0].due_at == T0 + 240


def test_storm_and_day_and_hour_together(store: Store) -> None:
    policy = Policy(per_mobile_per_hour=4, per_day=100, storm_threshold=2, storm_window=60.0,
                    day="2026-09-21")
    out = store.record([note(fp=f"fp{i}") for i in range(6)], policy, T0)
    # held SMS do not count against the hour (only what is queued does)
    assert states(out) == [("queued", "")] * 2 + [("held", "storm")] * 4
    out = store.record([note(fp=f"b{i}") for i in range(4)], policy, T0 + 60)
    assert states(out) == [("queued", "")] * 2 + [("suppressed", "per_mobile_per_hour limit")] * 2


# -- claim --------------------------------------------------------------------------------------
def test_claim_groups_by_mobile_oldest_first_and_leases(store: Store) -> None:
    out = store.record([note(fp="a"), note(mobile=M2, fp="a"), note(fp="b")], NO_LIMITS, T0)
    a1, a2, b1 = (o.id for o in out)
    claims = store.claim(T0 + 1, 30, 10)
    assert ids_of(claims) == {M1: [a1, b1], M2: [a2]}
    assert {c.lease_until for c in claims} == {T0 + 31}
    assert not any(c.gapped for c in claims)
    c1 = next(c for c in claims if c.mobile == M1)
    assert c1.items[0] == by_id(store, str(a1))
    assert c1.items[0].variables == {"name": "alert-a", "summary": "磁盘 95% & #1"}
    # leased: nothing for anybody until the lease ends
    assert store.claim(T0 + 2, 30, 10) == []
    assert store.claim(T0 + 30.9, 30, 10) == []
    again = store.claim(T0 + 31, 30, 10)
    assert ids_of(again) == {M1: [a1, b1], M2: [a2]}
    assert store.claim(T0 + 32, 30, 10) == []


def test_claim_respects_due_at_and_max_mobiles(store: Store) -> None:
    out = store.record([note(mobile=m) for m in (M1, M2, M3)], NO_LIMITS, T0)
    assert store.claim(T0 - 1, 30, 10) == []
    first = store.claim(T0, 30, 2)
    assert len(first) == 2
    rest = store.claim(T0, 30, 2)
    assert len(rest) == 1
    assert sorted(ids_of(first + rest).items()) == sorted(
        (m, [o.id]) for m, o in zip((M1, M2, M3), out, strict=True))
    assert store.claim(T0, 30, 0) == []


def test_pacing_min_gap_and_gapped(store: Store) -> None:
    """Issue 10.6: a claim holds its mobile; the mark of a send books the gap."""
    [a] = store.record([note(fp="a")], NO_LIMITS, T0)
    [c1] = store.claim(T0, 30, 10)
    assert ids_of([c1]) == {M1: [a.id]} and c1.gapped is False
    assert a.id is not None
    [b] = store.record([note(fp="b")], NO_LIMITS, T0 + 0.5)
    assert store.claim(T0 + 0.5, 30, 10) == []  # held while the claim sends
    assert store.mark_sent([a.id], "sid-a", 1, T0 + 1, token=c1.token,
                           pace_until=T0 + 61) == 1
    [c] = store.record([note(fp="c")], NO_LIMITS, T0 + 20)
    [other] = store.record([note(mobile=M2)], NO_LIMITS, T0 + 20)
    # M1's gap runs until T0 + 61 (the send + 60); other mobiles are not held up
    [co] = store.claim(T0 + 30, 30, 10)
    assert ids_of([co]) == {M2: [other.id]}
    store.mark_sent([str(other.id)], "sid-o", 1, T0 + 31, token=co.token, pace_until=T0 + 91)
    assert store.claim(T0 + 60.9, 30, 10) == []
    [c2] = store.claim(T0 + 61, 30, 10)
    assert ids_of([c2]) == {M1: [b.id, c.id]} and c2.gapped is True
    assert b.id is not None and c.id is not None
    store.mark_sent([b.id, c.id], "sid-bc", 1, T0 + 62, token=c2.token, pace_until=T0 + 122)
    # long after the gap ended, a new SMS is not "gapped"
    [d] = store.record([note(fp="d")], NO_LIMITS, T0 + 500)
    [c3] = store.claim(T0 + 500, 30, 10)
    assert ids_of([c3]) == {M1: [d.id]} and c3.gapped is False


def test_a_send_that_surely_did_not_go_out_books_no_gap(store: Store) -> None:
    """Issue 10.6: Juhe unreachable -> the retry is due after its backoff, not after a gap;
    a claim given back unsent leaves the mobile free at once."""
    [a] = store.record([note(fp="a")], NO_LIMITS, T0)
    [cl] = store.claim(T0, 30, 10)
    assert store.mark_retry([str(a.id)], T0 + 2.2, "juhe transient error 0: refused", T0,
                            token=cl.token, pace_until=T0) == 1
    assert store.claim(T0 + 2.1, 30, 10) == []
    [again] = store.claim(T0 + 2.2, 30, 10)
    assert ids_of([again]) == {M1: [a.id]}
    assert store.release([str(a.id)], T0 + 2.2, token=again.token, pace_until=T0 + 2.2) == 1
    assert ids_of(store.claim(T0 + 2.2, 30, 10)) == {M1: [a.id]}
    # a hold lapses with its lease
    [b] = store.record([note(mobile=M2)], NO_LIMITS, T0)
    store.claim(T0, 30, 10)
    [late] = store.claim(T0 + 30, 30, 10)
    assert ids_of([late]) == {M2: [b.id]}


def test_released_items_wait_for_the_gap(store: Store) -> None:
    out = store.record([note(fp="a"), note(fp="b")], NO_LIMITS, T0)
    a, b = (str(o.id) for o in out)
    [cl] = store.claim(T0, 30, 10)
    assert ids_of([cl]) == {M1: [a, b]}
    assert store.release([b], T0 + 60, token=cl.token) == 1
    assert store.claim(T0 + 0.5, 30, 10) == []  # released, the mobile stays held
    store.mark_sent([a], "sid", 1, T0 + 1, token=cl.token, pace_until=T0 + 61)
    item = by_id(store, b)
    assert (item.state, item.due_at, item.attempts, item.updated_at) == ("queued", T0 + 60, 0, T0)
    assert store.claim(T0 + 60.5, 30, 10) == []
    [again] = store.claim(T0 + 61, 30, 10)
    assert ids_of([again]) == {M1: [b]} and again.gapped is True


# -- delivery outcomes --------------------------------------------------------------------------
def test_mark_retry_sent_failed_and_release(store: Store) -> None:
    out = store.record([note(fp="a"), note(mobile=M2, fp="b")], NO_LIMITS, T0)
    a, b = (str(o.id) for o in out)
    lease = lease_all(store)
    store.mark_retry([a], T0 + 100, "juhe transient error 0: timeout", T0 + 1, token=lease[a],
                     pace_until=T0 + 1)
    item = by_id(store, a)
    assert (item.state, item.reason, item.due_at, item.attempts, item.first_attempt_at,
            item.updated_at) == ("retrying", "juhe transient error 0: timeout", T0 + 100, 1,
                                 T0 + 1, T0 + 1)
    assert store.claim(T0 + 99, 30, 10) == []  # the retry ended the lease, waits for due
    [c] = store.claim(T0 + 100, 30, 10)
    assert ids_of([c]) == {M1: [a]} and c.items[0].state == "retrying"
    store.mark_sent([a], "sid-1", 2, T0 + 101, reason="folded", token=c.token, pace_until=None)
    item = by_id(store, a)
    assert (item.state, item.sid, item.fee, item.reason, item.attempts, item.first_attempt_at,
            item.updated_at) == ("sent", "sid-1", 2, "folded", 2, T0 + 1, T0 + 101)
    store.mark_failed([b], "juhe permanent error 205401: bad mobile", T0 + 2, token=lease[b],
                      pace_until=None)
    item = by_id(store, b)
    assert (item.state, item.reason, item.attempts, item.first_attempt_at, item.sid) == (
        "failed", "juhe permanent error 205401: bad mobile", 1, T0 + 2, None)
    assert store.claim(T0 + 10_000, 30, 10) == []
    assert store.counts() == {**dict.fromkeys(STATES, 0), "sent": 1, "failed": 1}
    # empty and unknown ids are harmless
    calls: list[Callable[[list[str]], int]] = [
        lambda ids: store.mark_sent(ids, "s", 1, T0, token=c.token, pace_until=None),
        lambda ids: store.release(ids, T0, token=c.token),
        lambda ids: store.mark_retry(ids, T0, "r", T0, token=c.token, pace_until=None),
        lambda ids: store.mark_failed(ids, "r", T0, token=c.token, pace_until=None)]
    for call in calls:
        assert call([]) == 0
        assert call(["987654"]) == 0
    assert len(store.recent(limit=-1)) == 2


def test_mark_suppressed_sends_nothing_and_counts_no_attempt(store: Store) -> None:
    """Issue 20.4: the deliverer's mark for a firing SMS whose episode was acknowledged or
    resolved before it went out: suppressed, no attempt, fenced, the gap as given."""
    out = store.record([note(fp="a"), note(mobile=M2, fp="b")], NO_LIMITS, T0)
    a, b = (str(o.id) for o in out)
    lease = lease_all(store)
    assert store.mark_suppressed([a], "acknowledged", T0 + 3, token="other", pace_until=T0) == 0
    assert store.mark_suppressed([a], "acknowledged", T0 + 3, token=lease[a],
                                 pace_until=T0 + 3) == 1
    item = by_id(store, a)
    assert (item.state, item.reason, item.attempts, item.first_attempt_at, item.updated_at,
            item.sid) == ("suppressed", "acknowledged", 0, None, T0 + 3, None)
    store.mark_suppressed([b], "resolved", T0 + 3, token=lease[b], pace_until=None)
    assert by_id(store, b).reason == "resolved"
    assert store.counts() == {**dict.fromkeys(STATES, 0), "suppressed": 2}
    # no gap booked for M1; M2 is still held by its claim
    store.record([note(fp="c"), note(mobile=M2, fp="d")], NO_LIMITS, T0 + 4)
    assert list(ids_of(store.claim(T0 + 4, 30, 10))) == [M1]


def test_release_ends_the_lease_and_changes_only_due_at(store: Store) -> None:
    [o] = store.record([note()], NO_LIMITS, T0)
    i = str(o.id)
    [cl] = store.claim(T0, 300, 10)
    store.release([i], T0 + 5, token=cl.token, pace_until=T0)
    assert by_id(store, i).state == "queued" and by_id(store, i).attempts == 0
    assert store.claim(T0 + 4, 300, 10) == []
    assert ids_of(store.claim(T0 + 5, 300, 10)) == {M1: [i]}  # long before the lease's end


# -- reading ------------------------------------------------------------------------------------
def test_recent_newest_first_with_filters(store: Store) -> None:
    out = store.record([note(fp="a"), note(mobile=M2, fp="b"), note(fp="c"),
                        note(fp="d", state="suppressed", reason="muted")], NO_LIMITS, T0)
    a, b, c, d = (str(o.id) for o in out)
    store.mark_sent([a], "sid", 1, T0 + 1, token=lease_all(store)[a], pace_until=None)
    assert [i.id for i in store.recent()] == [d, c, b, a]
    assert [i.id for i in store.recent(limit=2)] == [d, c]
    assert store.recent(limit=0) == []
    assert [i.id for i in store.recent(state="queued")] == [c, b]
    assert [i.id for i in store.recent(mobile=M1)] == [d, c, a]
    assert [i.id for i in store.recent(mobile=M1, state="queued")] == [c]
    assert [i.id for i in store.recent(mobile=M1, state="sent", limit=1)] == [a]
    assert [i.id for i in store.recent(mobile=M1, limit=1)] == [d]
    assert store.recent(mobile=M3) == [] and store.recent(state="held") == []
    assert store.recent(state="nonsense") == []
    assert [int(x) for x in (a, b, c, d)] == sorted(int(x) for x in (a, b, c, d))


def test_recent_filters_over_many_items(store: Store) -> None:
    notes = [note(mobile=M1 if i % 3 else M2, fp=f"fp{i}") for i in range(450)]
    out = store.record(notes, NO_LIMITS, T0)
    m2 = [str(o.id) for o in out if o.notification.mobile == M2]
    lease = lease_all(store)
    store.mark_failed(m2[:5], "x", T0 + 1, token=lease[m2[0]], pace_until=None)
    assert [i.id for i in store.recent(limit=-1, mobile=M2, state="queued")] == m2[5:][::-1]
    assert [i.id for i in store.recent(limit=3, mobile=M2, state="failed")] == m2[:5][::-1][:3]
    assert len(store.recent(limit=-1)) == 450 and len(store.recent()) == 50


def test_counts(store: Store) -> None:
    assert store.counts() == dict.fromkeys(STATES, 0)
    out = store.record([note(fp=f"f{i}") for i in range(5)]
                       + [note(mobile=M2, state="suppressed", reason="muted")],
                       Policy(storm_threshold=2, storm_window=60.0), T0)
    assert store.counts() == {**dict.fromkeys(STATES, 0), "queued": 2, "held": 3,
                              "suppressed": 1}
    ids = [str(o.id) for o in out]
    lease = lease_all(store, T0 + 60)
    store.mark_sent(ids[:1], "s", 1, T0, token=lease[ids[0]], pace_until=None)
    store.mark_retry(ids[1:2], T0 + 5, "r", T0, token=lease[ids[1]], pace_until=None)
    store.mark_failed(ids[2:3], "f", T0, token=lease[ids[2]], pace_until=None)
    assert store.counts() == {"queued": 0, "sent": 1, "retrying": 1, "failed": 1,
                              "suppressed": 1, "held": 2}


# -- housekeeping -------------------------------------------------------------------------------
def test_prune_removes_only_finished_old_items(store: Store) -> None:
    out = store.record([note(fp=f"f{i}") for i in range(6)]
                       + [note(fp="muted", state="suppressed", reason="muted")], NO_LIMITS, T0)
    sent, failed, retrying, queued, leased, new_sent, muted = (str(o.id) for o in out)
    token = lease_all(store)[sent]
    store.mark_sent([sent], "s", 1, T0 + 10, token=token, pace_until=None)
    store.mark_failed([failed], "f", T0 + 10, token=token, pace_until=None)
    store.mark_retry([retrying], T0 + 20, "r", T0 + 10, token=token, pace_until=None)
    store.release([queued], T0, token=token, pace_until=T0)
    store.mark_sent([new_sent], "s", 1, T0 + 100, token=token, pace_until=None)
    assert store.prune(T0 + 50) == 3  # sent, failed, muted (suppressed at T0)
    left = {i.id: i.state for i in store.recent(limit=-1)}
    assert left == {retrying: "retrying", queued: "queued", leased: "queued", new_sent: "sent"}
    assert store.counts() == {**dict.fromkeys(STATES, 0), "queued": 2, "retrying": 1,
                              "sent": 1}
    assert store.prune(T0 + 50) == 0
    # what is still pending is still delivered
    [c] = store.claim(T0 + 20, 30, 10)
    assert ids_of([c]) == {M1: [retrying, queued]}
    assert store.prune(T0 + 100) == 0  # new_sent was updated at T0 + 100, not before
    assert store.prune(T0 + 100.5) == 1


def test_prune_in_small_steps_and_forgets_old_dedup(store: Store) -> None:
    out = store.record([note(fp=f"f{i}") for i in range(7)], NO_LIMITS, T0)
    token = lease_all(store)[str(out[0].id)]
    store.mark_sent([str(o.id) for o in out[:5]], "s", 1, T0 + 1, token=token, pace_until=None)
    store.prune(T0 - 1)  # nothing is that old
    assert len(store.recent(limit=-1)) == 7
    assert store.prune(T0 + 2, batch=2) == 5  # type: ignore[call-arg]
    assert {i.id for i in store.recent(limit=-1)} == {out[5].id, out[6].id}
    # every dedup record touched before T0 + 2 is gone, beyond the first step's batch
    again = store.record([note(fp=f"f{i}") for i in range(7)], NO_LIMITS, T0 + 3)
    assert states(again) == [("queued", "")] * 7


def test_prune_clears_pacing_gaps(store: Store) -> None:
    [a] = store.record([note(fp="a")], NO_LIMITS, T0)
    [cl] = store.claim(T0, 30, 10)
    store.mark_sent([str(a.id)], "s", 1, T0, token=cl.token, pace_until=T0 + 600)
    [b] = store.record([note(fp="b")], NO_LIMITS, T0 + 1)
    assert store.claim(T0 + 2, 30, 10) == []
    store.prune(T0 + 601)
    [c] = store.claim(T0 + 2, 30, 10)
    assert ids_of([c]) == {M1: [b.id]} and c.gapped is False


def untimed(status: str = "firing", fp: str = "legacy", **kw: Any) -> Notification:
    """A notification of an alert without startsAt: the store settles its episode."""
    return note(status=status, fp=fp, episode="", untimed=True, **kw)


def test_episodes_of_alerts_without_starts_at_are_settled_in_record(store: Store) -> None:
    fire, close = EpisodeMark("legacy", True), EpisodeMark("legacy", False)
    first = episode_text(T0)
    assert store.untimed_start("legacy") is None
    # resolved never seen firing: no episode, nothing paged, nothing opened
    [o] = store.record([untimed("resolved")], NO_LIMITS, T0 - 5, [close])
    assert (o.state, o.reason, o.notification.episode) == ("suppressed", "not paged", "")
    [o] = store.record([untimed()], NO_LIMITS, T0, [fire])
    assert (o.state, o.notification.episode) == ("queued", first)
    assert store.untimed_start("legacy") == first
    # the same episode later: a duplicate; an alert that paged nobody still opens its episode
    [o] = store.record([untimed()], NO_LIMITS, T0 + 5, [fire, EpisodeMark("other", True)])
    assert (o.state, o.reason, o.notification.episode) == ("suppressed", "duplicate", first)
    assert store.untimed_start("other") == episode_text(T0 + 5)
    # two mobiles resolved in one webhook both pair with the episode, then it closes
    store.record([untimed(mobile=M2)], NO_LIMITS, T0 + 6, [fire])
    out = store.record([untimed("resolved"), untimed("resolved", mobile=M2)], NO_LIMITS,
                       T0 + 10, [close])
    assert states(out) == [("queued", "")] * 2
    assert {o.notification.episode for o in out} == {first}
    assert store.untimed_start("legacy") is None
    # a resolved alert routed nowhere closes its episode too; the next firing is a new one
    store.record([], NO_LIMITS, T0 + 11, [EpisodeMark("other", False)])
    assert store.untimed_start("other") is None
    [o] = store.record([untimed()], NO_LIMITS, T0 + 20, [fire])
    assert (o.state, o.notification.episode) == ("queued", episode_text(T0 + 20))


def _fail_writes(store: Store) -> Callable[[], None]:
    """Make the store refuse every write of record (SQLite: a trigger; Redis: maxmemory);
    returns the undo."""
    if isinstance(store, SqliteStore):
        import sqlite3

        db = sqlite3.connect(store.path, isolation_level=None)
        db.execute("CREATE TRIGGER fail BEFORE INSERT ON items BEGIN"
                   " SELECT RAISE(ABORT, 'injected'); END")

        def undo_sqlite() -> None:
            db.execute("DROP TRIGGER fail")
            db.close()
        return undo_sqlite

    assert isinstance(store, RedisStore)
    # the master that holds the bridge's keys, whatever the topology (the store's own client)
    admin = store._node()
    admin.config_set("maxmemory", 1)

    def undo_redis() -> None:
        admin.config_set("maxmemory", 0)
    return undo_redis


def test_a_failed_record_leaves_the_episode_as_it_was(store: Store) -> None:
    """Issue 10.3: a legacy Grafana "ok" answered 503 and sent again still pages resolved."""
    fire, close = EpisodeMark("legacy", True), EpisodeMark("legacy", False)
    store.record([untimed()], NO_LIMITS, T0, [fire])
    undo = _fail_writes(store)
    try:
        with pytest.raises(StoreUnavailable):
            store.record([untimed("resolved")], NO_LIMITS, T0 + 10, [close])
    finally:
        undo()
    assert store.untimed_start("legacy") == episode_text(T0)
    [o] = store.record([untimed("resolved")], NO_LIMITS, T0 + 11, [close])
    assert (o.state, o.reason, o.notification.episode) == ("queued", "", episode_text(T0))


def test_marks_of_a_lapsed_lease_are_ignored(store: Store) -> None:
    """Issue 10.4: deliverer A's lease runs out mid-send, B claims the item again; A's late
    marks change nothing (and return 0), B's count."""
    [o] = store.record([note()], NO_LIMITS, T0)
    i = str(o.id)
    [a] = store.claim(T0, 30, 10)
    assert store.claim(T0 + 29, 30, 10) == []
    [b] = store.claim(T0 + 30, 30, 10)
    assert a.token and b.token and a.token != b.token
    for late in (lambda: store.mark_sent([i], "sid-a", 1, T0 + 31, token=a.token,
                                         pace_until=T0 + 91),
                 lambda: store.mark_retry([i], T0 + 40, "r", T0 + 31, token=a.token,
                                          pace_until=T0 + 31),
                 lambda: store.mark_failed([i], "f", T0 + 31, token=a.token, pace_until=None),
                 lambda: store.release([i], T0 + 31, token=a.token, pace_until=T0 + 31)):
        assert late() == 0
    item = by_id(store, i)
    assert (item.state, item.attempts, item.sid) == ("queued", 0, None)
    assert store.claim(T0 + 32, 30, 10) == []  # still B's, and its mobile still held
    assert store.mark_sent([i], "sid-b", 1, T0 + 33, token=b.token, pace_until=T0 + 93) == 1
    # a mark ends the lease: a second one, even with B's token, changes nothing
    assert store.mark_failed([i], "late", T0 + 34, token=b.token, pace_until=None) == 0
    assert store.mark_sent([i], "sid-x", 1, T0 + 34, token="", pace_until=None) == 0
    item = by_id(store, i)
    assert (item.state, item.attempts, item.sid) == ("sent", 1, "sid-b")


def test_a_failed_sms_did_not_page(store: Store) -> None:
    """Issue 10.1: mark_failed forgets the dedup record: the re-sent alert pages again, and
    its resolved is not paired with the failed firing."""
    [o] = store.record([note()], NO_LIMITS, T0)
    [cl] = store.claim(T0, 30, 10)
    store.mark_failed([str(o.id)], "juhe config error 10001", T0 + 1, token=cl.token,
                      pace_until=T0 + 1)
    assert states(store.record([note(status="resolved")], NO_LIMITS, T0 + 2)) == [
        ("suppressed", "not paged")]
    [again] = store.record([note(fp="fp-disk")], NO_LIMITS, T0 + 3)
    assert (again.state, again.reason) == ("suppressed", "already resolved")
    # in a new episode (the usual case: not resolved in between) a failed firing pages again
    [o2] = store.record([note(episode="e2")], NO_LIMITS, T0 + 4)
    [cl2] = store.claim(T0 + 4, 30, 10)
    store.mark_failed([str(o2.id)], "gave up", T0 + 5, token=cl2.token, pace_until=T0 + 5)
    assert states(store.record([note(episode="e2")], NO_LIMITS, T0 + 6)) == [("queued", "")]
    # a failed resolved is sent again when the resolved comes again
    [cl3] = store.claim(T0 + 6, 30, 10)
    store.mark_sent([cl3.items[0].id], "s", 1, T0 + 7, token=cl3.token, pace_until=T0 + 7)
    [r] = store.record([note(episode="e2", status="resolved")], NO_LIMITS, T0 + 8)
    [cl4] = store.claim(T0 + 8, 30, 10)
    store.mark_failed([str(r.id)], "f", T0 + 9, token=cl4.token, pace_until=T0 + 9)
    assert states(store.record([note(episode="e2", status="resolved")], NO_LIMITS,
                               T0 + 10)) == [("queued", "")]


def test_empty_batch_and_any_text_round_trip(store: Store) -> None:
    assert store.record([], NO_LIMITS, T0) == []
    variables = {"emoji": "🔥 disk", "ctl": "a\u0000b\x1f", "quote": '"\'\\/{}[]', "empty": ""}
    n = note(fp="fp:{x} y|z", episode="", route="路由", alertname="", variables=variables,
             tpl_id=2**40)
    [o] = store.record([n], NO_LIMITS, T0)
    [item] = store.recent()
    assert (item.id, item.variables, item.fingerprint, item.episode, item.route,
            item.alertname, item.tpl_id) == (o.id, variables, "fp:{x} y|z", "", "路由", "",
                                              2**40)
    assert states(store.record([n], NO_LIMITS, T0 + 1)) == [("suppressed", "duplicate")]


def test_status_notes(store: Store) -> None:
    assert store.get_status("juhe_config") is None
    store.set_status("juhe_config", "juhe config error 10001: 错误的请求KEY")
    assert store.get_status("juhe_config") == "juhe config error 10001: 错误的请求KEY"
    store.set_status("juhe_config", "other")
    assert store.get_status("juhe_config") == "other"
    assert store.get_status("else") is None
    store.set_status("juhe_config", None)
    store.set_status("juhe_config", None)
    assert store.get_status("juhe_config") is None


def test_ping_url_and_close(store: Store) -> None:
    store.ping()
    reopened = open_store(store.url)
    try:
        assert type(reopened) is type(store) and reopened.url == store.url
        [o] = store.record([note()], NO_LIMITS, T0)
        assert [i.id for i in reopened.recent()] == [o.id]
    finally:
        reopened.close()
    store.close()
    store.close()


# -- many processes at once ---------------------------------------------------------------------
BATCH = [note(mobile=m, fp=fp) for fp in ("a", "b") for m in (M1, M2, M3)]
N_PROCS = 8


def _record_worker(url: str, barrier: Any, results: Any) -> None:
    s = open_store(url)
    try:
        barrier.wait(30)
        outcomes = s.record(BATCH, Policy(per_mobile_per_hour=1), T0)
        results.put([(o.notification.mobile, o.state, o.reason) for o in outcomes])
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))
    finally:
        s.close()


def _claim_worker(url: str, barrier: Any, results: Any) -> None:
    s = open_store(url)
    try:
        barrier.wait(30)
        got: list[str] = []
        while True:
            claims = s.claim(T0, 600, 3)
            if not claims:
                break
            got.extend(i.id for c in claims for i in c.items)
        results.put(got)
    except Exception as exc:
        results.put(repr(exc))
    finally:
        s.close()


def run_at_once(target: Any, url: str) -> list[Any]:
    """Run ``target(url, barrier, results)`` in N_PROCS spawned processes; their results."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_PROCS)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(url, barrier, results)) for _ in range(N_PROCS)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=60) for _ in procs]
    except queue.Empty:
        pytest.fail("a worker process did not answer")
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    errors = [g for g in got if isinstance(g, str)]
    assert not errors, errors
    return got


def test_concurrent_record_pages_each_mobile_once(store: Store) -> None:
    everything = [o for outcomes in run_at_once(_record_worker, store.url) for o in outcomes]
    queued = sorted(m for m, state, _ in everything if state == "queued")
    assert queued == sorted([M1, M2, M3])  # per_mobile_per_hour=1: never two passes
    others = [(state, reason) for _, state, reason in everything if state != "queued"]
    assert len(everything) == N_PROCS * len(BATCH)
    assert set(others) <= {("suppressed", "duplicate"),
                           ("suppressed", "per_mobile_per_hour limit")}
    # each process saw the batch in order: per mobile, "a" then "b" -> the winner is "a"
    assert sorted((i.mobile, i.fingerprint) for i in store.recent(state="queued")) == [
        (M1, "a"), (M2, "a"), (M3, "a")]
    # exactly one (limited) record of each "b", the rest duplicates
    assert sorted(i.mobile for i in store.recent(state="suppressed")) == sorted([M1, M2, M3])
    assert others.count(("suppressed", "duplicate")) == len(everything) - 6


def test_concurrent_claim_claims_each_item_once(store: Store) -> None:
    mobiles = [f"1380013{n:04d}" for n in range(20)]
    out = store.record([note(mobile=m, fp=fp) for m in mobiles for fp in ("a", "b")],
                       NO_LIMITS, T0)
    claimed = [i for got in run_at_once(_claim_worker, store.url) for i in got]
    assert sorted(claimed, key=int) == sorted((str(o.id) for o in out), key=int)
    assert store.claim(T0, 600, 100) == []


# -- Redis only -----------------------------------------------------------------------------------
def test_redis_down_then_back_without_restart(redis_server: Any, redis_url: str) -> None:
    s = RedisStore(redis_url)
    try:
        [kept] = s.record([note(fp="kept")], NO_LIMITS, T0)
        redis_server.stop()
        calls: dict[str, Callable[[], object]] = {
            "record": lambda: s.record([note(fp="lost")], NO_LIMITS, T0 + 1),
            "claim": lambda: s.claim(T0 + 1, 30, 10),
            "ping": s.ping,
            "recent": s.recent,
            "counts": s.counts,
            "mark_sent": lambda: s.mark_sent([str(kept.id)], "s", 1, T0, token="t",
                                             pace_until=None),
            "get_status": lambda: s.get_status("x"),
        }
        for name, call in calls.items():
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match="redis redis://127.0.0.1"):
                call()
            assert time.monotonic() - started < 4, name
        redis_server.start()
        s.ping()
        [new] = s.record([note(fp="new")], NO_LIMITS, T0 + 2)
        assert new.state == "queued"
        # what was stored before the restart survived it (AOF), and the same object claims it
        assert ids_of(s.claim(T0 + 2, 30, 10)) == {M1: [kept.id, new.id]}
    finally:
        if redis_server.proc is None:
            redis_server.start()
        s.close()


def test_redis_errors_do_not_show_the_password() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    s = RedisStore(url)
    assert s.url == url
    with pytest.raises(StoreUnavailable) as info:
        s.ping()
    assert "s3cret-pw" not in str(info.value) and "***" in str(info.value)


def test_redis_wrong_password_is_unavailable(redis_server: Any, redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    admin.config_set("requirepass", "right-pw")
    try:
        s = RedisStore(redis_url.replace("redis://", "redis://:wrong-pw@"))
        with pytest.raises(StoreUnavailable) as info:
            s.record([note()], NO_LIMITS, T0)
        assert "wrong-pw" not in str(info.value)
        ok = RedisStore(redis_url.replace("redis://", "redis://:right-pw@"))
        assert states(ok.record([note()], NO_LIMITS, T0)) == [("queued", "")]
        ok.close()
        s.close()
    finally:
        admin2 = redis.Redis.from_url(redis_url, password="right-pw")
        admin2.config_set("requirepass", "")
        admin2.close()
        admin.close()


def test_redis_read_only_replica_is_unavailable_and_writes_nothing(redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    s = RedisStore(redis_url)
    try:
        admin.config_set("replica-read-only", "yes")
        admin.replicaof("127.0.0.1", "1")  # a primary that never answers: read-only now
        with pytest.raises(StoreUnavailable, match="ReadOnlyError|READONLY"):
            s.record([note()], NO_LIMITS, T0)
        with pytest.raises(StoreUnavailable):
            s.ping()
    finally:
        admin.replicaof("NO", "ONE")
        admin.close()
    assert states(s.record([note()], NO_LIMITS, T0)) == [("queued", "")]
    assert len(s.recent()) == 1
    s.close()


def test_redis_keys_are_bounded(redis_url: str) -> None:
    """After everything is finished and pruned, only a handful of fixed keys remain."""
    import redis

    s = RedisStore(redis_url)
    policy = Policy(per_mobile_per_hour=50, per_day=100, storm_threshold=2, storm_window=60,
                    day="2026-09-21")
    out = s.record([note(mobile=m, fp=f"fp{i}") for i in range(4) for m in (M1, M2)]
                   + [note(mobile=M3, state="suppressed", reason="muted")], policy, T0)
    s.record([], policy, T0, [EpisodeMark("legacy", True)])
    s.record([], policy, T0 + 1, [EpisodeMark("legacy", False)],
             resolved=[(f"fp{i}", EP) for i in range(4)])
    s.unknown_code_hit("1.2.3.4", T0)  # expires on its own
    s.set_status("juhe_config", "x")
    s.set_status("juhe_config", None)
    for c in s.claim(T0 + 60, 30, 10):
        s.mark_sent([i.id for i in c.items], "s", 1, T0 + 61, token=c.token, pace_until=T0 + 61)
    assert s.prune(T0 + 10_000) == len(out)
    s.ping()
    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = set(admin.keys("*"))
    admin.close()
    s.close()
    assert keys == {"{bridge}:seq", "{bridge}:day:2026-09-21", "{bridge}:ping",
                    f"{{bridge}}:unknown:1.2.3.4:{int(T0 // 60)}"}


def test_redis_out_of_memory_writes_nothing(redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url, decode_responses=True)
    s = RedisStore(redis_url)
    s.record([note(fp="before")], NO_LIMITS, T0)
    keys = sorted(admin.keys("*"))
    seq = admin.get("{bridge}:seq")
    try:
        admin.config_set("maxmemory", "1")
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError|OOM"):
            s.record([note(mobile=m, fp="x") for m in (M1, M2, M3)], NO_LIMITS, T0 + 1)
        with pytest.raises(StoreUnavailable, match="OutOfMemoryError|OOM"):
            s.ping()
        assert sorted(admin.keys("*")) == keys and admin.get("{bridge}:seq") == seq
    finally:
        admin.config_set("maxmemory", "0")
    assert states(s.record([note(fp="after")], NO_LIMITS, T0 + 2)) == [("queued", "")]
    s.close()
    admin.close()


def test_redis_config_warnings(redis_url: str) -> None:
    import redis

    admin = redis.Redis.from_url(redis_url)
    s = RedisStore(redis_url)
    assert s.config_warnings() == []
    try:
        admin.config_set("appendonly", "no")
        admin.config_set("maxmemory-policy", "allkeys-lru")
        warnings = s.config_warnings()
        assert len(warnings) == 2
        assert "appendonly yes" in warnings[0] and "noeviction" in warnings[1]
    finally:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("appendonly", "yes")  # starts an AOF rewrite: let it finish
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = admin.info("persistence")
            if info["aof_enabled"] and not info["aof_rewrite_in_progress"] and not info[
                    "aof_rewrite_scheduled"]:
                break
            time.sleep(0.05)
        admin.close()
        s.close()


def test_sqlite_reconnects_after_a_write_error(tmp_path: Path) -> None:
    """Found by a trial run: a connection opened while the file was read-only stayed
    read-only after the file became writable again, until a restart."""
    s = SqliteStore(str(tmp_path / "bridge.db"))
    s.ping()
    s._writer().execute("PRAGMA query_only=1")  # the write connection can no longer write
    with pytest.raises(StoreUnavailable, match="readonly"):
        s.record([note()], NO_LIMITS, T0)
    assert states(s.record([note()], NO_LIMITS, T0)) == [("queued", "")]
    s.close()


def test_claim_max_items_leaves_the_rest_due(store: Store) -> None:
    store.record([note(fp=f"fp{i}") for i in range(7)], NO_LIMITS, T0)
    [first] = store.claim(T0, 60, 10, max_items=3)
    assert [i.fingerprint for i in first.items] == ["fp0", "fp1", "fp2"]
    assert store.claim(T0, 60, 10, max_items=3) == []  # the mobile is held by the first
    store.mark_sent([i.id for i in first.items], "s", 1, T0, token=first.token, pace_until=T0)
    [second] = store.claim(T0, 60, 10, max_items=3)
    assert [i.fingerprint for i in second.items] == ["fp3", "fp4", "fp5"]
    store.release([i.id for i in second.items], T0 + 1, token=second.token, pace_until=T0)
    [third] = store.claim(T0, 60, 10)
    assert [i.fingerprint for i in third.items] == ["fp6"]  # fp3-5 given back, due at T0 + 1


# -- episodes, ack codes, escalation steps (docs/oncall.md) ----------------------------------
STEPS = (StepSpec(2.0, "dba-secondary", "page"), StepSpec(5.0, "lead", "page-lead"))
INFO = EpisodeInfo("DiskFull", {"alertname": "DiskFull", "host": "db1"}, "磁盘 95%",
                   T0 - 60, "http://am/#/silences/new")


def paging(mobile: str = M1, fp: str = "fp-disk", **kw: Any) -> Notification:
    """A firing notification of a route with two escalation steps, a resolved template and a
    variable rendering ack_code."""
    fields: dict[str, Any] = {"steps": STEPS, "info": INFO, "resolved_template": "ok",
                              "variables": {"name": "DiskFull", "ack": ACK_PLACEHOLDER}}
    fields.update(kw)
    return note(mobile=mobile, fp=fp, **fields)


def test_a_paging_firing_creates_its_episode_with_steps_and_codes(store: Store) -> None:
    out = store.record([paging(M1), paging(M2, variables={"name": "x"})], NO_LIMITS, T0)
    assert [o.state for o in out] == ["queued", "queued"]
    assert out[0].episode_id is not None and out[0].episode_id == out[1].episode_id
    [e] = store.episodes()
    assert (e.id, e.fingerprint, e.episode, e.alertname, e.labels, e.summary, e.starts_at,
            e.silence_url, e.route, e.state, e.created_at) == (
        out[0].episode_id, "fp-disk", EP, "alert-fp-disk", INFO.labels, "磁盘 95%", T0 - 60,
        "http://am/#/silences/new", "db-critical", "firing", T0)
    assert [(p.mobile, p.route, p.resolved_template, p.at, p.level, p.item_id)
            for p in e.paged] == [(M1, "db-critical", "ok", T0, 0, out[0].id),
                                  (M2, "db-critical", "ok", T0, 0, out[1].id)]
    code = e.paged[0].code
    assert code is not None and valid_code(code) and e.paged[1].code is None
    # the stored SMS carries the code, not the placeholder
    assert by_id(store, out[0].id or "").variables == {"name": "DiskFull", "ack": code}
    assert out[0].notification.variables["ack"] == code
    assert [(s.index, s.after, s.receiver, s.template, s.due_at, s.state, s.reason)
            for s in e.steps] == [(1, 2.0, "dba-secondary", "page", None, "pending", ""),
                                  (2, 5.0, "lead", "page-lead", None, "pending", "")]
    assert store.episode(e.id) == e
    assert store.episodes_by_key([("fp-disk", EP), ("nope", EP)]) == {("fp-disk", EP): e}
    assert store.episode_by_code(code, T0) == (e, e.paged[0])
    assert store.episode_by_code("Unknown12345", T0) is None


def test_a_repeat_page_keeps_the_stored_code_and_first_paged_entry(store: Store) -> None:
    store.record([paging(repeat_interval=10.0)], NO_LIMITS, T0)
    [o] = store.record([paging(repeat_interval=10.0)], NO_LIMITS, T0 + 20)
    [e] = store.episodes()
    assert len(e.paged) == 1 and e.paged[0].at == T0
    assert o.notification.variables["ack"] == e.paged[0].code
    assert by_id(store, o.id or "").variables["ack"] == e.paged[0].code


def test_codes_are_unique_per_episode_and_mobile(store: Store) -> None:
    store.record([paging(M1, fp=f"fp{i}") for i in range(5)]
                 + [paging(M2, fp=f"fp{i}") for i in range(5)], NO_LIMITS, T0)
    codes = [p.code for e in store.episodes(limit=100) for p in e.paged]
    assert len(codes) == 10 and len(set(codes)) == 10


def test_muted_limited_and_duplicate_firings_create_no_episode(store: Store) -> None:
    store.record([paging(state="suppressed", reason="muted")], NO_LIMITS, T0)
    store.record([paging(mobile=M2, fp="a"), paging(fp="b")], Policy(per_day=1, day="d"), T0)
    assert [e.fingerprint for e in store.episodes()] == ["a"]


def test_acknowledge_first_one_stands_and_cancels_steps(store: Store) -> None:
    [o] = store.record([paging()], NO_LIMITS, T0)
    eid = o.episode_id or ""
    e, done = store.acknowledge(eid, "li", "link", T0 + 1)
    assert done and (e.state, e.acknowledged_by, e.acknowledged_at, e.acknowledged_via) == (
        "acknowledged", "li", T0 + 1, "link")
    assert [(s.state, s.reason) for s in e.steps] == [("cancelled", "acknowledged by li")] * 2
    again, done2 = store.acknowledge(eid, "wang", "api", T0 + 2)
    assert not done2 and again == e == store.episode(eid)
    assert store.claim_steps(T0 + 100, 60) == []
    with pytest.raises(KeyError):
        store.acknowledge("nope", "li", "api", T0)
    assert [e.id for e in store.episodes("acknowledged")] == [eid]
    assert store.episodes("firing") == []


def test_a_resolved_alert_closes_its_episode_and_cancels_steps(store: Store) -> None:
    [o] = store.record([paging()], NO_LIMITS, T0)
    # a resolved alert whose route sends no resolved SMS still closes the episode
    store.record([], NO_LIMITS, T0 + 1, resolved=[("fp-disk", EP)])
    e = store.episode(o.episode_id or "")
    assert e is not None and (e.state, e.resolved_at) == ("resolved", T0 + 1)
    assert [(s.state, s.reason) for s in e.steps] == [("cancelled", "resolved")] * 2
    assert store.acknowledge(e.id, "li", "api", T0 + 2) == (e, False)
    code = e.paged[0].code or ""
    assert store.episode_by_code(code, T0 + 1 + 86400) == (e, e.paged[0])
    assert store.episode_by_code(code, T0 + 2 + 86400) is None
    # a resolved notification of a template reading ack_code gets the stored code
    [r] = store.record([note(status="resolved", variables={"ack": ACK_PLACEHOLDER})],
                       NO_LIMITS, T0 + 3)
    assert r.notification.variables == {"ack": code}


def test_an_untimed_alert_episode_is_closed_by_its_settled_start(store: Store) -> None:
    [o] = store.record([untimed(steps=STEPS)], NO_LIMITS, T0, [EpisodeMark("legacy", True)])
    store.record([], NO_LIMITS, T0 + 5, [EpisodeMark("legacy", False)],
                 resolved=[("legacy", "")])
    e = store.episode(o.episode_id or "")
    assert e is not None and (e.episode, e.state) == (episode_text(T0), "resolved")


def test_repeats_of_an_acknowledged_episode_are_suppressed(store: Store) -> None:
    [o] = store.record([paging(repeat_interval=10.0)], NO_LIMITS, T0)
    store.acknowledge(o.episode_id or "", "li", "api", T0 + 1)
    out = store.record([paging(repeat_interval=10.0), paging(M2, level=1)], NO_LIMITS, T0 + 20)
    assert states(out) == [("suppressed", "acknowledged")] * 2
    # resolved still goes out to who was paged
    [r] = store.record([note(status="resolved")], NO_LIMITS, T0 + 30, resolved=[("fp-disk", EP)])
    assert r.state == "queued"


def went_out(store: Store, at: float, how: str = "sent") -> None:
    """Deliver every due SMS at ``at``: sent (or, with ``how``, failed or retrying)."""
    for c in store.claim(at, 30, 10):
        ids = [i.id for i in c.items]
        if how == "sent":
            store.mark_sent(ids, "sid", 1, at, token=c.token, pace_until=at)
        elif how == "failed":
            store.mark_failed(ids, "juhe permanent error", at, token=c.token, pace_until=at)
        else:
            store.mark_retry(ids, at + 5, "juhe transient error", at, token=c.token,
                             pace_until=at)


@pytest.mark.parametrize("how", ["sent", "failed"])
def test_the_escalation_clock_starts_when_the_routes_first_sms_went_out(
        store: Store, how: str) -> None:
    """Issue 20.3: steps are due ``after`` the route's first SMS went out (sent, or ended
    failed), not when it was queued: pacing held it from T0 to T0 + 40, a retry to T0 + 45."""
    [o] = store.record([paging()], NO_LIMITS, T0)
    eid = o.episode_id or ""
    assert store.claim_steps(T0 + 1000, 60) == []  # not started while nothing went out
    went_out(store, T0 + 40, "retrying")
    assert store.claim_steps(T0 + 1000, 60) == []  # a retry is not out
    went_out(store, T0 + 45, how)
    e = store.episode(eid)
    assert e is not None and [s.due_at for s in e.steps] == [T0 + 47, T0 + 50]
    assert store.claim_steps(T0 + 46.9, 60) == []
    [c] = store.claim_steps(T0 + 47, 60)
    assert store.finish_step(c, "done", "paged 1", T0 + 47.5)
    # the step's page (level 1) going out, and a repeat of the route's page, move nothing
    store.record([paging(M2, level=1)], NO_LIMITS, T0 + 47.5)
    went_out(store, T0 + 48)
    store.record([paging(repeat_interval=1.0)], NO_LIMITS, T0 + 60)
    went_out(store, T0 + 61)
    e = store.episode(eid)
    assert e is not None and [(s.due_at, s.state, s.ran_at) for s in e.steps] == [
        (T0 + 47, "done", T0 + 47.5), (T0 + 50, "pending", None)]


@pytest.mark.parametrize("how", ["failed", "retrying"])
def test_paged_entries_note_when_a_firing_sms_was_first_sent(store: Store, how: str) -> None:
    """docs/oncall.md, "Resolved goes to who was paged": a Paged entry's ``sent_at`` is the
    first send of a firing SMS of the episode to that mobile (a repeat, an escalation page
    alike); an SMS that failed, is retried or was suppressed sets none."""
    [o] = store.record([paging(repeat_interval=10.0)], NO_LIMITS, T0)
    eid = o.episode_id or ""

    def sent_at() -> dict[str, float | None]:
        e = store.episode(eid)
        assert e is not None
        return {p.mobile: p.sent_at for p in e.paged}

    assert sent_at() == {M1: None}
    went_out(store, T0 + 1, how)
    assert sent_at() == {M1: None}
    store.record([paging(repeat_interval=10.0), paging(M2, level=1)], NO_LIMITS, T0 + 20)
    claims = {c.mobile: c for c in store.claim(T0 + 21, 30, 10)}
    store.mark_suppressed([i.id for i in claims[M2].items], "resolved", T0 + 21,
                          token=claims[M2].token, pace_until=T0 + 21)
    # M1's repeat (with its retry, if any) is sent
    assert store.mark_sent([i.id for i in claims[M1].items], "sid", 1, T0 + 22.5,
                           token=claims[M1].token, pace_until=T0 + 22.5) >= 1
    assert sent_at() == {M1: T0 + 22.5, M2: None}
    store.record([paging(repeat_interval=10.0)], NO_LIMITS, T0 + 40)
    went_out(store, T0 + 41)  # a later send keeps the first one's time
    assert sent_at() == {M1: T0 + 22.5, M2: None}


def test_pending_lists_an_addresss_undecided_items_due_or_not(store: Store) -> None:
    store.record([note(fp="a"), note(fp="b"), note(fp="c"), note(mobile=M2)], NO_LIMITS, T0)
    [c] = [c for c in store.claim(T0, 30, 10) if c.mobile == M1]
    a, b, _ = c.items
    store.mark_retry([a.id], T0 + 600, "juhe transient error", T0, token=c.token,
                     pace_until=None)
    store.mark_sent([b.id], "sid", 1, T0, token=c.token, pace_until=None)
    # "c" stays leased by the claim: pending still
    got = store.pending(M1)
    assert [(i.fingerprint, i.state, i.due_at) for i in got] == [
        ("a", "retrying", T0 + 600), ("c", "queued", T0)]
    assert [i.mobile for i in store.pending(M2)] == [M2]
    assert store.pending(M3) == []


def test_a_paged_entry_from_before_sent_at_counts_as_sent(store: Store) -> None:
    """An entry stored by a version that kept no ``sent_at`` reads as sent when it was paged
    (as every paged mobile got the resolved SMS then)."""
    import json
    import sqlite3

    [o] = store.record([paging()], NO_LIMITS, T0)
    eid = o.episode_id or ""
    if isinstance(store, SqliteStore):
        store.close()
        with sqlite3.connect(store.path) as db:   # as an older version's file
            db.execute("ALTER TABLE episode_paged DROP COLUMN sent_at")
        store = SqliteStore(store.path)
        e = store.episode(eid)
        store.close()
    else:
        assert isinstance(store, RedisStore)
        client = store._node()
        raw = json.loads(client.get(store._k(f"ep:{eid}")))
        for p in raw["paged"]:
            del p["sent"]
        client.set(store._k(f"ep:{eid}"), json.dumps(raw))
        e = store.episode(eid)
    assert e is not None and [(p.mobile, p.sent_at) for p in e.paged] == [(M1, T0)]


def test_an_escalation_page_going_out_starts_no_clock(store: Store) -> None:
    """Only the route's own page (level 0) starts the chain."""
    [o] = store.record([paging(M2, level=1)], NO_LIMITS, T0)
    went_out(store, T0 + 1)
    e = store.episode(o.episode_id or "")
    assert e is not None and [s.due_at for s in e.steps] == [None, None]


def test_steps_are_claimed_with_a_lease_once_and_finished_fenced(store: Store) -> None:
    [o] = store.record([paging()], NO_LIMITS, T0)
    eid = o.episode_id or ""
    went_out(store, T0)
    assert store.claim_steps(T0 + 1.9, 60) == []
    [c] = store.claim_steps(T0 + 2.0, 60)
    assert (c.episode_id, c.index, c.lease_until) == (eid, 1, T0 + 62.0)
    assert store.claim_steps(T0 + 3, 60) == []       # leased
    claims = store.claim_steps(T0 + 70, 60)          # lease lapsed; step 2 due too
    assert sorted((x.index, x.lease_until) for x in claims) == [(1, T0 + 130), (2, T0 + 130)]
    assert store.claim_steps(T0 + 70, 60) == []
    assert not store.finish_step(c, "done", "paged 1", T0 + 71)  # lapsed token
    for x in claims:
        assert store.finish_step(x, "done", f"paged {x.index}", T0 + 71)
        assert not store.finish_step(x, "done", "again", T0 + 72)
    e = store.episode(eid)
    assert e is not None and [(s.state, s.reason) for s in e.steps] == [
        ("done", "paged 1"), ("done", "paged 2")]
    assert store.claim_steps(T0 + 1000, 60) == []


def test_a_step_cancelled_while_claimed_cannot_be_finished(store: Store) -> None:
    [o] = store.record([paging()], NO_LIMITS, T0)
    went_out(store, T0)
    [c] = store.claim_steps(T0 + 2, 60)
    store.acknowledge(o.episode_id or "", "li", "api", T0 + 2.5)
    assert not store.finish_step(c, "done", "paged 1", T0 + 3)
    e = store.episode(o.episode_id or "")
    assert e is not None and e.steps[0].reason == "acknowledged by li"


def test_unknown_code_hits_count_per_client_and_minute(store: Store) -> None:
    minute = 60 * 29_833_333.0
    assert [store.unknown_code_hit("1.2.3.4", minute + i) for i in range(3)] == [1, 2, 3]
    assert store.unknown_code_hit("5.6.7.8", minute + 3) == 1
    assert store.unknown_code_hit("1.2.3.4", minute + 60) == 1
    # the count read back without counting (the login throttle's read)
    assert [store.unknown_code_hits(c, minute + 59) for c in ("1.2.3.4", "5.6.7.8", "9.9")] == [
        3, 1, 0]
    assert store.unknown_code_hits("1.2.3.4", minute + 60) == 1


def test_prune_deletes_resolved_episodes_with_their_codes(store: Store) -> None:
    [a] = store.record([paging(fp="a")], NO_LIMITS, T0)
    [b] = store.record([paging(fp="b")], NO_LIMITS, T0)
    store.record([], NO_LIMITS, T0 + 10, resolved=[("a", EP)])
    ea = store.episode(a.episode_id or "")
    assert ea is not None
    store.prune(T0 + 5)
    assert store.episode(ea.id) is not None
    store.prune(T0 + 11)
    assert store.episode(ea.id) is None and store.episode_by_code(ea.paged[0].code or "",
                                                                  T0 + 11) is None
    assert [e.id for e in store.episodes()] == [b.episode_id]
    assert store.episodes_by_key([("a", EP)]) == {}


def _paging_worker(url: str, barrier: Any, results: Any) -> None:
    import os

    s = open_store(url)
    try:
        barrier.wait(30)
        # a tiny repeat_interval and distinct times: every process's page is recorded
        [o] = s.record([paging(repeat_interval=1e-6)], NO_LIMITS,
                       T0 + (os.getpid() % 997) * 0.001)
        results.put([(o.state, o.notification.variables.get("ack"), o.episode_id)])
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))
    finally:
        s.close()


def test_racing_webhooks_share_one_episode_and_one_code(store: Store) -> None:
    got = [o for outcomes in run_at_once(_paging_worker, store.url) for o in outcomes]
    [e] = store.episodes()
    [p] = e.paged
    queued = [(code, eid) for state, code, eid in got if state == "queued"]
    assert queued and set(queued) == {(p.code, e.id)}
    assert all(by_id(store, i.id).variables["ack"] == p.code for i in store.recent(limit=-1))


def test_one_batch_reads_its_own_writes(store: Store) -> None:
    """Issue 14 (the SQLite step decides in memory over rows read once): within one record
    call a later notification sees what earlier ones wrote: a repeat is a duplicate, a second
    mobile joins the episode the first created, a resolved pairs with the firing paged just
    before, and the ack codes of the batch are stored and reused."""
    out = store.record([paging(M1), paging(M1), paging(M2),
                        note(status="resolved", variables={"ack": ACK_PLACEHOLDER})],
                       NO_LIMITS, T0, resolved=[("fp-disk", EP)])
    assert states(out) == [("queued", ""), ("suppressed", "duplicate"), ("queued", ""),
                           ("queued", "")]
    assert out[0].episode_id is not None and out[0].episode_id == out[2].episode_id
    [e] = store.episodes()
    assert (e.state, [p.mobile for p in e.paged]) == ("resolved", [M1, M2])
    codes = {p.mobile: p.code for p in e.paged}
    assert out[0].notification.variables["ack"] == codes[M1]
    assert out[2].notification.variables["ack"] == codes[M2] != codes[M1]
    assert out[3].notification.variables == {"ack": codes[M1]}
    assert [i.id for i in store.recent(limit=-1)][::-1] == [out[0].id, out[2].id, out[3].id]
    # and the next webhook sees all of it (past repeat_interval: M1's episode resolved)
    later = T0 + 4 * 3600 + 1
    assert states(store.record([paging(M1), paging(M2)], NO_LIMITS, later)) == [
        ("suppressed", "already resolved"), ("queued", "")]


def test_sqlite_checkpoints_are_left_to_maintain(tmp_path: Path) -> None:
    """Issue 14: a webhook's commit does not checkpoint the WAL (SQLite's default does, every
    1000 pages, inside whichever commit crosses it); the delivery loop's maintain() does."""
    path = tmp_path / "bridge.db"
    wal = tmp_path / "bridge.db-wal"
    s = SqliteStore(str(path))
    s.ping()
    empty = path.stat().st_size
    for k in range(120):  # well over 1000 WAL pages
        s.record([note(fp=f"fp{k}-{i}") for i in range(10)], NO_LIMITS, T0 + k)
    assert wal.stat().st_size > 1000 * 4096
    assert path.stat().st_size == empty  # every page is still in the WAL only
    s.maintain()
    assert path.stat().st_size > 20 * empty  # copied into the database file
    assert states(s.record([note(fp="fp0-0")], NO_LIMITS, T0 + 200)) == [
        ("suppressed", "duplicate")]
    s.close()


def test_oldest_due_counts_only_what_a_deliverer_could_claim(store: Store) -> None:
    """Issue 22 (the delivery lag): an SMS is due from the later of its due_at, its lease's end
    and its mobile's gap or hold; not while in a claim, backing off or paced."""
    assert store.oldest_due(T0) is None
    [a] = store.record([note(fp="a")], NO_LIMITS, T0)
    assert store.oldest_due(T0 + 5) == T0
    [cl] = store.claim(T0 + 5, 30, 10)
    assert store.oldest_due(T0 + 6) is None  # being sent
    store.mark_retry([str(a.id)], T0 + 20, "juhe transient error", T0 + 6, token=cl.token,
                     pace_until=T0 + 5)
    assert store.oldest_due(T0 + 10) is None  # backing off
    assert store.oldest_due(T0 + 25) == T0 + 20
    [cl] = store.claim(T0 + 25, 30, 10)
    store.mark_sent([str(a.id)], "sid", 1, T0 + 25, token=cl.token, pace_until=T0 + 85)
    [b] = store.record([note(fp="b")], NO_LIMITS, T0 + 30)
    assert store.oldest_due(T0 + 60) is None  # its mobile's gap runs
    assert store.oldest_due(T0 + 90) == T0 + 85
    [cl] = store.claim(T0 + 90, 30, 10)
    assert ids_of([cl]) == {M1: [b.id]}
    assert store.oldest_due(T0 + 100) is None
    assert store.oldest_due(T0 + 125) == T0 + 120  # a hung deliverer's lease has lapsed


def test_next_due_is_the_earliest_claimable_time_of_an_sms_or_a_step(store: Store) -> None:
    """Issue 23: the deliverer sleeps until then at most (a retry's backoff, the end of a gap
    or hold, an escalation step), so it need not poll for them."""
    assert store.next_due() is None
    [a] = store.record([note(fp="a")], NO_LIMITS, T0)
    assert store.next_due() == T0
    [cl] = store.claim(T0, 30, 10)
    assert store.next_due() == T0 + 30  # leased: claimable again when the lease ends
    store.mark_retry([str(a.id)], T0 + 7.5, "juhe transient error", T0 + 1, token=cl.token,
                     pace_until=T0 + 1)
    assert store.next_due() == T0 + 7.5
    [cl] = store.claim(T0 + 7.5, 30, 10)
    store.mark_sent([str(a.id)], "sid", 1, T0 + 8, token=cl.token, pace_until=T0 + 68)
    assert store.next_due() is None
    store.record([note(fp="b")], NO_LIMITS, T0 + 9)
    assert store.next_due() == T0 + 68  # its mobile's gap
    [o] = store.record([paging(mobile=M2)], NO_LIMITS, T0 + 10)
    assert store.next_due() == T0 + 10  # M2's SMS is due now
    [cl] = store.claim(T0 + 10, 30, 10, 0)
    assert ids_of([cl]) == {M2: [o.id]}
    store.mark_sent([str(o.id)], "sid", 1, T0 + 10, token=cl.token, pace_until=T0 + 70)
    assert store.next_due() == T0 + 12  # its first escalation step (after 2 s)


def test_episode_states_of_keys(store: Store) -> None:
    """What the deliverer reads before each send: the state of each key's episode."""
    [a] = store.record([paging(fp="fa")], NO_LIMITS, T0)
    store.record([paging(fp="fb")], NO_LIMITS, T0)
    store.acknowledge(a.episode_id or "", "li", "link", T0 + 1)
    assert store.episode_states([("fa", EP), ("fb", EP), ("fa", "other"), ("none", EP)]) == {
        ("fa", EP): "acknowledged", ("fb", EP): "firing"}
    assert store.episode_states([]) == {}


def test_mark_sent_and_check_marks_then_reads_the_next_states(store: Store) -> None:
    """Between two sends of a claim the deliverer stores the first one's mark and checks the
    next one's episode in one step: the mark is mark_sent's (fenced, Paged entry sent, the
    escalation clock started), the states are episode_states' read after it."""
    [a, b] = store.record([paging(fp="fa"), paging(fp="fb")], NO_LIMITS, T0)
    [cl] = store.claim(T0, 30, 10)
    store.acknowledge(b.episode_id or "", "li", "link", T0 + 1)
    assert store.mark_sent_and_check(
        [str(a.id)], "juhe:sid-1", 2, T0 + 2, token=cl.token, pace_until=None,
        check=[("fb", EP), ("fa", EP), ("none", EP)]) == (
        1, {("fb", EP): "acknowledged", ("fa", EP): "firing"})
    sent = by_id(store, str(a.id))
    assert (sent.state, sent.sid, sent.fee, sent.attempts, sent.updated_at) == (
        "sent", "juhe:sid-1", 2, 1, T0 + 2)
    episode = store.episodes_by_key([("fa", EP)])[("fa", EP)]
    assert [(p.mobile, p.sent_at) for p in episode.paged] == [(M1, T0 + 2)]
    assert [s.due_at for s in episode.steps] == [T0 + 4, T0 + 7]
    assert store.claim(T0 + 3, 30, 10) == []  # the mobile stays held: no pace_until given
    # a lapsed lease changes nothing, and the states are read all the same
    assert store.mark_sent_and_check([str(b.id)], "juhe:sid-2", 1, T0 + 3, token="stale",
                                     pace_until=T0 + 3, check=[("fa", EP)]) == (
        0, {("fa", EP): "firing"})
    assert by_id(store, str(b.id)).state == "queued"


# -- issue 25: the alert's source and silence on the episode, background jobs ----------------
def test_an_episode_keeps_its_source_and_silence_id(store: Store) -> None:
    from dataclasses import replace as with_

    [o] = store.record([paging(info=with_(INFO, source="alertmanager"))], NO_LIMITS, T0)
    eid = o.episode_id or ""
    e = store.episode(eid)
    assert e is not None and (e.source, e.silence_id) == ("alertmanager", None)
    store.set_silence(eid, "9f3c-silence")
    e = store.episode(eid)
    assert e is not None and e.silence_id == "9f3c-silence"
    assert store.episodes_by_key([("fp-disk", EP)])[("fp-disk", EP)].silence_id == "9f3c-silence"
    store.set_silence(eid, None)
    e = store.episode(eid)
    assert e is not None and e.silence_id is None
    store.set_silence("nope", "x")  # an unknown episode: nothing happens


def test_a_job_runs_once_per_key_leased_and_fenced(store: Store) -> None:
    assert store.add_job("silence:e1", "silence", {"episode": "e1", "n": 1}, T0 + 5, T0 + 600,
                         T0)
    assert not store.add_job("silence:e1", "silence", {"episode": "other"}, T0, T0, T0 + 1)
    assert store.claim_jobs(T0 + 4.9, 60) == []
    [c] = store.claim_jobs(T0 + 5, 60)
    assert (c.job.key, c.job.kind, c.job.payload, c.job.state, c.job.since, c.job.attempts,
            c.lease_until) == ("silence:e1", "silence", {"episode": "e1", "n": 1}, "pending",
                               T0, 0, T0 + 65)
    assert store.claim_jobs(T0 + 6, 60) == []              # leased
    [c2] = store.claim_jobs(T0 + 66, 60)                   # lease lapsed
    assert not store.settle_job(c, "done", T0 + 67)        # the lapsed lease's token
    assert store.settle_job(c2, "pending", T0 + 67, due_at=T0 + 80, error="refused")
    job = store.job("silence:e1")
    assert job is not None and (job.state, job.due_at, job.attempts, job.error) == (
        "pending", T0 + 80, 1, "refused")
    assert store.claim_jobs(T0 + 79, 60) == []
    [c3] = store.claim_jobs(T0 + 80, 60)
    assert store.settle_job(c3, "done", T0 + 81)
    assert not store.settle_job(c3, "failed", T0 + 82)
    job = store.job("silence:e1")
    assert job is not None and (job.state, job.error) == ("done", "")
    assert store.claim_jobs(T0 + 10_000, 60) == []
    assert not store.add_job("silence:e1", "silence", {}, T0, T0, T0 + 100)  # kept: not again
    store.prune(T0 + 599)
    assert store.job("silence:e1") is not None
    store.prune(T0 + 601)
    assert store.job("silence:e1") is None
    assert store.add_job("silence:e1", "silence", {}, T0, T0, T0 + 700)


def test_a_shift_notice_is_recorded_once_with_its_reason_and_no_episode(store: Store) -> None:
    n = note(fp="notice:sre", status="notice", episode="2026-09-21T01:00:00+00:00",
             reason="shift notice", repeat_interval=3600.0)
    [o] = store.record([n], NO_LIMITS, T0)
    assert (o.state, o.reason, o.episode_id) == ("queued", "shift notice", None)
    [again] = store.record([n], NO_LIMITS, T0 + 100)   # its job run again after a crash
    assert (again.state, again.reason, again.id) == ("suppressed", "duplicate", None)
    assert store.episodes() == []
    [item] = store.recent()
    assert (item.mobile, item.status, item.state, item.reason) == (
        M1, "notice", "queued", "shift notice")
    [limited] = store.record([note(fp="notice:sre", status="notice", episode="other",
                                   reason="shift notice")], Policy(per_mobile_per_hour=1), T0)
    assert (limited.state, limited.reason) == ("suppressed", "per_mobile_per_hour limit")


def test_a_sqlite_file_from_before_silences_gets_their_columns(tmp_path: Path) -> None:
    import sqlite3
    from dataclasses import replace as with_

    path = tmp_path / "old.db"
    fresh = SqliteStore(str(path))
    fresh.ping()  # makes the schema
    fresh.close()
    with sqlite3.connect(path) as db:   # as a file written by a version before issue 25
        db.execute("ALTER TABLE alert_episodes DROP COLUMN silence_id")
        db.execute("ALTER TABLE alert_episodes DROP COLUMN source")
    store = SqliteStore(str(path))
    [o] = store.record([paging(info=with_(INFO, source="alertmanager"))], NO_LIMITS, T0)
    store.set_silence(o.episode_id or "", "s1")
    e = store.episode(o.episode_id or "")
    assert e is not None and (e.source, e.silence_id) == ("alertmanager", "s1")
    store.close()


def test_next_due_counts_a_pending_job(store: Store) -> None:
    assert store.add_job("notice:a", "notice", {"x": 1}, T0 + 50, T0 + 9999, T0)
    assert store.next_due() == T0 + 50
