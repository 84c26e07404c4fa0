"""The deliverer in one process, on a real SQLite store and the fake Juhe: how a claim is
worked through (leases, backlogs, stop)."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from conftest import CATCH_ALL, KEY, free_port, wait_until
from fakejuhe import FakeJuhe

from bridge.config import Settings
from bridge.decide.types import Notification, Policy
from bridge.deliver.deliverer import Deliverer, DeliveryPolicy, delivery_problems
from bridge.providers.base import SendResult
from bridge.providers.juhe import JuheClient
from bridge.rules.load import load_rules
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Store
from bridge.store.redis.store import RedisStore
from bridge.store.sqlite.store import SqliteStore


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


def test_a_slow_provider_sends_no_mobile_twice_across_deliverers(
        tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    # one claim of several mobiles, a provider slow enough that the last mobiles' lease lapses
    # before their turn: another deliverer (another instance) claims them meanwhile. The first
    # gives back what it has not begun past half the lease, so each mobile is paged once
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    mobiles = [f"1370000000{i}" for i in range(6)]
    store.record([Notification(mobile=m, fingerprint="fp", status="firing", episode="e",
                               route="r", alertname="A", tpl_id=111, variables={"name": m})
                  for m in mobiles], Policy(), time.time())
    fake_juhe.delay = 0.4
    stop = threading.Event()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as c1, \
            JuheClient(KEY, fake_juhe.url, timeout=2) as c2:
        policy = DeliveryPolicy.from_settings(Settings(), lease=1.0)
        first = Deliverer(store, c1, lambda: rules, policy)
        other = Deliverer(store, c2, lambda: rules, policy)
        passes: list[int] = []
        t1 = threading.Thread(target=lambda: passes.append(first.run_once()))
        t1.start()
        time.sleep(0.2)  # the first pass holds every mobile's claim
        t2 = threading.Thread(target=other.run_forever, args=(stop, 0.05))
        t2.start()
        try:
            t1.join(10)
            assert wait_until(lambda: store.counts()["sent"] == len(mobiles), 10)
        finally:
            stop.set()
            t2.join(5)
    assert passes == [len(mobiles)]
    assert sorted(m["mobile"] for m in fake_juhe.messages) == mobiles


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


PACED = CATCH_ALL.replace("  min_gap: 0s", "  min_gap: 60s")
M1, M2 = "13800138000", "13800138001"


class Clock:
    """An injected clock: UNIX seconds that move only when the test says."""

    def __init__(self, at: float = 1_790_000_000.0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


def paced_rules(tmp_path: Path, text: str = PACED) -> RuleSet:
    (tmp_path / "paced.yaml").write_text(text)
    return load_rules(tmp_path / "paced.yaml")


def note_for(mobile: str, name: str) -> Notification:
    return Notification(mobile=mobile, fingerprint=f"fp-{name}", status="firing", episode="e",
                        route="r", alertname=name, tpl_id=111, variables={"name": name})


def test_a_lapsed_lease_cannot_overwrite_another_deliverers_work(
        tmp_path: Path, fake_juhe: FakeJuhe, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 10.4: A's lease runs out while Juhe stalls its request; B claims and sends; A's
    late mark is ignored (and logged), B's result stands."""
    rules = paced_rules(tmp_path)
    store = SqliteStore(str(tmp_path / "b.db"))
    store.record([note_for(M1, "Stall")], Policy(), time.time())
    policy = DeliveryPolicy.from_settings(Settings(), lease=0.3)
    fake_juhe.delay = 1.0
    with JuheClient(KEY, fake_juhe.url, timeout=3) as ca, \
            JuheClient(KEY, fake_juhe.url, timeout=3) as cb:
        a = Deliverer(store, ca, lambda: rules, policy)
        b = Deliverer(store, cb, lambda: rules, policy)
        t = threading.Thread(target=a.run_once)
        t.start()
        assert wait_until(lambda: fake_juhe.requests == 1, 5)
        fake_juhe.delay = 0.0
        time.sleep(0.4)  # A's lease (and its hold on the mobile) lapse mid-send
        assert b.run_once() == 1
        t.join(5)
    msgs = fake_juhe.messages
    assert [m["vars"]["name"] for m in msgs] == ["Stall", "Stall"]  # B's first: A stalled
    [item] = store.recent()
    assert (item.state, item.sid, item.attempts) == ("sent", msgs[0]["sid"], 1)
    assert "lease on 138****8000 lapsed: mark sent ignored for 1 of 1 items" in caplog.text
    # B's send booked the gap; A's ignored mark booked nothing
    store.record([note_for(M1, "Next")], Policy(), time.time())
    assert store.claim(time.time(), 30, 10) == []


def test_a_claim_lost_mid_send_is_not_sent_further(
        tmp_path: Path, fake_juhe: FakeJuhe, caplog: pytest.LogCaptureFixture) -> None:
    """What a Redis failover does to a claim it did not keep: the store forgets A's lease at
    once, long before A's deadline (here: B claims as if the lease had lapsed, by its clock).
    B sends the whole backlog; A's mark of its first SMS is fenced, so A must not send the
    second one too (before the fix: "Second" went out twice)."""
    (tmp_path / "r.yaml").write_text(CATCH_ALL)  # no pacing: a backlog goes out one by one
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    store.record([note_for(M1, "Stall"), note_for(M1, "Second")], Policy(), time.time())
    policy = DeliveryPolicy.from_settings(Settings(), lease=120.0)
    fake_juhe.delay = 1.0
    with JuheClient(KEY, fake_juhe.url, timeout=5) as ca, \
            JuheClient(KEY, fake_juhe.url, timeout=5) as cb:
        a = Deliverer(store, ca, lambda: rules, policy)
        b = Deliverer(store, cb, lambda: rules, policy, clock=lambda: time.time() + 200)
        t = threading.Thread(target=a.run_once)
        t.start()
        assert wait_until(lambda: fake_juhe.requests == 1, 5)
        fake_juhe.delay = 0.0
        assert b.run_once() == 1
        t.join(10)
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == ["Second", "Stall", "Stall"]
    assert "lease on 138****8000 lapsed: mark sent ignored for 1 of 1 items" in caplog.text
    assert "claim on 138****8000 may be lost: 1 SMS of it given back unsent" in caplog.text
    # the give-back is fenced too: B holds (and sent) "Second" by now
    assert "lease on 138****8000 lapsed: mark release ignored for 1 of 1 items" in caplog.text
    assert sorted((i.alertname, i.state) for i in store.recent()) == [
        ("Second", "sent"), ("Stall", "sent")]


def test_unreachable_juhe_retries_after_the_backoff_not_the_gap(tmp_path: Path) -> None:
    """Issue 10.6: a send that surely did not go out (connection refused) books no gap: "retry 1
    in 2.2s" is claimable 2.2 s later, though min_gap is 60 s."""
    rules = paced_rules(tmp_path)
    store = SqliteStore(str(tmp_path / "b.db"))
    clock = Clock()
    store.record([note_for(M1, "Down")], Policy(), clock())
    policy = DeliveryPolicy.from_settings(Settings(retry_base=2.0))
    with JuheClient(KEY, f"http://127.0.0.1:{free_port()}/sms/send", timeout=1) as client:
        d = Deliverer(store, client, lambda: rules, policy, clock=clock)
        assert d.run_once() == 1
        [item] = store.recent()
        assert item.state == "retrying" and 1.6 <= item.due_at - clock() <= 2.4
        clock.at = item.due_at - 0.01
        assert store.claim(clock(), 30, 10) == []
        clock.at = item.due_at
        assert d.run_once() == 1  # retried at its due time, not 60 s on
    [item] = store.recent()
    assert (item.state, item.attempts) == ("retrying", 2)


def test_a_stop_mid_send_leaves_other_mobiles_unpaced(tmp_path: Path,
                                                      fake_juhe: FakeJuhe) -> None:
    """Issue 10.6: stopping while the first mobile's SMS is in flight gives the other claims
    back without a gap: a first page to a number never texted goes out at once after it."""
    rules = paced_rules(tmp_path)
    store = SqliteStore(str(tmp_path / "b.db"))
    store.record([note_for(M1, "First"), note_for(M2, "Other")], Policy(), time.time())
    fake_juhe.delay = 0.5
    stop = threading.Event()
    with JuheClient(KEY, fake_juhe.url, timeout=3) as client:
        d = Deliverer(store, client, lambda: rules)
        t = threading.Thread(target=d.run_forever, args=(stop, 0.05))
        t.start()
        assert wait_until(lambda: fake_juhe.requests == 1, 5)
        stop.set()
        t.join(5)
    assert not t.is_alive()
    sent = {i.alertname: i.state for i in store.recent()}
    first = "First" if sent["First"] == "sent" else "Other"
    other = "Other" if first == "First" else "First"
    assert sent == {first: "sent", other: "queued"}
    [claim] = store.claim(time.time(), 30, 10)  # the sent mobile waits for its gap, not this
    assert [i.alertname for i in claim.items] == [other]


def test_backoff_then_give_up_with_an_injected_clock(tmp_path: Path,
                                                     fake_juhe: FakeJuhe) -> None:
    """Backoff doubles from retry_base (±20 % jitter) until retry_for has passed since the
    first attempt, then the SMS is failed: no sleeps, the clock is moved."""
    rules = paced_rules(tmp_path, CATCH_ALL)
    store = SqliteStore(str(tmp_path / "b.db"))
    clock = Clock()
    start = clock()
    store.record([note_for(M1, "Flaky")], Policy(), clock())
    fake_juhe.http500_next(100)
    policy = DeliveryPolicy.from_settings(Settings(retry_base=1.0, retry_for=20.0))
    delays = []
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, policy, clock=clock)
        while True:
            assert d.run_once() == 1
            [item] = store.recent()
            if item.state == "failed":
                break
            delays.append(item.due_at - clock())
            clock.at = item.due_at
    for k, delay in enumerate(delays):
        assert 0.8 * 2 ** k <= delay <= 1.2 * 2 ** k, delays
    assert sum(delays[:-1]) < 20.0 <= sum(delays)
    assert (item.attempts, item.first_attempt_at) == (len(delays) + 1, start)
    assert item.reason.startswith(f"gave up after {len(delays) + 1} attempts: juhe transient")
    assert fake_juhe.requests == len(delays) + 1


def test_config_errors_are_retried_at_least_once_a_minute(tmp_path: Path,
                                                          fake_juhe: FakeJuhe) -> None:
    """Issue 10.1: a configuration error (10001) stays retrying with the error as its reason,
    due again within 60 s however many attempts, until retry_for; then failed."""
    rules = paced_rules(tmp_path, CATCH_ALL)
    store = SqliteStore(str(tmp_path / "b.db"))
    clock = Clock()
    store.record([note_for(M1, "Key")], Policy(), clock())
    fake_juhe.valid_key = "another-key"
    policy = DeliveryPolicy.from_settings(Settings(retry_base=20.0, retry_for=600.0))
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, policy, clock=clock)
        for _ in range(8):
            assert d.run_once() == 1
            [item] = store.recent()
            if item.state == "failed":
                break
            assert item.state == "retrying" and item.reason.startswith("juhe config error 10001")
            assert 0 < item.due_at - clock() <= 60.0
            clock.at = item.due_at
        while item.state != "failed":
            assert d.run_once() == 1
            [item] = store.recent()
            clock.at = max(item.due_at, clock())
    assert item.reason.startswith("gave up after") and "10001" in item.reason
    assert clock() - (item.first_attempt_at or 0) >= 600.0


def test_the_delivery_loop_checkpoints_the_wal(tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    # issue 14: checkpoints left out of the webhooks' commits are the delivery loop's
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    path = tmp_path / "b.db"
    store = SqliteStore(str(path))
    store.ping()
    empty = path.stat().st_size
    backlog(store, 10)
    assert path.stat().st_size == empty  # in the WAL only
    stop = threading.Event()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules)
        t = threading.Thread(target=d.run_forever, args=(stop, 0.05))
        t.start()
        try:
            assert wait_until(lambda: path.stat().st_size > empty, 5)
            assert fake_juhe.wait_for(10, timeout=5)
        finally:
            stop.set()
            t.join(5)
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == [f"A{i}" for i in range(10)]


S = 60.0  # BRIDGE_DELIVERY_STALL
NOW = 1_790_000_000.0


@pytest.mark.parametrize(("last_pass", "started", "oldest_due", "expected"), [
    (NOW - 1, NOW - 600, None, []),
    (NOW - 59.9, NOW - 600, NOW - 59.9, []),
    (NOW - 60, NOW - 600, None,
     ["delivery: no deliverer has finished a pass of its loop for 60.0s "
      "(BRIDGE_DELIVERY_STALL 60s)"]),
    (NOW - 1, NOW - 600, NOW - 60,
     ["delivery: an SMS has been due and unsent for 60.0s (BRIDGE_DELIVERY_STALL 60s)"]),
    (None, NOW - 59, None, []),
    (None, NOW - 61, None,
     ["delivery: no deliverer has finished a pass of its loop since this process started "
      "61.0s ago (BRIDGE_DELIVERY_STALL 60s)"]),
    (NOW - 3600, NOW - 10, None, []),
    (NOW - 3600, NOW - 70, NOW - 65,
     ["delivery: no deliverer has finished a pass of its loop for 3600.0s "
      "(BRIDGE_DELIVERY_STALL 60s)",
      "delivery: an SMS has been due and unsent for 65.0s (BRIDGE_DELIVERY_STALL 60s)"]),
], ids=["fine", "just-under", "no-pass-at-the-edge", "due-at-the-edge", "never-young",
        "never-past-stall", "old-pass-young-process", "both"])
def test_delivery_problems_at_the_edges(last_pass: float | None, started: float,
                                        oldest_due: float | None, expected: list[str]) -> None:
    assert delivery_problems(NOW, last_pass, started, oldest_due, S) == expected

# -- issue 20.4: no firing SMS of an acknowledged or resolved episode goes out ------------------
def _stop(store: SqliteStore, how: str, name: str, at: float) -> None:
    """Acknowledge, or resolve (with its resolved SMS paired), the episode of alert ``name``."""
    if how == "acknowledged":
        [e] = [e for e in store.episodes() if e.fingerprint == f"fp-{name}"]
        store.acknowledge(e.id, "zhang", "api", at)
        return
    resolved = Notification(mobile=M1, fingerprint=f"fp-{name}", status="resolved",
                            episode="e", route="r", alertname=name, tpl_id=222,
                            variables={"name": name})
    store.record([resolved], Policy(), at, resolved=[(f"fp-{name}", "e")])


def _hold(store: SqliteStore, d: Deliverer, clock: Clock, fake: FakeJuhe, held: str) -> None:
    """Put alert B's firing SMS in the state ``held`` names: waiting for pacing behind A, due
    for a retry after a transient error, or claimed by a deliverer that then crashed."""
    if held == "pacing":
        store.record([note_for(M1, "A"), note_for(M1, "B")], Policy(), clock.at)
        assert d.run_once() == 1 and [m["vars"]["name"] for m in fake.messages] == ["A"]
    elif held == "retry":
        store.record([note_for(M1, "B")], Policy(), clock.at)
        fake.fail_next(10012)  # a transient error: retried later
        assert d.run_once() == 1 and store.recent()[0].state == "retrying"
    else:  # a claim whose deliverer crashed mid-send: its lease lapses, then a re-send
        store.record([note_for(M1, "B")], Policy(), clock.at)
        assert len(store.claim(clock.at, 30, 10)) == 1


@pytest.mark.parametrize("how", ["acknowledged", "resolved"])
@pytest.mark.parametrize("held", ["pacing", "retry", "crash"])
def test_a_firing_sms_of_a_stopped_episode_ends_suppressed(
        tmp_path: Path, fake_juhe: FakeJuhe, held: str, how: str) -> None:
    rules = paced_rules(tmp_path, PACED.replace("min_gap: 60s", "min_gap: 20s"))
    store = SqliteStore(str(tmp_path / "b.db"))
    clock = Clock()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, clock=clock)
        _hold(store, d, clock, fake_juhe, held)
        sent_before = len(fake_juhe.messages)
        _stop(store, how, "B", clock.at + 1)
        clock.at += 3600  # past the gap, the backoff and the lease
        while d.run_once():
            pass
    b = [(i.status, i.state, i.reason) for i in store.recent() if i.alertname == "B"]
    # the firing SMS never goes out, and so neither does its resolved SMS (docs/oncall.md,
    # "Resolved goes to who was paged")
    assert sorted(b) == [("firing", "suppressed", how)] + (
        [("resolved", "suppressed", "not paged")] if how == "resolved" else [])
    assert fake_juhe.messages[sent_before:] == []
    # nothing sent: no gap booked for the mobile
    store.record([note_for(M1, "C")], Policy(), clock.at)
    assert [c.mobile for c in store.claim(clock.at, 30, 10)] == [M1]


# -- a resolved SMS goes only to a mobile whose firing SMS went out (docs/oncall.md) ----------
def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Store:
    if kind == "sqlite":
        return SqliteStore(str(tmp_path / "b.db"))
    return RedisStore(request.getfixturevalue("redis_url"))


def _firing_then_resolved(store: Store, d: Deliverer, clock: Clock, fake: FakeJuhe,
                          case: str) -> None:
    """Alert B's firing SMS queued, then whatever ``case`` names happens to it, and its
    resolved SMS is recorded (the episode resolved)."""
    resolved = Notification(mobile=M1, fingerprint="fp-B", status="resolved", episode="e",
                            route="r", alertname="B", tpl_id=222, variables={"name": "B"})

    def resolve() -> None:
        [out] = store.record([resolved], Policy(), clock.at + 1, resolved=[("fp-B", "e")])
        assert out.state == "queued"

    store.record([note_for(M1, "B")], Policy(), clock.at)
    if case == "retrying":  # a transient error: the firing is due again in a while
        fake.fail_next(10012)
        assert d.run_once() == 1
        assert [i.state for i in store.recent()] == ["retrying"]
    elif case == "acknowledged":  # acknowledged before it went out: never sent
        [e] = store.episodes()
        store.acknowledge(e.id, "zhang", "api", clock.at)
        assert d.run_once() == 1
    elif case == "failed":  # the resolved is recorded while the firing is being sent
        [claim] = store.claim(clock.at, 30, 10)
        resolve()
        assert store.mark_failed([claim.items[0].id], "juhe permanent error 10011: wrong",
                                 clock.at + 1, token=claim.token, pace_until=clock.at + 1) == 1
        return
    resolve()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("case, firing", [
    ("queued", ("suppressed", "resolved")),
    ("retrying", ("suppressed", "resolved")),
    ("acknowledged", ("suppressed", "acknowledged")),
    ("failed", ("failed", "juhe permanent error 10011: wrong")),
], ids=["queued", "retrying", "acknowledged", "failed"])
def test_no_resolved_sms_for_a_firing_that_never_went_out(
        tmp_path: Path, fake_juhe: FakeJuhe, request: pytest.FixtureRequest, kind: str,
        case: str, firing: tuple[str, str]) -> None:
    """Found by a smoke run (min_gap 0s): a legacy Grafana alert resolved before its firing
    SMS went out; the firing ended suppressed, but "resolved" still reached the on-call
    engineer, about an alert they were never told of. Now the resolved SMS ends ``suppressed``
    (``not paged``) too, decided after its firing: a firing still due for a retry is not
    overtaken (the resolved waits for it)."""
    rules = paced_rules(tmp_path, CATCH_ALL)
    store = _store(kind, tmp_path, request)
    clock = Clock()
    policy = DeliveryPolicy.from_settings(Settings(retry_base=30.0))  # a retry 24 to 36 s on
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, policy, clock=clock)
        _firing_then_resolved(store, d, clock, fake_juhe, case)
        sent_before = len(fake_juhe.messages)
        clock.at += 2
        d.run_once()
        if case == "retrying":  # the firing is not due yet: the resolved waits for it
            assert sorted((i.status, i.state) for i in store.recent()) == [
                ("firing", "retrying"), ("resolved", "queued")]
        clock.at += 3600  # past every backoff
        while d.run_once():
            pass
    assert fake_juhe.messages[sent_before:] == []
    assert {i.status: (i.state, i.reason) for i in store.recent()} == {
        "firing": firing, "resolved": ("suppressed", "not paged")}
    store.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_resolved_sms_goes_once_its_firing_went_out(
        tmp_path: Path, fake_juhe: FakeJuhe, request: pytest.FixtureRequest, kind: str) -> None:
    """The other side of the rule: the firing SMS was sent (then a repeat of it was suppressed
    by the acknowledgement): the resolved SMS goes; and one recorded while its firing was in
    the same claim goes after it (no pacing: one pass sends both)."""
    rules = paced_rules(tmp_path, CATCH_ALL)
    store = _store(kind, tmp_path, request)
    clock = Clock()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, clock=clock)
        store.record([note_for(M1, "B")], Policy(), clock.at)
        assert d.run_once() == 1
        [e] = store.episodes()
        store.acknowledge(e.id, "zhang", "api", clock.at + 1)
        resolved = Notification(mobile=M1, fingerprint="fp-B", status="resolved", episode="e",
                                route="r", alertname="B", tpl_id=222, variables={"name": "B"})
        store.record([resolved], Policy(), clock.at + 2, resolved=[("fp-B", "e")])
        clock.at += 3
        while d.run_once():
            pass
    assert [(m["tpl_id"], m["vars"]["name"]) for m in fake_juhe.messages] == [
        ("111", "B"), ("222", "B")]
    assert sorted((i.status, i.state) for i in store.recent()) == [
        ("firing", "sent"), ("resolved", "sent")]
    store.close()


class AckWhileSending:
    """The real Juhe client, and a person who acknowledges an episode while one SMS is being
    sent (between that send's episode check and its mark)."""

    def __init__(self, client: JuheClient, store: Store, during: str, acks: str) -> None:
        self.client, self.store, self.during, self.acks = client, store, during, acks

    def send(self, mobile: str, tpl_id: int, variables: Mapping[str, str]) -> SendResult:
        if variables.get("name") == self.during:
            [e] = [e for e in self.store.episodes() if e.fingerprint == f"fp-{self.acks}"]
            self.store.acknowledge(e.id, "zhang", "api", time.time())
        return self.client.send(mobile, tpl_id, variables)


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("acks", ["B", "C"])
def test_an_acknowledgement_between_two_sends_of_a_claim_stops_the_next(
        tmp_path: Path, fake_juhe: FakeJuhe, request: pytest.FixtureRequest, kind: str,
        acks: str) -> None:
    """A backlog of one mobile with no pacing goes out one by one in one claim, the episode
    of each SMS checked before its send (read with the mark of the SMS before it:
    Store.mark_sent_and_check). C's episode acknowledged while B is being sent: C ends
    suppressed, D goes out; B's own episode acknowledged then: B is already on its way, the
    rest goes out (docs/oncall.md, "Acknowledging")."""
    rules = paced_rules(tmp_path, CATCH_ALL)
    store = _store(kind, tmp_path, request)
    store.record([note_for(M1, n) for n in "ABCD"], Policy(), time.time())
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, AckWhileSending(client, store, "B", acks), lambda: rules)
        assert d.run_once() == 1
    sent = [n for n in "ABCD" if n != acks or acks == "B"]
    assert [m["vars"]["name"] for m in fake_juhe.messages] == sent
    assert {i.alertname: (i.state, i.reason) for i in store.recent()} == {
        n: ("suppressed", "acknowledged") if n == acks and acks != "B" else ("sent", "")
        for n in "ABCD"}
    store.close()


@pytest.mark.parametrize("held", ["pacing", "retry", "crash"])
def test_no_resolved_sms_to_a_mobile_whose_firing_sms_was_suppressed(
        tmp_path: Path, fake_juhe: FakeJuhe, held: str) -> None:
    # B's firing SMS to M1 was stopped by an acknowledgement before it went out; when B then
    # resolves, M1 (never paged for B) gets no resolved SMS of B (docs/oncall.md, Resolved goes
    # to who was paged); with pacing, A's firing SMS went out, so A's resolved SMS still goes
    rules = paced_rules(tmp_path, PACED.replace("min_gap: 60s", "min_gap: 20s"))
    store = SqliteStore(str(tmp_path / "b.db"))
    clock = Clock()
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, clock=clock)
        _hold(store, d, clock, fake_juhe, held)
        sent_before = len(fake_juhe.messages)
        _stop(store, "acknowledged", "B", clock.at + 1)
        clock.at += 3600
        while d.run_once():
            pass
        _stop(store, "resolved", "B", clock.at)
        if held == "pacing":
            _stop(store, "resolved", "A", clock.at)
        clock.at += 3600
        while d.run_once():
            pass
    after = [(m["tpl_id"], m["vars"]["name"]) for m in fake_juhe.messages[sent_before:]]
    assert after == ([("222", "A")] if held == "pacing" else [])
    resolved_b = [(i.state, i.reason) for i in store.recent()
                  if i.alertname == "B" and i.status == "resolved"]
    assert resolved_b == [("suppressed", "not paged")]


STORM_RULES = """\
receivers:
  oncall: ["13800138000"]
templates:
  firing: {tpl_id: 111, vars: {name: "{{ labels.alertname }}"}}
  resolved: {tpl_id: 222, vars: {name: "{{ labels.alertname }}"}}
  storm: {tpl_id: 333, vars: {names: "{{ alertnames }}", fr: "{{ firing }}/{{ resolved }}"}}
limits:
  min_gap: 60s
  storm: {threshold: 100, window: 1m, template: storm}
routes:
  - name: r
    matchers: ['alertname=~".+"']
    receiver: oncall
    template: firing
    resolved_template: resolved
"""


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_storm_sms_folds_no_resolved_alert_whose_firing_never_went_out(
        tmp_path: Path, fake_juhe: FakeJuhe, request: pytest.FixtureRequest, kind: str) -> None:
    """While A's gap runs, B and C fire, B resolves and A resolves: the storm SMS at the gap's
    end folds C's firing and A's resolved (A's firing went out); B's firing ends suppressed
    (resolved) and B's resolved ``not paged``, neither folded."""
    rules = paced_rules(tmp_path, STORM_RULES)
    store = _store(kind, tmp_path, request)
    clock = Clock()

    def resolve(name: str) -> None:
        store.record([Notification(mobile=M1, fingerprint=f"fp-{name}", status="resolved",
                                   episode="e", route="r", alertname=name, tpl_id=222,
                                   variables={"name": name})],
                     Policy(), clock.at, resolved=[(f"fp-{name}", "e")])

    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules, clock=clock)
        store.record([note_for(M1, "A")], Policy(), clock.at)
        assert d.run_once() == 1
        clock.at += 1
        store.record([note_for(M1, "B"), note_for(M1, "C")], Policy(), clock.at)
        resolve("B")
        resolve("A")
        clock.at += 60
        while d.run_once():
            pass
    assert [(m["tpl_id"], m["vars"]) for m in fake_juhe.messages] == [
        ("111", {"name": "A"}), ("333", {"names": "C,A", "fr": "1/1"})]
    assert sorted((i.alertname, i.status, i.state, i.reason) for i in store.recent()) == [
        ("A", "firing", "sent", ""), ("A", "resolved", "sent", "folded 2 into one storm SMS"),
        ("B", "firing", "suppressed", "resolved"), ("B", "resolved", "suppressed", "not paged"),
        ("C", "firing", "sent", "folded 2 into one storm SMS")]
    store.close()
