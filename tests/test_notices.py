"""Shift notices (docs/oncall.md, "Shift notices"): who needs a notice at ``now`` as a table of
pure cases, and through the real ``bridge serve``: a shift placed a few seconds after start
gets one SMS, to the right person, with the right template, and a restart does not repeat it."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import wait_until
from fakejuhe import FakeJuhe

from bridge.deliver.notices import notices_due
from bridge.rules.schedules import Schedule, ScheduleSpec

SHANGHAI = ZoneInfo("Asia/Shanghai")
DAILY = {"members": ["zhang", "li", ["wang", "zhao"]], "shift": "1d", "start": "2026-12-01",
         "overrides": [{"start": "2026-12-10 12:00", "end": "2026-12-10 18:00",
                        "people": ["li"]}]}
SHARED = {"members": [["zhang", "li"], ["li", "wang"]], "shift": "1d", "start": "2026-12-01"}


def schedule(spec: dict[str, Any]) -> Schedule:
    return ScheduleSpec.model_validate(spec).compile("sre", "Asia/Shanghai")


def local(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)


# (spec, before seconds, now) -> [(person, shift start local, next people)]; the piece in force
# is always listed (its notice may be overdue: it goes out if it never went, e.g. at start)
@pytest.mark.parametrize(("spec", "before", "now", "expected"), [
    (DAILY, 900, "2026-12-07 08:44:59", [("wang", "12-06 09:00", "zhang"),
                                         ("zhao", "12-06 09:00", "zhang")]),
    (DAILY, 900, "2026-12-07 08:45:00", [("wang", "12-06 09:00", "zhang"),
                                         ("zhao", "12-06 09:00", "zhang"),
                                         ("zhang", "12-07 09:00", "li")]),
    (DAILY, 0, "2026-12-07 08:59:59", [("wang", "12-06 09:00", "zhang"),
                                       ("zhao", "12-06 09:00", "zhang")]),
    (DAILY, 0, "2026-12-07 09:00:00", [("zhang", "12-07 09:00", "li")]),
    (DAILY, 900, "2026-12-10 11:45:00", [("zhang", "12-10 09:00", "li"),
                                         ("li", "12-10 12:00", "zhang")]),
    (DAILY, 900, "2026-12-10 17:45:00", [("li", "12-10 12:00", "zhang"),
                                         ("zhang", "12-10 18:00", "li")]),
    (DAILY, 86400, "2026-12-07 10:00:00", [("zhang", "12-07 09:00", "li"),
                                           ("li", "12-08 09:00", "wang, zhao")]),
    # li is in both shifts: told for neither (li was on call in the shift before each)
    (SHARED, 900, "2026-12-07 08:45:00", [("wang", "12-06 09:00", "zhang, li"),
                                          ("zhang", "12-07 09:00", "li, wang")]),
], ids=["a-second-before-15m", "15m-before-handover", "0s-a-second-early", "0s-at-handover",
        "override-15m-before", "back-after-override", "a-day-ahead", "shared-shift-not-again"])
def test_notices_due(spec: dict[str, Any], before: float, now: str,
                     expected: list[tuple[str, str, str]]) -> None:
    due = notices_due(schedule(spec), before, local(now))
    assert [(n.person, f"{n.shift.start:%m-%d %H:%M}", ", ".join(n.next)) for n in due] \
        == expected
    for n in due:
        assert n.due_at == n.shift.start - timedelta(seconds=before) <= local(now)
        utc = n.shift.start.astimezone(ZoneInfo("UTC"))
        assert n.key == f"notice:sre:{utc:%Y-%m-%dT%H:%M:%SZ}:{n.person}"


ZHANG, LI = "13800138000", "13800138001"


def rules(override_start: datetime) -> str:
    """zhang on call every day (nobody is told: the shift before is his too); li takes over
    from ``override_start`` for a minute, told 2 s before."""
    today = datetime.now(SHANGHAI).date()
    end = override_start + timedelta(minutes=1)
    return f"""\
people: {{zhang: "{ZHANG}", li: "{LI}"}}
schedules:
  sre:
    members: [zhang]
    shift: 1d
    start: {today - timedelta(days=3)}
    notify: {{template: shift-start, before: 2s}}
    overrides:
      - {{start: "{override_start:%Y-%m-%d %H:%M:%S}", end: "{end:%Y-%m-%d %H:%M:%S}",
         people: [li]}}
templates:
  firing: {{tpl_id: 111, vars: {{name: "{{{{ labels.alertname }}}}"}}}}
  shift-start:
    tpl_id: 333
    vars:
      who: "{{{{ person }}}}"
      sched: "{{{{ schedule }}}}"
      from: "{{{{ start | localtime('%H:%M:%S') }}}}"
      then: "{{{{ next }}}}"
limits: {{min_gap: 0s}}
routes:
  - {{name: all, receiver: sre, template: firing}}
"""


def test_a_shift_a_few_seconds_after_start_gets_one_notice(make_bridge: Any,
                                                           fake_juhe: FakeJuhe,
                                                           tmp_path: Path) -> None:
    start = (datetime.now(SHANGHAI) + timedelta(seconds=6)).replace(microsecond=0,
                                                                    tzinfo=None)
    bridge = make_bridge(rules(start))
    msgs = fake_juhe.wait_for(1, timeout=20)
    assert [(m["mobile"], m["tpl_id"], m["vars"]) for m in msgs] == [
        (LI, "333", {"who": "li", "sched": "sre", "from": f"{start:%H:%M:%S}",
                     "then": "zhang"})]
    sent_at = datetime.fromtimestamp(msgs[0]["t"], SHANGHAI).replace(tzinfo=None)
    assert start - timedelta(seconds=2) <= sent_at < start + timedelta(seconds=2)
    assert wait_until(lambda: bridge.get("/api/notifications").json()["notifications"]
                      [0]["state"] == "sent", 10)
    [row] = bridge.get("/api/notifications").json()["notifications"]
    assert (row["status"], row["reason"], row["person"], row["mobile"], row["route"],
            row["alertname"]) == ("notice", "shift notice", "li", "138****8001", "sre",
                                  "ShiftNotice")
    assert "shift notice sre: li 138****8001 goes on call" in bridge.log()

    bridge.stop()  # a restart while li's shift runs: the notice is not sent again
    bridge.start()
    time.sleep(3)
    assert len(fake_juhe.messages) == 1
    assert len(bridge.get("/api/notifications").json()["notifications"]) == 1


def test_notify_problems_with_their_places(tmp_path: Path) -> None:
    from test_oncall import BASE
    from test_rules import problems_of

    problems = problems_of(tmp_path, BASE + """\
schedules:
  a: {members: [zhang], shift: 1d, start: 2026-01-05, notify: {template: nosuch}}
  b: {members: [li], shift: 1d, start: 2026-01-05, notify: {template: t, before: -5m}}
  c: {members: [li], shift: 1d, start: 2026-01-05, notify: {before: 5m}}
  d: {members: [li], shift: 1d, start: 2026-01-05, notify: {template: t, after: 5m}}
routes:
  - {receiver: a, template: t}
""")
    assert problems == [
        "schedules.b.notify.before: not a duration (like 90s, 5m, 1h30m): '-5m'",
        "schedules.c.notify.template: missing: this field is required",
        "schedules.d.notify.after: unknown field (expected one of: template, before)",
        "schedules.a.notify.template: unknown template 'nosuch'",
    ]



def test_check_warns_about_names_a_notice_does_not_provide(tmp_path: Path) -> None:
    from test_oncall import BASE

    from bridge.rules.load import load_rules

    f = tmp_path / "rules.yaml"
    f.write_text(BASE.split("templates:")[0] + """\
templates:
  t: {tpl_id: 1, vars: {who: "{{ person | default('-') }}"}}
  both: {tpl_id: 2, vars: {a: "{{ person }} {{ schedule }} {{ labels.x }}"}}
  notice: {tpl_id: 3, vars: {a: "{{ person }} {{ schedule }} {{ start }} {{ end }} {{ next }}",
                               b: "{{ labels.alertname }}"}}
schedules:
  a: {members: [zhang], shift: 1d, start: 2026-01-05, notify: {template: notice}}
  b: {members: [li], shift: 1d, start: 2026-01-05, notify: {template: both}}
routes:
  - {receiver: a, template: both}
""", encoding="utf-8")
    assert load_rules(f).warnings() == [
        "templates.notice.vars.b: 'labels' is not a name a shift notice provides: it renders "
        "empty (provided: end, next, person, schedule, start)"]
