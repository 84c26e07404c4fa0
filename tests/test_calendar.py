"""The calendar feed (docs/oncall.md, "Calendar feed"): the pure builder parsed back with
icalendar against the rotation, the key, and ``GET /calendar/<schedule>.ics`` through the real
``bridge serve`` compared with ``bridge oncall --at`` for sampled shifts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from icalendar import Calendar

from bridge.rules.schedules import Schedule, ScheduleSpec, oncall_at
from bridge.web.calendar import feed, feed_key, feed_path, shift_uid

SHANGHAI = ZoneInfo("Asia/Shanghai")
SRE_SCHEDULE = {"members": ["zhang", "li", ["wang", "zhao"]], "shift": "1w", "handover": "10:00",
        "start": "2026-01-05",
        "overrides": [{"start": "2026-12-24 10:00", "end": "2026-12-26 10:00",
                       "people": ["wang"]}]}


def schedule(spec: dict[str, Any] = SRE_SCHEDULE, name: str = "sre") -> Schedule:
    return ScheduleSpec.model_validate(spec).compile(name, "Asia/Shanghai")


def events(cal: Calendar) -> list[Any]:
    return list(Calendar.from_ical(cal.to_ical()).walk("VEVENT"))


def test_feed_covers_15_days_back_to_180_ahead_without_gaps() -> None:
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    evs = events(feed(schedule(), now))
    starts = [e.decoded("dtstart") for e in evs]
    ends = [e.decoded("dtend") for e in evs]
    assert starts[0] <= now - timedelta(days=15) < ends[0]
    assert starts[-1] < now + timedelta(days=180) <= ends[-1]
    assert all(a == b for a, b in zip(ends, starts[1:], strict=False))  # back to back
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in starts + ends)
    assert len({str(e["uid"]) for e in evs}) == len(evs)


@pytest.mark.parametrize(("at", "summary", "category"), [
    ("2026-12-07 12:00", "sre: zhang", "rotation"),
    ("2026-12-24 09:59", "sre: wang, zhao", "rotation"),  # shared, cut short by the override
    ("2026-12-24 10:00", "sre: wang (override)", "override"),
    ("2026-12-26 10:00", "sre: wang, zhao", "rotation"),  # the rest of the cut shift
    ("2026-12-30 10:00", "sre: zhang", "rotation"),
    ("2027-01-06 10:00", "sre: li", "rotation"),
], ids=["rotation", "shared-before-override", "override", "after-override", "next",
        "next-year"])
def test_feed_events_are_the_final_view(at: str, summary: str, category: str) -> None:
    s = schedule()
    now = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    t = datetime.fromisoformat(at).replace(tzinfo=SHANGHAI)
    piece = oncall_at(s, t)
    [ev] = [e for e in events(feed(s, now)) if e.decoded("dtstart") <= t < e.decoded("dtend")]
    assert str(ev["summary"]) == summary
    assert (ev.decoded("dtstart"), ev.decoded("dtend")) == (piece.start, piece.end)
    assert [str(c) for c in ev["categories"].cats] == [category]
    assert str(ev["uid"]) == shift_uid("sre", piece)


def test_uid_is_stable_across_requests_and_moves_with_the_shift() -> None:
    s = schedule()
    a = events(feed(s, datetime(2026, 12, 7, 12, 0, tzinfo=UTC)))
    b = events(feed(s, datetime(2026, 12, 8, 3, 0, tzinfo=UTC)))
    uid_a = {e.decoded("dtstart"): str(e["uid"]) for e in a}
    uid_b = {e.decoded("dtstart"): str(e["uid"]) for e in b}
    common = set(uid_a) & set(uid_b)
    assert len(common) > 25 and all(uid_a[k] == uid_b[k] for k in common)
    # a schedule of another name (or other people in the shift) gives other UIDs
    other = events(feed(schedule(name="dba"), datetime(2026, 12, 7, 12, 0, tzinfo=UTC)))
    assert not {str(e["uid"]) for e in other} & set(uid_a.values())


def test_feed_names_the_people() -> None:
    text = feed(schedule(), datetime(2026, 12, 7, tzinfo=UTC)).to_ical().decode()
    assert text.startswith("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:")
    assert "SUMMARY:sre: wang\\, zhao\r\n" in text


def test_feed_key_is_derived_from_token_and_name() -> None:
    token, name = "a-token-of-16-chars", "sre"
    assert feed_key(token, name) == feed_key("a-token-of-16-chars", "sre")
    assert re.fullmatch(r"[0-9a-f]{32}", feed_key(token, name))
    assert feed_key(token, name) != feed_key(token, "dba")
    assert feed_key(token, name) != feed_key("another-token-16-chars", name)
    assert feed_key(None, name) == "" and feed_path(None, name) == "/calendar/sre.ics"
    assert feed_path(token, "a b") == f"/calendar/a%20b.ics?key={feed_key(token, 'a b')}"


TOKEN = "calendar-token-0123456789"
PEOPLE = {"zhang": "13800138000", "li": "13800138001", "wang": "13900139000",
          "zhao": "13900139001"}


def rules_text() -> str:
    """A daily rotation around today with an override tomorrow (BRIDGE_TZ Asia/Shanghai)."""
    today = datetime.now(SHANGHAI).date()
    start = today - timedelta(days=20)
    o1 = datetime.combine(today + timedelta(days=1), datetime.min.time()) + timedelta(hours=14)
    o2 = o1 + timedelta(hours=5)
    people = ", ".join(f'{k}: "{v}"' for k, v in PEOPLE.items())
    return f"""\
people: {{{people}}}
schedules:
  sre:
    members: [zhang, li, [wang, zhao]]
    shift: 1d
    handover: "09:30"
    start: {start}
    overrides:
      - {{start: "{o1:%Y-%m-%d %H:%M}", end: "{o2:%Y-%m-%d %H:%M}", people: [zhao]}}
templates:
  firing: {{tpl_id: 111, vars: {{name: "{{{{ labels.alertname }}}}"}}}}
routes:
  - {{name: all, receiver: sre, template: firing}}
"""


def cli_oncall(rules: Path, at: datetime) -> str:
    """``bridge oncall sre --at ... --next 0``'s "now" line."""
    exe = shutil.which("bridge") or str(Path(sys.executable).parent / "bridge")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "JUHE_"))}
    out = subprocess.run(
        [exe, "oncall", "sre", "--rules", str(rules), "--next", "0",
         "--at", at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M")],
        capture_output=True, text=True, env=env, timeout=60, check=True).stdout
    [line] = [ln for ln in out.splitlines() if ln.strip().startswith("now")]
    return line


def test_feed_through_bridge_serve_matches_bridge_oncall(make_bridge: Any,
                                                         tmp_path: Path) -> None:
    bridge = make_bridge(rules_text(), BRIDGE_TOKEN=TOKEN)
    base = bridge.base
    key = feed_key(TOKEN, "sre")
    for path in ("/calendar/sre.ics", "/calendar/sre.ics?key=" + "0" * 32,
                 f"/calendar/nosuch.ics?key={key}"):
        r = requests.get(base + path, timeout=10)
        assert r.status_code == 404 and "error" in r.json(), (path, r.text)
    r = requests.get(base + feed_path(TOKEN, "sre"), timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "text/calendar; charset=utf-8"
    assert not any(m in r.text or f"{m[:3]}****{m[-4:]}" in r.text for m in PEOPLE.values())
    evs = list(Calendar.from_ical(r.content).walk("VEVENT"))
    again = list(Calendar.from_ical(requests.get(base + feed_path(TOKEN, "sre"),
                                                 timeout=10).content).walk("VEVENT"))
    assert [str(e["uid"]) for e in evs] == [str(e["uid"]) for e in again]
    now = datetime.now(UTC)
    assert evs[0].decoded("dtstart") <= now - timedelta(days=15)
    assert evs[-1].decoded("dtend") >= now + timedelta(days=180)
    overrides = [e for e in evs if str(e["summary"]).endswith("(override)")]
    assert [str(e["summary"]) for e in overrides] == ["sre: zhao (override)"]
    # sampled shifts against `bridge oncall --at` (the CLI prints the schedule's local times)
    i = evs.index(overrides[0])
    for ev in [evs[0], evs[1], evs[i - 1], evs[i], evs[i + 1], evs[len(evs) // 2], evs[-1]]:
        start, end = ev.decoded("dtstart"), ev.decoded("dtend")
        line = cli_oncall(tmp_path / "rules.yaml", start + (end - start) / 2)
        names = str(ev["summary"]).removeprefix("sre: ").removesuffix(" (override)")
        expected = (f"now   {start.astimezone(SHANGHAI):%Y-%m-%d %H:%M} -> "
                    f"{end.astimezone(SHANGHAI):%Y-%m-%d %H:%M}  "
                    + ", ".join(f"{n} {PEOPLE[n]}" for n in names.split(", "))
                    + ("  (override)" if "override" in str(ev["summary"]) else ""))
        assert line.strip() == expected, line


def test_feed_needs_no_key_without_token(make_bridge: Any) -> None:
    bridge = make_bridge(rules_text())
    r = requests.get(bridge.base + "/calendar/sre.ics", timeout=10)
    assert r.status_code == 200 and r.text.startswith("BEGIN:VCALENDAR"), r.text
    assert requests.get(bridge.base + "/calendar/nosuch.ics", timeout=10).status_code == 404
