"""On call through the real ``bridge serve``: a route naming a schedule pages whoever is on
call now (the schedule built around the current time), a reload that changes the rotation
pages the new person on the next alert, ``/api/oncall``, the metric, logs and the API naming
people; on SQLite and across two instances on Redis."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
from conftest import wait_until
from fakejuhe import FakeJuhe

ZHANG, LI, WANG = "13800138000", "13800138001", "13900139000"


def rules(members: str) -> str:
    """A daily rotation whose shift 0 began two hours ago (Asia/Shanghai, BRIDGE_TZ's
    default), so ``members[0]`` is on call for the next 22 hours."""
    began = datetime.now(ZoneInfo("Asia/Shanghai")) - timedelta(hours=2)
    return f"""\
people: {{zhang: "{ZHANG}", li: "{LI}", wang: "{WANG}"}}
schedules:
  sre:
    members: {members}
    shift: 1d
    handover: "{began:%H:%M}"
    start: {began:%Y-%m-%d}
templates:
  firing:
    tpl_id: 111
    vars: {{name: "{{{{ labels.alertname }}}}", who: "{{{{ person | default('-') }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - name: sre-page
    matchers: ['severity="critical"']
    receiver: sre
    template: firing
"""


def alert(name: str) -> dict[str, Any]:
    return {"alerts": [{"status": "firing", "labels": {"alertname": name, "severity": "critical"},
                        "startsAt": "2026-11-29T01:00:00Z"}]}


def sent(fake: FakeJuhe) -> list[tuple[str, str, str, str]]:
    return sorted((m["mobile"], m["tpl_id"], m["vars"]["name"], m["vars"]["who"])
                  for m in fake.messages)


def settle(fake: FakeJuhe, n: int) -> list[tuple[str, str, str, str]]:
    fake.wait_for(n, timeout=30)
    time.sleep(1.0)  # a second SMS, were one wrongly queued, would arrive meanwhile
    return sent(fake)


def test_schedule_pages_who_is_on_call_and_reload_rotates(make_bridge: Any, fake_juhe: FakeJuhe,
                                                          tmp_path: Path) -> None:
    bridge = make_bridge(rules("[zhang, li]"), BRIDGE_TOKEN="s3cret-4f0a9d2e71")
    assert requests.get(bridge.base + "/api/oncall", timeout=10).status_code == 401
    bridge.session.headers["Authorization"] = "Bearer s3cret-4f0a9d2e71"
    assert re.search(r"on call: sre: zhang 138\*\*\*\*8000 until ", bridge.log()), bridge.log()

    r = bridge.post("/webhook/alertmanager", alert("DiskFull"))
    assert r.status_code == 200 and r.json()["queued"] == 1, r.text
    assert settle(fake_juhe, 1) == [(ZHANG, "111", "DiskFull", "zhang")]

    oncall = bridge.get("/api/oncall?next=2").json()["schedules"]
    assert [(s["name"], s["now"]["people"], s["now"]["override"]) for s in oncall] == [
        ("sre", [{"name": "zhang", "mobile": "138****8000"}], False)]
    assert [s["people"][0]["name"] for s in oncall[0]["next"]] == ["li", "zhang"]
    assert bridge.get("/api/oncall?next=x").status_code == 400
    assert re.search(r'^bridge_oncall\{person="zhang",schedule="sre"\} 1\.0$',
                     bridge.get("/metrics").text, re.M)
    [row] = bridge.get("/api/notifications").json()["notifications"]
    assert (row["mobile"], row["person"], row["route"]) == ("138****8000", "zhang", "sre-page")
    assert wait_until(lambda: "-> zhang 138****8000 via route sre-page: queued" in bridge.log()
                      and "sent to zhang 138****8000 (DiskFull)" in bridge.log(), 10), bridge.log()

    (tmp_path / "rules.yaml").write_text(rules("[li, zhang]"), encoding="utf-8")
    r = bridge.post("/-/reload", b"")
    assert r.status_code == 200, r.text
    # a new alert pages the new person; the same alert again pages li (dedup is per mobile)
    # and not zhang a second time
    for name in ("Latency", "DiskFull"):
        r = bridge.post("/webhook/alertmanager", alert(name))
        assert r.status_code == 200 and r.json()["queued"] == 1, r.text
    assert settle(fake_juhe, 3) == [(ZHANG, "111", "DiskFull", "zhang"),
                                    (LI, "111", "DiskFull", "li"), (LI, "111", "Latency", "li")]
    assert re.findall(r"^bridge_oncall\{.*$", bridge.get("/metrics").text, re.M) == [
        'bridge_oncall{person="li",schedule="sre"} 1.0']


def test_schedule_on_redis_across_two_instances(make_bridge: Any, fake_juhe: FakeJuhe,
                                                redis_url: str, tmp_path: Path) -> None:
    a = make_bridge(rules("[[zhang, wang], li]"), BRIDGE_STORE=redis_url)
    b = make_bridge(rules("[[zhang, wang], li]"), BRIDGE_STORE=redis_url)
    for bridge in (a, b, a):
        r = bridge.post("/webhook/alertmanager", alert("DiskFull"))
        assert r.status_code == 200, r.text
    assert settle(fake_juhe, 2) == [(ZHANG, "111", "DiskFull", "zhang"),
                                    (WANG, "111", "DiskFull", "wang")]

    (tmp_path / "rules.yaml").write_text(rules("[li, [zhang, wang]]"), encoding="utf-8")
    for bridge in (a, b):
        assert bridge.post("/-/reload", b"").status_code == 200
    for bridge in (b, a):
        r = bridge.post("/webhook/alertmanager", alert("Latency"))
        assert r.status_code == 200, r.text
    assert settle(fake_juhe, 3) == [(ZHANG, "111", "DiskFull", "zhang"),
                                    (LI, "111", "Latency", "li"),
                                    (WANG, "111", "DiskFull", "wang")]
    for bridge in (a, b):
        [sre] = bridge.get("/api/oncall").json()["schedules"]
        assert [p["name"] for p in sre["now"]["people"]] == ["li"]
