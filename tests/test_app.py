"""Views through ``create_app(...).test_client()`` (fast, in-process; the end-to-end tests run
the real ``bridge serve``): the factory, the JSON API's filters, the page's login, session
cookie, CSRF, security headers and playground."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import SPEC_RULES, fixture_bytes

from bridge.config import Settings
from bridge.web.app import create_app
from bridge.web.guard import bridge_of, session_key
from bridge.web.page import CSP

TOKEN = "page-token-7d1c40e9"
FIRING = {"version": "4", "status": "firing", "alerts": [
    {"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical",
                                    "team": "db", "instance": "db1"},
     "annotations": {"summary": "disk 95%"}, "startsAt": "2026-12-01T10:00:00Z",
     "fingerprint": "fp1"}]}


def settings(tmp_path: Path, **env: str) -> Settings:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SPEC_RULES, encoding="utf-8")
    return Settings.from_env({"BRIDGE_RULES": str(rules),
                              "BRIDGE_STORE": f"sqlite:///{tmp_path / 'bridge.db'}", **env})


@pytest.fixture
def app(tmp_path: Path) -> Any:
    a = create_app(settings(tmp_path, BRIDGE_TOKEN=TOKEN))
    yield a
    bridge_of(a).store.close()


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m, html
    return m.group(1)


def login(client: Any, token: str = TOKEN, **kw: Any) -> Any:
    page = client.get("/login", **kw)
    assert page.status_code == 200
    return client.post("/login", data={"csrf": csrf_of(page.get_data(as_text=True)),
                                       "token": token}, **kw)


def test_factory_defaults_from_the_environment(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    s = settings(tmp_path)
    monkeypatch.setenv("BRIDGE_RULES", s.rules_path)
    monkeypatch.setenv("BRIDGE_STORE", s.store)
    app = create_app()
    assert bridge_of(app).settings.rules_path == s.rules_path
    assert app.test_client().get("/healthz").json == {"status": "ok"}


def test_api_filters_by_state_alias_status_and_alertname(app: Any) -> None:
    c = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = c.post("/webhook/alertmanager", json=FIRING, headers=auth)
    assert r.status_code == 200
    assert r.json == {"alerts": 1, "queued": 3, "suppressed": 0, "held": 0}
    by_state = c.get("/api/notifications?state=queued", headers=auth).json["notifications"]
    by_status = c.get("/api/notifications?status=queued", headers=auth).json["notifications"]
    assert by_state == by_status
    assert sorted(n["mobile"] for n in by_state) == ["138****8000", "138****8001",
                                                     "139****9000"]
    first = by_state[0]
    assert first["variables"] == {"name": "DiskFull", "host": "db1", "summary": "disk 95%",
                                  "at": "12-01 18:00"}
    assert first["tpl_value"] == "#name#=DiskFull&#host#=db1&#summary#=disk%2095%25" \
                                 "&#at#=12-01%2018%3A00"
    assert c.get("/api/notifications?state=sent", headers=auth).json == {"notifications": []}
    assert c.get("/api/notifications?alertname=Other", headers=auth).json == {
        "notifications": []}
    assert len(c.get("/api/notifications?alertname=DiskFull&limit=2",
                     headers=auth).json["notifications"]) == 2
    r = c.get("/api/notifications?state=nope", headers=auth)
    assert (r.status_code, r.json) == (400, {
        "error": "state must be one of queued, sent, retrying, failed, suppressed, held"})
    assert c.get("/api/notifications").status_code == 401


def test_413_once_for_both_length_and_form(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path, BRIDGE_MAX_BODY_BYTES="100"))
    r = app.test_client().post("/webhook/alertmanager", data=b"x" * 200,
                               headers={"Content-Type": "application/json"})
    assert (r.status_code, r.json) == (413, {"error": "body over 100 bytes"})


def test_page_needs_login_and_wrong_token_is_refused(app: Any) -> None:
    c = app.test_client()
    r = c.get("/")
    assert (r.status_code, r.headers["Location"]) == (302, "/login")
    r = login(c, "wrong")
    assert r.status_code == 401
    assert "wrong token" in r.get_data(as_text=True)
    assert c.get("/").status_code == 302
    r = login(c)
    assert (r.status_code, r.headers["Location"]) == (303, "/")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("bridge_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "Expires=" in cookie
    page = c.get("/")
    assert page.status_code == 200
    assert page.headers["Content-Security-Policy"] == CSP
    # the session lets the page's scripts read /api/*, not write
    assert c.get("/api/notifications").status_code == 200
    assert c.post("/-/reload").status_code == 401


def test_cookie_secure_over_forwarded_https(app: Any) -> None:
    c = app.test_client()
    r = login(c, headers={"X-Forwarded-Proto": "https"})
    assert r.status_code == 303
    assert "; Secure" in r.headers["Set-Cookie"]


def test_login_and_logout_need_the_csrf_token(app: Any) -> None:
    c = app.test_client()
    c.get("/login")
    r = c.post("/login", data={"csrf": "forged", "token": TOKEN})
    assert r.status_code == 400
    assert "CSRF" in r.json["error"]
    login(c)
    assert c.post("/logout", data={}).status_code == 400
    assert c.get("/").status_code == 200
    r = c.post("/logout", data={"csrf": csrf_of(c.get("/").get_data(as_text=True))})
    assert r.status_code == 303
    assert c.get("/").status_code == 302


def test_changed_token_ends_the_session(tmp_path: Path) -> None:
    a = create_app(settings(tmp_path, BRIDGE_TOKEN=TOKEN))
    c = a.test_client()
    login(c)
    cookie = c.get_cookie("bridge_session")
    assert cookie is not None
    other = create_app(settings(tmp_path, BRIDGE_TOKEN=TOKEN))  # another instance, same token
    c2 = other.test_client()
    c2.set_cookie("bridge_session", cookie.value)
    assert c2.get("/").status_code == 200
    changed = create_app(settings(tmp_path, BRIDGE_TOKEN="new-token-0b3c9e71"))
    c3 = changed.test_client()
    c3.set_cookie("bridge_session", cookie.value)
    assert c3.get("/").status_code == 302
    assert session_key(bridge_of(a).settings) != session_key(bridge_of(changed).settings)


def test_open_page_shows_the_warning_banner(tmp_path: Path) -> None:
    c = create_app(settings(tmp_path)).test_client()
    html = c.get("/").get_data(as_text=True)
    assert "OPEN: BRIDGE_TOKEN is not set" in html
    assert 'id="logout"' not in html
    assert c.get("/login").status_code == 302


def test_playground_previews_without_storing_and_escapes(tmp_path: Path) -> None:
    app = create_app(settings(tmp_path))
    c = app.test_client()
    body = json.loads(json.dumps(FIRING))
    body["alerts"][0]["annotations"]["summary"] = "<script>alert(1)</script>"
    body["alerts"].append({"status": "firing", "labels": {"alertname": "Quiet",
                                                          "severity": "info"}})
    csrf = csrf_of(c.get("/").get_data(as_text=True))
    r = c.post("/playground", data={"csrf": csrf, "body": json.dumps(body), "source": "detect"})
    html = r.get_data(as_text=True)
    assert r.status_code == 200
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(1)&lt;/s…" in html
    assert "alertmanager: 2 alerts, 3 notifications, 1 matched no route." in html
    assert ("severity=&#34;critical&#34; against severity=&#34;info&#34;") in html
    assert bridge_of(app).store.recent(10) == []
    r = c.post("/playground", data={"csrf": csrf, "body": "{", "source": "grafana"})
    assert r.status_code == 400
    assert "body is not valid JSON" in r.get_data(as_text=True)
    assert c.post("/playground", data={"body": "{}"}).status_code == 400  # no CSRF token


def test_grafana_fixture_detected_in_playground(tmp_path: Path) -> None:
    c = create_app(settings(tmp_path)).test_client()
    csrf = csrf_of(c.get("/").get_data(as_text=True))
    body = fixture_bytes("17-gf-datasourceerror-values-null-redelivered.json").decode()
    html = c.post("/playground", data={"csrf": csrf, "body": body,
                                       "source": "detect"}).get_data(as_text=True)
    assert "grafana: 3 alerts, 3 notifications." in html


def test_page_acknowledge_needs_login_and_csrf_and_defaults_to_operator(app: Any) -> None:
    c = app.test_client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert c.post("/webhook/alertmanager", json=FIRING, headers=auth).status_code == 200
    [e] = c.get("/api/episodes?state=firing", headers=auth).get_json()["episodes"]
    url = f"/episodes/{e['id']}/ack"
    r = c.post(url, data={"by": "li"})
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert login(c).status_code == 303
    html = c.get("/").get_data(as_text=True)
    assert f'action="{url}"' in html and "Acknowledge" in html
    csrf = csrf_of(html)
    r = c.post(url, data={"csrf": "forged", "by": "li"})
    assert r.status_code == 400 and "CSRF" in r.get_json()["error"]
    r = c.post("/episodes/nosuchid/ack", data={"csrf": csrf})
    assert r.status_code == 404 and r.get_json() == {"error": "no episode 'nosuchid'"}
    for bad, why in [("x" * 65, "the name is longer than 64 characters"),
                     ("li\u202eetirw", "the name contains a bidirectional control character"
                                       " (U+202E)"),
                     ("li\x00", "the name contains a control character (U+0000)")]:
        r = c.post(url, data={"csrf": csrf, "by": bad})
        assert (r.status_code, r.get_json()) == (400, {"error": why})
    assert c.get("/api/episodes?state=firing", headers=auth).get_json()["episodes"] != []
    r = c.post(url, data={"csrf": csrf, "by": "  "})
    assert r.status_code == 303 and r.headers["Location"].endswith("/#episodes")
    r = c.post(url, data={"csrf": csrf, "by": "li"})  # the first acknowledgement stands
    assert r.status_code == 303
    [a] = c.get("/api/episodes?state=acknowledged", headers=auth).get_json()["episodes"]
    assert (a["id"], a["acknowledged_by"], a["acknowledged_via"]) == (e["id"], "operator", "page")
    html = c.get("/").get_data(as_text=True)
    assert f'action="{url}"' not in html and "Acknowledged by <b>operator</b>" in html


def test_duration_text() -> None:
    from bridge.intake.readside import duration_text

    assert [duration_text(s) for s in (0, 30, 90, 600, 7200, 86400, 1.5)] == [
        "0s", "30s", "90s", "10m", "2h", "1d", "1s"]


def test_playground_sends_a_resolved_alert_to_those_paged_for_its_episode(tmp_path: Path) -> None:
    """Issue 20 item 8: the playground sent a resolved alert to today's routes."""
    app = create_app(settings(tmp_path))
    c = app.test_client()
    csrf = csrf_of(c.get("/").get_data(as_text=True))
    resolved = json.loads(json.dumps(FIRING))
    resolved["alerts"][0]["status"] = "resolved"
    form = {"csrf": csrf, "body": json.dumps(resolved), "source": "detect"}
    html = c.post("/playground", data=form).get_data(as_text=True)
    assert ("resolved DiskFull <code>fp1</code>: no episode of it is stored: nobody was paged "
            "for it, so intake sends no resolved SMS") in html
    assert c.post("/webhook/alertmanager", json=FIRING).status_code == 200
    [episode] = bridge_of(app).episodes("firing", 10)
    html = c.post("/playground", data=form).get_data(as_text=True)
    assert (f"resolved DiskFull <code>fp1</code>: goes to those paged for its stored episode "
            f"{episode.id} (138****8000, 138****8001, 139****9000), as intake sends "
            f"it") in html
    bridge_of(app).store.close()


def test_status_rules_line_names_the_version_once(app: Any) -> None:
    """Issue 20.14: "version 3f2a...; 5 routes, ... (version 3f2a...)"."""
    c = app.test_client()
    assert login(c).status_code == 303
    html = c.get("/").get_data(as_text=True)
    version = bridge_of(app).holder.rules.version
    [line] = re.findall(r"<dt>Rules</dt><dd>(.*?)</dd>", html)
    assert line.count(version) == 1 and line.endswith(f"(version {version})"), line
    assert '<link rel="icon" href="/favicon.ico">' in html
