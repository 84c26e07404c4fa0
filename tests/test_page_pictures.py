"""The operator page's what-fires-first and pictures (docs/operator-page.md): the numbers
behind the pictures as pure tables, and the page in Chromium (Playwright, Debian's chromium)
at 390x844 and 1280 wide, light and dark, with screenshots kept in ``tests/artifacts/rotation``
(git-ignored) to look at."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from conftest import wait_until
from fakejuhe import FakeJuhe
from test_page_browser import CHROMIUM_ARGS, browser  # noqa: F401  (the fixture)

from bridge.rules.schedules import ScheduleSpec
from bridge.web.calendar import feed_key
from bridge.web.pictures import (
    EpisodeLoad,
    PersonLoad,
    colour_of,
    duration_short,
    oncall_rows,
    oncall_svg,
    person_load,
    sent_per_day,
)

SHANGHAI = ZoneInfo("Asia/Shanghai")
ARTIFACTS = Path(__file__).parent / "artifacts" / "rotation"
T = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)   # 12:00 in Shanghai


# -- the numbers -----------------------------------------------------------------------------
@pytest.mark.parametrize(("sent", "expected"), [
    ([], {}),
    ([(T, "zhang"), (T, "zhang"), (T - timedelta(days=1), "li")],
     {"zhang": {"12-07": 2}, "li": {"12-06": 1}}),
    # 15:59 UTC is 23:59 in Shanghai, 16:00 UTC the next day there
    ([(datetime(2026, 12, 6, 15, 59, tzinfo=UTC), "li"),
      (datetime(2026, 12, 6, 16, 0, tzinfo=UTC), "li")], {"li": {"12-06": 1, "12-07": 1}}),
    ([(T - timedelta(days=29), "wang"), (T - timedelta(days=30), "wang")],
     {"wang": {"11-08": 1}}),
], ids=["none", "two-people", "local-midnight", "30-days-back"])
def test_sent_per_day(sent: list[tuple[datetime, str]],
                      expected: dict[str, dict[str, int]]) -> None:
    days, counts = sent_per_day([(t.timestamp(), who) for t, who in sent], T, SHANGHAI)
    assert len(days) == 30 and days[-1] == date(2026, 12, 7) and days[0] == date(2026, 11, 8)
    got = {who: {f"{days[i]:%m-%d}": n for i, n in enumerate(c) if n}
           for who, c in counts.items()}
    assert got == expected
    assert list(counts) == list(expected)  # most SMS first


def ep(paged: list[tuple[str, float]], by: str | None = None,
       at: float | None = None) -> EpisodeLoad:
    return EpisodeLoad(tuple(paged), by, at)


@pytest.mark.parametrize(("episodes", "expected"), [
    ([], []),
    ([ep([("zhang", 100), ("li", 700)], "zhang", 400)], [      # same pages: more acks first
        PersonLoad("zhang", 1, 1, 300.0), PersonLoad("li", 1, 0, None)]),
    ([ep([("zhang", 100)], "zhang", 160), ep([("zhang", 1000)], "zhang", 1600),
      ep([("zhang", 2000)], "zhang", 2100), ep([("zhang", 3000)])],
     [PersonLoad("zhang", 4, 3, 100.0)]),
    ([ep([("zhang", -5)], "zhang", 10)], []),    # first paged before `since`
    ([ep([("li", 100)], "operator", 130)], [PersonLoad("li", 1, 0, None),
                                             PersonLoad("operator", 0, 1, 30.0)]),
], ids=["none", "paged-and-acked", "median-of-three", "too-old", "acked-by-someone-else"])
def test_person_load(episodes: list[EpisodeLoad], expected: list[PersonLoad]) -> None:
    assert person_load(episodes, since=0.0) == expected


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (42.4, "42s"), (60, "1m"), (3599, "59m"), (3600 * 3 + 300, "3h05m"),
    (86400 * 2 + 3600 * 4, "2d04h")], ids=["none", "s", "m", "m-max", "h", "d"])
def test_duration_short(seconds: float | None, text: str) -> None:
    assert duration_short(seconds) == text


def test_oncall_svg_marks_overrides_and_now_and_escapes() -> None:
    s = ScheduleSpec.model_validate({
        "members": ["zhang", "<li>"], "shift": "1d", "start": "2026-12-01",
        "overrides": [{"start": "2026-12-08 12:00", "end": "2026-12-08 18:00",
                       "people": ["zhang"]}]}).compile("sre", "Asia/Shanghai")
    start = datetime(2026, 12, 7, tzinfo=SHANGHAI)
    rows = oncall_rows([s], start)
    svg = str(oncall_svg(rows, start, T, SHANGHAI, colour_of(["zhang", "<li>"])))
    assert svg.count('<g class="bar') == len(rows[0].shifts) == 17  # 14 days, one cut in 3
    assert svg.count('<g class="bar override"') == 1
    assert '<line class="now"' in svg and "<li>" not in svg and "&lt;li&gt;" in svg
    assert "zhang: 12-08 12:00 → 12-08 18:00 (override)" in svg


# -- the page in Chromium ------------------------------------------------------------------
TOKEN = "pictures-token-51ab7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PEOPLE = {"zhang": "13800138000", "li": "13800138001", "wang": "13900139000"}


def rules() -> str:
    """sre: zhang on call (daily, shift 9 began two hours ago), an override by wang the day
    after tomorrow; dba: zhang and wang (weekly, its second week)."""
    began = datetime.now(SHANGHAI) - timedelta(hours=2)
    today = began.date()
    people = ", ".join(f'{k}: "{v}"' for k, v in PEOPLE.items())
    return f"""\
people: {{{people}}}
schedules:
  sre:
    members: [zhang, li, wang]
    shift: 1d
    handover: "{began:%H:%M}"
    start: {today - timedelta(days=9)}
    overrides:
      - {{start: "{today + timedelta(days=2)} 12:00", end: "{today + timedelta(days=3)} 12:00",
         people: [wang]}}
  dba:
    members: [li, [zhang, wang]]
    shift: 1w
    handover: "{began:%H:%M}"
    start: {today - timedelta(days=today.weekday() + 7)}
templates:
  firing:
    tpl_id: 111
    vars: {{name: "{{{{ labels.alertname }}}}", ack: "{{{{ ack_code }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - {{name: sre-page, matchers: ['team="sre"'], receiver: sre, template: firing}}
  - {{name: dba-page, matchers: ['team="db"'], receiver: dba, template: firing}}
"""


def alert(name: str, team: str, summary: str) -> dict[str, Any]:
    return {"alerts": [{"status": "firing", "startsAt": "2026-12-07T01:00:00Z",
                        "labels": {"alertname": name, "team": team, "severity": "critical"},
                        "annotations": {"summary": summary}}]}


def shoot(page: Any, name: str, full: bool = True) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    return path


def test_page_puts_what_fires_first_and_draws_the_pictures(
        browser: Any, make_bridge: Any, fake_juhe: FakeJuhe) -> None:  # noqa: F811
    bp = make_bridge(rules(), BRIDGE_TOKEN=TOKEN)
    for name, team in (("DiskFull", "sre"), ("ReplicaLag", "db"), ("HighLatency", "sre"),
                       ("BackupLate", "db")):
        r = bp.post("/webhook/alertmanager", alert(name, team, f"{name} on host-1"),
                    headers=AUTH)
        assert r.status_code == 200 and r.json()["queued"] >= 1, r.text
    total = len(fake_juhe.wait_for(6, 20))
    assert total == 6
    assert wait_until(lambda: all(n["state"] == "sent" for n in bp.get(
        "/api/notifications", headers=AUTH).json()["notifications"]), 20)
    episodes = bp.get("/api/episodes", headers=AUTH).json()["episodes"]
    [backup] = [e for e in episodes if e["alertname"] == "BackupLate"]
    r = bp.post(f"/api/episodes/{backup['id']}/ack", {"by": "zhang"}, headers=AUTH)
    assert r.json()["acknowledged"] is True

    errors: list[str] = []
    for scheme in ("light", "dark"):
        for width, height in ((390, 844), (1280, 900)):
            context = browser.new_context(viewport={"width": width, "height": height},
                                          color_scheme=scheme)
            page = context.new_page()
            # a CSP violation or script error is a console error; a failed load is a response
            page.on("console", lambda m: errors.append(m.text) if m.type == "error"
                    and not m.text.startswith("Failed to load resource") else None)
            page.on("response", lambda r: errors.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.goto(bp.base + "/login")
            page.fill("#token", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(bp.base + "/")
            # what fires first: the count in the title and the header
            assert page.title() == "(3 firing) alert-sms bridge"
            assert page.locator("#firing-count").inner_text() == "3 firing"
            # names beside masked numbers: notifications, episodes
            whos = page.locator("#notification-list summary b.who").all_inner_texts()
            assert sorted(whos) == ["wang", "wang", "zhang", "zhang", "zhang", "zhang"], whos
            assert "zhang 138****8000" in page.locator("#notification-list").inner_text()
            # On call: one row per schedule, a bar per shift, the override, now; the feeds
            pic = page.locator("#oncall-picture svg")
            assert pic.locator("g.bar").count() >= 16
            assert pic.locator("g.bar.override").count() == 1
            assert pic.locator("line.now").count() == 1
            feeds = page.locator("a.feed-url").all_inner_texts()
            assert [f.split("/calendar/")[1] for f in feeds] == [
                f"sre.ics?key={feed_key(TOKEN, 'sre')}", f"dba.ics?key={feed_key(TOKEN, 'dba')}"]
            assert requests.get(feeds[0], timeout=10).headers["Content-Type"].startswith(
                "text/calendar")
            # Load: 30 days of SMS by person, per person pages / acknowledged / median
            assert page.locator("#sent-picture svg g.day").count() == 30
            rows = {r.get_attribute("data-person"): r.inner_text()
                    for r in page.locator("table.load-table tbody tr").all()}
            assert set(rows) == {"zhang", "wang"}, rows
            assert re.fullmatch(r"zhang\t4\t1\t\d+s", rows["zhang"]), rows
            assert rows["wang"] == "wang\t2\t0\t-", rows
            # readable on a phone: nothing wider than the screen
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            episodes_top = page.locator("#episodes").bounding_box()["y"]
            if width == 390:
                # Episodes first: above Status and On call, its first card on the first screen
                assert episodes_top < page.locator("#status").bounding_box()["y"]
                assert episodes_top < page.locator("#oncall").bounding_box()["y"]
                card = page.locator("#episode-list article.episode").first.bounding_box()
                assert card["y"] + 60 < height
            shoot(page, f"page-{width}-{scheme}")
            shoot(page, f"top-{width}-{scheme}", full=False)
            for section in ("oncall", "load"):
                page.locator(f"#{section}").screenshot(
                    path=str(ARTIFACTS / f"{section}-{width}-{scheme}.png"))
            context.close()
    assert errors == []
