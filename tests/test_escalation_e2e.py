"""Episodes, acknowledgements and escalation through the real ``bridge serve`` (issues 11 and
12): each step pages once at about its time, an acknowledgement or a resolve before a step
cancels it, repeats after an acknowledgement are suppressed, the resolved SMS goes to who was
paged even after a reload rotated the schedule, two instances on Redis run each step once,
and a step that fell due while the service was stopped runs after the restart.

Acknowledgements go through the store API (the same call the web's ``/a/<code>`` and
``/api/episodes/<id>/ack`` make), on the store the served bridge uses."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from conftest import wait_until
from fakejuhe import FakeJuhe

from bridge.decide.episodes import Episode, valid_code
from bridge.store import open_store
from bridge.store.base import Store

ZHANG, LI, WANG = "13800138000", "13800138001", "13900139000"
STARTS = "2026-11-29T01:00:00Z"


def rules(members: str = "[zhang, li]", steps: str = "[{after: 2s, receiver: secondary},"
          " {after: 4s, receiver: lead}]", repeat: str = "4h") -> str:
    """A daily rotation (shift 0 began two hours ago: ``members[0]`` on call now), a route
    paging it with two escalation steps, a resolved template."""
    began = datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(hours=2)
    return f"""\
people: {{zhang: "{ZHANG}", li: "{LI}", wang: "{WANG}"}}
receivers: {{secondary: [li], lead: [wang]}}
schedules:
  sre:
    members: {members}
    shift: 1d
    handover: "{began:%H:%M}"
    start: {began:%Y-%m-%d}
templates:
  page:
    tpl_id: 111
    vars: {{name: "{{{{ labels.alertname }}}}", who: "{{{{ person }}}}",
            esc: "{{{{ escalation }}}}", ack: "{{{{ ack_code }}}}"}}
  ok:
    tpl_id: 222
    vars: {{name: "{{{{ labels.alertname }}}}", who: "{{{{ person }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - name: sre-page
    matchers: ['severity="critical"']
    receiver: sre
    template: page
    resolved_template: ok
    repeat_interval: {repeat}
    escalate: {steps}
"""


def alert(name: str, status: str = "firing") -> dict[str, Any]:
    return {"alerts": [{"status": status,
                        "labels": {"alertname": name, "severity": "critical"},
                        "startsAt": STARTS}]}


def sent(fake: FakeJuhe) -> list[tuple[str, str, dict[str, str]]]:
    return [(m["mobile"], m["tpl_id"], m["vars"]) for m in fake.messages]


def settle(fake: FakeJuhe, n: int, quiet: float = 1.5) -> list[tuple[str, str, dict[str, str]]]:
    assert wait_until(lambda: len(fake.messages) >= n, 30), sent(fake)
    time.sleep(quiet)  # an SMS more, were one wrongly queued, would arrive meanwhile
    return sent(fake)


def only_episode(store: Store, name: str) -> Episode:
    [e] = [e for e in store.episodes(limit=100) if e.alertname == name]
    return e


def test_no_ack_climbs_each_step_once_then_resolved_to_everyone_paged(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(rules())
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    t0 = time.time()
    assert bridge.post("/webhook/alertmanager", alert("DiskFull")).json()["queued"] == 1
    got = settle(fake_juhe, 3)
    e = only_episode(store, "DiskFull")
    codes = {p.mobile: p.code for p in e.paged}
    assert all(c is not None and valid_code(c) for c in codes.values())
    assert len(set(codes.values())) == 3
    assert got == [
        (ZHANG, "111", {"name": "DiskFull", "who": "zhang", "esc": "0", "ack": codes[ZHANG]}),
        (LI, "111", {"name": "DiskFull", "who": "li", "esc": "1", "ack": codes[LI]}),
        (WANG, "111", {"name": "DiskFull", "who": "wang", "esc": "2", "ack": codes[WANG]})]
    at = [m["t"] - t0 for m in fake_juhe.messages]
    assert 1.5 <= at[1] <= 7 and 3.5 <= at[2] <= 9, at
    assert [(s.index, s.state, s.reason) for s in e.steps] == [
        (1, "done", "paged 1: li 138****8001"), (2, "done", "paged 1: wang 139****9000")]
    assert [(p.mobile, p.level, p.route, p.resolved_template) for p in e.paged] == [
        (ZHANG, 0, "sre-page", "ok"), (LI, 1, "sre-page", "ok"), (WANG, 2, "sre-page", "ok")]
    assert e.state == "firing" and e.route == "sre-page"
    assert wait_until(lambda: "escalation step 1 via secondary: li 138****8001 -> queued"
                      in bridge.log() and "escalation step 2 via lead: wang 139****9000 -> queued"
                      in bridge.log(), 10), bridge.log()
    metrics = bridge.get("/metrics").text
    assert re.search(r'^bridge_escalations_total\{route="sre-page",step="1"\} 1\.0$', metrics,
                     re.M), metrics
    assert re.search(r'^bridge_escalations_total\{route="sre-page",step="2"\} 1\.0$', metrics,
                     re.M), metrics

    r = bridge.post("/webhook/alertmanager", alert("DiskFull", "resolved"))
    assert r.status_code == 200 and r.json()["queued"] == 3, r.text
    assert settle(fake_juhe, 6)[3:] == [
        (ZHANG, "222", {"name": "DiskFull", "who": "zhang"}),
        (LI, "222", {"name": "DiskFull", "who": "li"}),
        (WANG, "222", {"name": "DiskFull", "who": "wang"})]
    e = only_episode(store, "DiskFull")
    assert e.state == "resolved" and e.resolved_at is not None
    store.close()


def test_ack_or_resolve_before_a_step_cancels_it_and_repeats_are_suppressed(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(rules(steps="[{after: 4s, receiver: secondary}]", repeat="1s"))
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    for name in ("DiskFull", "Latency"):
        assert bridge.post("/webhook/alertmanager", alert(name)).json()["queued"] == 1
    assert wait_until(lambda: len(fake_juhe.messages) == 2, 20)
    disk = only_episode(store, "DiskFull")
    episode, first = store.acknowledge(disk.id, "zhang", "api", time.time())
    assert first and episode.steps[0].state == "cancelled"
    assert bridge.post("/webhook/alertmanager", alert("Latency", "resolved")).json()[
        "queued"] == 1
    time.sleep(1.2)  # past repeat_interval: a repeat would page again, but it is acknowledged
    r = bridge.post("/webhook/alertmanager", alert("DiskFull"))
    assert r.json()["suppressed"] == 1 and r.json()["queued"] == 0, r.text
    time.sleep(5)  # both steps' due times pass
    assert sent(fake_juhe) == [
        (ZHANG, "111", {"name": "DiskFull", "who": "zhang", "esc": "0",
                        "ack": disk.paged[0].code}),
        (ZHANG, "111", {"name": "Latency", "who": "zhang", "esc": "0",
                        "ack": only_episode(store, "Latency").paged[0].code}),
        (ZHANG, "222", {"name": "Latency", "who": "zhang"})]
    disk, latency = only_episode(store, "DiskFull"), only_episode(store, "Latency")
    assert [(s.state, s.reason) for s in disk.steps] == [("cancelled", "acknowledged by zhang")]
    assert [(s.state, s.reason) for s in latency.steps] == [("cancelled", "resolved")]
    assert (disk.state, disk.acknowledged_by, disk.acknowledged_via) == (
        "acknowledged", "zhang", "api")
    rows = bridge.get("/api/notifications").json()["notifications"]
    assert [(r["alertname"], r["state"], r["reason"]) for r in rows][0] == (
        "DiskFull", "suppressed", "acknowledged")
    # the first acknowledgement stands; the resolved SMS still goes to who was paged
    again, first = store.acknowledge(disk.id, "li", "link", time.time())
    assert not first and again.acknowledged_by == "zhang"
    assert bridge.post("/webhook/alertmanager", alert("DiskFull", "resolved")).json()[
        "queued"] == 1
    assert settle(fake_juhe, 4)[3:] == [(ZHANG, "222", {"name": "DiskFull", "who": "zhang"})]
    store.close()


def test_resolved_goes_to_who_was_paged_after_a_reload_rotated_the_schedule(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(rules(steps="[]"))
    assert bridge.post("/webhook/alertmanager", alert("DiskFull")).json()["queued"] == 1
    assert settle(fake_juhe, 1, 0.5)[0][0] == ZHANG
    (tmp_path / "rules.yaml").write_text(rules("[li, zhang]", steps="[]"), encoding="utf-8")
    assert bridge.post("/-/reload", b"").status_code == 200
    r = bridge.post("/webhook/alertmanager", alert("DiskFull", "resolved"))
    assert r.json()["queued"] == 1, r.text
    assert settle(fake_juhe, 2)[1:] == [(ZHANG, "222", {"name": "DiskFull", "who": "zhang"})]
    # a route without resolved_template sends no resolved SMS even though one was paged
    (tmp_path / "rules.yaml").write_text(rules(steps="[]").replace(
        "    resolved_template: ok\n", ""), encoding="utf-8")
    assert bridge.post("/-/reload", b"").status_code == 200
    assert bridge.post("/webhook/alertmanager", alert("Latency")).json()["queued"] == 1
    # (once its page went out: a firing SMS still waiting when the episode resolves is not sent)
    assert wait_until(lambda: len(fake_juhe.messages) == 3, 20)
    r = bridge.post("/webhook/alertmanager", alert("Latency", "resolved"))
    assert (r.json()["queued"], r.json()["suppressed"]) == (0, 0), r.text
    assert len(settle(fake_juhe, 3)) == 3


def test_two_instances_on_redis_run_each_step_once_and_resolve_to_who_was_paged(
        make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str, tmp_path: Path) -> None:
    a = make_bridge(rules(), BRIDGE_STORE=redis_url)
    b = make_bridge(rules(), BRIDGE_STORE=redis_url)
    for bridge in (a, b, a):
        assert bridge.post("/webhook/alertmanager", alert("DiskFull")).status_code == 200
    got = settle(fake_juhe, 3, 2.0)
    assert [(m, v["esc"]) for m, _, v in got] == [(ZHANG, "0"), (LI, "1"), (WANG, "2")]
    (tmp_path / "rules.yaml").write_text(rules("[li, zhang]"), encoding="utf-8")
    for bridge in (a, b):
        assert bridge.post("/-/reload", b"").status_code == 200
    for bridge in (b, a):
        assert bridge.post("/webhook/alertmanager", alert("DiskFull", "resolved")).status_code \
            == 200
    assert sorted((m, t) for m, t, _ in settle(fake_juhe, 6)[3:]) == [
        (ZHANG, "222"), (LI, "222"), (WANG, "222")]
    store = open_store(redis_url)
    e = only_episode(store, "DiskFull")
    assert [s.state for s in e.steps] == ["done", "done"] and e.state == "resolved"
    store.close()


def test_a_step_due_while_stopped_runs_after_restart(make_bridge: Any, fake_juhe: FakeJuhe,
                                                      tmp_path: Path) -> None:
    bridge = make_bridge(rules(steps="[{after: 3s, receiver: secondary}]"))
    assert bridge.post("/webhook/alertmanager", alert("DiskFull")).json()["queued"] == 1
    assert wait_until(lambda: len(fake_juhe.messages) == 1, 20)
    bridge.stop()
    time.sleep(4)
    assert len(fake_juhe.messages) == 1
    restarted = make_bridge(rules(steps="[{after: 3s, receiver: secondary}]"))
    got = settle(fake_juhe, 2)
    assert [(m, v["esc"]) for m, _, v in got] == [(ZHANG, "0"), (LI, "1")]
    assert "escalation step 1 via secondary: li 138****8001 -> queued" in restarted.log()


def test_resolved_to_who_was_paged_on_redis_across_two_instances(
        make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str, tmp_path: Path) -> None:
    a = make_bridge(rules(steps="[]"), BRIDGE_STORE=redis_url)
    b = make_bridge(rules(steps="[]"), BRIDGE_STORE=redis_url)
    assert a.post("/webhook/alertmanager", alert("DiskFull")).json()["queued"] == 1
    assert settle(fake_juhe, 1, 0.5)[0][0] == ZHANG
    (tmp_path / "rules.yaml").write_text(rules("[li, zhang]", steps="[]"), encoding="utf-8")
    for bridge in (a, b):
        assert bridge.post("/-/reload", b"").status_code == 200
    for bridge in (b, a, b):
        assert bridge.post("/webhook/alertmanager", alert("DiskFull", "resolved")).status_code \
            == 200
    assert settle(fake_juhe, 2)[1:] == [(ZHANG, "222", {"name": "DiskFull", "who": "zhang"})]
    # the new person on call is paged by a new alert, and its resolved goes to them alone
    assert b.post("/webhook/alertmanager", alert("Latency")).json()["queued"] == 1
    # (once its page went out: a firing SMS still waiting when the episode resolves is not sent)
    assert wait_until(lambda: len(fake_juhe.messages) == 3, 20)
    assert a.post("/webhook/alertmanager", alert("Latency", "resolved")).json()["queued"] == 1
    assert [(m, t) for m, t, _ in settle(fake_juhe, 4)[2:]] == [(LI, "111"), (LI, "222")]


def test_the_clock_starts_when_the_first_sms_went_out_and_an_ack_stops_a_paced_sms(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    """Issue 20.3 and 20.4: pacing (min_gap 3 s) holds zhang's page of Second behind a page of
    First; its step (after 2 s) runs 2 s after that page went out, not 2 s after it was
    queued (li paged before zhang). Third, queued behind Second and acknowledged while it
    waits, never goes out: suppressed, reason acknowledged."""
    text = rules(steps="[{after: 2s, receiver: secondary}]").replace(
        "limits: {min_gap: 0s}", "limits: {min_gap: 3s}") + (
        "  - {name: info, matchers: ['severity=\"warning\"'], receiver: sre, template: page}\n")
    bridge = make_bridge(text)
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    first = alert("First")
    first["alerts"][0]["labels"]["severity"] = "warning"
    for body in (first, alert("Second"), alert("Third")):
        assert bridge.post("/webhook/alertmanager", body).json()["queued"] == 1
    third = only_episode(store, "Third")
    r = bridge.post(f"/api/episodes/{third.id}/ack", {"by": "wang"})
    assert r.status_code == 200 and r.json()["acknowledged"] is True, r.text
    got = settle(fake_juhe, 3, 4.0)  # Third would have gone out 3 s after Second
    assert [(m, v["name"], v["esc"]) for m, _, v in got] == [
        (ZHANG, "First", "0"), (ZHANG, "Second", "0"), (LI, "Second", "1")]
    at = {(m["mobile"], m["vars"]["name"]): m["t"] for m in fake_juhe.messages}
    assert at[(ZHANG, "Second")] - at[(ZHANG, "First")] >= 2.9  # held by pacing
    assert 1.9 <= at[(LI, "Second")] - at[(ZHANG, "Second")] <= 4, at
    rows = bridge.get("/api/notifications").json()["notifications"]
    assert [(r["state"], r["reason"]) for r in rows if r["alertname"] == "Third"] == [
        ("suppressed", "acknowledged")]
    [second] = [e for e in bridge.get("/api/episodes").json()["episodes"]
                if e["alertname"] == "Second"]
    zhang = next(p for p in second["paged"] if p["level"] == 0)
    [step] = second["escalation"]
    assert step["due_at"] == zhang["sent_at"] + 2 and zhang["sent_at"] - zhang["at"] >= 2.5
    assert step["state"] == "done" and step["due_at"] <= step["ran_at"] <= step["due_at"] + 3
    assert step["ran_at_local"] and zhang["sent_at_local"]
    store.close()
