"""Alertmanager ``time_intervals``: when a route is muted (or active).

Alertmanager time interval semantics (prometheus/alertmanager ``timeinterval/timeinterval.go``
and ``docs/configuration.md`` "time_interval"), shaped as pydantic v2 models so that the rules
file loader can embed them and report each problem at its place::

    time_intervals:
      - name: night
        time_intervals:
          - times: [{start_time: "23:00", end_time: "24:00"}]
            weekdays: ['monday:wednesday', 'saturday']
            days_of_month: ['1:5', '-3:-1']
            months: ['1:3', 'may', 'july:august']
            years: ['2020:2022', '2030']
            location: Asia/Shanghai

- Every field of a :class:`TimeInterval` is a list; a time matches a field when it matches at
  least one element of it, and matches the interval when it matches every field. A field left
  out (or an empty list) matches any time.
- ``times`` are ``[start, end)`` in minutes of the day; ``24:00`` is allowed as an end.
- ``weekdays`` and ``months`` take case-insensitive English names (months also numbers
  1-12); ``days_of_month`` take 1..31 or -31..-1, where -1 is the month's last day; every
  ``a:b`` range is inclusive at both ends. Day ranges reaching past the month are clamped to it.
- The check is done in ``location`` (an IANA zone, default UTC): ``t`` is converted first.

Unquoted ``23:00`` or ``1:5`` reach these models as text: the rules loader
(:mod:`bridge.rules.load`) reads YAML without base-60 numbers, as Alertmanager does. A number
where a time of day is expected is refused.

This module is pure: no I/O besides the system time zone database, no environment, no clock.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    field_validator,
    model_validator,
)

__all__ = [
    "DayOfMonthRange",
    "MonthRange",
    "NamedTimeInterval",
    "TimeInterval",
    "TimeRange",
    "WeekdayRange",
    "YearRange",
    "parse_location",
    "parse_time_of_day",
]

_TIME_OF_DAY_RE = re.compile(r"(?:[01][0-9]|2[0-3]):[0-5][0-9]|24:00")
_INT_RE = re.compile(r"[+-]?[0-9]+")

_WEEKDAYS: dict[str, int] = {
    "sunday": 0,
    "monday": 1,
    "tuesday": 2,
    "wednesday": 3,
    "thursday": 4,
    "friday": 5,
    "saturday": 6,
}
_WEEKDAY_NAMES: dict[int, str] = {n: name for name, n in _WEEKDAYS.items()}

_MONTHS: dict[str, int] = {
    "january": 1,
    "february": 2,
    "march": 3,
    "april": 4,
    "may": 5,
    "june": 6,
    "july": 7,
    "august": 8,
    "september": 9,
    "october": 10,
    "november": 11,
    "december": 12,
}
_MONTH_NAMES: dict[int, str] = {n: name for name, n in _MONTHS.items()}


def parse_time_of_day(text: str) -> int:
    """Return the minutes since midnight of ``"HH:MM"`` (``00:00`` .. ``24:00``, two-digit hours).

    Raises ``ValueError`` ("couldn't parse timestamp ..., invalid format") for anything else,
    e.g. ``9:00``, ``24:01`` or ``01:99``. Source: Alertmanager ``parseTime``.
    """
    if not _TIME_OF_DAY_RE.fullmatch(text):
        raise ValueError(
            f"couldn't parse timestamp {text}, invalid format (expected HH:MM from 00:00 to 24:00)"
        )
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def _split_range(text: str) -> tuple[str, str]:
    """Split ``"a:b"`` into its ends (``"a"`` is ``("a", "a")``), lower-cased and stripped."""
    text = text.strip().lower()
    parts = [p.strip() for p in text.split(":")]
    if len(parts) == 1:
        parts.append(parts[0])
    if len(parts) != 2 or not parts[0] or not parts[1]:
        raise ValueError(f"couldn't parse range {text}, invalid format (expected a or a:b)")
    return parts[0], parts[1]


def _parse_int(text: str, what: str) -> int:
    if not _INT_RE.fullmatch(text):
        raise ValueError(f"{text} is not a valid {what}")
    return int(text)


def _range_text(value: Any, what: str, example: str) -> str:
    """The string form of one YAML list element of a range field."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"expected a {what} or range of them as a string, e.g. '{example}'")
    return str(value)


@dataclass(frozen=True)
class _InclusiveRange:
    """An inclusive range ``begin..end`` of integers."""

    begin: int
    end: int

    #: How to write a member (indexed by its number), or None for the number itself.
    _names: ClassVar[Mapping[int, str] | None] = None

    def __str__(self) -> str:
        if self._names is None:
            first, last = str(self.begin), str(self.end)
        else:
            first, last = self._names[self.begin], self._names[self.end]
        return first if self.begin == self.end else f"{first}:{last}"


@dataclass(frozen=True)
class _PlainRange(_InclusiveRange):
    """A range whose members are compared as they are (weekdays, months, years)."""

    def contains(self, value: int) -> bool:
        """Whether ``value`` (a number as the class docstring counts it) is in the range."""
        return self.begin <= value <= self.end


@dataclass(frozen=True)
class WeekdayRange(_PlainRange):
    """Days of the week ``begin..end`` inclusive, 0 = Sunday .. 6 = Saturday.

    Written as names, case-insensitive: ``'monday:friday'``, ``'Saturday'``; numbers are
    refused, as in Alertmanager. :meth:`parse` raises ``ValueError`` for an unknown name or a
    start after the end.
    """

    _names = _WEEKDAY_NAMES

    @classmethod
    def parse(cls, text: str) -> WeekdayRange:
        """Parse ``'monday'`` or ``'monday:friday'``; raises ``ValueError``."""
        first, last = _split_range(text)
        begin, end = (_WEEKDAYS.get(first), _WEEKDAYS.get(last))
        if begin is None:
            raise ValueError(f"{first} is not a valid weekday")
        if end is None:
            raise ValueError(f"{last} is not a valid weekday")
        if begin > end:
            head = first if first == "saturday" else f"{first}:saturday"
            tail = last if last == "sunday" else f"sunday:{last}"
            raise ValueError(
                f"start day {first} is after end day {last} (weeks run sunday to saturday;"
                f" split the range: ['{head}', '{tail}'])"
            )
        return cls(begin, end)



@dataclass(frozen=True)
class DayOfMonthRange(_InclusiveRange):
    """Days of the month ``begin..end`` inclusive; negative days count from the month's end.

    ``1..31`` or ``-31..-1`` (``-1`` = last day). A negative start needs a negative end;
    ``'1:-1'`` (whole month) is allowed. :meth:`parse` raises ``ValueError`` for day 0, a day
    beyond ±31 or a range whose end is always before its start (checked on a 28-day month).
    """

    @classmethod
    def parse(cls, text: str) -> DayOfMonthRange:
        """Parse ``'5'``, ``'1:5'``, ``'-3:-1'`` or ``'1:-1'``; raises ``ValueError``."""
        first, last = _split_range(text)
        begin = _parse_int(first, "day of the month")
        end = _parse_int(last, "day of the month")
        for day in (begin, end):
            if day == 0 or not -31 <= day <= 31:
                raise ValueError(f"{day} is not a valid day of the month: out of range")
        if begin < 0 < end:
            raise ValueError("end day must be negative if start day is negative")
        check_begin = 28 + begin if begin < 0 else begin
        check_end = 28 + end if end < 0 else end
        if check_begin > check_end:
            raise ValueError(f"end day {end} is always before start day {begin}")
        return cls(begin, end)

    def contains(self, day: int, days_in_month: int) -> bool:
        """Whether ``day`` of a month of ``days_in_month`` days is in the range.

        Negative ends are resolved against the month; a range starting after the month's end
        holds no day; otherwise the ends are clamped to the month (Alertmanager's rule).
        """
        begin = days_in_month + self.begin + 1 if self.begin < 0 else self.begin
        end = days_in_month + self.end + 1 if self.end < 0 else self.end
        if begin > days_in_month:
            return False
        begin = max(-days_in_month, min(begin, days_in_month))
        end = max(-days_in_month, min(end, days_in_month))
        return begin <= day <= end


@dataclass(frozen=True)
class MonthRange(_PlainRange):
    """Months ``begin..end`` inclusive, 1 = January .. 12 = December.

    Written as case-insensitive names or numbers: ``'1:3'``, ``'may'``, ``'July:august'``.
    :meth:`parse` raises ``ValueError`` for an unknown name, a number outside 1-12 (stricter
    than Alertmanager, which accepts and never matches it) or a start after the end.
    """

    _names = _MONTH_NAMES

    @classmethod
    def parse(cls, text: str) -> MonthRange:
        """Parse ``'may'``, ``'1:3'`` or ``'july:august'``; raises ``ValueError``."""
        first, last = _split_range(text)
        begin, end = cls._member(first), cls._member(last)
        if begin > end:
            raise ValueError(
                f"end month {_MONTH_NAMES[end]} is before start month {_MONTH_NAMES[begin]}"
            )
        return cls(begin, end)

    @staticmethod
    def _member(text: str) -> int:
        if text in _MONTHS:
            return _MONTHS[text]
        number = _parse_int(text, "month")
        if not 1 <= number <= 12:
            raise ValueError(f"{text} is not a valid month: out of range")
        return number



@dataclass(frozen=True)
class YearRange(_PlainRange):
    """Years ``begin..end`` inclusive: ``'2030'``, ``'2020:2022'``.

    :meth:`parse` raises ``ValueError`` for a non-number or a start after the end.
    """

    @classmethod
    def parse(cls, text: str) -> YearRange:
        """Parse ``'2030'`` or ``'2020:2022'``; raises ``ValueError``."""
        first, last = _split_range(text)
        begin, end = _parse_int(first, "year"), _parse_int(last, "year")
        if begin > end:
            raise ValueError(f"end year {end} is before start year {begin}")
        return cls(begin, end)


def parse_location(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name`` (e.g. ``Asia/Shanghai``, ``UTC``).

    Raises ``ValueError`` ("unknown location ...") when the system time zone database has no
    such zone. ``Local`` (the host's zone, which Alertmanager accepts) is refused: it would
    make the rules mean different things on different hosts.
    """
    if name == "Local":
        raise ValueError(
            "location Local is not supported: name an IANA time zone, e.g. Asia/Shanghai"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(
            f"unknown location {name!r}: expected an IANA time zone, e.g. Asia/Shanghai or UTC"
        ) from None


def _validate_weekday(value: Any) -> WeekdayRange:
    if isinstance(value, WeekdayRange):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"{value} is not a valid weekday (use names, e.g. 'monday:friday')")
    return WeekdayRange.parse(_range_text(value, "weekday", "monday:friday"))


_R = TypeVar("_R", DayOfMonthRange, MonthRange, YearRange)


def _range_validator(
    kind: type[_R], what: str, example: str
) -> Callable[[Any], _R]:
    """A pydantic validator of one element of a range field: ``kind`` as is, else its
    ``parse`` of the element's text (``what`` and ``example`` name it in the error)."""

    def validate(value: Any) -> _R:
        if isinstance(value, kind):
            return value
        return kind.parse(_range_text(value, what, example))

    return validate


_validate_day_of_month = _range_validator(DayOfMonthRange, "day of the month", "1:5")
_validate_month = _range_validator(MonthRange, "month", "january:march")
_validate_year = _range_validator(YearRange, "year", "2020:2022")


def _validate_location(value: Any) -> ZoneInfo:
    if isinstance(value, ZoneInfo):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a time zone name as a string, e.g. Asia/Shanghai")
    return parse_location(value)


_Weekday = Annotated[WeekdayRange, PlainValidator(_validate_weekday), PlainSerializer(str)]
_DayOfMonth = Annotated[
    DayOfMonthRange, PlainValidator(_validate_day_of_month), PlainSerializer(str)
]
_Month = Annotated[MonthRange, PlainValidator(_validate_month), PlainSerializer(str)]
_Year = Annotated[YearRange, PlainValidator(_validate_year), PlainSerializer(str)]
_Location = Annotated[ZoneInfo, PlainValidator(_validate_location), PlainSerializer(str)]


class TimeRange(BaseModel):
    """A time of day range ``[start_time, end_time)``: ``{start_time: "09:00", end_time: "17:00"}``.

    Both ends are ``"HH:MM"`` strings (two-digit hours), ``00:00`` .. ``24:00``; the start must
    be before the end. ``start_minute`` / ``end_minute`` give minutes since midnight
    (``24:00`` = 1440). A range across midnight is written as two ranges,
    ``23:00-24:00`` and ``00:00-07:00``.

    Validation raises ``ValueError`` (a pydantic error at ``start_time`` / ``end_time`` or at the
    range): bad ``HH:MM``, an end beyond ``24:00``, ``start >= end``, or a number instead of a
    string. Source: Alertmanager ``TimeRange``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_time: str
    end_time: str

    _start_minute: int = PrivateAttr(default=0)
    _end_minute: int = PrivateAttr(default=0)

    @field_validator("start_time", "end_time", mode="before")
    @classmethod
    def _check_time_of_day(cls, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            raise ValueError(f'expected a time as a string "HH:MM", got the number {value}')
        if not isinstance(value, str):
            raise ValueError('expected a time as a string "HH:MM"')
        parse_time_of_day(value)
        return value

    @model_validator(mode="after")
    def _check_order(self) -> Self:
        start = parse_time_of_day(self.start_time)
        end = parse_time_of_day(self.end_time)
        if start >= end:
            raise ValueError(
                f"start time {self.start_time} must be before end time {self.end_time}"
                " (for a range across midnight write two ranges, e.g. 23:00-24:00 and 00:00-07:00)"
            )
        self._start_minute = start
        self._end_minute = end
        return self

    @property
    def start_minute(self) -> int:
        """Start of the range in minutes since midnight, inclusive (0..1439)."""
        return self._start_minute

    @property
    def end_minute(self) -> int:
        """End of the range in minutes since midnight, exclusive (1..1440)."""
        return self._end_minute

    def contains_minute(self, minute_of_day: int) -> bool:
        """Whether ``minute_of_day`` (0..1439) is in ``[start_minute, end_minute)``."""
        return self._start_minute <= minute_of_day < self._end_minute


class TimeInterval(BaseModel):
    """One Alertmanager ``time_interval_spec``: all of its non-empty fields must match.

    Shape (every field optional; left out or empty means "any")::

        times: [{start_time: "HH:MM", end_time: "HH:MM"}, ...]   # [start, end), minutes
        weekdays: ['monday:friday', 'sunday', ...]                # names, case-insensitive
        days_of_month: ['1:5', '-3:-1', ...]                      # 1..31 or -31..-1
        months: ['1:3', 'may', 'july:august', ...]                # names or 1..12
        years: ['2020:2022', '2030', ...]
        location: Asia/Shanghai                                   # IANA zone, default UTC

    After validation the list fields hold :class:`TimeRange`, :class:`WeekdayRange`,
    :class:`DayOfMonthRange`, :class:`MonthRange`, :class:`YearRange` and ``location`` a
    :class:`zoneinfo.ZoneInfo` (or ``None`` for UTC). Unknown keys are refused. Validation
    raises ``ValueError`` (a pydantic error at e.g. ``weekdays.1``) with the reason.

    Source: Alertmanager ``timeinterval.TimeInterval`` and ``ContainsTime``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    times: list[TimeRange] | None = None
    weekdays: list[_Weekday] | None = None
    days_of_month: list[_DayOfMonth] | None = None
    months: list[_Month] | None = None
    years: list[_Year] | None = None
    location: _Location | None = None

    def contains(self, t: datetime) -> bool:
        """Whether the instant ``t`` falls inside this interval.

        ``t`` must be timezone-aware; it is converted to ``location`` (UTC when unset) and
        then its minute of the day, day of the month (negative days resolved against the
        month's real length, leap years included), month, weekday and year are checked.
        Raises ``ValueError`` for a naive ``t``.
        """
        if t.tzinfo is None or t.utcoffset() is None:
            raise ValueError("time interval check needs a timezone-aware datetime")
        local = t.astimezone(self.location or UTC)
        if self.times:
            minute = local.hour * 60 + local.minute
            if not any(r.contains_minute(minute) for r in self.times):
                return False
        if self.days_of_month:
            days_in_month = calendar.monthrange(local.year, local.month)[1]
            if not any(r.contains(local.day, days_in_month) for r in self.days_of_month):
                return False
        if self.months and not any(r.contains(local.month) for r in self.months):
            return False
        if self.weekdays:
            weekday = local.isoweekday() % 7  # 0 = Sunday, as in Go
            if not any(r.contains(weekday) for r in self.weekdays):
                return False
        if self.years and not any(r.contains(local.year) for r in self.years):
            return False
        return True


class NamedTimeInterval(BaseModel):
    """A named list of time intervals: ``{name: night, time_intervals: [<TimeInterval>, ...]}``.

    ``name`` is what routes list in ``mute_time_intervals`` / ``active_time_intervals``; it must
    not be empty. ``time_intervals`` is required; an empty list is never active. Unknown keys
    are refused.

    Source: Alertmanager ``config.TimeInterval`` (the ``time_intervals`` section).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    time_intervals: list[TimeInterval]

    def active_at(self, t: datetime) -> bool:
        """Whether any of the intervals contains the aware datetime ``t``.

        Raises ``ValueError`` for a naive ``t``.
        """
        return any(ti.contains(t) for ti in self.time_intervals)
