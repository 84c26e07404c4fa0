"""On-call schedules: who is on call at T (a table, pure), the final view of the next shifts,
the load checks with their places, and planning a route that names a schedule. No server."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_rules import problems_of

from bridge.alert import Alert, Batch
from bridge.decide.plan import decide
from bridge.errors import RulesError
from bridge.rules.load import load_rules
from bridge.rules.schedules import Schedule, ScheduleSpec, next_shifts, oncall_at, oncall_view

SH = ZoneInfo("Asia/Shanghai")
NY = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")

SPEC_SRE: dict[str, Any] = {
    "members": ["zhang", "li", ["wang", "zhao"]], "shift": "1w", "handover": "10:00",
    "start": "2026-01-05", "time_zone": "Asia/Shanghai",
    "overrides": [{"start": "2026-12-24 10:00", "end": "2026-12-26 10:00", "people": ["wang"]}],
}
DAILY: dict[str, Any] = {"members": ["a", "b"], "shift": "1d", "start": "2026-03-01"}
TWO_DAYS: dict[str, Any] = {"members": ["a", "b", "c"], "shift": "2d", "start": "2026-03-01",
                            "handover": "00:00", "time_zone": "UTC"}
OVERLAP: dict[str, Any] = {
    **SPEC_SRE, "overrides": [
        {"start": "2026-12-24 10:00", "end": "2026-12-26 10:00", "people": ["wang"]},
        {"start": "2026-12-25 00:00", "end": "2026-12-25 12:00", "people": ["zhao"]}]}
REVERSED: dict[str, Any] = {**SPEC_SRE, "overrides": list(reversed(OVERLAP["overrides"]))}
NY_DAILY: dict[str, Any] = {"members": ["a", "b"], "shift": "1d", "start": "2026-03-07",
                            "time_zone": "America/New_York"}
NY_GAP: dict[str, Any] = {**NY_DAILY, "handover": "02:30"}
BERLIN_DAILY: dict[str, Any] = {"members": ["a", "b"], "shift": "1d", "start": "2026-10-24",
                                "time_zone": "Europe/Berlin"}


def schedule(spec: dict[str, Any], tz: str = "Asia/Shanghai") -> Schedule:
    return ScheduleSpec.model_validate(spec).compile("s", tz)


def local(zone: ZoneInfo, text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(("spec", "t", "people", "start", "end", "override"), [
    # handover 10:00: 09:59 is still the old shift, 10:00 the new one
    pytest.param(SPEC_SRE, local(SH, "2026-01-12 09:59"), ("zhang",), "2026-01-05 10:00",
                 "2026-01-12 10:00", False, id="weekly-09:59-still-zhang"),
    pytest.param(SPEC_SRE, local(SH, "2026-01-12 10:00"), ("li",), "2026-01-12 10:00",
                 "2026-01-19 10:00", False, id="weekly-10:00-li"),
    pytest.param(SPEC_SRE, local(SH, "2026-01-05 10:00"), ("zhang",), "2026-01-05 10:00",
                 "2026-01-12 10:00", False, id="first-shift-begins-at-start-handover"),
    pytest.param(SPEC_SRE, local(SH, "2026-01-19 10:00"), ("wang", "zhao"), "2026-01-19 10:00",
                 "2026-01-26 10:00", False, id="shared-shift"),
    pytest.param(SPEC_SRE, local(SH, "2026-01-26 10:00"), ("zhang",), "2026-01-26 10:00",
                 "2026-02-02 10:00", False, id="rotation-wraps"),
    # before start: the rotation counts backwards
    pytest.param(SPEC_SRE, local(SH, "2026-01-05 09:59"), ("wang", "zhao"), "2025-12-29 10:00",
                 "2026-01-05 10:00", False, id="before-start-last-member"),
    pytest.param(SPEC_SRE, local(SH, "2025-12-29 09:59"), ("li",), "2025-12-22 10:00",
                 "2025-12-29 10:00", False, id="two-shifts-before-start"),
    # the zone is the schedule's: 02:00 UTC is 10:00 in Shanghai
    pytest.param(SPEC_SRE, utc("2026-01-12 01:59"), ("zhang",), "2026-01-05 10:00",
                 "2026-01-12 10:00", False, id="utc-input"),
    pytest.param(SPEC_SRE, utc("2026-01-12 02:00"), ("li",), "2026-01-12 10:00",
                 "2026-01-19 10:00", False, id="utc-input-at-handover"),
    # daily rotation, default handover 09:00, default zone (BRIDGE_TZ)
    pytest.param(DAILY, local(SH, "2026-03-01 08:59"), ("b",), "2026-02-28 09:00",
                 "2026-03-01 09:00", False, id="daily-before-start"),
    pytest.param(DAILY, local(SH, "2026-03-01 09:00"), ("a",), "2026-03-01 09:00",
                 "2026-03-02 09:00", False, id="daily-first"),
    pytest.param(DAILY, local(SH, "2026-03-02 08:59"), ("a",), "2026-03-01 09:00",
                 "2026-03-02 09:00", False, id="daily-08:59"),
    pytest.param(DAILY, local(SH, "2026-03-02 09:00"), ("b",), "2026-03-02 09:00",
                 "2026-03-03 09:00", False, id="daily-09:00"),
    pytest.param(DAILY, local(SH, "2026-03-31 23:59"), ("a",), "2026-03-31 09:00",
                 "2026-04-01 09:00", False, id="daily-month-end"),
    pytest.param(TWO_DAYS, utc("2026-03-02 23:59"), ("a",), "2026-03-01 00:00",
                 "2026-03-03 00:00", False, id="2d-last-minute"),
    pytest.param(TWO_DAYS, utc("2026-03-07 00:00"), ("a",), "2026-03-07 00:00",
                 "2026-03-09 00:00", False, id="2d-wraps"),
    # the example's holiday override, its edges (end excluded) and the rotation cut around it
    pytest.param(SPEC_SRE, local(SH, "2026-12-24 10:00"), ("wang",), "2026-12-24 10:00",
                 "2026-12-26 10:00", True, id="override-begins"),
    pytest.param(SPEC_SRE, local(SH, "2026-12-26 09:59"), ("wang",), "2026-12-24 10:00",
                 "2026-12-26 10:00", True, id="override-last-minute"),
    pytest.param(SPEC_SRE, local(SH, "2026-12-26 10:00"), ("wang", "zhao"), "2026-12-26 10:00",
                 "2026-12-28 10:00", False, id="override-end-excluded"),
    pytest.param(SPEC_SRE, local(SH, "2026-12-24 09:59"), ("wang", "zhao"), "2026-12-21 10:00",
                 "2026-12-24 10:00", False, id="rotation-cut-before-override"),
    # overlapping overrides: the one listed last wins where both cover
    pytest.param(OVERLAP, local(SH, "2026-12-25 06:00"), ("zhao",), "2026-12-25 00:00",
                 "2026-12-25 12:00", True, id="overlap-last-listed-wins"),
    pytest.param(OVERLAP, local(SH, "2026-12-24 23:59"), ("wang",), "2026-12-24 10:00",
                 "2026-12-25 00:00", True, id="overlap-earlier-cut-before"),
    pytest.param(OVERLAP, local(SH, "2026-12-25 12:00"), ("wang",), "2026-12-25 12:00",
                 "2026-12-26 10:00", True, id="overlap-earlier-cut-after"),
    pytest.param(REVERSED, local(SH, "2026-12-25 06:00"), ("wang",), "2026-12-24 10:00",
                 "2026-12-26 10:00", True, id="overlap-reversed-hidden"),
    # daylight saving (New York springs forward 2026-03-08 02:00; Berlin falls back
    # 2026-10-25 03:00): the handover stays at 09:00 local, the shift is 23 or 25 hours
    pytest.param(NY_DAILY, utc("2026-03-08 12:59"), ("a",), "2026-03-07 09:00",
                 "2026-03-08 09:00", False, id="ny-dst-08:59-edt"),
    pytest.param(NY_DAILY, utc("2026-03-08 13:00"), ("b",), "2026-03-08 09:00",
                 "2026-03-09 09:00", False, id="ny-dst-09:00-edt"),
    pytest.param(NY_GAP, utc("2026-03-08 07:29"), ("a",), "2026-03-07 02:30",
                 "2026-03-08 03:30", False, id="ny-handover-in-gap-before"),
    pytest.param(NY_GAP, utc("2026-03-08 07:30"), ("b",), "2026-03-08 03:30",
                 "2026-03-09 02:30", False, id="ny-handover-in-gap-after-jump"),
    pytest.param(BERLIN_DAILY, utc("2026-10-25 08:00"), ("b",), "2026-10-25 09:00",
                 "2026-10-26 09:00", False, id="berlin-fall-back-09:00-cet"),
    pytest.param(BERLIN_DAILY, utc("2026-10-25 07:59"), ("a",), "2026-10-24 09:00",
                 "2026-10-25 09:00", False, id="berlin-fall-back-08:59-cet"),
])
def test_oncall_at(spec: dict[str, Any], t: datetime, people: tuple[str, ...], start: str,
                   end: str, override: bool) -> None:
    s = schedule(spec)
    shift = oncall_at(s, t)
    assert (shift.people, f"{shift.start:%Y-%m-%d %H:%M}", f"{shift.end:%Y-%m-%d %H:%M}",
            shift.override) == (people, start, end, override)
    assert shift.start <= t < shift.end


def test_dst_shift_lengths() -> None:
    def hours(spec: dict[str, Any], t: datetime) -> float:
        shift = oncall_at(schedule(spec), t)
        return (shift.end.astimezone(UTC) - shift.start.astimezone(UTC)).total_seconds() / 3600

    assert hours(NY_DAILY, utc("2026-03-08 00:00")) == 23
    assert hours(BERLIN_DAILY, utc("2026-10-25 00:00")) == 25
    assert hours(BERLIN_DAILY, utc("2026-10-26 00:00")) == 24


def test_naive_time_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        oncall_at(schedule(DAILY), datetime(2026, 3, 1, 9, 0))


def test_next_shifts_final_view() -> None:
    """Rotation shifts cut by overrides, each override its own shift and marked."""
    got = [(f"{s.start:%m-%d %H:%M}", f"{s.end:%m-%d %H:%M}", s.people, s.override)
           for s in next_shifts(schedule(OVERLAP), local(SH, "2026-12-22 12:00"), 5)]
    assert got == [
        ("12-24 10:00", "12-25 00:00", ("wang",), True),
        ("12-25 00:00", "12-25 12:00", ("zhao",), True),
        ("12-25 12:00", "12-26 10:00", ("wang",), True),
        ("12-26 10:00", "12-28 10:00", ("wang", "zhao"), False),
        ("12-28 10:00", "01-04 10:00", ("zhang",), False),
    ]
    assert next_shifts(schedule(OVERLAP), local(SH, "2026-12-22 12:00"), 0) == []


def test_oncall_view_json_masks_mobiles() -> None:
    s = schedule(SPEC_SRE)
    [view] = oncall_view({"sre": s}, {"wang": "13900139000", "zhao": "13900139001"},
                         local(SH, "2026-12-25 12:00"), 1)
    assert view.to_json() == {
        "name": "s", "time_zone": "Asia/Shanghai",
        "now": {"start": "2026-12-24T10:00:00+08:00", "end": "2026-12-26T10:00:00+08:00",
                "override": True, "people": [{"name": "wang", "mobile": "139****9000"}]},
        "next": [{"start": "2026-12-26T10:00:00+08:00", "end": "2026-12-28T10:00:00+08:00",
                  "override": False, "people": [{"name": "wang", "mobile": "139****9000"},
                                                {"name": "zhao", "mobile": "139****9001"}]}],
    }


# -- load checks ---------------------------------------------------------------------------
BASE = """\
people: {zhang: "13800138000", li: "13800138001"}
templates: {t: {tpl_id: 1, vars: {who: "{{ person | default('-') }}"}}}
"""


def test_schedule_problems_with_their_places(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, BASE + """\
receivers: {dba: [zhang, nobody, "13700137000"], sre: [li]}
schedules:
  sre: {members: [zhang], shift: 1w, start: 2026-01-05}
  empty: {members: [], shift: 1d, start: 2026-01-05}
  odd: {members: [zhang, [li, ghost]], shift: 36h, start: 2026-01-05}
  long: {members: [zhang], shift: 999999999w, start: 2026-01-05}
  times: {members: [zhang], shift: 1d, handover: "25:00", start: "2026-13-01"}
  over:
    members: [li]
    shift: 1d
    start: 2026-01-05
    time_zone: Mars/Base
    overrides:
      - {start: "2026-12-26 10:00", end: "2026-12-24 10:00", people: [li]}
      - {start: "2026-12-24 10:00", end: "2026-12-24 10:00", people: [li]}
      - {start: "2026-12-24", end: "Christmas", people: [li]}
  ok:
    members: [[zhang, li]]
    shift: 2w
    start: 2026-01-05
    overrides: [{start: "2026-12-24 10:00", end: "2026-12-26 10:00", people: [wang]}]
  dst:
    members: [li]
    shift: 1d
    start: 2026-01-05
    time_zone: America/New_York
    overrides:
      # the US spring-forward day: 02:10 does not exist, and is read as 03:10
      - {start: "2026-03-08 02:10", end: "2026-03-08 03:10", people: [li]}
      - {start: "2026-03-08 01:10", end: "2026-03-08 03:10", people: [li]}
routes:
  - {receiver: [ok, sre, nosuch], template: t}
""")
    assert problems == [
        "schedules.empty.members: needs at least 1 member (a person's name, or a list of "
        "names sharing the shift), has none",
        "schedules.odd.shift: shift must be a whole number of days, like 1d, 2d, 1w: '36h'",
        "schedules.long.shift: shift must be at most 366d (a year), got '999999999w'",
        "schedules.times.handover: handover must be a time \"HH:MM\" from 00:00 to 23:59, got "
        "'25:00'",
        "schedules.times.start: start must be a date YYYY-MM-DD, e.g. 2026-01-05: '2026-13-01'",
        "schedules.over.time_zone: unknown location 'Mars/Base': expected an IANA time zone, "
        "e.g. Asia/Shanghai or UTC",
        "schedules.over.overrides[0]: end 2026-12-24 10:00 is not after start 2026-12-26 10:00",
        "schedules.over.overrides[1]: end 2026-12-24 10:00 is not after start 2026-12-24 10:00",
        "schedules.over.overrides[2].end: not a local time 'YYYY-MM-DD HH:MM': 'Christmas'",
        "schedules.dst.overrides[0]: start 2026-03-08 02:10 and end 2026-03-08 03:10 are the "
        "same instant in America/New_York (a local time the clocks skip is read as the time "
        "after the jump): the override would cover no time",
        "receivers.dba[1]: unknown person 'nobody' (not in people:, not a mobile number)",
        "schedules.sre: 'sre' is also a receiver: schedules and receivers share one namespace",
        "schedules.ok.overrides[0].people[0]: unknown person 'wang' (not in people:)",
        "schedules.odd.members[1][1]: unknown person 'ghost' (not in people:)",
        "routes[0].receiver: unknown receiver 'nosuch'",
    ]


def test_schedule_unknown_members_and_folder_places(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE + """\
receivers: {sre: [zhang]}
schedules:
  db: {members: [zhang, [li, ghost]], shift: 1d, start: 2026-01-05}
routes: [{receiver: db, template: t}]
""", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("""\
people: {li: "13800138009"}
schedules:
  db: {members: [li], shift: 1d, start: 2026-01-05}
  sre: {members: [li], shift: 1d, start: 2026-01-05}
routes: [{receiver: sre, template: t}, {receiver: db, template: t, repeat_interval: x}]
""", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    assert info.value.problems == [
        "b.yaml: routes[1].repeat_interval: not a duration (like 90s, 5m, 1h30m): 'x'",
        "b.yaml: people.li: already defined in a.yaml",
        "b.yaml: schedules.db: already defined in a.yaml",
        "a.yaml: schedules.db.members[1][1]: unknown person 'ghost' (not in people:)",
        "b.yaml: schedules.sre: 'sre' is also a receiver (in a.yaml): schedules and receivers "
        "share one namespace",
    ]


def test_unnamed_routes_are_named_by_file_and_index(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(BASE + "receivers: {r: [zhang]}\n"
                                     "routes: [{receiver: r, template: t}]\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("routes: [{name: named, receiver: r, template: t},"
                                     " {receiver: r, template: t}]\n", encoding="utf-8")
    rules = load_rules(tmp_path)
    assert rules.route_names == ["a.yaml: routes[0]", "named", "b.yaml: routes[1]"]
    (tmp_path / "b.yaml").write_text("routes: [{name: named, receiver: r, template: t},"
                                     " {receiver: nope, template: t}]\n", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path)
    assert info.value.problems == ["b.yaml: routes[1].receiver: unknown receiver 'nope'"]


# -- planning ------------------------------------------------------------------------------
def test_route_naming_a_schedule_pages_who_is_on_call(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(BASE + """\
receivers: {dba: [li, "13700137000"]}
schedules:
  sre: {members: [zhang, li], shift: 1d, handover: "10:00", start: 2026-01-05}
routes:
  - {name: page, receiver: [sre, dba], template: t}
""", encoding="utf-8")
    rules = load_rules(f)
    alert = Alert(labels={"alertname": "X"}, annotations={}, status="firing", fingerprint="f",
                  source="alertmanager", starts_at=utc("2026-01-05 00:00"))

    def paged(at: datetime) -> list[tuple[str, str]]:
        plan = decide(Batch("alertmanager", [alert]), rules, at)
        return [(n.mobile, n.variables["who"]) for n in plan.notifications]

    # zhang's day until 10:00 local on the 6th, then li's (li also in dba: paged once)
    assert paged(local(SH, "2026-01-06 09:59")) == [
        ("13800138000", "zhang"), ("13800138001", "li"), ("13700137000", "-")]
    assert paged(local(SH, "2026-01-06 10:00")) == [
        ("13800138001", "li"), ("13700137000", "-")]
    assert rules.receivers["dba"] == ["13800138001", "13700137000"]
    assert rules.who("13800138001") == "li 138****8001"
    assert rules.who("13700137000") == "137****7000"


# -- the command line ----------------------------------------------------------------------
CLI_RULES = BASE + """\
people: {zhang: "13800138000", li: "13800138001", wang: "13900139000", zhao: "13900139001"}
schedules:
  sre:
    members: [zhang, li, [wang, zhao]]
    shift: 1w
    handover: "10:00"
    start: 2026-01-05
    overrides:
      - {start: "2026-12-24 10:00", end: "2026-12-26 10:00", people: [wang]}
  db: {members: [li], shift: 1d, start: 2026-01-05, time_zone: UTC}
time_intervals:
  - name: night
    time_intervals: [{times: [{start_time: "23:00", end_time: "24:00"}],
                      location: Asia/Shanghai}]
routes:
  - {name: page, receiver: sre, template: t, mute_time_intervals: [night]}
"""


def cli(*args: str, cwd: Path) -> Any:
    from test_cli import bridge

    return bridge(*args, cwd=cwd)


def test_cli_oncall_at_a_time(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(CLI_RULES.replace(BASE, BASE.split("\n", 1)[1]),
                                         encoding="utf-8")
    r = cli("oncall", "--rules", "rules.yaml", "--at", "2026-12-22 12:00", "--next", "2",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "sre (Asia/Shanghai; 7d shifts, handover 10:00, from 2026-01-05):",
        "  now   2026-12-21 10:00 -> 2026-12-24 10:00  wang 13900139000, zhao 13900139001",
        "  next  2026-12-24 10:00 -> 2026-12-26 10:00  wang 13900139000  (override)",
        "  next  2026-12-26 10:00 -> 2026-12-28 10:00  wang 13900139000, zhao 13900139001",
        "db (UTC; 1d shifts, handover 09:00, from 2026-01-05):",
        "  now   2026-12-21 09:00 -> 2026-12-22 09:00  li 13800138001",  # 04:00 UTC
        "  next  2026-12-22 09:00 -> 2026-12-23 09:00  li 13800138001",
        "  next  2026-12-23 09:00 -> 2026-12-24 09:00  li 13800138001",
    ]
    r = cli("oncall", "db", "--rules", "rules.yaml", "--at", "2026-12-22 12:00", "--next", "0",
            cwd=tmp_path)
    assert r.stdout.splitlines() == [
        "db (UTC; 1d shifts, handover 09:00, from 2026-01-05):",
        "  now   2026-12-21 09:00 -> 2026-12-22 09:00  li 13800138001"]
    r = cli("oncall", "nope", "--rules", "rules.yaml", cwd=tmp_path)
    assert r.returncode == 1 and "unknown schedule 'nope'; the rules have sre, db" in r.stderr
    r = cli("oncall", "--rules", "rules.yaml", "--at", "tomorrow", cwd=tmp_path)
    assert r.returncode == 2 and "expected YYYY-MM-DD HH:MM" in r.stderr
    # a date the calendar computations cannot reach is refused, not a traceback
    for at in ("9999-12-31 23:59", "0001-01-01 00:00"):
        r = cli("oncall", "--rules", "rules.yaml", "--at", at, cwd=tmp_path)
        assert (r.returncode, r.stderr.splitlines()[-1]) == (
            2, f"Error: Invalid value for --at: '{at}': expected YYYY-MM-DD HH:MM from 1970 to "
               "2999 (in BRIDGE_TZ, Asia/Shanghai)"), r.stderr


def test_cli_oncall_invalid_rules_exit_1_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(BASE + """\
schedules:
  sre: {members: [zhang, ghost], shift: 12h, start: 2026-01-05}
routes: [{receiver: sre, template: t}]
""", encoding="utf-8")
    r = cli("oncall", "--rules", "rules.yaml", cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "rules.yaml: 2 problem(s):",
        "  schedules.sre.shift: shift must be a whole number of days, like 1d, 2d, 1w: '12h'",
        "  schedules.sre.members[1]: unknown person 'ghost' (not in people:)",
    ]


def test_cli_render_at_a_time_names_the_person(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(CLI_RULES.replace(BASE, BASE.split("\n", 1)[1]),
                                         encoding="utf-8")
    body = tmp_path / "a.json"
    body.write_text('{"alerts": [{"status": "firing", "labels": {"alertname": "X"}}]}')
    r = cli("render", "a.json", "--rules", "rules.yaml", "--at", "2026-12-25 12:00",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "- route page: firing X -> wang 13900139000 tpl_id 1 [queued]\n    who = wang\n" \
        in r.stdout
    r = cli("render", "a.json", "--rules", "rules.yaml", "--at", "2026-12-22 23:30",
            cwd=tmp_path)
    assert "- route page: firing X -> wang 13900139000 tpl_id 1 [suppressed (muted)]" in r.stdout
    assert "- route page: firing X -> zhao 13900139001 tpl_id 1 [suppressed (muted)]" in r.stdout


# -- the view, in-process (Flask test client over a real SQLite file) ----------------------
def test_api_oncall_view_and_metric(tmp_path: Path) -> None:
    from bridge.config import Settings
    from bridge.web.app import create_app
    from bridge.web.guard import bridge_of

    (tmp_path / "rules.yaml").write_text(CLI_RULES.replace(BASE, BASE.split("\n", 1)[1]),
                                         encoding="utf-8")
    settings = Settings.from_env({"BRIDGE_RULES": str(tmp_path / "rules.yaml"),
                                  "BRIDGE_STORE": f"sqlite:///{tmp_path / 'bridge.db'}"})
    app = create_app(settings)
    b = bridge_of(app)
    client = app.test_client()
    for query, status in [("?next=-1", 400), ("?next=101", 400), ("?next=two", 400),
                          ("?next=100", 200), ("", 200)]:
        assert client.get("/api/oncall" + query).status_code == status, query
    data = client.get("/api/oncall?next=1").get_json()
    assert [(s["name"], len(s["next"])) for s in data["schedules"]] == [("sre", 1), ("db", 1)]
    assert data["schedules"][1]["now"]["people"] == [{"name": "li", "mobile": "138****8001"}]
    [view] = b.oncall(next_n=2, at=local(SH, "2026-12-25 12:00").timestamp(), only="sre")
    assert (view.now.people, view.now.override, [s.people for s in view.next]) == (
        ("wang",), True, [("wang", "zhao"), ("zhang",)])
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'bridge_oncall{person="li",schedule="db"} 1.0' in metrics
    assert any(line.startswith("on call: db: li 138****8001 until ") for line in b.describe())
    b.store.close()


def test_unquoted_impossible_date_is_a_problem_with_its_place(tmp_path: Path) -> None:
    """Found by a trial run: YAML read ``start: 2026-02-30`` unquoted as a timestamp and
    raised inside the parser, so ``bridge check`` printed a traceback and ``/-/reload`` 500."""
    path = tmp_path / "rules.yaml"
    path.write_text(BASE + """\
schedules:
  db: {members: [zhang], shift: 1d, start: 2026-02-30}
routes: [{receiver: db, template: t}]
""", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(path)
    assert info.value.problems == [
        "schedules.db.start: start must be a date YYYY-MM-DD, e.g. 2026-01-05: '2026-02-30'"]
    path.write_text(path.read_text(encoding="utf-8").replace("2026-02-30", "2026-02-28"),
                    encoding="utf-8")
    assert load_rules(path).schedules["db"].start.isoformat() == "2026-02-28"
