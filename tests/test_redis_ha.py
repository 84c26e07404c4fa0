"""Highly available Redis (``BRIDGE_STORE``, ``BRIDGE_REDIS_WAIT``; docs/deployment.md, Redis): a
master with two replicas watched by three real sentinels, and a real three-master Redis Cluster,
both started once for this module (``conftest.SentinelSet``, ``conftest.ClusterSet``).

The failover tests kill the master with SIGKILL, as when its machine dies, and wait (bounded)
for the sentinels to promote a replica; the ``sentinel_url`` fixture then brings the killed node
back as a replica before the next test.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import (
    CATCH_ALL,
    DB_DOWN,
    KEY,
    ROOT,
    SPEC_RULES,
    ClusterSet,
    RedisServer,
    SentinelSet,
    free_port,
    post_many,
    wait_until,
)
from fakejuhe import FakeJuhe

from bridge.config import Settings
from bridge.decide.types import Notification, Policy
from bridge.deliver.deliverer import Deliverer, DeliveryPolicy
from bridge.errors import StoreUnavailable, StoreUnconfirmed
from bridge.providers.juhe import JuheClient
from bridge.rules.load import load_rules
from bridge.store.redis.store import RedisStore

T0 = 1_790_000_000.125
M1 = "13800138000"


def alert(name: str) -> dict[str, Any]:
    """An Alertmanager body of one firing alert named ``name`` (CATCH_ALL pages M1)."""
    return {"alerts": [{"status": "firing", "startsAt": "2026-11-29T01:00:00Z",
                        "labels": {"alertname": name}}]}


def note(name: str) -> Notification:
    return Notification(mobile=M1, fingerprint=f"fp-{name}", status="firing", episode="e",
                        route="everything", alertname=name, tpl_id=111,
                        variables={"name": name})


def names(fake: FakeJuhe) -> collections.Counter[str]:
    return collections.Counter(m["vars"]["name"] for m in fake.messages)


def replicas_online(server: RedisServer) -> int:
    with server.client() as c:
        return int(c.info("replication")["connected_slaves"])


@pytest.fixture
def free_ports() -> list[int]:
    """Two loopback ports nobody listens on."""
    return [free_port(), free_port()]


# -- the store on the sentinel-managed master ---------------------------------------------------
def test_wait_confirms_each_write_step(sentinel_url: str, redis_url: str) -> None:
    both = RedisStore(sentinel_url, wait=2)
    assert both.describe() == "redis sentinel mymaster via 3 sentinels, wait 2 replicas"
    [o] = both.record([note("a")], Policy(), T0)
    assert o.state == "queued"
    both.ping()
    [claim] = both.claim(T0, 60, 10)
    assert claim.confirmed
    assert both.mark_sent([i.id for i in claim.items], "sid-1", 1, T0 + 1, token=claim.token,
                          pace_until=T0 + 1) == 1
    assert both.config_warnings() == []
    both.close()
    # more replicas asked for than there are: the write stands, unconfirmed
    three = RedisStore(sentinel_url, wait=3, wait_timeout=0.2)
    with pytest.raises(StoreUnconfirmed, match="2 of 3 replicas confirmed the write within "
                                               "0.2s .BRIDGE_REDIS_WAIT"):
        three.record([note("b")], Policy(), T0)
    assert [i.alertname for i in three.recent(state="queued")] == ["b"]
    with pytest.raises(StoreUnconfirmed):
        three.ping()
    assert three.config_warnings() == [
        "the redis master has 2 connected replicas but BRIDGE_REDIS_WAIT=3: webhooks get 503 "
        "until enough connect"]
    # a claim is waited for but not refused (the deliverer decides); releases and reads are
    # not waited for
    [claim] = three.claim(T0 + 2, 60, 10)
    assert not claim.confirmed
    assert three.release([i.id for i in claim.items], T0, token=claim.token,
                         pace_until=T0 + 2) == 1
    assert three.counts()["queued"] == 1
    # a send result is waited for: it stands on the master, unconfirmed
    [claim] = three.claim(T0 + 2, 60, 10)
    with pytest.raises(StoreUnconfirmed):
        three.mark_sent([i.id for i in claim.items], "sid-2", 1, T0 + 3, token=claim.token,
                        pace_until=T0 + 3)
    assert three.counts()["sent"] == 2
    three.close()
    # one server without replicas
    alone = RedisStore(redis_url, wait=1, wait_timeout=0.1)
    assert alone.describe() == f"redis {redis_url}, wait 1 replica within 0.1s"
    with pytest.raises(StoreUnconfirmed, match="0 of 1 replicas"):
        alone.record([note("c")], Policy(), T0)
    alone.close()


def test_a_wait_longer_than_the_socket_timeout_is_not_cut_off(redis_url: str) -> None:
    """A WAIT that outlasts the socket timeout must not time out (the retry would then run
    the step a second time)."""
    s = RedisStore(redis_url, socket_timeout=0.3, wait=1, wait_timeout=0.6)
    started = time.monotonic()
    with pytest.raises(StoreUnconfirmed, match="0 of 1 replicas confirmed the write within 0.6s"):
        s.record([note("a")], Policy(), T0)
    assert time.monotonic() - started >= 0.6
    assert [i.alertname for i in s.recent()] == ["a"]
    s.close()


def test_a_write_to_the_master_the_sentinels_replaced_is_not_taken_as_stored(
        sentinel_url: str, redis_sentinel: SentinelSet) -> None:
    """After a failover the old master, when it is still running, takes writes until the
    sentinels turn it into a replica (about 10 s later), which drops them. A waited step that
    lands there falls short of confirmations; it is not taken as stored (a send result taken
    there let the SMS go out again from the new master): the store asks the sentinels, drops
    its connections to the old master and its retry reaches the new one."""
    store = RedisStore(sentinel_url, wait=1)
    late = RedisStore(sentinel_url, wait=1)  # each holds a connection to the old master
    stale = RedisStore(sentinel_url, wait=1)
    store.record([note("a")], Policy(), T0)
    late.ping()
    stale.ping()
    [claim] = store.claim(T0, 60, 10)
    assert claim.confirmed
    old = redis_sentinel.master()
    with redis_sentinel.sentinel() as s:
        s.sentinel_failover(SentinelSet.SERVICE)
    new = redis_sentinel.wait_for_new_master(old.port, 30)
    with old.client() as c:
        assert c.info("replication")["role"] == "master"  # not told yet
    moved = f"the sentinels name 127.0.0.1:{new.port} as the master now"
    ids = [i.id for i in claim.items]
    with pytest.raises(StoreUnavailable, match=moved) as info:
        store.mark_sent(ids, "sid-1", 1, T0 + 1, token=claim.token, pace_until=T0 + 1)
    assert not isinstance(info.value, StoreUnconfirmed)
    # the claim was confirmed, so the new master has it: the retry stores the result there
    assert store.mark_sent(ids, "sid-1", 1, T0 + 1, token=claim.token, pace_until=T0 + 1) == 1
    # a claim on the old master (its lease lapsed there) is not handed out either
    with pytest.raises(StoreUnavailable, match=moved):
        late.claim(T0 + 61, 60, 10)
    assert late.claim(T0 + 61, 60, 10) == []
    # once the old master is a replica (as the sentinels make it), its refusal of WAIT sends
    # the store to the new master too, instead of failing every step on the old connection
    with old.client() as c:
        c.replicaof("127.0.0.1", str(new.port))
        assert wait_until(lambda: c.info("replication").get("master_link_status") == "up", 10)
    with pytest.raises(StoreUnavailable, match="WAIT cannot be used with replica"):
        stale.claim(T0 + 61, 60, 10)
    assert stale.claim(T0 + 61, 60, 10) == []
    [item] = store.recent()
    assert (item.state, item.sid) == ("sent", "sid-1")
    for s in (store, late, stale):
        s.close()


def test_a_claim_too_few_replicas_confirmed_is_given_back_for_a_while(
        redis_url: str, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    """``BRIDGE_REDIS_WAIT``: the deliverer sends nothing of a claim too few replicas confirmed
    (a failover under way may drop it) for up to ``confirm_wait`` seconds: it gives it back at
    once and waits; replicas away for longer do not stop delivery."""
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = RedisStore(redis_url, wait=1, wait_timeout=0.05)  # no replica at all
    with pytest.raises(StoreUnconfirmed):
        store.record([note("a")], Policy(), time.time())
    with JuheClient(KEY, fake_juhe.url, timeout=2) as client:
        d = Deliverer(store, client, lambda: rules,
                      DeliveryPolicy.from_settings(Settings(), confirm_wait=0.5))
        with pytest.raises(StoreUnconfirmed, match="given back unsent"):
            d.run_once()
        assert fake_juhe.requests == 0
        [claim] = store.claim(time.time(), 60, 10)  # given back: claimable at once
        assert not claim.confirmed
        store.release([i.id for i in claim.items], time.time(), token=claim.token,
                      pace_until=time.time())
        time.sleep(0.5)
        assert d.run_once() == 1
    assert names(fake_juhe) == {"a": 1}
    store.close()


def test_sentinel_without_wait_is_warned_about(sentinel_url: str) -> None:
    s = RedisStore(sentinel_url)
    assert s.describe() == "redis sentinel mymaster via 3 sentinels"
    assert s.config_warnings() == [
        "BRIDGE_REDIS_WAIT=0: replicas copy writes asynchronously, so a failover may lose "
        "webhooks answered 200 just before it; set BRIDGE_REDIS_WAIT=1"]
    s.close()


@pytest.mark.parametrize("url", ["redis_url", "sentinel_url", "cluster_url"])
def test_scripts_unknown_to_the_server_are_loaded_again(url: str,
                                                        request: pytest.FixtureRequest) -> None:
    """What a new master after a failover answers: NOSCRIPT. The script is loaded and run."""
    s = RedisStore(request.getfixturevalue(url), wait=0)
    s.record([note("a")], Policy(), T0)
    s._node().script_flush()
    assert [o.state for o in s.record([note("b")], Policy(), T0)] == ["queued"]
    assert [i.alertname for i in s.recent()] == ["b", "a"]
    s.close()


def test_no_sentinel_answers_is_unavailable_quickly(free_ports: list[int]) -> None:
    url = f"redis+sentinel://:pw@127.0.0.1:{free_ports[0]},127.0.0.1:{free_ports[1]}/mymaster"
    s = RedisStore(url)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="MasterNotFoundError") as info:
        s.record([note("a")], Policy(), T0)
    assert time.monotonic() - started < 5
    assert "pw" not in str(info.value)
    s.close()


@pytest.mark.parametrize(("url", "error"), [
    ("redis+sentinel://:s3cret@127.0.0.1:26379,127.0.0.1:26380",
     "Error: BRIDGE_STORE: expected the master's name after the hosts"),
    ("redis+cluster://:s3cret@127.0.0.1:7000/2", "Error: BRIDGE_STORE: a Redis Cluster has only "
                                                  "database 0"),
])
def test_a_bad_url_stops_the_service_at_start(tmp_path: Path, url: str, error: str) -> None:
    exe = shutil.which("bridge") or str(Path(sys.executable).parent / "bridge")
    env = {**os.environ, "BRIDGE_STORE": url, "PORT": str(free_port()),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([exe, "serve"], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode != 0
    assert error in r.stderr and "s3cret" not in r.stderr + r.stdout


# -- bridge serve on the sentinels ---------------------------------------------------------------
def test_no_replica_to_confirm_answers_503_then_recovers(
        make_bridge: Any, fake_juhe: FakeJuhe, sentinel_url: str,
        redis_sentinel: SentinelSet) -> None:
    bridge = make_bridge(CATCH_ALL, BRIDGE_STORE=sentinel_url, BRIDGE_REDIS_WAIT="1",
                         BRIDGE_REDIS_WAIT_TIMEOUT="300ms")
    assert "store: redis sentinel mymaster via 3 sentinels, wait 1 replica within 0.3s" in \
        bridge.log()
    assert bridge.post("/webhook/alertmanager", alert("Before")).json()["queued"] == 1
    master = redis_sentinel.master()
    for replica in redis_sentinel.replicas():
        replica.stop()
    assert wait_until(lambda: replicas_online(master) == 0, 10)
    r = bridge.post("/webhook/alertmanager", alert("Unconfirmed"))
    assert r.status_code == 503
    assert "0 of 1 replicas confirmed the write within 0.3s (BRIDGE_REDIS_WAIT)" in \
        r.json()["error"]
    ready = bridge.get("/readyz")
    assert ready.status_code == 503
    assert "0 of 1 replicas confirmed" in str(ready.json())
    redis_sentinel.heal()
    # the sender retries: the write stood, so the retry is a duplicate and pages nobody twice
    r = bridge.post("/webhook/alertmanager", alert("Unconfirmed"))
    assert r.status_code == 200 and (r.json()["queued"], r.json()["suppressed"]) == (0, 1)
    assert bridge.get("/readyz").status_code == 200
    fake_juhe.wait_for(2, timeout=20)
    time.sleep(1.0)
    assert names(fake_juhe) == {"Before": 1, "Unconfirmed": 1}


def settled_pass(d: Deliverer, within: float = 20.0) -> int:
    """``d.run_once()`` once the sentinels agree on the new master: under load they sometimes
    promote a second replica right after the first, and a write to the first then raises
    StoreUnavailable (it would be dropped), as the delivery loop sees it and tries again."""
    deadline = time.monotonic() + within
    while True:
        try:
            return d.run_once()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_result_stored_during_a_failover_is_retried_not_sent_again(
        tmp_path: Path, fake_juhe: FakeJuhe, sentinel_url: str,
        redis_sentinel: SentinelSet) -> None:
    """The master dies while an SMS is being sent: the deliverer keeps trying to store the
    result until the new master takes it, so the SMS is not sent again when its lease ends."""
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = RedisStore(sentinel_url, wait=1)
    store.record([note("Mid")], Policy(), time.time())
    fake_juhe.delay = 2.0
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            d.run_once()
        except BaseException as exc:  # reported below
            errors.append(exc)

    with JuheClient(KEY, fake_juhe.url, timeout=10) as client:
        d = Deliverer(store, client, lambda: rules,
                      DeliveryPolicy.from_settings(Settings(), lease=3.0))
        t = threading.Thread(target=deliver)
        t.start()
        assert wait_until(lambda: fake_juhe.requests == 1, 10)
        old = redis_sentinel.master()
        old.kill9()
        t.join(60)
        assert not t.is_alive() and errors == []
        redis_sentinel.wait_for_new_master(old.port, 30)
        time.sleep(3.5)  # past the lease: an unstored result would be claimed and sent again
        fake_juhe.delay = 0
        assert settled_pass(d) == 0
    assert names(fake_juhe) == {"Mid": 1}
    [item] = store.recent()
    assert (item.alertname, item.state, item.attempts) == ("Mid", "sent", 1)
    store.close()


def test_a_result_taken_by_a_replaced_master_is_stored_again_on_the_new_one(
        tmp_path: Path, fake_juhe: FakeJuhe, sentinel_url: str,
        redis_sentinel: SentinelSet) -> None:
    """A failover while an SMS is being sent, the old master still running (a second failover
    right after a first, a partition): the result must not stay on the old master, which
    drops it when it is made a replica, or the SMS goes out again from the new master when its
    lease ends. The deliverer stores it again until the new master has it."""
    (tmp_path / "r.yaml").write_text(CATCH_ALL)
    rules = load_rules(tmp_path / "r.yaml")
    store = RedisStore(sentinel_url, wait=1)
    store.record([note("Mid")], Policy(), time.time())
    fake_juhe.delay = 3.0
    passes: list[int] = []
    with JuheClient(KEY, fake_juhe.url, timeout=10) as client:
        d = Deliverer(store, client, lambda: rules,
                      DeliveryPolicy.from_settings(Settings(), lease=60.0))
        t = threading.Thread(target=lambda: passes.append(d.run_once()))
        t.start()
        assert wait_until(lambda: fake_juhe.requests == 1, 10)
        old = redis_sentinel.master()
        with redis_sentinel.sentinel() as s:
            s.sentinel_failover(SentinelSet.SERVICE)
        new = redis_sentinel.wait_for_new_master(old.port, 30)
        t.join(60)
        assert not t.is_alive() and passes == [1]
    with old.client() as c:  # as the sentinels do about 10 s later: it drops what it took
        c.replicaof("127.0.0.1", str(new.port))
        assert wait_until(lambda: c.info("replication").get("master_link_status") == "up", 10)
    with new.client() as c:
        assert c.hmget("{bridge}:item:1", "state", "lease_token") == ["sent", ""]
    assert names(fake_juhe) == {"Mid": 1}
    store.close()


@pytest.mark.timeout(300)
def test_failover_loses_no_page_and_pages_nobody_twice(
        make_bridge: Any, fake_juhe: FakeJuhe, sentinel_url: str,
        redis_sentinel: SentinelSet) -> None:
    fake_juhe.down()
    bridge = make_bridge(CATCH_ALL, BRIDGE_STORE=sentinel_url, BRIDGE_REDIS_WAIT="1")
    assert "store: redis sentinel mymaster via 3 sentinels, wait 1 replica\n" in bridge.log()
    before = [f"Before{i}" for i in range(30)]
    for name in before:
        r = bridge.post("/webhook/alertmanager", alert(name))
        assert (r.status_code, r.json()["queued"]) == (200, 1), r.text
    # webhooks keep coming while the master dies and a replica is promoted
    answers: list[tuple[str, int, float]] = []
    stop = threading.Event()

    def keep_posting() -> None:
        with requests.Session() as session:
            n = 0
            while not stop.is_set():
                name, started = f"During{n}", time.monotonic()
                n += 1
                try:
                    code = session.post(bridge.base + "/webhook/alertmanager", json=alert(name),
                                        timeout=30).status_code
                except requests.RequestException:
                    code = -1
                answers.append((name, code, started))
                time.sleep(0.05)

    poster = threading.Thread(target=keep_posting)
    poster.start()
    try:
        time.sleep(0.5)
        old = redis_sentinel.master()
        old.kill9()
        ready = bridge.get("/readyz")
        assert ready.status_code == 503 and "store unavailable" in str(ready.json())
        redis_sentinel.wait_for_new_master(old.port, 60)
        named = time.monotonic()
        # answered 200 again within 5 s of the sentinels naming the new master, no restart
        assert wait_until(lambda: any(code == 200 and at >= named
                                      for _, code, at in list(answers)), 5.0), answers[-10:]
        time.sleep(0.5)
    finally:
        stop.set()
        poster.join(60)
    codes = collections.Counter(code for _, code, _ in answers)
    assert set(codes) <= {200, 503}, codes
    assert codes[503] >= 1  # the test did see the master gone
    fake_juhe.up()
    answered = before + [name for name, code, _ in answers if code == 200]
    refused = {name for name, code, _ in answers if code == 503}
    # bounded by the 120 s lease: a claim that the failover stranded on the new master (taken
    # on the old one, its give-back lost with it) is sent once its lease ends, not lost
    assert wait_until(lambda: set(answered) <= set(names(fake_juhe)), 150, 0.2), (
        set(answered) - set(names(fake_juhe)))
    time.sleep(2.0)
    sent = names(fake_juhe)
    assert all(sent[name] == 1 for name in answered), sent
    # written but never confirmed may still go out, once
    assert set(sent) <= set(answered) | refused and all(sent[n] == 1 for n in refused & set(sent))
    # the remaining replica follows the new master within a few seconds; until it confirms
    # writes, /readyz (a WAIT-confirmed ping) rightly says 503 (seen once on a loaded machine)
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 15), \
        bridge.get("/readyz").text


# -- Redis Cluster --------------------------------------------------------------------------------
def test_two_instances_on_a_cluster_page_each_mobile_once(
        make_bridge: Any, fake_juhe: FakeJuhe, cluster_url: str,
        redis_cluster: ClusterSet) -> None:
    a = make_bridge(SPEC_RULES, BRIDGE_STORE=cluster_url)
    b = make_bridge(SPEC_RULES, BRIDGE_STORE=cluster_url)
    assert "store: redis cluster via 3 seed nodes, every key under {bridge}" in a.log()
    answers = post_many([a, b], DB_DOWN, 20)
    assert {r.status_code for r in answers} == {200}
    assert sum(r.json()["queued"] for r in answers) == 3
    assert sum(r.json()["suppressed"] for r in answers) == 57
    fake_juhe.wait_for(3, timeout=15)
    time.sleep(1.0)
    assert sorted(m["mobile"] for m in fake_juhe.messages) == [
        "13800138000", "13800138001", "13900139000"]
    # every key of the bridge is in one slot, on one master
    per_node = {}
    for node in redis_cluster.nodes:
        with node.client() as c:
            per_node[node.port] = [k for k in c.scan_iter("*")]
    holding = [port for port, keys in per_node.items() if keys]
    assert len(holding) == 1
    keys = per_node[holding[0]]
    assert all(k.startswith("{bridge}:") for k in keys) and "{bridge}:seq" in keys
    with redis_cluster.nodes[0].client() as c:
        assert {c.cluster("keyslot", k) for k in keys} == {c.cluster("keyslot", "bridge")}


def test_cluster_wait_without_replicas_is_unconfirmed(cluster_url: str) -> None:
    s = RedisStore(cluster_url, wait=1, wait_timeout=0.1)
    with pytest.raises(StoreUnconfirmed, match="0 of 1 replicas"):
        s.record([note("a")], Policy(), T0)
    assert [i.alertname for i in s.recent()] == ["a"]
    s.close()


def test_cluster_down_is_unavailable_not_an_error(tmp_path: Path, free_ports: list[int]) -> None:
    s = RedisStore(f"redis+cluster://:pw@127.0.0.1:{free_ports[0]}")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="cannot be connected") as info:
        s.ping()
    assert time.monotonic() - started < 5
    assert "pw" not in str(info.value)
    s.close()
