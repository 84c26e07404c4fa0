"""Paging policy through the real ``bridge serve``: limits, storm folding, pacing, quiet hours
and recipients from labels (rules file ``limits:``, ``mobiles_from``, time intervals)."""

from __future__ import annotations

import time
from typing import Any

from fakejuhe import FakeJuhe

MOBILE = "13800138000"

BASE = """\
receivers:
  oncall: ["13800138000"]
templates:
  firing:
    tpl_id: 111
    vars:
      name: "{{ labels.alertname }}"
  storm:
    tpl_id: 333
    vars:
      count: "{{ count }}"
      names: "{{ alertnames }}"
      to: "{{ mobile[-4:] }}"
time_intervals:
  - name: always
    time_intervals: [{times: [{start_time: "00:00", end_time: "24:00"}]}]
routes:
  - name: main
    matchers: ['alertname=~".+"']
    receiver: oncall
    mobiles_from: oncall_mobile
    template: firing
"""


def rules(limits: str, extra_route: str = "") -> str:
    return BASE.replace("routes:\n", f"limits:\n{limits}routes:\n{extra_route}")


def alerts(*names: str, **labels: str) -> dict[str, Any]:
    return {"alerts": [{"labels": {"alertname": n, **labels},
                        "startsAt": "2026-11-29T01:00:00Z"} for n in names]}


def notifications(bridge: Any, **params: str) -> list[dict[str, Any]]:
    r = bridge.get("/api/notifications", params={"limit": "100", **params})
    return r.json()["notifications"]  # type: ignore[no-any-return]


def test_per_mobile_per_hour(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 0s\n  per_mobile_per_hour: 3\n"))
    names = [f"A{i}" for i in range(10)]
    r = bridge.post("/webhook/alertmanager", alerts(*names))
    assert r.json() == {"alerts": 10, "queued": 3, "suppressed": 7, "held": 0}
    fake_juhe.wait_for(3, timeout=10)
    time.sleep(1.0)
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["A0", "A1", "A2"]
    held_back = notifications(bridge, status="suppressed")
    assert sorted(n["alertname"] for n in held_back) == names[3:]
    assert {n["reason"] for n in held_back} == {"per_mobile_per_hour limit"}
    assert {n["mobile"] for n in held_back} == {"138****8000"}
    metrics = bridge.get("/metrics").text
    assert ('bridge_notifications_total{reason="per_mobile_per_hour limit",state="suppressed"}'
            " 7.0") in metrics
    assert "per_mobile_per_hour limit" in bridge.log()


def test_per_day(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 0s\n  per_day: 2\n"))
    r = bridge.post("/webhook/alertmanager", alerts("A", "B", "C", oncall_mobile="13900139000"))
    # 3 alerts x 2 mobiles; the day allows 2 SMS in all
    assert r.json() == {"alerts": 3, "queued": 2, "suppressed": 4, "held": 0}
    fake_juhe.wait_for(2, timeout=10)
    time.sleep(0.8)
    assert sorted((m["mobile"], m["vars"]["name"]) for m in fake_juhe.messages) == [
        ("13800138000", "A"), ("13900139000", "A")]
    assert {n["reason"] for n in notifications(bridge, status="suppressed")} == {"per_day limit"}


def test_storm_folds_into_one_summary(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 0s\n  storm: {threshold: 3, window: 3s, "
                               "template: storm}\n"))
    names = [f"S{i}" for i in range(10)]
    t0 = time.time()
    r = bridge.post("/webhook/alertmanager", alerts(*names))
    assert r.json() == {"alerts": 10, "queued": 3, "suppressed": 0, "held": 7}
    fake_juhe.wait_for(3, timeout=5)
    assert len(notifications(bridge, status="held")) == 7
    msgs = fake_juhe.wait_for(4, timeout=10)
    assert time.time() - t0 >= 2.9
    time.sleep(1.0)
    msgs = fake_juhe.messages
    assert [m["vars"].get("name") for m in msgs[:3]] == ["S0", "S1", "S2"]
    assert len(msgs) == 4
    storm = msgs[3]
    assert (storm["mobile"], storm["tpl_id"]) == (MOBILE, "333")
    assert storm["vars"] == {"count": "7", "names": "S3,S4,S5,S6,S7,S8,S9", "to": "8000"}
    folded = [n for n in notifications(bridge) if n["alertname"] in names[3:]]
    assert {(n["state"], n["reason"]) for n in folded} == {
        ("sent", "folded 7 into one storm SMS")}


def test_pacing_folds_what_piled_up(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 3s\n  storm: {threshold: 100, window: 1m, "
                               "template: storm}\n"))
    t0 = time.time()
    for name in ("P1", "P2", "P3"):
        assert bridge.post("/webhook/alertmanager", alerts(name)).json()["queued"] == 1
        time.sleep(0.2)
    [first] = fake_juhe.wait_for(1, timeout=3)
    assert first["vars"] == {"name": "P1"}
    time.sleep(max(0.0, t0 + 2.5 - time.time()))
    assert len(fake_juhe.messages) == 1
    msgs = fake_juhe.wait_for(2, timeout=5)
    assert msgs[1]["t"] - first["t"] >= 2.9
    assert (msgs[1]["tpl_id"], msgs[1]["vars"]) == ("333", {"count": "2", "names": "P2,P3",
                                                           "to": "8000"})
    time.sleep(1.0)
    assert len(fake_juhe.messages) == 2


def test_pacing_without_storm_template_sends_one_by_one(make_bridge: Any,
                                                        fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 2s\n"))
    assert bridge.post("/webhook/alertmanager", alerts("Q1", "Q2", "Q3")).json()["queued"] == 3
    msgs = fake_juhe.wait_for(3, timeout=10)
    assert [m["vars"]["name"] for m in msgs] == ["Q1", "Q2", "Q3"]
    gaps = [b["t"] - a["t"] for a, b in zip(msgs, msgs[1:], strict=False)]
    assert all(g >= 1.9 for g in gaps), gaps


def test_mobiles_from_valid_invalid_duplicates(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(rules("  min_gap: 0s\n"))
    r = bridge.post("/webhook/alertmanager", alerts(
        "M", oncall_mobile="13900139000,not-a-phone, 13800138000 ,13900139000,1234"))
    assert r.json()["queued"] == 2
    msgs = fake_juhe.wait_for(2, timeout=10)
    time.sleep(0.5)
    assert sorted(m["mobile"] for m in fake_juhe.messages) == ["13800138000", "13900139000"]
    log = bridge.log()
    assert "invalid mobile not****hone, skipped" in log
    assert "invalid mobile ****, skipped" in log
    assert len(msgs) == 2


def test_muted_route_is_suppressed_and_listed(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(BASE.replace("    template: firing\n",
                                      "    template: firing\n    mute_time_intervals: [always]\n"))
    r = bridge.post("/webhook/alertmanager", alerts("Quiet"))
    assert r.json() == {"alerts": 1, "queued": 0, "suppressed": 1, "held": 0}
    [n] = notifications(bridge)
    assert (n["alertname"], n["state"], n["reason"]) == ("Quiet", "suppressed", "muted")
    time.sleep(0.8)
    assert fake_juhe.messages == []


def test_limits_hold_across_two_instances_on_redis(make_bridge: Any, fake_juhe: FakeJuhe,
                                                   redis_url: str) -> None:
    text = rules("  min_gap: 0s\n  per_mobile_per_hour: 3\n  storm: {threshold: 2, window: 3s, "
                 "template: storm}\n")
    a = make_bridge(text, BRIDGE_STORE=redis_url)
    b = make_bridge(text, BRIDGE_STORE=redis_url)
    import concurrent.futures

    names = [f"R{i}" for i in range(10)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(
            lambda i: (a if i % 2 else b).post("/webhook/alertmanager", alerts(names[i])),
            range(10)))
    total = {"queued": 0, "held": 0, "suppressed": 0}
    for r in answers:
        for k in total:
            total[k] += r.json()[k]
    # the first 2 page; from the 3rd on, the storm window holds them (held SMS do not count
    # against the hourly limit); one storm SMS folds the 8 when the window closes
    assert total == {"queued": 2, "held": 8, "suppressed": 0}
    fake_juhe.wait_for(3, timeout=10)
    time.sleep(1.0)
    msgs = fake_juhe.messages
    assert sorted(m["tpl_id"] for m in msgs) == ["111", "111", "333"]
    [storm] = [m for m in msgs if m["tpl_id"] == "333"]
    assert storm["vars"]["count"] == "8"


def test_storm_sms_counts_firing_and_resolved(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Issue 10.10: a folded firing and resolved read as 1 firing, 1 resolved. (The resolved is
    of the alert already paged: a firing SMS whose own alert resolved meanwhile is suppressed.)"""
    text = rules("  min_gap: 3s\n  storm: {threshold: 100, window: 1m, template: storm}\n")
    text = text.replace('      to: "{{ mobile[-4:] }}"\n',
                        '      to: "{{ mobile[-4:] }}"\n      fr: "{{ firing }}/{{ resolved }}"\n'
                        '  resolved:\n    tpl_id: 222\n    vars:\n'
                        '      name: "{{ labels.alertname }}"\n')
    text = text.replace("    template: firing\n", "    template: firing\n"
                        "    resolved_template: resolved\n")
    bridge = make_bridge(text)
    assert bridge.post("/webhook/alertmanager", alerts("Q1")).json()["queued"] == 1
    [first] = fake_juhe.wait_for(1, timeout=3)
    assert bridge.post("/webhook/alertmanager", alerts("Q2")).json()["queued"] == 1
    resolved = alerts("Q1")
    resolved["alerts"][0]["status"] = "resolved"
    assert bridge.post("/webhook/alertmanager", resolved).json()["queued"] == 1
    msgs = fake_juhe.wait_for(2, timeout=8)
    assert (msgs[1]["tpl_id"], msgs[1]["vars"]) == ("333", {
        "count": "2", "names": "Q2,Q1", "to": "8000", "fr": "1/1"})
    time.sleep(0.5)
    assert len(fake_juhe.messages) == 2
