"""The acknowledgement views in-process (``create_app(...).test_client()``, a real SQLite
file, dry-run): a number of nobody acknowledges as its masked form, Grafana's silence link,
the Alertmanager silence link escaped into an attribute, a resolved episode's page and POST,
cross-site refusals, and 503 when the store is down. The same paths through ``bridge serve``
are in ``tests/test_ack_e2e.py``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from bridge.config import Settings
from bridge.web.app import create_app
from bridge.web.guard import bridge_of

RULES = """\
people: {zhang: "13800138000"}
receivers: {oncall: [zhang, "13900139000"]}
templates:
  page: {tpl_id: 111, vars: {name: "{{ labels.alertname }}", ack: "{{ ack_code }}"}}
  ok: {tpl_id: 222, vars: {name: "{{ labels.alertname }}"}}
limits: {min_gap: 0s}
routes:
  - {name: r, matchers: [], receiver: oncall, template: page, resolved_template: ok,
     escalate: [{after: 10m, receiver: oncall}]}
"""


@pytest.fixture
def app(tmp_path: Path) -> Any:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    a = create_app(Settings.from_env({"BRIDGE_RULES": str(rules),
                                      "BRIDGE_STORE": f"sqlite:///{tmp_path / 'b.db'}"}))
    yield a
    bridge_of(a).store.close()


def am(status: str = "firing", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"version": "4", "externalURL": "http://am.example:9093/",
            "alerts": [{"status": status, "labels": labels or {"alertname": "DiskFull",
                                                               "job": 'a"b&c'},
                        "annotations": {"summary": "s"}, "startsAt": "2026-12-01T10:00:00Z"}]}


def codes(app: Any) -> dict[str, str]:
    """mobile -> ack code of the only episode."""
    [e] = bridge_of(app).store.episodes(limit=5)
    return {p.mobile: p.code for p in e.paged if p.code}


def test_a_number_of_nobody_acknowledges_as_its_masked_form(app: Any) -> None:
    c = app.test_client()
    assert c.post("/webhook/alertmanager", json=am()).json["queued"] == 2
    code = codes(app)["13900139000"]
    page = c.get(f"/a/{code}").get_data(as_text=True)
    assert "Acknowledge as 139****9000" in page and "13900139000" not in page
    assert "zhang 138****8000" in page
    # the Alertmanager silence link, built from the labels, escaped into the attribute
    assert 'href="http://am.example:9093/#/silences/new?filter=' in page
    assert 'a"b' not in page
    r = c.post(f"/a/{code}")
    assert r.status_code == 200
    assert "Acknowledged by 139****9000 at" in r.get_data(as_text=True)
    [e] = bridge_of(app).store.episodes(limit=5)
    assert (e.acknowledged_by, e.acknowledged_via) == ("139****9000", "link")
    # zhang's own code now says who acknowledged first
    r = c.post(f"/a/{codes(app)['13800138000']}")
    assert r.status_code == 200
    assert "Already acknowledged by 139****9000" in r.get_data(as_text=True)


def test_grafana_silence_link_and_a_resolved_episode(app: Any) -> None:
    c = app.test_client()
    body = {"version": "1", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "CPU"}, "annotations": {"summary": "hot"},
         "startsAt": "2026-12-01T10:00:00Z", "fingerprint": "abc",
         "silenceURL": "http://grafana.example/alerting/silence/new?alertmanager=grafana"}]}
    assert c.post("/webhook/grafana", json=body).json["queued"] == 2
    code = codes(app)["13800138000"]
    page = c.get(f"/a/{code}").get_data(as_text=True)
    assert ('href="http://grafana.example/alerting/silence/new?alertmanager=grafana"'
            in page)
    body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["endsAt"] = "2026-12-01T10:05:00Z"
    assert c.post("/webhook/grafana", json=body).json["queued"] == 2
    page = c.get(f"/a/{code}").get_data(as_text=True)
    assert "resolved at" in page and 'id="ack"' not in page and "Next if nobody" not in page
    r = c.post(f"/a/{code}")
    assert r.status_code == 200
    assert "Already resolved at" in r.get_data(as_text=True)
    [e] = bridge_of(app).store.episodes(limit=5)
    assert (e.state, e.acknowledged_by) == ("resolved", None)


@pytest.mark.parametrize(("headers", "status"), [
    ({"Origin": "null"}, 403),
    ({"Origin": "http://evil.example"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),
    ({"Sec-Fetch-Site": "none"}, 200),  # typed or opened from the SMS app
    ({"Origin": "http://localhost"}, 200),
    ({}, 200),
], ids=["origin-null", "origin-other", "same-site", "fetch-none", "same-origin", "no-headers"])
def test_cross_site_posts_are_refused(app: Any, headers: dict[str, str], status: int) -> None:
    c = app.test_client()
    c.post("/webhook/alertmanager", json=am())
    code = codes(app)["13800138000"]
    assert c.post(f"/a/{code}", headers=headers).status_code == status
    [e] = bridge_of(app).store.episodes(limit=5)
    assert e.state == ("acknowledged" if status == 200 else "firing")


def test_unknown_code_shapes(app: Any) -> None:
    c = app.test_client()
    assert c.get("/a/x").status_code == 404  # not even a code's shape: counted, 404
    assert c.get("/a/" + "A" * 12).status_code == 404
    r = c.get("/api/episodes?limit=x")
    assert r.status_code == 400 and "limit" in r.json["error"]


def test_store_down_is_503(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES, encoding="utf-8")
    app = create_app(Settings.from_env({"BRIDGE_RULES": str(rules),
                                        "BRIDGE_STORE": f"redis://127.0.0.1:{free_port()}/0"}))
    c = app.test_client()
    for r in (c.get("/api/episodes"), c.get("/a/" + "A" * 12), c.post("/a/" + "A" * 12),
              c.post("/api/episodes/abc/ack", json={"by": "li"})):
        assert r.status_code == 503, r.get_data(as_text=True)
        assert "store unavailable" in r.get_data(as_text=True)
