"""Heartbeats as data and pure decisions (docs/heartbeats.md).

A heartbeat is **waiting** until its first beat, then **up**, and **missing** once no beat has
come for ``expect`` seconds; after a start of the service nothing counts as missing before
``expect`` has passed since that start. :func:`heartbeat_view` (what the API, the page and the
metrics show) and :func:`heartbeat_action` (what the timer in the delivery loop must do) are
pure functions of ``now``; the store keeps :class:`HeartbeatRecord` and leases the transitions
(:class:`HeartbeatClaim`), and :mod:`bridge.deliver.heartbeats` runs them.

Going missing pages as an episode of the alert :data:`MISSING_ALERT` with the label
``heartbeat`` = the name, whose ``startsAt`` is the moment it went missing
(:func:`missing_alert`): each miss is a new episode, and the same miss decided twice (a lapsed
lease) is the same dedup key, so nobody is paged twice for it. :func:`plan_missing` and
:func:`plan_back` build its notifications with the plan's own helpers, so the store's record
step gives it ack codes, an episode, escalation steps and dedup as for any alert.

Times are UNIX seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.alert import Alert, Batch, labels_fingerprint
from bridge.decide.episodes import Episode
from bridge.decide.plan import (
    base_context,
    episode_from_start,
    episode_info,
    notification,
    step_specs,
)
from bridge.decide.types import Notification
from bridge.rules.matchers import matches_all
from bridge.rules.model import Heartbeat, Route
from bridge.rules.ruleset import RuleSet

#: The alert a missing heartbeat pages as.
MISSING_ALERT = "HeartbeatMissing"
#: The label naming the heartbeat on :data:`MISSING_ALERT`.
HEARTBEAT_LABEL = "heartbeat"
#: The annotation of :data:`MISSING_ALERT` that keeps the last beat with its episode.
LAST_SEEN_ANNOTATION = "last_seen"

HeartbeatState = Literal["waiting", "up", "missing"]
Action = Literal["miss", "back"]


@dataclass(frozen=True)
class HeartbeatRecord:
    """What the store keeps of one heartbeat (none is kept before its first beat).

    ``last_seen``: the last beat. ``state``: ``up``, or ``missing`` once its page was
    recorded. ``missing_since``: the moment the current miss began (the page's ``startsAt``);
    while ``state`` is ``up`` a value later than ``last_seen`` is a miss whose lease lapsed
    before it finished (decided again with the same moment). ``lease_until``: a transition is
    leased to one runner until then (0: none)."""

    name: str
    last_seen: float
    state: Literal["up", "missing"] = "up"
    missing_since: float | None = None
    lease_until: float = 0.0


@dataclass(frozen=True)
class HeartbeatClaim:
    """A transition of heartbeat ``name`` leased to one runner until ``lease_until``:
    ``miss`` (page) or ``back`` (resolve), for the miss that began at ``missing_since``;
    ``last_seen`` as the claim found it. Finished with ``token`` (a lapsed lease's token
    changes nothing)."""

    name: str
    action: Action
    token: str
    lease_until: float
    missing_since: float
    last_seen: float


@dataclass(frozen=True)
class HeartbeatView:
    """A heartbeat as ``/api/heartbeats``, the page and the metrics show it at one moment:
    ``state``, ``last_seen``, ``missing_since`` (when missing) and ``due_at`` (when up: when
    it will count as missing without another beat)."""

    state: HeartbeatState
    last_seen: float | None
    missing_since: float | None
    due_at: float | None


def due_at(last_seen: float, started_at: float, expect: float) -> float:
    """When a heartbeat last seen at ``last_seen`` counts as missing: ``expect`` after its
    last beat, but never sooner than ``expect`` after the service's start ``started_at``
    (a sender may not have reached a stopped service)."""
    return max(last_seen, started_at) + expect


def heartbeat_view(record: HeartbeatRecord | None, expect: float, started_at: float,
                   now: float) -> HeartbeatView:
    """The state at ``now`` of a heartbeat whose stored record is ``record`` (``None``: it never
    beat), with ``expect`` seconds and the service started at ``started_at``.

    ``waiting`` without a beat; ``missing`` while the stored state is missing with no beat
    since it went missing, or once ``due_at`` has passed (the timer records it within
    seconds); otherwise ``up`` (also when a beat came back and the timer has yet to resolve
    the miss)."""
    if record is None:
        return HeartbeatView("waiting", None, None, None)
    seen = record.last_seen
    if record.state == "missing" and record.missing_since is not None \
            and seen <= record.missing_since:
        return HeartbeatView("missing", seen, record.missing_since, None)
    due = due_at(seen, started_at, expect)
    if now >= due:
        return HeartbeatView("missing", seen, due, None)
    return HeartbeatView("up", seen, None, due)


def heartbeat_action(record: HeartbeatRecord | None, expect: float, started_at: float,
                     now: float) -> Action | None:
    """What the timer must do at ``now`` (see :func:`heartbeat_view` for the arguments):
    ``back`` when a beat came after the miss began (resolve its episode), ``miss`` when the
    stored state is ``up`` and ``due_at`` has passed (page), else ``None`` (a waiting
    heartbeat never pages; a missing one pages once)."""
    if record is None:
        return None
    if record.missing_since is not None and record.last_seen > record.missing_since:
        return "back"
    if record.state == "up" and now >= due_at(record.last_seen, started_at, expect):
        return "miss"
    return None


def split_beats(batch: Batch, heartbeats: Mapping[str, Heartbeat]) -> tuple[Batch, list[str],
                                                                            int]:
    """``batch`` without its beats, the names of the heartbeats that beat (in rules order)
    and how many alerts were beats. A beat is a firing alert matching every matcher of a
    heartbeat that has matchers; it is not routed (docs/heartbeats.md)."""
    with_matchers = [(n, hb.matchers) for n, hb in heartbeats.items() if hb.matchers]
    if not with_matchers:
        return batch, [], 0
    beaten: set[str] = set()
    rest: list[Alert] = []
    for alert in batch.alerts:
        hit = [n for n, ms in with_matchers
               if alert.status == "firing" and matches_all(ms, alert.labels)]
        beaten.update(hit)
        if not hit:
            rest.append(alert)
    count = len(batch.alerts) - len(rest)
    if not count:
        return batch, [], 0
    return replace(batch, alerts=rest), [n for n in heartbeats if n in beaten], count


def missing_alert(name: str, since: float, expect: float,
                  last_seen: float | None = None) -> Alert:
    """The alert a miss of heartbeat ``name`` pages as: :data:`MISSING_ALERT`, label
    ``heartbeat``, firing since ``since`` (the episode); annotations ``summary`` and, with
    ``last_seen``, ``last_seen`` (UNIX seconds as text: what escalation steps, which see the
    episode, render ``last_seen`` from)."""
    labels = {"alertname": MISSING_ALERT, HEARTBEAT_LABEL: name}
    annotations = {"summary": f"no beat of heartbeat {name} for {_seconds(expect)}s"}
    if last_seen is not None:
        annotations[LAST_SEEN_ANNOTATION] = repr(float(last_seen))
    return Alert(labels=labels, annotations=annotations, status="firing",
                 fingerprint=labels_fingerprint(labels), source="bridge",
                 starts_at=datetime.fromtimestamp(since, UTC))


def route_name(name: str) -> str:
    """The route a heartbeat's notifications and episode name: ``heartbeat:NAME``."""
    return f"heartbeat:{name}"


def _seconds(expect: float) -> int | float:
    return int(expect) if expect == int(expect) else expect


def heartbeat_context(alert: Alert, name: str, expect: float,
                      last_seen: float | None) -> dict[str, Any]:
    """What a heartbeat's templates see: the alert (:func:`bridge.decide.plan.base_context`), and
    ``name``, ``expect`` (seconds, a whole number when it is one) and ``last_seen`` (an aware
    datetime, or ``None``)."""
    return {**base_context(alert, Batch(source="bridge", alerts=[alert])), "name": name,
            "expect": _seconds(expect),
            "last_seen": None if last_seen is None else datetime.fromtimestamp(last_seen, UTC)}


def step_context(episode: Episode, rules: RuleSet) -> dict[str, Any]:
    """What an escalation step of a missing heartbeat's episode adds to the episode's context
    (:func:`bridge.decide.plan.episode_context`): ``name``, ``expect`` (from the rules in
    force, else absent) and ``last_seen`` (kept with the episode), as :func:`heartbeat_context`
    gives the first page. Empty for another episode."""
    name = episode.labels.get(HEARTBEAT_LABEL)
    if episode.alertname != MISSING_ALERT or name is None:
        return {}
    seen = episode.annotations.get(LAST_SEEN_ANNOTATION)
    out: dict[str, Any] = {"name": name, "last_seen": None if not seen else
                           datetime.fromtimestamp(float(seen), UTC)}
    if name in rules.heartbeats:
        out["expect"] = _seconds(rules.heartbeats[name].expect)
    return out


def _as_route(hb: Heartbeat) -> Route:
    """The heartbeat's paging as a route (what the plan's helpers read)."""
    return Route(receiver=hb.receiver, template=str(hb.template),
                 resolved_template=hb.resolved_template, escalate=hb.escalate)


def plan_missing(name: str, hb: Heartbeat, rules: RuleSet, since: float,
                 last_seen: float | None, now: float) -> list[Notification]:
    """The firing notifications of a miss of heartbeat ``name`` that began at ``since``: one
    per mobile its receivers page at ``now`` (schedules resolved then), with the escalation
    steps and episode info the record step turns into an episode."""
    alert = missing_alert(name, since, hb.expect, last_seen)
    route = _as_route(hb)
    at = datetime.fromtimestamp(now, UTC)
    mobiles = list(dict.fromkeys(m for r in route.receivers for m in rules.mobiles_for(r, at)))
    context = heartbeat_context(alert, name, hb.expect, last_seen)
    rendered: dict[str, dict[str, str]] = {}
    info = episode_info(alert, Batch(source="bridge", alerts=[alert]))
    return [notification(
        rules, route.template, context, rendered, m, fingerprint=alert.fingerprint,
        status="firing", episode=episode_from_start(alert), route=route_name(name),
        alertname=MISSING_ALERT, is_muted=False, resolved_template=hb.resolved_template,
        steps=step_specs(route), info=info) for m in mobiles]


def plan_back(name: str, hb: Heartbeat, episode: Episode, rules: RuleSet,
              last_seen: float) -> list[Notification]:
    """The resolved notifications of a miss that ends: one per mobile paged for ``episode``
    whose page carried a resolved template still in the rules (the one recorded at the page,
    as for any alert), rendered with :func:`heartbeat_context` of the resolved alert."""
    alert = replace(missing_alert(name, episode.starts_at or 0.0, hb.expect),
                    status="resolved", ends_at=datetime.fromtimestamp(last_seen, UTC))
    context = heartbeat_context(alert, name, hb.expect, last_seen)
    rendered: dict[str, dict[str, str]] = {}
    out: list[Notification] = []
    for p in episode.paged:
        tpl = p.resolved_template
        if tpl is None or tpl not in rules.templates or any(n.mobile == p.mobile for n in out):
            continue
        out.append(notification(
            rules, tpl, context, rendered, p.mobile, fingerprint=episode.fingerprint,
            status="resolved", episode=episode.episode, route=p.route, alertname=MISSING_ALERT,
            is_muted=False, resolved_template=tpl))
    return out
