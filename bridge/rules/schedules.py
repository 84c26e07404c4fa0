"""On-call schedules: who is on call at a time (docs/oncall.md, Schedules).

A schedule is a rotation of members plus dated overrides, shaped as pydantic v2 models so
that the rules loader can embed them and report each problem at its place::

    schedules:
      sre:
        members: [zhang, li, [wang, zhao]]   # rotation order; a list shares one shift
        shift: 1w                            # a whole number of days: 1d, 2d, 1w, 2w ...
        handover: "10:00"                    # local time one shift ends and the next begins
        start: 2026-01-05                    # members[0]'s first shift begins then, at handover
        time_zone: Asia/Shanghai             # default BRIDGE_TZ
        overrides:                           # local times, [start, end)
          - {start: "2026-12-24 10:00", end: "2026-12-26 10:00", people: [wang]}
        notify: {template: shift-start, before: 15m}   # optional shift notices

- **Rotation.** Shift ``k`` begins on the date ``start + k * shift`` at ``handover`` local time
  in ``time_zone`` and ends when shift ``k + 1`` begins; ``members[k mod len(members)]`` are on
  call. ``k`` may be negative: before ``start`` the rotation counts backwards, as if it had
  always run (so a schedule written today with next Monday as ``start`` still names someone).
- **Daylight saving.** Handover is wall-clock time, so a change of offset moves no handover: a
  shift spanning the change is an hour shorter or longer. A handover that falls in a gap (the
  skipped hour) happens when the clock has jumped, one hour later on the wall clock (zoneinfo's
  ``fold=0``: the offset before the change); one that falls in the repeated hour happens at its
  first occurrence.
- **Overrides** take precedence over the rotation for ``[start, end)`` (local times in the
  schedule's zone, ``end`` excluded); where several cover a time, the one listed last wins.
- **Final view** (what ``bridge oncall`` and ``/api/oncall`` list, as in Grafana OnCall's
  layers): the rotation's shifts cut by the overrides, each override shown as its own shift
  and marked, an override partly hidden by a later one cut the same way.

:func:`oncall_at` and :func:`next_shifts` are pure functions of a :class:`Schedule` and an aware
time: no I/O besides the system time zone database, no environment, no clock. Whether member
names are people of the rules file is checked by :mod:`bridge.rules.load`, which knows them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, model_validator

from bridge.config import parse_duration
from bridge.privacy import mask_mobile
from bridge.rules.timeintervals import parse_location, parse_time_of_day

__all__ = [
    "NotifySpec",
    "Override",
    "OverrideSpec",
    "Schedule",
    "ScheduleSpec",
    "Shift",
    "OnCall",
    "next_shifts",
    "oncall_at",
    "shifts_between",
    "oncall_view",
    "parse_local_time",
    "rotation_shift",
]

DEFAULT_HANDOVER = "09:00"
_LOCAL_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:[ T](\d{2}:\d{2})(?::(\d{2}))?)?")
_DAY = 86400.0


def parse_local_time(value: Any) -> datetime:
    """A local (naive) time from ``"YYYY-MM-DD HH:MM"`` (also ``T`` between, ``:SS`` after, or
    a bare date meaning 00:00), a ``date`` or a naive ``datetime`` as YAML reads them.

    Raises ``ValueError`` for anything else, including a time with an offset (write the
    schedule's local time; its ``time_zone`` says which).
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise ValueError("write the local time without an offset (the schedule's "
                             "time_zone applies), e.g. '2026-12-24 10:00'")
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if not isinstance(value, str):
        raise ValueError("expected a local time 'YYYY-MM-DD HH:MM'")
    m = _LOCAL_RE.fullmatch(value.strip())
    if not m:
        raise ValueError(f"not a local time 'YYYY-MM-DD HH:MM': {value!r}")
    try:
        day = date.fromisoformat(m.group(1))
        hm = time.fromisoformat(m.group(2)) if m.group(2) else time()
    except ValueError as exc:
        raise ValueError(f"not a local time 'YYYY-MM-DD HH:MM': {value!r} ({exc})") from None
    return datetime.combine(day, hm.replace(second=int(m.group(3) or 0)))


#: The longest ``shift``, in days (docs/oncall.md, Schedules): longer ones would put the next
#: shifts that the API, the page and the command line list past the last representable date.
MAX_SHIFT_DAYS = 366


def _shift_days(value: Any) -> int:
    """``shift`` as a whole number of days, 1 to :data:`MAX_SHIFT_DAYS`; ValueError saying what
    is expected otherwise (docs/oncall.md, Schedules)."""
    if isinstance(value, int) and not isinstance(value, bool):
        raise ValueError(f"shift must be a whole number of days with its unit, like 1d, 2d, "
                         f"1w: {value!r} (a bare number would be seconds)")
    seconds = parse_duration(value)
    days = seconds / _DAY
    if seconds <= 0 or days != int(days):
        raise ValueError(f"shift must be a whole number of days, like 1d, 2d, 1w: {value!r}")
    if days > MAX_SHIFT_DAYS:
        raise ValueError(f"shift must be at most {MAX_SHIFT_DAYS}d (a year), got {value!r}")
    return int(days)


def _handover(value: Any) -> time:
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        hint = f" (quote it: '{value // 60:02d}:{value % 60:02d}')" if 0 <= value < 1440 else ""
        raise ValueError(f'handover must be a time "HH:MM", got the number {value}{hint}')
    if not isinstance(value, str):
        raise ValueError('handover must be a time "HH:MM"')
    accepted = 'handover must be a time "HH:MM" from 00:00 to 23:59'
    try:
        minutes = parse_time_of_day(value)
    except ValueError:
        raise ValueError(f"{accepted}, got {value!r}") from None
    if minutes >= 1440:
        raise ValueError(f"{accepted}, got {value!r} (24:00 is the next day's 00:00)")
    return time(minutes // 60, minutes % 60)


def _start_date(value: Any) -> date:
    if isinstance(value, datetime):
        raise ValueError("start is a date, e.g. 2026-01-05 (the first shift begins at handover)")
    if isinstance(value, date):
        return value
    if not isinstance(value, str):
        raise ValueError("start must be a date, e.g. 2026-01-05")
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"start must be a date YYYY-MM-DD, e.g. 2026-01-05: {value!r}") from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a person's name from people: (a number goes into people: "
                         "first)" if isinstance(value, int) else "expected a person's name")
    return value.strip()


def _member(value: Any) -> tuple[str, ...]:
    if isinstance(value, list):
        if not value:
            raise ValueError("an empty list shares the shift among nobody")
        return tuple(_name(v) for v in value)
    return (_name(value),)


def _people(value: Any) -> tuple[str, ...]:
    if value == []:
        raise ValueError("an override needs at least one person")
    people = _member(value)
    return tuple(dict.fromkeys(people))


def _before(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds < 0:
        raise ValueError(f"before must not be negative: {value!r}")
    return seconds


def _zone_name(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("expected a time zone name, e.g. Asia/Shanghai")
    parse_location(value)
    return value


LocalTime = Annotated[datetime, PlainValidator(parse_local_time)]
ShiftDays = Annotated[int, PlainValidator(_shift_days)]
Handover = Annotated[time, PlainValidator(_handover)]
StartDate = Annotated[date, PlainValidator(_start_date)]
Member = Annotated[tuple[str, ...], PlainValidator(_member)]
People = Annotated[tuple[str, ...], PlainValidator(_people)]
ZoneName = Annotated[str, PlainValidator(_zone_name)]


class OverrideSpec(BaseModel):
    """``{start: "YYYY-MM-DD HH:MM", end: "...", people: [names]}``: local times in the
    schedule's zone, ``end`` excluded and after ``start``; ``people`` one name or a list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: LocalTime
    end: LocalTime
    people: People

    @model_validator(mode="after")
    def _end_after_start(self) -> Self:
        if self.end <= self.start:
            raise ValueError(f"end {self.end:%Y-%m-%d %H:%M} is not after start "
                             f"{self.start:%Y-%m-%d %H:%M}")
        return self


class NotifySpec(BaseModel):
    """``notify: {template, before}``: tell each person going on call with one SMS of
    ``template`` ``before`` seconds ahead of their shift (default 15 minutes; 0: at the
    handover). See docs/oncall.md, "Shift notices"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str = Field(min_length=1)
    before: Annotated[float, PlainValidator(_before)] = 900.0


class ScheduleSpec(BaseModel):
    """One entry of ``schedules:`` as written (see the module docstring for the fields).

    Validation raises ``ValueError`` at the field's place: empty ``members``, an empty shared
    list, a ``shift`` that is not whole days, a bad ``handover``/``start``/``time_zone``, an
    override whose ``end`` is not after its ``start``. :meth:`compile` gives the
    :class:`Schedule` the on-call functions take.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    members: list[Member] = Field(min_length=1)
    shift: ShiftDays
    handover: Handover = time(9, 0)
    start: StartDate
    time_zone: ZoneName | None = None
    overrides: list[OverrideSpec] = Field(default_factory=list)
    notify: NotifySpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict | ScheduleSpec):
            raise ValueError("a schedule is a mapping: members, shift, start (handover, "
                             "time_zone, overrides)")
        return value

    def people(self) -> list[tuple[str, str]]:
        """Every name the schedule uses with its place: ``("members[2][0]", "wang")``, ..."""
        out: list[tuple[str, str]] = []
        for i, member in enumerate(self.members):
            for j, who in enumerate(member):
                out.append((f"members[{i}]" + (f"[{j}]" if len(member) > 1 else ""), who))
        for i, o in enumerate(self.overrides):
            out.extend((f"overrides[{i}].people[{j}]", who) for j, who in enumerate(o.people))
        return out

    def instant_problems(self, compiled: Schedule) -> list[str]:
        """The overrides that cover no time once read as instants (``compiled``, this
        schedule's :meth:`compile`): a start in a daylight-saving gap (a local time the clocks
        skip) is read as the time after the jump (:func:`_instant`), so on a spring-forward
        day ``02:10``-``03:10`` is empty. Each as ``"overrides[i]: ..."``."""
        return [f"overrides[{i}]: start {o.start:%Y-%m-%d %H:%M} and end {o.end:%Y-%m-%d %H:%M}"
                f" are the same instant in {compiled.zone.key} (a local time the clocks skip is"
                " read as the time after the jump): the override would cover no time"
                for i, (o, c) in enumerate(zip(self.overrides, compiled.overrides, strict=True))
                if c.end <= c.start]

    def compile(self, name: str, default_zone: str) -> Schedule:
        """The schedule with its zone resolved (``time_zone``, else ``default_zone``) and the
        overrides as instants."""
        zone = parse_location(self.time_zone or default_zone)
        return Schedule(
            name=name, members=tuple(self.members), shift_days=self.shift,
            handover=self.handover, start=self.start, zone=zone,
            overrides=tuple(Override(_instant(o.start, zone), _instant(o.end, zone), o.people)
                            for o in self.overrides),
            notify_template=self.notify.template if self.notify else None,
            notify_before=self.notify.before if self.notify else 900.0)


@dataclass(frozen=True)
class Override:
    """A dated override: ``people`` are on call for ``[start, end)`` (aware, UTC)."""

    start: datetime
    end: datetime
    people: tuple[str, ...]


@dataclass(frozen=True)
class Schedule:
    """A compiled schedule. ``members[k]`` are the people of rotation entry k (one, or several
    sharing the shift); ``shift_days`` ≥ 1; ``handover`` local wall-clock time; ``start`` the
    local date shift 0 begins; ``overrides`` in listed order (the last one covering a time wins).
    """

    name: str
    members: tuple[tuple[str, ...], ...]
    shift_days: int
    handover: time
    start: date
    zone: ZoneInfo
    overrides: tuple[Override, ...] = ()
    #: the template of shift notices (``notify.template``), ``None`` without ``notify``
    notify_template: str | None = None
    #: how long before a shift its notice goes out, seconds (``notify.before``)
    notify_before: float = 900.0


@dataclass(frozen=True)
class Shift:
    """One piece of the final view: ``people`` on call for ``[start, end)``.

    ``start``/``end`` are aware, in the schedule's zone (subtract them in UTC: Python does
    wall-clock arithmetic between two times of one zone, which is off across a DST change).
    ``override`` tells an override's piece from the rotation's; ``rotation`` is the rotation
    shift number k (``None`` for an override), ``override_index`` the override's index in
    ``overrides`` (``None`` for the rotation).
    """

    start: datetime
    end: datetime
    people: tuple[str, ...]
    override: bool
    rotation: int | None = None
    override_index: int | None = None


def _instant(local: datetime, zone: ZoneInfo) -> datetime:
    """The UTC instant of a naive local time in ``zone`` (gap: offset before; fold: first)."""
    return local.replace(tzinfo=zone, fold=0).astimezone(UTC)


def _utc(t: datetime) -> datetime:
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError("on-call times must be timezone-aware datetimes")
    return t.astimezone(UTC)


def _shift_begin(schedule: Schedule, k: int) -> datetime:
    """UTC instant at which rotation shift ``k`` begins."""
    day = schedule.start + timedelta(days=k * schedule.shift_days)
    return _instant(datetime.combine(day, schedule.handover), schedule.zone)


def rotation_shift(schedule: Schedule, t: datetime) -> tuple[int, datetime, datetime]:
    """The rotation shift containing the aware time ``t``, ignoring overrides: ``(k, begin,
    end)`` with ``begin <= t < end`` as UTC instants; ``k`` is negative before ``start``.

    Raises ``ValueError`` for a naive ``t``.
    """
    t = _utc(t)
    day = t.astimezone(schedule.zone).date()
    if t < _instant(datetime.combine(day, schedule.handover), schedule.zone):
        day -= timedelta(days=1)  # before today's handover: yesterday's day of the rotation
    k = (day - schedule.start).days // schedule.shift_days
    return k, _shift_begin(schedule, k), _shift_begin(schedule, k + 1)


def _cut(begin: datetime, end: datetime, higher: tuple[Override, ...],
         t: datetime) -> tuple[datetime, datetime]:
    """``[begin, end)`` around ``t`` cut by the ``higher`` overrides, none of which covers t."""
    for h in higher:
        if h.end <= t:
            begin = max(begin, h.end)
        elif h.start > t:
            end = min(end, h.start)
    return begin, end


def oncall_at(schedule: Schedule, t: datetime) -> Shift:
    """Who is on call at the aware time ``t``, as the piece of the final view containing it.

    The override listed last among those covering ``t`` (``start <= t < end``) wins; else
    ``members[k mod len(members)]`` of rotation shift k containing ``t``
    (:func:`rotation_shift`). The piece's ``start``/``end`` are where that winner's time begins
    and ends once every override above it (any override over the rotation; a later-listed one
    over an override) is cut out. Raises ``ValueError`` for a naive ``t``.
    """
    t = _utc(t)
    zone = schedule.zone
    for i in range(len(schedule.overrides) - 1, -1, -1):
        o = schedule.overrides[i]
        if o.start <= t < o.end:
            begin, end = _cut(o.start, o.end, schedule.overrides[i + 1:], t)
            return Shift(begin.astimezone(zone), end.astimezone(zone), o.people, True,
                         override_index=i)
    k, begin, end = rotation_shift(schedule, t)
    begin, end = _cut(begin, end, schedule.overrides, t)
    return Shift(begin.astimezone(zone), end.astimezone(zone),
                 schedule.members[k % len(schedule.members)], False, rotation=k)


def next_shifts(schedule: Schedule, t: datetime, n: int) -> list[Shift]:
    """The ``n`` pieces of the final view after the one containing ``t``, in time order.

    Each begins where the one before ends; an override is its own piece, marked. Raises
    ``ValueError`` for a naive ``t``.
    """
    out: list[Shift] = []
    current = oncall_at(schedule, t)
    for _ in range(max(n, 0)):
        current = oncall_at(schedule, current.end)
        out.append(current)
    return out


def shifts_between(schedule: Schedule, since: datetime, until: datetime) -> list[Shift]:
    """The pieces of the final view that overlap ``[since, until)`` (aware times), in time
    order: the one containing ``since`` (it may begin before), then each that begins before
    ``until``. Empty when ``until <= since``. Raises ``ValueError`` for a naive time."""
    out: list[Shift] = []
    until = _utc(until)
    if until <= _utc(since):
        return out
    current = oncall_at(schedule, since)
    while current.start < until:
        out.append(current)
        current = oncall_at(schedule, current.end)
    return out


@dataclass(frozen=True)
class OnCall:
    """One schedule read at a time: the shift in force (``now``) and the ``next`` ones, with
    ``mobiles`` mapping each person shown to their number (from ``people:``)."""

    schedule: Schedule
    now: Shift
    next: tuple[Shift, ...]
    mobiles: Mapping[str, str]

    def shift_json(self, shift: Shift, mask: bool = True) -> dict[str, Any]:
        """``{"start", "end", "override", "people": [{"name", "mobile"}]}``: times ISO 8601
        in the schedule's zone, mobiles masked unless ``mask`` is false."""
        def shown(name: str) -> str:
            mobile = self.mobiles.get(name, "")
            return mask_mobile(mobile) if mask else mobile

        return {"start": shift.start.isoformat(), "end": shift.end.isoformat(),
                "override": shift.override,
                "people": [{"name": p, "mobile": shown(p)} for p in shift.people]}

    def to_json(self, mask: bool = True) -> dict[str, Any]:
        """The ``/api/oncall`` shape of one schedule: ``name``, ``time_zone``, ``now``,
        ``next`` (see :meth:`shift_json`)."""
        return {"name": self.schedule.name, "time_zone": str(self.schedule.zone.key),
                "now": self.shift_json(self.now, mask),
                "next": [self.shift_json(s, mask) for s in self.next]}


def oncall_view(schedules: Mapping[str, Schedule], people: Mapping[str, str], at: datetime,
                next_n: int = 3, only: str | None = None) -> list[OnCall]:
    """Every schedule (or just ``only``) read at the aware time ``at``: who is on call and the
    ``next_n`` shifts after, in the order the schedules are defined. The one read behind
    ``bridge oncall``, ``/api/oncall``, the operator page, the metric and the start-up line.
    Raises ``KeyError`` for an unknown ``only``."""
    names = [only] if only is not None else list(schedules)
    out: list[OnCall] = []
    for name in names:
        s = schedules[name]
        out.append(OnCall(s, oncall_at(s, at), tuple(next_shifts(s, at, next_n)), people))
    return out
