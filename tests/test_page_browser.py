"""The operator page in a real browser: Playwright driving Debian's Chromium (headless)
against the real ``bridge serve``. Skipped, saying why, where playwright or Chromium is
missing (``scripts/test`` installs both). Screenshots of each section are saved to
``tests/artifacts/page/`` (git-ignored)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import SPEC_RULES, wait_until
from fakejuhe import FakeJuhe

TOKEN = "browser-token-3f9a7c21"
ARTIFACTS = Path(__file__).parent / "artifacts" / "page"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage"]
FIRING = {"version": "4", "status": "firing", "receiver": "sms", "alerts": [
    {"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical",
                                    "team": "db", "instance": "db1"},
     "annotations": {"summary": "disk 95% on db1"}, "startsAt": "2026-12-01T10:00:00Z",
     "fingerprint": "b1a2c3d4e5f60718"}]}


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    exe = chromium_path()
    if exe is None:
        pytest.skip("Chromium is not installed (scripts/test installs it: apt-get install "
                    "chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.locator(f"#{name}").screenshot(path=str(ARTIFACTS / f"{name}.png"))


def test_operator_page_in_chromium(browser: Any, make_bridge: Any,
                                   fake_juhe: FakeJuhe) -> None:
    bp = make_bridge(rules=SPEC_RULES, BRIDGE_TOKEN=TOKEN, BRIDGE_TZ="Asia/Shanghai")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    context = browser.new_context(viewport={"width": 390, "height": 844})
    seen: list[str] = []
    dialogs: list[str] = []

    def only_local(route: Any) -> None:
        seen.append(route.request.url)
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    # -- login: the page sends us to the form; a wrong token is refused ------------------
    r = page.goto(bp.base + "/")
    assert page.url == bp.base + "/login"
    assert r is not None
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "style-src 'self'" in csp and "unsafe" not in csp
    page.fill("#token", "wrong")
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text() == "wrong token"
    assert page.url == bp.base + "/login"
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(bp.base + "/")
    [cookie] = [c for c in context.cookies() if c["name"] == "bridge_session"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain http here; over https (or forwarded) it is set
    assert 11.9 * 3600 < cookie["expires"] - time.time() <= 12 * 3600
    assert page.locator("#status").inner_text().count("token required") == 1
    assert "DRY-RUN" not in page.locator("#status").inner_text()

    # -- a webhook appears without reloading, and is delivered -------------------------
    assert page.locator("#notification-list details").count() == 0
    reloads: list[str] = []
    page.on("framenavigated", lambda f: reloads.append(f.url))
    r2 = bp.post("/webhook/alertmanager", FIRING, headers=auth)
    assert r2.status_code == 200
    assert r2.json() == {"alerts": 1, "queued": 3, "suppressed": 0, "held": 0}
    assert len(fake_juhe.wait_for(3, 20)) == 3
    page.locator("#notification-list details").nth(2).wait_for(timeout=20000)
    assert wait_until(lambda: page.locator("#notification-list .state.sent").count() == 3, 20,
                      0.2)
    assert reloads == []
    rows = page.locator("#notification-list details")
    assert rows.count() == 3
    mobiles = sorted(rows.nth(i).locator("summary").inner_text().split("→ ")[1].split()[0]
                     for i in range(3))
    assert mobiles == ["138****8000", "138****8001", "139****9000"]

    # -- open a row: its variables, tpl_value, sid, attempts and reason ------------------
    api = bp.get("/api/notifications?mobile=13900139000", headers=auth).json()
    [ops] = api["notifications"]
    row = page.locator(f'details[data-id="{ops["id"]}"]')
    row.locator("summary").click()
    assert row.get_attribute("open") is not None
    text = row.inner_text()
    assert "via everything-else" in text
    assert "name\tDiskFull" in text and "summary\tdisk 95% on db1" in text
    assert "at\t12-01 18:00" in text  # BRIDGE_TZ
    assert "#name#=DiskFull&#host#=db1&#summary#=disk%2095%25%20on%20db1" in text
    assert ops["sid"] and ops["sid"] in text
    assert row.locator(".reason").inner_text() == (ops["reason"] or "-")
    # the open row stays open across a refresh
    time.sleep(6)
    assert page.locator(f'details[data-id="{ops["id"]}"]').get_attribute("open") is not None
    shoot(page, "status")
    shoot(page, "notifications")
    shoot(page, "oncall")

    # -- filters ---------------------------------------------------------------------------
    page.fill("#filters input[name=mobile]", "13900139000")
    page.click("#filters button")
    page.wait_for_load_state()
    assert page.locator("#notification-list details").count() == 1

    # -- the playground: alert text is text, nothing stored, nothing sent ----------------
    before = bp.get("/api/notifications", headers=auth).json()
    sent_before = fake_juhe.requests
    body = json.loads(json.dumps(FIRING))
    body["alerts"][0]["annotations"]["summary"] = "<script>alert(1)</script>"
    body["alerts"][0]["fingerprint"] = "ffff0000ffff0000"
    body["alerts"].append({"status": "firing", "labels": {"alertname": "Quiet",
                                                          "severity": "warning"},
                           "annotations": {"summary": "<img src=x onerror=alert(2)>"},
                           "startsAt": "2026-12-01T10:00:00Z"})
    body["alerts"].append({"status": "firing", "labels": {"alertname": "Info",
                                                          "severity": "info"}})
    page.fill("#pg-body", json.dumps(body))
    page.select_option("#pg-source", "detect")
    page.click("#pg-run")
    page.locator("#pg-result").wait_for()
    result = page.locator("#pg-result").inner_text()
    assert "alertmanager: 3 alerts, 4 notifications, 1 matched no route." in result
    assert "<script>alert(1)</s…" in result
    assert "<img src=x onerror=…" in result
    assert page.locator("#pg-result script, #pg-result img").count() == 0
    assert "firing Info" in result and "pages nobody" in result
    assert 'severity="critical" against severity="info"' in result
    assert 'severity=~"critical|warning" against severity="info"' in result
    shoot(page, "playground")
    assert dialogs == []
    assert bp.get("/api/notifications", headers=auth).json() == before
    assert fake_juhe.requests == sent_before

    # -- a phone screen: no horizontal scroll ---------------------------------------------
    for section in ("status", "notifications", "playground"):
        page.locator(f"#{section}").scroll_into_view_if_needed()
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), \
            section
    page.screenshot(path=str(ARTIFACTS / "page-390.png"), full_page=True)

    # -- logout ends the session -----------------------------------------------------------
    page.click("#logout")
    page.wait_for_url(bp.base + "/login")
    assert page.goto(bp.base + "/api/notifications").status == 401  # type: ignore[union-attr]

    hosts = {urlsplit(u).hostname for u in seen}
    assert hosts == {"127.0.0.1"}, seen
    context.close()
    assert "Traceback" not in bp.log()


def test_open_page_warns_in_chromium(browser: Any, make_bridge: Any) -> None:
    bp = make_bridge(rules=SPEC_RULES, JUHE_KEY="")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(bp.base + "/")
    assert page.url == bp.base + "/"
    assert "OPEN: BRIDGE_TOKEN is not set" in page.locator("#open-banner").inner_text()
    status = page.locator("#status").inner_text()
    assert "DRY-RUN: JUHE_KEY is not set" in status
    assert page.locator("#logout").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-open-1280.png"), full_page=True)
    page.close()



EP_RULES = """\
people: {zhang: "13800138000", li: "13800138001", wang: "13900139000"}
receivers: {dba: [zhang, li], ops: [wang]}
templates:
  firing:
    tpl_id: 111
    vars: {name: "{{ labels.alertname }}", summary: "{{ annotations.summary }}"}
  resolved:
    tpl_id: 222
    vars: {name: "{{ labels.alertname }}"}
limits: {min_gap: 0s}
routes:
  - name: db-critical
    matchers: ['severity="critical"']
    receiver: dba
    template: firing
    resolved_template: resolved
    escalate: [{after: 10m, receiver: ops}, {after: 30m, receiver: dba}]
"""


def login(page: Any, base: str) -> None:
    page.goto(base + "/")
    page.fill("#token", TOKEN)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def test_episodes_in_chromium(browser: Any, make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """The Episodes section: a webhook's episode appears without reloading (who was paged,
    masked; escalation due times in BRIDGE_TZ), its alert text is text, Acknowledge records
    ``via=page`` as the name typed (``/api/episodes`` agrees), and the resolved one moves to
    "Recently resolved" without reloading; no horizontal scroll at 390x844."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    bp = make_bridge(rules=EP_RULES, BRIDGE_TOKEN=TOKEN, BRIDGE_TZ="Asia/Shanghai")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, bp.base)
    assert page.locator("#episode-list").inner_text() == "Nothing firing."
    assert page.locator("#resolved-list").inner_text() == "None."

    reloads: list[str] = []
    page.on("framenavigated", lambda f: reloads.append(f.url))
    evil = "<script>alert(1)</script> disk 95%"
    body = {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "DiskFull", "severity": "critical"},
         "annotations": {"summary": evil}, "startsAt": "2026-12-01T10:00:00Z",
         "fingerprint": "e1e2e3e4e5e6e7e8"}]}
    r = bp.post("/webhook/alertmanager", body, headers=auth)
    assert r.json() == {"alerts": 1, "queued": 2, "suppressed": 0, "held": 0}
    assert len(fake_juhe.wait_for(2, 20)) == 2
    card = page.locator("#episode-list article.episode.firing")
    card.wait_for(timeout=20000)
    assert reloads == []
    # the paged notifications are sent: wait for a refresh to show it (and the escalation
    # clock started by the first of them: issue 20.3)
    assert wait_until(lambda: card.locator(".ep-paged .state.sent").count() == 2, 20, 0.2)
    [api] = bp.get("/api/episodes?state=firing", headers=auth).json()["episodes"]
    assert card.get_attribute("data-id") == api["id"]
    zone = ZoneInfo("Asia/Shanghai")
    s1, s2 = api["escalation"]
    for s in (s1, s2):
        assert s["due_at_local"] == datetime.fromtimestamp(s["due_at"], zone).strftime(
            "%Y-%m-%d %H:%M:%S")
    assert s2["due_at"] - s1["due_at"] == 20 * 60
    first_out = min(p["sent_at"] for p in api["paged"])
    assert s1["due_at"] == first_out + 10 * 60
    text = card.inner_text()
    assert "since 2026-12-01 18:00:00" in text  # startsAt 10:00Z in Asia/Shanghai
    paged = sorted(card.locator(".ep-paged li").all_inner_texts())
    assert len(paged) == 2
    li = next(p for p in api["paged"] if p["person"] == "li")
    assert paged[0] == (f"li 138****8001 queued {li['at_local']}, sent {li['sent_at_local']},"
                        " route db-critical sent")
    assert paged[1].startswith("zhang 138****8000 queued ")
    section_html = page.locator("#episodes").inner_html()
    assert "13800138000" not in section_html and "13800138001" not in section_html
    steps = card.locator(".ep-steps li").all_inner_texts()
    assert steps == [f"after 10m \u2192 ops: due {s1['due_at_local']} pending",
                     f"after 30m \u2192 dba: due {s2['due_at_local']} pending"]
    assert card.locator(".ep-summary").inner_text() == evil
    assert page.locator("#episodes script").count() == 0
    assert dialogs == []
    page.locator("#episodes").scroll_into_view_if_needed()
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    shoot(page, "episodes")
    page.set_viewport_size({"width": 1280, "height": 900})  # the picture in docs/operator-page.md
    page.screenshot(path=str(ARTIFACTS / "page-episodes-1280.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})

    # -- Acknowledge as the name typed: the store agrees (/api/episodes) -----------------
    card.locator("input[name=by]").fill("li")
    card.locator(".ack-button").click()
    page.wait_for_url(bp.base + "/#episodes")
    [acked] = bp.get("/api/episodes?state=acknowledged", headers=auth).json()["episodes"]
    assert acked["id"] == api["id"]
    assert (acked["acknowledged_by"], acked["acknowledged_via"]) == ("li", "page")
    assert [(s["state"], s["reason"]) for s in acked["escalation"]] == [
        ("cancelled", "acknowledged by li")] * 2
    assert bp.get("/api/episodes?state=firing", headers=auth).json()["episodes"] == []
    card = page.locator(f'#episode-list article[data-id="{api["id"]}"]')
    assert "acknowledged" in (card.get_attribute("class") or "")
    assert card.locator(".ep-ack").inner_text() == (
        f"Acknowledged by li at {acked['acknowledged_at_local']} (via page)")
    assert card.locator("form.ack").count() == 0
    page.locator("#episodes").screenshot(path=str(ARTIFACTS / "episodes-acknowledged.png"))

    # -- resolved: it moves to "Recently resolved" without reloading ---------------------
    reloads.clear()
    body["alerts"][0]["status"] = "resolved"
    body["alerts"][0]["endsAt"] = "2026-12-01T10:30:00Z"
    body["status"] = "resolved"
    assert bp.post("/webhook/alertmanager", body, headers=auth).json()["queued"] == 2
    assert len(fake_juhe.wait_for(4, 20)) == 4
    assert sorted(m["tpl_id"] for m in fake_juhe.messages) == ["111", "111", "222", "222"]
    done = page.locator(f'#resolved-list article.episode.resolved[data-id="{api["id"]}"]')
    done.wait_for(timeout=20000)
    assert reloads == []
    assert page.locator("#episode-list").inner_text() == "Nothing firing."
    assert "Acknowledged by li" in done.inner_text() and "Resolved at " in done.inner_text()
    assert dialogs == []
    context.close()
    assert "Traceback" not in bp.log()
