"""The calendar feed of a schedule (docs/oncall.md, "Calendar feed"):
``GET /calendar/<schedule>.ics?key=KEY``.

:func:`feed` is pure, a function of the schedule and ``now``: one ``VEVENT`` per piece of the
final view (:func:`bridge.rules.schedules.shifts_between`: rotation shifts cut by overrides, each
override its own piece) from :data:`PAST` before ``now`` to :data:`AHEAD` after it, as
Grafana OnCall's iCal export does. :func:`feed_key` derives the feed's key from
``BRIDGE_TOKEN`` and the schedule's name; :data:`calendar` is the view.

Choices where the docs leave room:

- ``UID`` is a hash of the schedule's name, the piece's start (UTC) and its people, so the same
  shift has the same UID in every answer of every instance; a piece whose start or people
  change (an override added over it) is a new event, and calendar applications drop the old
  one at the next refresh.
- An override's piece says so three ways: ``(override)`` at the end of ``SUMMARY``,
  ``CATEGORIES:override`` (``rotation`` otherwise) and its place in the rules file in
  ``DESCRIPTION``.
- With ``BRIDGE_TOKEN`` set, an unknown schedule and a wrong key get the same 404, so that the
  answer does not tell which schedules exist.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, request
from icalendar import Calendar, Event

from bridge.rules.schedules import Schedule, Shift, shifts_between

__all__ = ["AHEAD", "PAST", "calendar", "feed", "feed_key", "feed_path"]

#: The feed begins this long before now ...
PAST = timedelta(days=15)
#: ... and ends this long after it.
AHEAD = timedelta(days=180)
#: What ``PRODID`` names.
PRODID = "-//alert-sms bridge//on-call schedule//EN"

calendar = Blueprint("calendar", __name__)


def feed_key(token: str | None, schedule: str) -> str:
    """The key of ``schedule``'s feed: 32 hex digits of HMAC-SHA256 keyed by ``token``
    (``BRIDGE_TOKEN``) over the schedule's name, so every instance sharing the token derives
    the same key and a new token gives new keys. ``""`` without a token (no key needed)."""
    if not token:
        return ""
    msg = b"bridge calendar feed v1\0" + schedule.encode("utf-8")
    return hmac.new(token.encode("utf-8"), msg, hashlib.sha256).hexdigest()[:32]


def feed_path(token: str | None, schedule: str) -> str:
    """The feed's path with its key: ``/calendar/<schedule>.ics?key=KEY`` (no ``?key=``
    without a token); the name is URL-quoted."""
    key = feed_key(token, schedule)
    path = f"/calendar/{quote(schedule, safe='')}.ics"
    return f"{path}?key={key}" if key else path


def shift_uid(schedule: str, shift: Shift) -> str:
    """A UID stable across answers and instances: 32 hex digits of SHA-256 over the
    schedule's name, the piece's UTC start and its people, ``@alert-sms-bridge``."""
    start = shift.start.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    text = "\0".join([schedule, start, *shift.people])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32] + "@alert-sms-bridge"


def _event(schedule: Schedule, shift: Shift, stamp: datetime) -> Event:
    event = Event()
    event.add("uid", shift_uid(schedule.name, shift))
    event.add("dtstamp", stamp)
    event.add("dtstart", shift.start.astimezone(UTC))
    event.add("dtend", shift.end.astimezone(UTC))
    who = ", ".join(shift.people)
    event.add("summary", f"{schedule.name}: {who}" + (" (override)" if shift.override else ""))
    if shift.override:
        event.add("description", f"On call in {schedule.name}: {who}. Override "
                  f"(schedules.{schedule.name}.overrides[{shift.override_index}]).")
    else:
        event.add("description", f"On call in {schedule.name}: {who}. Rotation shift "
                  f"{shift.rotation}.")
    event.add("categories", ["override" if shift.override else "rotation"])
    event.add("transp", "TRANSPARENT")  # being on call does not make one busy
    return event


def feed(schedule: Schedule, now: datetime) -> Calendar:
    """The iCalendar feed of ``schedule`` at the aware time ``now``: one ``VEVENT`` per piece
    of the final view overlapping ``[now - PAST, now + AHEAD)``, ``DTSTART``/``DTEND`` in UTC,
    ``SUMMARY`` ``"<schedule>: <names>"`` (names only: the feed carries no mobile number).
    Raises ``ValueError`` for a naive ``now``."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    stamp = now.astimezone(UTC).replace(microsecond=0)
    cal = Calendar()
    cal.add("prodid", PRODID)
    cal.add("version", "2.0")
    cal.add("calscale", "GREGORIAN")
    cal.add("x-wr-calname", f"On call: {schedule.name}")
    cal.add("x-wr-timezone", str(schedule.zone.key))
    cal.add("refresh-interval", timedelta(hours=1), parameters={"VALUE": "DURATION"})
    cal.add("x-published-ttl", "PT1H")
    for shift in shifts_between(schedule, now - PAST, now + AHEAD):
        cal.add_component(_event(schedule, shift, stamp))
    return cal


def _not_found() -> tuple[Response, int]:
    from bridge.web.guard import error

    return error("no such calendar (check the schedule's name and the key the operator "
                 "page shows)", 404)


@calendar.get("/calendar/<name>.ics")
def schedule_feed(name: str) -> Any:
    """``text/calendar`` of schedule ``name`` (:func:`feed` at now). With ``BRIDGE_TOKEN``
    set, ``?key=`` must be :func:`feed_key`; a missing or wrong key, like an unknown
    schedule, gets 404 ``{"error": ...}``. The key is the only credential, so that a calendar
    application can subscribe."""
    from bridge.web.guard import bridge

    b = bridge()
    schedule = b.holder.rules.schedules.get(name)
    expected = feed_key(b.settings.token, name)
    given = request.args.get("key", "")
    if expected and not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        return _not_found()
    if schedule is None:
        return _not_found()
    body = feed(schedule, datetime.now(UTC)).to_ical()
    resp = Response(body, content_type="text/calendar; charset=utf-8")
    resp.headers["Content-Disposition"] = f"inline; filename=\"{quote(name, safe='')}.ics\""
    resp.headers["Cache-Control"] = "private, max-age=300"
    return resp
