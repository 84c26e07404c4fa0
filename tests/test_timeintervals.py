"""Alertmanager time interval semantics: parsing, validation and containment.

Cases marked "AM" are ported from prometheus/alertmanager ``timeinterval/timeinterval_test.go``
(times there are RFC 822 with numeric zone, "02 Jan 06 15:04 -0700"). The clock is always
injected as a datetime.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from pydantic import ValidationError

from bridge.rules.timeintervals import (
    DayOfMonthRange,
    MonthRange,
    NamedTimeInterval,
    TimeInterval,
    TimeRange,
    WeekdayRange,
    YearRange,
    parse_time_of_day,
)


def rfc822z(text: str) -> datetime:
    """Parse Go's ``time.RFC822Z`` layout, e.g. ``04 May 20 15:04 +0000``."""
    return datetime.strptime(text, "%d %b %y %H:%M %z")


def iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def interval(spec: str | dict[str, Any]) -> TimeInterval:
    data = yaml.safe_load(spec) if isinstance(spec, str) else spec
    return TimeInterval.model_validate(data)


def problems(
    data: Any, model: type[TimeInterval | NamedTimeInterval] = TimeInterval
) -> list[tuple[tuple[str | int, ...], str]]:
    """Every validation problem as (location, message without pydantic's prefix)."""
    with pytest.raises(ValidationError) as exc:
        model.model_validate(data)
    out: list[tuple[tuple[str | int, ...], str]] = []
    for err in exc.value.errors():
        message = str(err["ctx"]["error"]) if err["type"] == "value_error" else err["msg"]
        out.append((tuple(err["loc"]), message))
    return out


# --- containment: Alertmanager's own tables ---------------------------------------------------

BUSINESS_HOURS = {
    "times": [{"start_time": "09:00", "end_time": "17:00"}],
    "weekdays": ["monday:friday"],
}
EASTER_2020 = {"days_of_month": ["4:6"], "months": ["april"], "years": ["2020"]}
LAST_3_DAYS = {"days_of_month": ["-3:-1"]}
# Built from parsed values as Alertmanager's test does: '-31:31' itself is refused at load.
JUNE_CLAMPED = {"months": ["june"], "days_of_month": [DayOfMonthRange(-31, 31)]}
FEBRUARY_1_31 = {"months": ["february"], "days_of_month": ["1:31"]}
SYDNEY_BUSINESS = {**BUSINESS_HOURS, "location": "Australia/Sydney"}
SYDNEY_NOVEMBER = {**SYDNEY_BUSINESS, "months": ["november"]}

AM_CONTAINS = [
    # An empty interval contains every time.
    pytest.param({}, "02 Jan 06 15:04 +0000", True, id="AM-empty-1"),
    pytest.param({}, "03 Jan 07 10:04 +0000", True, id="AM-empty-2"),
    pytest.param({}, "04 Jan 06 09:04 +0000", True, id="AM-empty-3"),
    # 9am to 5pm, monday to friday.
    pytest.param(BUSINESS_HOURS, "04 May 20 15:04 +0000", True, id="AM-9to5-monday"),
    pytest.param(BUSINESS_HOURS, "05 May 20 10:04 +0000", True, id="AM-9to5-tuesday"),
    pytest.param(BUSINESS_HOURS, "09 Jun 20 09:04 +0000", True, id="AM-9to5-june"),
    pytest.param(BUSINESS_HOURS, "03 May 20 15:04 +0000", False, id="AM-9to5-sunday"),
    pytest.param(BUSINESS_HOURS, "04 May 20 08:59 +0000", False, id="AM-9to5-before-start"),
    pytest.param(BUSINESS_HOURS, "05 May 20 05:00 +0000", False, id="AM-9to5-early"),
    # Easter 2020.
    pytest.param(EASTER_2020, "04 Apr 20 15:04 +0000", True, id="AM-easter-4th"),
    pytest.param(EASTER_2020, "05 Apr 20 00:00 +0000", True, id="AM-easter-5th-midnight"),
    pytest.param(EASTER_2020, "06 Apr 20 23:05 +0000", True, id="AM-easter-6th-late"),
    pytest.param(EASTER_2020, "03 May 18 15:04 +0000", False, id="AM-easter-other-year-month"),
    pytest.param(EASTER_2020, "03 Apr 20 23:59 +0000", False, id="AM-easter-day-before"),
    pytest.param(EASTER_2020, "04 Jun 20 23:59 +0000", False, id="AM-easter-other-month"),
    pytest.param(EASTER_2020, "06 Apr 19 23:59 +0000", False, id="AM-easter-other-year"),
    pytest.param(EASTER_2020, "07 Apr 20 00:00 +0000", False, id="AM-easter-day-after"),
    # Negative days of month: the last 3 days of each month.
    pytest.param(LAST_3_DAYS, "31 Jan 20 15:04 +0000", True, id="AM-last3-jan31"),
    pytest.param(LAST_3_DAYS, "30 Jan 20 15:04 +0000", True, id="AM-last3-jan30"),
    pytest.param(LAST_3_DAYS, "29 Jan 20 15:04 +0000", True, id="AM-last3-jan29"),
    pytest.param(LAST_3_DAYS, "30 Jun 20 00:00 +0000", True, id="AM-last3-jun30"),
    pytest.param(LAST_3_DAYS, "29 Feb 20 23:05 +0000", True, id="AM-last3-feb29-leap"),
    pytest.param(LAST_3_DAYS, "03 May 18 15:04 +0000", False, id="AM-last3-may3"),
    pytest.param(LAST_3_DAYS, "27 Jan 20 15:04 +0000", False, id="AM-last3-jan27"),
    pytest.param(LAST_3_DAYS, "03 Apr 20 23:59 +0000", False, id="AM-last3-apr3"),
    pytest.param(LAST_3_DAYS, "04 Jun 20 23:59 +0000", False, id="AM-last3-jun4"),
    pytest.param(LAST_3_DAYS, "06 Apr 19 23:59 +0000", False, id="AM-last3-apr6"),
    pytest.param(LAST_3_DAYS, "07 Apr 20 00:00 +0000", False, id="AM-last3-apr7"),
    pytest.param(LAST_3_DAYS, "01 Mar 20 00:00 +0000", False, id="AM-last3-mar1"),
    # Out of bound days are clamped to the month.
    pytest.param(JUNE_CLAMPED, "30 Jun 20 00:00 +0000", True, id="AM-clamp-jun30"),
    pytest.param(JUNE_CLAMPED, "01 Jun 20 00:00 +0000", True, id="AM-clamp-jun1"),
    pytest.param(JUNE_CLAMPED, "31 May 20 00:00 +0000", False, id="AM-clamp-may31"),
    pytest.param(JUNE_CLAMPED, "01 Jul 20 00:00 +0000", False, id="AM-clamp-jul1"),
    # AM docs: '1:31' in February is clamped to the 28th or 29th.
    pytest.param(FEBRUARY_1_31, "28 Feb 23 12:00 +0000", True, id="AM-docs-1:31-feb-28"),
    pytest.param(FEBRUARY_1_31, "29 Feb 24 12:00 +0000", True, id="AM-docs-1:31-feb-29-leap"),
    pytest.param(FEBRUARY_1_31, "01 Mar 24 00:00 +0000", False, id="AM-docs-1:31-not-march"),
    # Another time zone: AEST 9am to 5pm, monday to friday.
    pytest.param(SYDNEY_BUSINESS, "06 Apr 21 13:00 +1000", True, id="AM-sydney-local"),
    pytest.param(SYDNEY_BUSINESS, "06 Apr 21 13:00 +0000", False, id="AM-sydney-utc-is-night"),
    # Another time zone during daylight saving time.
    pytest.param(SYDNEY_NOVEMBER, "01 Nov 21 09:00 +1100", True, id="AM-sydney-dst-local"),
    pytest.param(SYDNEY_NOVEMBER, "31 Oct 21 22:00 +0000", True, id="AM-sydney-dst-utc-oct"),
    pytest.param(SYDNEY_NOVEMBER, "31 Oct 21 21:00 +0000", False, id="AM-sydney-dst-8am"),
]


@pytest.mark.parametrize(("spec", "when", "expected"), AM_CONTAINS)
def test_contains_alertmanager_cases(spec: dict[str, Any], when: str, expected: bool) -> None:
    assert interval(spec).contains(rfc822z(when)) is expected


AM_YAML_BUSINESS = """
weekdays: ['monday:friday']
times:
  - start_time: '09:00'
    end_time: '17:00'
"""

# Last week, excluding Saturday, of the first quarter of the year during business hours from
# 2020 to 2025 and 2030-2035.
AM_YAML_ADVANCED = """
weekdays: ['monday:friday', 'sunday']
months: ['january:march']
days_of_month: ['-7:-1']
years: ['2020:2025', '2030:2035']
times:
  - start_time: '09:00'
    end_time: '17:00'
"""

AM_YAML_COMPLETE = """
weekdays: ['monday:wednesday', 'saturday', 'sunday']
times:
  - start_time: '13:00'
    end_time: '15:00'
days_of_month: ['1', '10', '20:-1']
years: ['2020:2023']
months: ['january:march']
"""

# A range starting after the month's end must not be clamped into it.
AM_YAML_BROKEN_CLAMP = """
days_of_month: ['30:31']
years: ['2020:2023']
months: ['february']
"""

AM_YAML_CONTAINS = [
    pytest.param(AM_YAML_BUSINESS, "08 Jul 20 09:00 +0000", True, id="AM-yaml-9to5-start"),
    pytest.param(AM_YAML_BUSINESS, "08 Jul 20 16:59 +0000", True, id="AM-yaml-9to5-last-minute"),
    pytest.param(AM_YAML_BUSINESS, "08 Jul 20 05:00 +0000", False, id="AM-yaml-9to5-early"),
    pytest.param(AM_YAML_BUSINESS, "08 Jul 20 08:59 +0000", False, id="AM-yaml-9to5-08:59"),
    pytest.param(AM_YAML_BUSINESS, "01 Apr 21 13:00 +0000", True, id="AM-yaml-9to5-thursday"),
    pytest.param(AM_YAML_ADVANCED, "27 Jan 21 09:00 +0000", True, id="AM-adv-jan27"),
    pytest.param(AM_YAML_ADVANCED, "28 Jan 21 16:59 +0000", True, id="AM-adv-jan28"),
    pytest.param(AM_YAML_ADVANCED, "29 Jan 21 13:00 +0000", True, id="AM-adv-jan29"),
    pytest.param(AM_YAML_ADVANCED, "31 Mar 25 13:00 +0000", True, id="AM-adv-mar31-2025"),
    pytest.param(AM_YAML_ADVANCED, "31 Jan 35 13:00 +0000", True, id="AM-adv-jan31-2035"),
    pytest.param(AM_YAML_ADVANCED, "30 Jan 21 13:00 +0000", False, id="AM-adv-saturday"),
    pytest.param(AM_YAML_ADVANCED, "01 Apr 21 13:00 +0000", False, id="AM-adv-april"),
    pytest.param(AM_YAML_ADVANCED, "30 Jan 26 13:00 +0000", False, id="AM-adv-2026"),
    pytest.param(AM_YAML_ADVANCED, "31 Jan 35 17:01 +0000", False, id="AM-adv-after-5pm"),
    pytest.param(AM_YAML_COMPLETE, "10 Jan 21 13:00 +0000", True, id="AM-complete-sunday-10th"),
    pytest.param(AM_YAML_COMPLETE, "30 Jan 21 14:24 +0000", True, id="AM-complete-sat-30th"),
    pytest.param(AM_YAML_COMPLETE, "09 Jan 21 13:00 +0000", False, id="AM-complete-9th"),
    pytest.param(AM_YAML_COMPLETE, "20 Jan 21 12:59 +0000", False, id="AM-complete-12:59"),
    pytest.param(AM_YAML_COMPLETE, "02 Feb 21 13:00 +0000", False, id="AM-complete-feb2"),
    pytest.param(AM_YAML_BROKEN_CLAMP, "28 Feb 21 13:00 +0000", False, id="AM-no-clamp-into"),
]


@pytest.mark.parametrize(("spec", "when", "expected"), AM_YAML_CONTAINS)
def test_contains_alertmanager_yaml_cases(spec: str, when: str, expected: bool) -> None:
    assert interval(spec).contains(rfc822z(when)) is expected


# --- containment: the bridge's own edge cases -------------------------------------------------

NIGHT_SHANGHAI = {
    "times": [
        {"start_time": "23:00", "end_time": "24:00"},
        {"start_time": "00:00", "end_time": "07:00"},
    ],
    "location": "Asia/Shanghai",
}
TO_MIDNIGHT = {"times": [{"start_time": "17:00", "end_time": "24:00"}]}
LAST_DAY = {"days_of_month": ["-1"]}
EARLY_MONDAY_SHANGHAI = {
    "times": [{"start_time": "00:00", "end_time": "07:00"}],
    "weekdays": ["monday"],
    "location": "Asia/Shanghai",
}
EARLY_MONDAY_UTC = {**EARLY_MONDAY_SHANGHAI, "location": "UTC"}
MON_TO_WED = {"weekdays": ["Monday:Wednesday"]}
WEEKEND = {"weekdays": ["saturday", "sunday"]}
YEARS = {"years": ["2020:2022", "2030"]}
YEAR_2022_SHANGHAI = {"years": ["2022"], "location": "Asia/Shanghai"}
FIRST_QUARTER_AND_SUMMER = {"months": ["1:3", "may", "july:august"]}
WHOLE_MONTH = {"days_of_month": ["1:-1"]}
LAST_DAY_BERLIN = {"days_of_month": ["-1"], "location": "Europe/Berlin"}

BRIDGE_CONTAINS = [
    # Across midnight: two ranges, 23:00-24:00 and 00:00-07:00, checked in Asia/Shanghai.
    pytest.param(NIGHT_SHANGHAI, "2024-05-06T23:00:00+08:00", True, id="night-23:00"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-06T23:59:59+08:00", True, id="night-23:59:59"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-07T00:00:00+08:00", True, id="night-00:00"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-07T06:59:59+08:00", True, id="night-06:59:59"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-07T07:00:00+08:00", False, id="night-07:00-excluded"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-06T22:59:59+08:00", False, id="night-22:59"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-07T12:00:00+08:00", False, id="night-noon"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-06T15:30:00+00:00", True, id="night-given-in-utc"),
    pytest.param(NIGHT_SHANGHAI, "2024-05-06T23:30:00+00:00", False, id="night-utc-23:30-is-day"),
    # Across a time zone boundary: the same UTC instant (Sunday 16:00 UTC = Monday 00:00 in
    # Shanghai) is inside when checked in Asia/Shanghai, outside when checked in UTC.
    pytest.param(EARLY_MONDAY_SHANGHAI, "2024-03-10T16:00:00+00:00", True, id="tz-shanghai-in"),
    pytest.param(EARLY_MONDAY_UTC, "2024-03-10T16:00:00+00:00", False, id="tz-utc-out"),
    pytest.param(EARLY_MONDAY_UTC, "2024-03-11T00:00:00+00:00", True, id="tz-utc-monday-in"),
    pytest.param(
        {"times": [{"start_time": "00:00", "end_time": "07:00"}]},
        "2024-03-11T00:30:00+08:00",
        False,
        id="tz-default-is-utc",
    ),
    # 24:00 as an end: the last minute is inside, midnight itself belongs to the next day.
    pytest.param(TO_MIDNIGHT, "2024-05-06T23:59:59.999999+00:00", True, id="24:00-last-instant"),
    pytest.param(TO_MIDNIGHT, "2024-05-06T17:00:00+00:00", True, id="24:00-range-start"),
    pytest.param(TO_MIDNIGHT, "2024-05-07T00:00:00+00:00", False, id="24:00-midnight-out"),
    pytest.param(TO_MIDNIGHT, "2024-05-06T16:59:59+00:00", False, id="24:00-before-start"),
    # Negative days of month: the last day of February in leap and non-leap years.
    pytest.param(LAST_DAY, "2024-02-29T12:00:00+00:00", True, id="last-day-feb-leap"),
    pytest.param(LAST_DAY, "2024-02-28T12:00:00+00:00", False, id="feb28-in-leap-year"),
    pytest.param(LAST_DAY, "2023-02-28T12:00:00+00:00", True, id="last-day-feb-non-leap"),
    pytest.param(LAST_DAY, "2023-02-27T12:00:00+00:00", False, id="feb27-non-leap"),
    pytest.param(LAST_DAY, "2100-02-28T12:00:00+00:00", True, id="last-day-feb-2100-non-leap"),
    pytest.param(LAST_DAY, "2000-02-29T12:00:00+00:00", True, id="last-day-feb-2000-leap"),
    pytest.param(LAST_DAY, "2024-04-30T12:00:00+00:00", True, id="last-day-april"),
    pytest.param(LAST_DAY, "2024-03-30T12:00:00+00:00", False, id="march-30-not-last"),
    pytest.param(LAST_DAY_BERLIN, "2024-03-31T12:00:00+02:00", True, id="last-day-in-dst-month"),
    pytest.param(WHOLE_MONTH, "2023-02-28T00:00:00+00:00", True, id="1:-1-whole-month"),
    pytest.param(WHOLE_MONTH, "2024-01-01T00:00:00+00:00", True, id="1:-1-first-day"),
    # Weekday ranges, case-insensitive names, inclusive ends.
    pytest.param(MON_TO_WED, "2024-05-06T12:00:00+00:00", True, id="weekday-monday"),
    pytest.param(MON_TO_WED, "2024-05-07T12:00:00+00:00", True, id="weekday-tuesday"),
    pytest.param(MON_TO_WED, "2024-05-08T12:00:00+00:00", True, id="weekday-wednesday"),
    pytest.param(MON_TO_WED, "2024-05-09T12:00:00+00:00", False, id="weekday-thursday"),
    pytest.param(MON_TO_WED, "2024-05-05T12:00:00+00:00", False, id="weekday-sunday"),
    pytest.param(WEEKEND, "2024-05-04T12:00:00+00:00", True, id="weekend-saturday"),
    pytest.param(WEEKEND, "2024-05-05T12:00:00+00:00", True, id="weekend-sunday"),
    pytest.param(WEEKEND, "2024-05-06T12:00:00+00:00", False, id="weekend-monday"),
    # Years, ranges inclusive, checked in the interval's location.
    pytest.param(YEARS, "2020-01-01T00:00:00+00:00", True, id="years-range-start"),
    pytest.param(YEARS, "2022-12-31T23:59:00+00:00", True, id="years-range-end"),
    pytest.param(YEARS, "2023-01-01T00:00:00+00:00", False, id="years-after-range"),
    pytest.param(YEARS, "2030-06-01T00:00:00+00:00", True, id="years-single"),
    pytest.param(YEARS, "2031-06-01T00:00:00+00:00", False, id="years-after-single"),
    pytest.param(YEARS, "2019-12-31T23:59:00+00:00", False, id="years-before"),
    pytest.param(YEAR_2022_SHANGHAI, "2022-12-31T20:00:00+00:00", False, id="year-ends-in-utc+8"),
    pytest.param(YEAR_2022_SHANGHAI, "2021-12-31T20:00:00+00:00", True, id="year-starts-utc+8"),
    # Months, by number and name.
    pytest.param(FIRST_QUARTER_AND_SUMMER, "2024-03-31T00:00:00+00:00", True, id="months-march"),
    pytest.param(FIRST_QUARTER_AND_SUMMER, "2024-04-01T00:00:00+00:00", False, id="months-april"),
    pytest.param(FIRST_QUARTER_AND_SUMMER, "2024-05-15T00:00:00+00:00", True, id="months-may"),
    pytest.param(FIRST_QUARTER_AND_SUMMER, "2024-08-31T00:00:00+00:00", True, id="months-august"),
    pytest.param(FIRST_QUARTER_AND_SUMMER, "2024-09-01T00:00:00+00:00", False, id="months-sept"),
    # An empty list means "any", like a field left out.
    pytest.param(
        {"times": [], "weekdays": []}, "2024-05-05T03:00:00+00:00", True, id="empty-lists"
    ),
]


@pytest.mark.parametrize(("spec", "when", "expected"), BRIDGE_CONTAINS)
def test_contains_bridge_cases(spec: dict[str, Any], when: str, expected: bool) -> None:
    assert interval(spec).contains(iso(when)) is expected


def test_contains_refuses_naive_datetime() -> None:
    with pytest.raises(ValueError, match="^time interval check needs a timezone-aware datetime$"):
        interval({}).contains(datetime(2024, 5, 6, 12, 0))


# --- named intervals --------------------------------------------------------------------------

SPEC_YAML = """
time_intervals:
  - name: night
    time_intervals:
      - times: [{start_time: "23:00", end_time: "24:00"}, {start_time: "00:00", end_time: "07:00"}]
        location: Asia/Shanghai
  - name: office
    time_intervals:
      - times: [{start_time: "09:00", end_time: "18:00"}]
        weekdays: ['monday:friday']
        location: Asia/Shanghai
      - times: [{start_time: "10:00", end_time: "12:00"}]
        weekdays: ['saturday']
        location: Asia/Shanghai
  - name: never
    time_intervals: []
"""

NAMED = {
    item["name"]: NamedTimeInterval.model_validate(item)
    for item in yaml.safe_load(SPEC_YAML)["time_intervals"]
}

ACTIVE_AT = [
    pytest.param("night", "2024-05-06T23:30:00+08:00", True, id="night-late"),
    pytest.param("night", "2024-05-07T06:00:00+08:00", True, id="night-early"),
    pytest.param("night", "2024-05-07T08:00:00+08:00", False, id="night-morning"),
    pytest.param("office", "2024-05-06T09:00:00+08:00", True, id="office-weekday"),
    pytest.param("office", "2024-05-04T11:00:00+08:00", True, id="office-second-interval"),
    pytest.param("office", "2024-05-04T14:00:00+08:00", False, id="office-saturday-afternoon"),
    pytest.param("office", "2024-05-05T11:00:00+08:00", False, id="office-sunday"),
    pytest.param("never", "2024-05-05T11:00:00+08:00", False, id="empty-list-never-active"),
]


@pytest.mark.parametrize(("name", "when", "expected"), ACTIVE_AT)
def test_named_interval_active_at(name: str, when: str, expected: bool) -> None:
    assert NAMED[name].active_at(iso(when)) is expected


# --- parsed values ----------------------------------------------------------------------------

TIME_RANGES = [
    pytest.param("00:00", "24:00", 0, 1440, id="AM-whole-day"),
    pytest.param("01:35", "17:39", 95, 1059, id="AM-odd-minutes"),
    pytest.param("09:35", "09:39", 575, 579, id="AM-short"),
    pytest.param("23:00", "24:00", 1380, 1440, id="last-hour"),
]


@pytest.mark.parametrize(("start", "end", "start_minute", "end_minute"), TIME_RANGES)
def test_time_range_minutes(start: str, end: str, start_minute: int, end_minute: int) -> None:
    tr = TimeRange(start_time=start, end_time=end)
    assert (tr.start_minute, tr.end_minute) == (start_minute, end_minute)
    assert parse_time_of_day(start) == start_minute


PARSED_FIELDS = [
    pytest.param("weekdays", "monday:friday", WeekdayRange(1, 5), id="weekday-range"),
    pytest.param("weekdays", "Sunday", WeekdayRange(0, 0), id="weekday-capitalised"),
    pytest.param("weekdays", "MONDAY:wednesday", WeekdayRange(1, 3), id="weekday-mixed-case"),
    pytest.param("days_of_month", "1:5", DayOfMonthRange(1, 5), id="days-range"),
    pytest.param("days_of_month", "-3:-1", DayOfMonthRange(-3, -1), id="days-negative"),
    pytest.param("days_of_month", "1:-1", DayOfMonthRange(1, -1), id="AM-days-mixed"),
    pytest.param("days_of_month", 10, DayOfMonthRange(10, 10), id="days-unquoted-int"),
    pytest.param("months", "January:december", MonthRange(1, 12), id="AM-months-any-case"),
    pytest.param("months", "1:3", MonthRange(1, 3), id="months-numbers"),
    pytest.param("months", "may", MonthRange(5, 5), id="months-name"),
    pytest.param("months", "2:june", MonthRange(2, 6), id="months-number-and-name"),
    pytest.param("years", "2020:2022", YearRange(2020, 2022), id="years-range"),
    pytest.param("years", 2030, YearRange(2030, 2030), id="years-unquoted-int"),
]


@pytest.mark.parametrize(("field", "value", "expected"), PARSED_FIELDS)
def test_fields_parse(field: str, value: str | int, expected: object) -> None:
    assert getattr(interval({field: [value]}), field) == [expected]


def test_location_is_a_zoneinfo_and_dumps_back() -> None:
    ti = interval({"years": ["2020:2022"], "location": "Australia/Sydney"})
    assert ti.location == ZoneInfo("Australia/Sydney")
    assert ti.model_dump(exclude_none=True) == {
        "years": ["2020:2022"],
        "location": "Australia/Sydney",
    }


def test_full_example_round_trips() -> None:
    data = yaml.safe_load("""
name: night
time_intervals:
  - times: [{start_time: "23:00", end_time: "24:00"}]
    weekdays: ['monday:wednesday', 'saturday']
    days_of_month: ['1:5', '-3:-1']
    months: ['1:3', 'may', 'july:august']
    years: ['2020:2022', '2030']
    location: Asia/Shanghai
""")
    named = NamedTimeInterval.model_validate(data)
    assert named.model_dump() == {
        "name": "night",
        "time_intervals": [
            {
                "times": [{"start_time": "23:00", "end_time": "24:00"}],
                "weekdays": ["monday:wednesday", "saturday"],
                "days_of_month": ["1:5", "-3:-1"],
                "months": ["january:march", "may", "july:august"],
                "years": ["2020:2022", "2030"],
                "location": "Asia/Shanghai",
            }
        ],
    }
    assert NamedTimeInterval.model_validate(named.model_dump()) == named


# --- validation errors: place and exact message -------------------------------------------------

HHMM = "invalid format (expected HH:MM from 00:00 to 24:00)"
ACROSS_MIDNIGHT = (
    " (for a range across midnight write two ranges, e.g. 23:00-24:00 and 00:00-07:00)"
)

ERRORS = [
    pytest.param(
        {"times": [{"start_time": "01:99", "end_time": "23:59"}]},
        [(("times", 0, "start_time"), f"couldn't parse timestamp 01:99, {HHMM}")],
        id="AM-bad-start-time",
    ),
    pytest.param(
        {"times": [{"start_time": "00:00", "end_time": "99:99"}]},
        [(("times", 0, "end_time"), f"couldn't parse timestamp 99:99, {HHMM}")],
        id="AM-bad-end-time",
    ),
    pytest.param(
        {"times": [{"start_time": "12:30", "end_time": "24:01"}]},
        [(("times", 0, "end_time"), f"couldn't parse timestamp 24:01, {HHMM}")],
        id="AM-end-beyond-24:00",
    ),
    pytest.param(
        {"times": [{"start_time": "9:00", "end_time": "17:00"}]},
        [(("times", 0, "start_time"), f"couldn't parse timestamp 9:00, {HHMM}")],
        id="one-digit-hour",
    ),
    pytest.param(
        {"times": [{"start_time": "17:31", "end_time": "17:31"}]},
        [(("times", 0), f"start time 17:31 must be before end time 17:31{ACROSS_MIDNIGHT}")],
        id="AM-start-equals-end",
    ),
    pytest.param(
        {"times": [{"start_time": "09:30", "end_time": "07:41"}]},
        [(("times", 0), f"start time 09:30 must be before end time 07:41{ACROSS_MIDNIGHT}")],
        id="AM-start-after-end",
    ),
    pytest.param(
        {"times": [{"start_time": "24:00", "end_time": "17:41"}]},
        [(("times", 0), f"start time 24:00 must be before end time 17:41{ACROSS_MIDNIGHT}")],
        id="AM-start-24:00",
    ),
    pytest.param(
        {"times": [{"start_time": "14:03"}]},
        [(("times", 0, "end_time"), "Field required")],
        id="AM-no-end-time",
    ),
    pytest.param(
        {"times": [{"start_time": 1380, "end_time": "24:00"}]},
        [(("times", 0, "start_time"), 'expected a time as a string "HH:MM", got the number 1380')],
        id="time-as-a-number",
    ),
    pytest.param(
        {"weekdays": ["friday:monday"]},
        [
            (
                ("weekdays", 0),
                "start day friday is after end day monday (weeks run sunday to saturday; "
                "split the range: ['friday:saturday', 'sunday:monday'])",
            )
        ],
        id="AM-weekday-start-after-end",
    ),
    pytest.param(
        {"weekdays": ["saturday:sunday"]},
        [
            (
                ("weekdays", 0),
                "start day saturday is after end day sunday (weeks run sunday to saturday; "
                "split the range: ['saturday', 'sunday'])",
            )
        ],
        id="weekend-range-wraps",
    ),
    pytest.param(
        {"weekdays": ["blurgsday:flurgsday"]},
        [(("weekdays", 0), "blurgsday is not a valid weekday")],
        id="AM-unknown-weekday",
    ),
    pytest.param(
        {"weekdays": ["monday", "Funday"]},
        [(("weekdays", 1), "funday is not a valid weekday")],
        id="unknown-weekday-second-item",
    ),
    pytest.param(
        {"weekdays": ["1:3"]},
        [(("weekdays", 0), "1 is not a valid weekday")],
        id="AM-numeric-weekdays",
    ),
    pytest.param(
        {"weekdays": ["-2:-1"]},
        [(("weekdays", 0), "-2 is not a valid weekday")],
        id="AM-negative-weekdays",
    ),
    pytest.param(
        {"weekdays": [1]},
        [(("weekdays", 0), "1 is not a valid weekday (use names, e.g. 'monday:friday')")],
        id="unquoted-numeric-weekday",
    ),
    pytest.param(
        {"weekdays": ["monday:tuesday:friday"]},
        [
            (
                ("weekdays", 0),
                "couldn't parse range monday:tuesday:friday, invalid format (expected a or a:b)",
            )
        ],
        id="three-part-range",
    ),
    pytest.param(
        {"days_of_month": ["0"]},
        [(("days_of_month", 0), "0 is not a valid day of the month: out of range")],
        id="AM-day-zero",
    ),
    pytest.param(
        {"days_of_month": ["-50:-20"]},
        [(("days_of_month", 0), "-50 is not a valid day of the month: out of range")],
        id="AM-day-below-minus-31",
    ),
    pytest.param(
        {"days_of_month": ["1:50"]},
        [(("days_of_month", 0), "50 is not a valid day of the month: out of range")],
        id="AM-day-beyond-31",
    ),
    pytest.param(
        {"days_of_month": ["32"]},
        [(("days_of_month", 0), "32 is not a valid day of the month: out of range")],
        id="day-32",
    ),
    pytest.param(
        {"days_of_month": ["-15:5"]},
        [(("days_of_month", 0), "end day must be negative if start day is negative")],
        id="AM-negative-start-positive-end",
    ),
    pytest.param(
        {"days_of_month": ["10:-25"]},
        [(("days_of_month", 0), "end day -25 is always before start day 10")],
        id="AM-end-always-before-start",
    ),
    pytest.param(
        {"days_of_month": ["5:1"]},
        [(("days_of_month", 0), "end day 1 is always before start day 5")],
        id="day-start-after-end",
    ),
    pytest.param(
        {"days_of_month": ["first"]},
        [(("days_of_month", 0), "first is not a valid day of the month")],
        id="day-not-a-number",
    ),
    pytest.param(
        {"days_of_month": [65]},
        [(("days_of_month", 0), "65 is not a valid day of the month: out of range")],
        id="day-out-of-range-number",
    ),
    pytest.param(
        {"months": ["martius:june"]},
        [(("months", 0), "martius is not a valid month")],
        id="AM-unknown-start-month",
    ),
    pytest.param(
        {"months": ["march:junius"]},
        [(("months", 0), "junius is not a valid month")],
        id="AM-unknown-end-month",
    ),
    pytest.param(
        {"months": ["december:january"]},
        [(("months", 0), "end month january is before start month december")],
        id="AM-month-start-after-end",
    ),
    pytest.param(
        {"months": ["13"]},
        [(("months", 0), "13 is not a valid month: out of range")],
        id="month-13",
    ),
    pytest.param(
        {"months": ["0:3"]},
        [(("months", 0), "0 is not a valid month: out of range")],
        id="month-0",
    ),
    pytest.param(
        {"years": ["2022:2020"]},
        [(("years", 0), "end year 2020 is before start year 2022")],
        id="AM-year-start-after-end",
    ),
    pytest.param(
        {"years": ["twenty"]},
        [(("years", 0), "twenty is not a valid year")],
        id="year-not-a-number",
    ),
    pytest.param(
        {"years": [True]},
        [(("years", 0), "expected a year or range of them as a string, e.g. '2020:2022'")],
        id="year-boolean",
    ),
    pytest.param(
        {"location": "Mars/Olympus_Mons"},
        [
            (
                ("location",),
                "unknown location 'Mars/Olympus_Mons': expected an IANA time zone, "
                "e.g. Asia/Shanghai or UTC",
            )
        ],
        id="unknown-location",
    ),
    pytest.param(
        {"location": "../etc/passwd"},
        [
            (
                ("location",),
                "unknown location '../etc/passwd': expected an IANA time zone, "
                "e.g. Asia/Shanghai or UTC",
            )
        ],
        id="path-as-location",
    ),
    pytest.param(
        {"location": "Local"},
        [
            (
                ("location",),
                "location Local is not supported: name an IANA time zone, e.g. Asia/Shanghai",
            )
        ],
        id="local-location-refused",
    ),
    pytest.param(
        {"time_zone": "Asia/Shanghai"},
        [(("time_zone",), "Extra inputs are not permitted")],
        id="unknown-key",
    ),
    pytest.param(
        {"weekdays": ["monday"], "days_of_month": ["0"], "location": "Nowhere"},
        [
            (("days_of_month", 0), "0 is not a valid day of the month: out of range"),
            (
                ("location",),
                "unknown location 'Nowhere': expected an IANA time zone, e.g. Asia/Shanghai or UTC",
            ),
        ],
        id="every-problem-listed",
    ),
]


@pytest.mark.parametrize(("data", "expected"), ERRORS)
def test_time_interval_errors(data: Any, expected: list[tuple[tuple[Any, ...], str]]) -> None:
    assert problems(data) == expected


NAMED_ERRORS = [
    pytest.param(
        {"name": "", "time_intervals": []},
        [(("name",), "String should have at least 1 character")],
        id="empty-name",
    ),
    pytest.param(
        {"name": "night"},
        [(("time_intervals",), "Field required")],
        id="missing-time-intervals",
    ),
    pytest.param(
        {"name": "night", "time_intervals": [{"weekdays": ["someday"]}], "extra": 1},
        [
            (("time_intervals", 0, "weekdays", 0), "someday is not a valid weekday"),
            (("extra",), "Extra inputs are not permitted"),
        ],
        id="nested-location",
    ),
]


@pytest.mark.parametrize(("data", "expected"), NAMED_ERRORS)
def test_named_interval_errors(data: Any, expected: list[tuple[tuple[Any, ...], str]]) -> None:
    assert problems(data, NamedTimeInterval) == expected


PARSE_TIME_ERRORS = [
    pytest.param("7:00", id="one-digit"),
    pytest.param("24:30", id="past-24"),
    pytest.param("12:60", id="minute-60"),
    pytest.param("12:00\n", id="trailing-newline"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("text", PARSE_TIME_ERRORS)
def test_parse_time_of_day_errors(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        parse_time_of_day(text)
    assert str(exc.value) == f"couldn't parse timestamp {text}, {HHMM}"
