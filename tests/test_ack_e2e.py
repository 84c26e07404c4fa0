"""The web side of acknowledging (issue 12) through the real ``bridge serve`` (two gunicorn
workers, SQLite): ``GET /a/<code>`` changes nothing, ``POST`` acknowledges as the person the
code was sent to and a second POST says already, cross-site POSTs are refused, wrong codes get
404 then 429 after 20 in a minute (counted in the store, across workers), alert text is escaped
on the page, and ``/api/episodes`` with its ``ack`` behind the token."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from conftest import wait_until
from fakejuhe import FakeJuhe

from bridge.store import open_store

ZHANG, LI = "13800138000", "13800138001"
TOKEN = "s3cret-token-5d1e8a"
RULES = f"""\
people: {{zhang: "{ZHANG}", li: "{LI}"}}
receivers: {{oncall: [zhang], secondary: [li]}}
templates:
  page:
    tpl_id: 111
    vars: {{name: "{{{{ labels.alertname }}}}", ack: "{{{{ ack_code }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - name: sre-page
    matchers: ['severity="critical"']
    receiver: oncall
    template: page
    escalate: [{{after: 1h, receiver: secondary}}]
"""


def alert(name: str, summary: str = "disk almost full") -> dict[str, Any]:
    return {"version": "4", "externalURL": "http://am.example:9093",
            "alerts": [{"status": "firing",
                        "labels": {"alertname": name, "severity": "critical"},
                        "annotations": {"summary": summary},
                        "startsAt": "2026-11-29T01:00:00Z"}]}


def page_and_code(bridge: Any, fake: FakeJuhe, name: str, summary: str = "disk") -> str:
    """Post a firing alert, wait for its SMS and return the ack code it carried."""
    assert bridge.post("/webhook/alertmanager", alert(name, summary),
                       headers={"Authorization": f"Bearer {TOKEN}"}).json()["queued"] == 1
    assert wait_until(lambda: any(m["vars"]["name"] == name for m in fake.messages), 20)
    [code] = [m["vars"]["ack"] for m in fake.messages if m["vars"]["name"] == name]
    return code


def test_link_get_changes_nothing_post_acks_once_and_text_is_escaped(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(RULES, BRIDGE_TOKEN=TOKEN)
    code = page_and_code(bridge, fake_juhe, "DiskFull", "<script>alert(1)</script> & more")
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    # the fake has the SMS before the deliverer stores its outcome: wait for that mark too
    assert wait_until(lambda: [i.state for i in store.recent(100)] == ["sent"], 10)
    [before] = store.episodes(limit=10)
    rows_before = [i.to_json() for i in store.recent(100)]
    for _ in range(4):  # link scanners open links: nothing may change
        r = requests.get(f"{bridge.base}/a/{code}", timeout=10)
        assert r.status_code == 200, r.text
    assert store.episodes(limit=10) == [before]
    assert [i.to_json() for i in store.recent(100)] == rows_before
    assert before.state == "firing"
    page = r.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in page
    assert "<script>" not in page  # no script at all on this page, the alert's shows as text
    assert "Content-Security-Policy" in r.headers and "default-src 'self'" in r.headers[
        "Content-Security-Policy"]
    assert "2026-11-29 09:00:00" in page  # startsAt in BRIDGE_TZ (Asia/Shanghai)
    assert "zhang 138****8000" in page and ZHANG not in page
    assert "step 1: secondary at" in page
    assert "Acknowledge as zhang" in page and f'action="/a/{code}"' in page
    silence = ('http://am.example:9093/#/silences/new?filter=')
    assert silence in page
    # a cross-site POST is refused and changes nothing
    r = requests.post(f"{bridge.base}/a/{code}", headers={"Sec-Fetch-Site": "cross-site"},
                      timeout=10)
    assert r.status_code == 403
    r = requests.post(f"{bridge.base}/a/{code}", headers={"Origin": "https://evil.example"},
                      timeout=10)
    assert r.status_code == 403
    assert store.episodes(limit=10) == [before]
    # the POST from the page itself acknowledges as the person the code was sent to
    host = bridge.base.split("://", 1)[1]
    r = requests.post(f"{bridge.base}/a/{code}", timeout=10,
                      headers={"Origin": f"http://{host}", "Sec-Fetch-Site": "same-origin"})
    assert r.status_code == 200 and "Acknowledged by zhang at" in r.text, r.text
    [after] = store.episodes(limit=10)
    assert (after.state, after.acknowledged_by, after.acknowledged_via) == (
        "acknowledged", "zhang", "link")
    assert [(s.state, s.reason) for s in after.steps] == [("cancelled", "acknowledged by zhang")]
    r = requests.post(f"{bridge.base}/a/{code}", timeout=10)  # curl: no Origin, accepted
    assert r.status_code == 200 and "Already acknowledged by zhang at" in r.text, r.text
    assert store.episodes(limit=10) == [after]
    r = requests.get(f"{bridge.base}/a/{code}", timeout=10)
    assert "acknowledged by zhang" in r.text and 'id="ack"' not in r.text
    # issue 20.14: the cancelled step is still shown, as cancelled; when the SMS was sent
    assert '<li>step 1: secondary: cancelled (acknowledged by zhang)</li>' in r.text, r.text
    [paged] = after.paged
    [item] = [i for i in store.recent(10) if i.id == paged.item_id]
    sent = datetime.fromtimestamp(item.updated_at, ZoneInfo("Asia/Shanghai"))
    assert f", sent {sent:%Y-%m-%d %H:%M:%S}: sent</li>" in r.text, r.text
    # issue 20.14: the icon is the package's, linked from the page (no 404 on every load)
    assert '<link rel="icon" href="/favicon.ico">' in r.text
    icon = requests.get(f"{bridge.base}/favicon.ico", timeout=10)
    assert (icon.status_code, icon.headers["Content-Type"]) == (200, "image/vnd.microsoft.icon")
    assert icon.content[:4] == b"\x00\x00\x01\x00" and "max-age=86400" in icon.headers[
        "Cache-Control"]
    store.close()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_wrong_codes_404_then_429_across_workers_and_instances_valid_code_still_served(
        make_bridge: Any, fake_juhe: FakeJuhe, store: str, request: pytest.FixtureRequest
) -> None:
    env = {"BRIDGE_STORE": request.getfixturevalue("redis_url")} if store == "redis" else {}
    a = make_bridge(RULES, WEB_CONCURRENCY="2", **env)
    b = make_bridge(RULES, WEB_CONCURRENCY="2", **env)  # a second instance on the same store
    code = page_and_code(a, fake_juhe, "DiskFull")
    if time.time() % 60 > 40:  # keep the 21 tries within one fixed minute
        time.sleep(61 - time.time() % 60)
    # a new connection per request, alternating instances (each with two workers): the count
    # is the store's
    statuses = [requests.get(f"{(a, b)[n % 2].base}/a/Wrong{n:04d}code", timeout=10).status_code
                for n in range(20)]
    assert statuses == [404] * 20
    assert requests.get(f"{b.base}/a/Wrong9999code", timeout=10).status_code == 429
    assert requests.post(f"{a.base}/a/Wrong9998code", timeout=10).status_code == 429
    for bridge in (a, b):  # a valid code is always served
        assert requests.get(f"{bridge.base}/a/{code}", timeout=10).status_code == 200
    assert "tried 21 unknown codes this minute" in a.log() + b.log()


def test_api_episodes_shapes_state_filter_and_ack_behind_the_token(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(RULES, BRIDGE_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    page_and_code(bridge, fake_juhe, "DiskFull")
    page_and_code(bridge, fake_juhe, "Latency")
    assert requests.get(f"{bridge.base}/api/episodes", timeout=10).status_code == 401
    [latency, disk] = requests.get(f"{bridge.base}/api/episodes", headers=auth,
                                   timeout=10).json()["episodes"]
    assert (latency["alertname"], disk["alertname"]) == ("Latency", "DiskFull")
    assert {k: disk[k] for k in ("alertname", "labels", "summary", "state", "acknowledged_by",
                                 "acknowledged_at", "resolved_at")} == {
        "alertname": "DiskFull", "labels": {"alertname": "DiskFull", "severity": "critical"},
        "summary": "disk", "state": "firing", "acknowledged_by": None,
        "acknowledged_at": None, "resolved_at": None}
    assert disk["starts_at"] == 1795914000.0 and len(disk["fingerprint"]) == 16
    [paged] = disk["paged"]
    assert (paged["person"], paged["mobile"], paged["level"]) == ("zhang", "138****8000", 0)
    assert wait_until(lambda: requests.get(f"{bridge.base}/api/episodes", headers=auth,
                                           timeout=10).json()["episodes"][1]["paged"][0][
        "state"] == "sent", 10)
    disk = requests.get(f"{bridge.base}/api/episodes", headers=auth,
                        timeout=10).json()["episodes"][1]
    [paged] = disk["paged"]
    [step] = disk["escalation"]
    assert (step["index"], step["after"], step["receiver"], step["state"], step["reason"],
            step["ran_at"]) == (1, 3600.0, "secondary", "pending", "", None)
    # the clock started when the page went out (issue 20.3)
    assert step["due_at"] == paged["sent_at"] + 3600 and paged["sent_at"] >= paged["at"]
    # ack via API
    url = f"{bridge.base}/api/episodes/{disk['id']}/ack"
    assert requests.post(url, json={"by": "li"}, timeout=10).status_code == 401
    assert requests.post(url, json={"who": "li"}, headers=auth, timeout=10).status_code == 400
    assert requests.post(url, data="li", headers=auth, timeout=10).status_code == 400
    assert requests.post(f"{bridge.base}/api/episodes/nope/ack", json={"by": "li"},
                         headers=auth, timeout=10).status_code == 404
    r = requests.post(url, json={"by": "li"}, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["acknowledged"] is True, r.text
    assert r.json()["episode"]["acknowledged_by"] == "li"
    r = requests.post(url, json={"by": "zhang"}, headers=auth, timeout=10)
    assert r.json()["acknowledged"] is False and r.json()["episode"]["acknowledged_by"] == "li"
    # issue 20.5: it says why, as the link page does (BRIDGE_TZ, to the minute)
    at = r.json()["episode"]["acknowledged_at_local"][:16]
    assert r.json()["reason"] == f"already acknowledged by li at {at}"
    # issue 20.11: a name that could spoof "Acknowledged by" is refused, saying why
    other = f"{bridge.base}/api/episodes/{latency['id']}/ack"
    for bad, why in [("x" * 65, "the name is longer than 64 characters"),
                     ("li\u202eetirw", "the name contains a bidirectional control character"
                                       " (U+202E)"),
                     ("li\x00", "the name contains a control character (U+0000)"),
                     # JSON's "\ud800": a lone surrogate, which no store can keep
                     ("li\ud800", "the name contains a lone surrogate (U+D800)")]:
        r = requests.post(other, json={"by": bad}, headers=auth, timeout=10)
        assert (r.status_code, r.json()) == (400, {"error": f'"by": {why}'})

    def names(state: str) -> list[str]:
        r = requests.get(f"{bridge.base}/api/episodes?state={state}", headers=auth, timeout=10)
        return [e["alertname"] for e in r.json()["episodes"]]

    assert names("firing") == ["Latency"]
    assert names("acknowledged") == ["DiskFull"]
    assert names("resolved") == []
    assert requests.get(f"{bridge.base}/api/episodes?state=bogus", headers=auth,
                        timeout=10).status_code == 400
    assert [e["alertname"] for e in requests.get(f"{bridge.base}/api/episodes?limit=1",
                                                 headers=auth, timeout=10).json()[
        "episodes"]] == ["Latency"]
    # issue 20.5: an acknowledgement of a resolved episode says when it resolved
    body = alert("Latency")
    body["alerts"][0]["status"] = "resolved"
    assert bridge.post("/webhook/alertmanager", body, headers=auth).status_code == 200
    r = requests.post(other, json={"by": "zhang"}, headers=auth, timeout=10)
    assert r.status_code == 200 and r.json()["acknowledged"] is False, r.text
    at = r.json()["episode"]["resolved_at_local"][:16]
    assert r.json()["reason"] == f"already resolved at {at}"
