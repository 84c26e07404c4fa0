"""Shift notices (docs/oncall.md, "Shift notices"): with ``schedules.<name>.notify`` each
person going on call gets one SMS ``before`` their shift begins.

Two parts:

- :func:`notices_due` is pure, a function of a schedule and ``now``: the notices that are due
  (their time, the shift's start minus ``before``, has come) for shifts of the final view that
  have not ended, without the people already on call in the shift before.
- :class:`Notifier` runs from the delivery loop: it adds one job per due notice to the store
  (key ``notice:<schedule>:<shift start, UTC>:<person>``: added once across workers, instances
  and restarts, kept until the shift ends), and the job's handler (:meth:`Notifier.send`)
  records the SMS like any other (pacing, limits and storms apply; status ``notice``, reason
  ``shift notice``). A notice that fell due while the service was down is due at the first
  pass after start, as long as its shift has not ended. A crash between the record and the
  job's end runs the job again after its lease, and the record step finds the SMS already
  recorded (its dedup key: mobile, schedule, status ``notice``, shift start).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from bridge import metrics
from bridge.decide.plan import notification, store_policy
from bridge.deliver.jobs import JobResult
from bridge.rules.ruleset import RuleSet
from bridge.rules.schedules import Schedule, Shift, oncall_at, shifts_between
from bridge.store.base import Job, Store

log = logging.getLogger(__name__)

#: The job kind of a shift notice.
KIND = "notice"
#: What the notifications of notices are listed with.
REASON = "shift notice"
ALERTNAME = "ShiftNotice"


@dataclass(frozen=True)
class Notice:
    """One notice: ``person`` goes on call in ``shift`` of ``schedule``; due at ``due_at``
    (aware, UTC); ``next`` are the people of the shift after."""

    schedule: str
    person: str
    shift: Shift
    next: tuple[str, ...]
    due_at: datetime

    @property
    def key(self) -> str:
        """The notice's one key: ``notice:<schedule>:<shift start UTC>:<person>``."""
        start = self.shift.start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"{KIND}:{self.schedule}:{start}:{self.person}"


def notices_due(schedule: Schedule, before: float, now: datetime) -> list[Notice]:
    """The notices due at the aware time ``now`` for ``schedule`` told ``before`` seconds
    ahead (docs/oncall.md, "Shift notices"): for each piece of the final view that has not
    ended and begins no later than ``now + before`` (the piece in force, whose notice may be
    overdue, and those beginning within ``before``), one per person of the piece who is not on
    call in the piece just before it. In time order, people in the order of the piece. Raises
    ``ValueError`` for a naive ``now``."""
    out: list[Notice] = []
    ahead = timedelta(seconds=max(before, 0.0))
    for piece in shifts_between(schedule, now, now + ahead + timedelta(seconds=1)):
        due = piece.start.astimezone(UTC) - ahead
        if due > now:
            continue
        previous = oncall_at(schedule, piece.start - timedelta(seconds=1)).people
        following = oncall_at(schedule, piece.end).people
        out.extend(Notice(schedule.name, p, piece, following, due)
                   for p in piece.people if p not in previous)
    return out


def notice_context(notice: Notice) -> dict[str, Any]:
    """What a notice's template sees: ``person``, ``schedule``, ``start`` and ``end`` (aware,
    in the schedule's zone), ``next`` (the names of the shift after, comma-separated)."""
    return {"person": notice.person, "schedule": notice.schedule, "start": notice.shift.start,
            "end": notice.shift.end, "next": ", ".join(notice.next)}


class Notifier:
    """Adds the due notices' jobs (:meth:`run_once`) and sends them (:meth:`send`, the job
    handler). ``rules()`` gives the rules in force, ``zone`` is ``BRIDGE_TZ`` (the day of
    ``per_day``), ``clock`` UNIX seconds."""

    def __init__(self, store: Store, rules: Callable[[], RuleSet], zone: tzinfo, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.rules = rules
        self.zone = zone
        self.clock = clock
        #: keys this process already added (or found added), with their shift's end
        self._added: dict[str, float] = {}

    def run_once(self, now: float | None = None) -> int:
        """Add a job for each notice due at ``now`` not added before; returns how many this
        call added. Raises :class:`StoreUnavailable`."""
        now = self.clock() if now is None else now
        at = datetime.fromtimestamp(now, UTC)
        added = 0
        for schedule in self.rules().schedules.values():
            if schedule.notify_template is None:
                continue
            for n in notices_due(schedule, schedule.notify_before, at):
                if n.key in self._added:
                    continue
                end = n.shift.end.timestamp()
                payload = {"schedule": n.schedule, "person": n.person,
                           "start": n.shift.start.timestamp(), "end": end}
                added += self.store.add_job(n.key, KIND, payload, now, end, now)
                self._added[n.key] = end
        for key in [k for k, end in self._added.items() if end <= now]:
            del self._added[key]
        return added

    def send(self, job: Job, now: float) -> JobResult:
        """Handler of a notice job: record its SMS under the rules in force, unless the
        schedule no longer notifies, the shift changed or ended, or the person has no
        number."""
        rules = self.rules()
        p = job.payload
        name, person = str(p["schedule"]), str(p["person"])
        schedule = rules.schedules.get(name)
        if schedule is None or schedule.notify_template is None:
            return JobResult("done", "the schedule no longer sends notices")
        if now >= float(p["end"]):
            return JobResult("done", "the shift ended before its notice went out")
        at = datetime.fromtimestamp(now, UTC)
        notice = next((n for n in notices_due(schedule, schedule.notify_before, at)
                       if n.key == job.key), None)
        mobile = rules.people.get(person)
        if notice is None or mobile is None:
            return JobResult("done", "the shift changed (a reload) before its notice went out")
        tpl = schedule.notify_template
        start = notice.shift.start.astimezone(UTC).isoformat()
        note = replace(notification(
            rules, tpl, notice_context(notice), {}, mobile, fingerprint=f"{KIND}:{name}",
            status="notice", episode=start, route=name, alertname=ALERTNAME, is_muted=False,
            repeat_interval=max(float(p["end"]) - now, 60.0)), reason=REASON)
        [outcome] = self.store.record([note], store_policy(rules, self.zone, now), now)
        metrics.SHIFT_NOTICES.labels(name, outcome.state).inc()
        log.info("shift notice %s: %s %s on call %s -> %s: %s%s", name, rules.who(mobile),
                 "goes", f"{notice.shift.start:%Y-%m-%d %H:%M %Z}",
                 f"{notice.shift.end:%Y-%m-%d %H:%M %Z}", outcome.state,
                 f" ({outcome.reason})" if outcome.reason else "")
        return JobResult("done")
