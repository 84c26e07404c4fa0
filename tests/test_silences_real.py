"""Acknowledging silences the alert in a real Alertmanager (Debian's ``prometheus-alertmanager``)
through the real ``bridge serve`` (docs/oncall.md, "Silences in Alertmanager"): the silence
appears after the acknowledgement, with the alert's labels as equality matchers, is kept with
the episode; the alert resolving in Alertmanager (whose resolved notification the silence
holds back) resolves the episode and expires the silence; with Alertmanager stopped the
acknowledgement stays quick, the silence is made once Alertmanager is back, and a resolved
webhook expires it. The give-up after 10 minutes and
the request body are checked without waiting (a store in ``tmp_path``, a closed port)."""

from __future__ import annotations

import re
import time
from dataclasses import replace as with_
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CATCH_ALL, free_port, wait_until
from fakejuhe import FakeJuhe
from test_alertmanager_real import AM_BIN, TOKEN, Alertmanager, am_alert
from test_store import INFO, NO_LIMITS, T0, paging

from bridge import metrics
from bridge.deliver.silences import CREATE, GIVE_UP_AFTER, Silencer, retry_delay, silence_body
from bridge.store.base import Job
from bridge.store.sqlite.store import SqliteStore

AUTH = {"Authorization": f"Bearer {TOKEN}"}


def silences(am: Alertmanager) -> list[dict[str, Any]]:
    r = requests.get(am.base + "/api/v2/silences", timeout=10)
    assert r.status_code == 200, r.text
    return list(r.json())


def episodes(bridge: Any) -> list[dict[str, Any]]:
    r = bridge.get("/api/episodes", headers=AUTH)
    assert r.status_code == 200, r.text
    return list(r.json()["episodes"])


def operator_page(bridge: Any) -> str:
    """The operator page's HTML, logged in with the token through the login form."""
    with requests.Session() as web:
        form = web.get(bridge.base + "/login", timeout=10).text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf, form
        r = web.post(bridge.base + "/login", data={"csrf": csrf.group(1), "token": TOKEN},
                     timeout=10)
        assert r.status_code == 200 and "Episodes" in r.text, r.text[:500]
        return r.text


def ack(bridge: Any, eid: str, by: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    r = bridge.post(f"/api/episodes/{eid}/ack", {"by": by}, headers=AUTH)
    return r, time.monotonic() - started


@pytest.mark.skipif(AM_BIN is None, reason="prometheus-alertmanager is not installed")
def test_ack_silences_in_alertmanager_and_resolve_expires(tmp_path: Path, make_bridge: Any,
                                                          fake_juhe: FakeJuhe) -> None:
    port = free_port()
    am = Alertmanager(tmp_path, f"http://127.0.0.1:{port}/webhook/alertmanager")
    bridge = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN, PORT=str(port),
                         BRIDGE_ALERTMANAGER_URL=am.base, BRIDGE_ACK_SILENCE="2h")
    am.start()
    try:
        starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
        disk = am_alert("DiskFull", "db-1:9100", "disk / is 97% full", starts)
        am.post_alerts([disk])
        assert fake_juhe.wait_for(1, timeout=15), bridge.log()[-2000:]
        [e] = episodes(bridge)
        assert e["silence_id"] is None and e["state"] == "firing"

        r, took = ack(bridge, e["id"], "zhang")
        assert r.status_code == 200 and r.json()["acknowledged"], r.text
        assert took < 1.0

        assert wait_until(lambda: [s for s in silences(am)
                                   if s["status"]["state"] == "active"], 15), bridge.log()
        [s] = silences(am)
        assert s["createdBy"] == "zhang"
        assert sorted((m["name"], m["value"], m["isRegex"], m.get("isEqual", True))
                      for m in s["matchers"]) == [
            ("alertname", "DiskFull", False, True), ("instance", "db-1:9100", False, True),
            ("severity", "critical", False, True)]
        assert e["id"] in s["comment"] and "bridge" in s["comment"]
        ends = datetime.fromisoformat(s["endsAt"].replace("Z", "+00:00"))
        assert timedelta(hours=2) - timedelta(seconds=30) < ends - datetime.now(UTC) \
            <= timedelta(hours=2)
        assert wait_until(lambda: episodes(bridge)[0]["silence_id"] == s["id"], 10)
        # Alertmanager itself now holds the alert back from every receiver
        assert wait_until(lambda: [a["status"]["state"] for a in am.alerts()] == ["suppressed"],
                          10), am.alerts()
        assert s["id"] in operator_page(bridge)

        # the alert resolves in Alertmanager: the silence holds its resolved notification back
        # from every receiver, so the bridge sees it gone from Alertmanager's alerts and
        # resolves the episode itself: the resolved SMS, the silence expired
        past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
        am.post_alerts([am_alert("DiskFull", "db-1:9100", "disk / is 97% full", starts, past)])
        msgs = fake_juhe.wait_for(2, timeout=40)
        assert [(m["tpl_id"], m["vars"]) for m in msgs] == [
            ("111", msgs[0]["vars"]), ("222", {"name": "DiskFull"})], bridge.log()[-3000:]
        assert wait_until(lambda: silences(am)[0]["status"]["state"] == "expired", 15), \
            bridge.log()[-3000:]
        [e] = episodes(bridge)
        assert (e["state"], e["silence_id"]) == ("resolved", s["id"])
        log = bridge.log()
        assert "alertmanager no longer has the alert firing" in log
        assert "silence " + s["id"] + " expired in alertmanager" in log
    finally:
        am.stop()


@pytest.mark.skipif(AM_BIN is None, reason="prometheus-alertmanager is not installed")
def test_ack_is_quick_with_alertmanager_stopped_and_silences_once_it_is_back(
        tmp_path: Path, make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    port = free_port()
    am = Alertmanager(tmp_path, f"http://127.0.0.1:{port}/webhook/alertmanager")
    bridge = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN, PORT=str(port),
                         BRIDGE_ALERTMANAGER_URL=am.base)
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    body = {"version": "4", "status": "firing", "receiver": "bridge", "externalURL": am.base,
            "alerts": [{**am_alert("HighCPU", "web-2:9100", "cpu 99%", starts),
                        "status": "firing", "fingerprint": "a1b2c3d4e5f60718"}]}
    r = bridge.post("/webhook/alertmanager", body, headers=AUTH)
    assert r.status_code == 200 and r.json()["queued"] == 1, r.text
    [e] = episodes(bridge)
    r, took = ack(bridge, e["id"], "li")    # nothing listens on Alertmanager's port
    assert r.status_code == 200 and r.json()["acknowledged"], r.text
    assert took < 0.5
    assert wait_until(lambda: "alertmanager silence create failed, retry in" in bridge.log(),
                      10), bridge.log()[-2000:]
    assert episodes(bridge)[0]["silence_id"] is None
    am.start()   # back: the retry creates the silence
    try:
        assert wait_until(lambda: [s for s in silences(am) if s["createdBy"] == "li"], 30), \
            bridge.log()[-2000:]
        [s] = silences(am)
        assert s["status"]["state"] == "active"
        assert wait_until(lambda: episodes(bridge)[0]["silence_id"] == s["id"], 10)
        # a resolved webhook (as Alertmanager sends it when no silence holds it back) resolves
        # the episode: the silence is expired
        resolved = {**body, "status": "resolved",
                    "alerts": [{**body["alerts"][0], "status": "resolved",
                                "endsAt": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}]}
        r = bridge.post("/webhook/alertmanager", resolved, headers=AUTH)
        assert r.status_code == 200, r.text
        assert wait_until(lambda: silences(am)[0]["status"]["state"] == "expired", 15), \
            bridge.log()[-3000:]
        assert episodes(bridge)[0]["state"] == "resolved"
    finally:
        am.stop()


# -- without Alertmanager: the body, the delays, the give-up ---------------------------------
def test_silence_body_has_one_equality_matcher_per_label() -> None:
    body = silence_body({"alertname": "DiskFull", "empty": "", "host": "db1"}, "zhang", "ep1",
                        "DiskFull", 1_790_000_000.0, 1_790_014_400.0)
    assert body == {
        "matchers": [{"name": "alertname", "value": "DiskFull", "isRegex": False,
                      "isEqual": True},
                     {"name": "host", "value": "db1", "isRegex": False, "isEqual": True}],
        "startsAt": "2026-09-21T14:13:20.000Z", "endsAt": "2026-09-21T18:13:20.000Z",
        "createdBy": "zhang",
        "comment": "Acknowledged in the alert-sms bridge: episode ep1 (DiskFull)"}
    with pytest.raises(ValueError):
        silence_body({"x": ""}, "zhang", "ep1", "", 0, 1)


@pytest.mark.parametrize(("attempts", "delay"), [(0, 2), (1, 4), (4, 32), (5, 60), (12, 60)],
                         ids=["first", "second", "fifth", "capped", "long-after"])
def test_retry_delay(attempts: int, delay: float) -> None:
    assert retry_delay(attempts) == delay


@pytest.mark.parametrize(("since_ago", "attempts", "outcome"), [
    (0.0, 0, "retry"), (GIVE_UP_AFTER - 61, 9, "retry"), (GIVE_UP_AFTER - 59, 9, "failed"),
    (GIVE_UP_AFTER + 1, 0, "failed")],
    ids=["at-once", "within-10-minutes", "next-try-past-10-minutes", "past-10-minutes"])
def test_create_against_unreachable_alertmanager_retries_then_gives_up(
        tmp_path: Path, since_ago: float, attempts: int, outcome: str) -> None:
    store = SqliteStore(str(tmp_path / "bridge.db"))
    [o] = store.record([paging(info=with_(INFO, source="alertmanager"))], NO_LIMITS, T0)
    store.acknowledge(o.episode_id or "", "zhang", "api", T0)
    silencer = Silencer(store, f"http://127.0.0.1:{free_port()}", 3600)
    job = Job(f"{CREATE}:{o.episode_id}", CREATE,
              {"episode": o.episode_id, "labels": {"alertname": "DiskFull"}, "by": "zhang",
               "alertname": "DiskFull", "ends_at": T0 + 3600}, "pending", T0, T0, T0,
              attempts=attempts)
    before = metrics.SILENCE_ERRORS.labels("create")._value.get()  # noqa: SLF001
    result = silencer.create(job, T0 + since_ago)
    assert result.outcome == outcome
    gave_up = metrics.SILENCE_ERRORS.labels("create")._value.get() - before  # noqa: SLF001
    assert gave_up == (1 if outcome == "failed" else 0)
    if outcome == "retry":
        assert result.due_at == T0 + since_ago + retry_delay(attempts)
    store.close()
