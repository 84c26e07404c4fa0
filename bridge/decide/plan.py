"""Deciding the notifications for one webhook: routing, recipients, time intervals, rendering.

Pure: takes the batch, the rules and ``now`` and returns data (:class:`Plan`, its
:class:`Notification` list and its :class:`EpisodeMark` list: the core's output). Dedup,
episodes of alerts without ``startsAt``, limits and storms need shared state and are decided
atomically by the store (:meth:`bridge.store.base.Store.record`, policy table
:data:`bridge.decide.types.PAGING_POLICY`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal
from urllib.parse import quote

from bridge.alert import Alert, Batch
from bridge.decide.episodes import Episode, EpisodeInfo, StepSpec
from bridge.decide.routing import mute_reason, route
from bridge.decide.types import EpisodeMark, Notification, Policy
from bridge.privacy import mask_mobile
from bridge.rules.defaults import DEFAULT_REPEAT_INTERVAL
from bridge.rules.model import Route, call_address, valid_mobile
from bridge.rules.render import ACK_PLACEHOLDER, alert_context, template_context
from bridge.rules.ruleset import RuleSet

log = logging.getLogger("bridge.plan")  # stable log name (not the module path)

#: Separators between numbers in a ``mobiles_from`` value: comma (also full-width and the
#: ideographic 、), semicolon, whitespace.
_SEPARATORS = re.compile(r"[,，、;；\s]+")
#: ``urllib.parse.quote(text, safe="")`` for ASCII text, as one ``str.translate`` (a silence
#: URL is built for every firing alert; quote's per-character Python is a tenth of planning).
_QUOTE_ASCII = {c: chr(c) if chr(c).isalnum() or chr(c) in "_.-~" else f"%{c:02X}"
                for c in range(128)}
#: China's country code in front of a mobile number (``+86``, ``0086``, ``86`` + 11 digits).
_COUNTRY_CODE = re.compile(r"^(?:\+86|0086|86)(?=1\d{10}$)")

#: A call's repeat_interval (seconds): a number called for an episode is not called again
#: for it (docs/providers.md, Calls), as long as the dedup record is kept.
CALL_REPEAT = 30 * 86400.0


def address_for(rules: RuleSet, template: str, mobile: str) -> str:
    """Where a notification of ``template`` to ``mobile`` goes: a call address for a voice
    template, else the number."""
    return call_address(mobile) if rules.templates[template].voice is not None else mobile



@dataclass
class Plan:
    """The notifications decided for a batch, plus what was seen and dropped on the way.

    ``skipped_mobiles``: invalid numbers from ``mobiles_from`` (masked), each logged.
    ``unrouted``: firing alerts that paged nobody: no route matched, or the routes that matched
    named no mobile (``mobiles_from`` without its label).
    """

    notifications: list[Notification] = field(default_factory=list)
    episodes: list[EpisodeMark] = field(default_factory=list)
    skipped_mobiles: list[str] = field(default_factory=list)
    unrouted: int = 0
    #: (fingerprint, episode) of every resolved alert: the record step closes its episode
    #: (episode ``""`` for an alert without startsAt: the stored start is used)
    resolved: list[tuple[str, str]] = field(default_factory=list)
    #: what was decided leniently, for the webhook's answer (e.g. a removed template)
    #: valid numbers from ``mobiles_from`` past ``max_mobiles_from``, skipped (count)
    over_limit: int = 0
    #: what the webhook answer lists under ``warnings``, each with its place (also e.g. a
    #: removed resolved template)
    warnings: list[str] = field(default_factory=list)


def episode_from_start(alert: Alert) -> str:
    """The episode of an alert that carries ``startsAt``: its UTC ISO form (``""`` if none)."""
    return alert.starts_at.isoformat() if alert.starts_at is not None else ""


def mobiles_of(alert: Alert, r: Route, rules: RuleSet, plan: Plan, now: datetime,
               where: str = "", route_name: str = "") -> list[str]:
    """The mobiles a route pages for an alert: its receivers' numbers and the people on call
    at ``now`` in the schedules it names, then the first ``max_mobiles_from`` distinct valid
    numbers in the label or annotation ``mobiles_from`` names (separated by commas, semicolons
    or spaces; a ``+86``/``0086`` prefix and dashes are dropped); duplicates once. Valid numbers
    past the limit are skipped, counted in ``plan.over_limit`` and said in ``plan.warnings``
    (``where`` is the alert's place)."""
    mobiles: list[str] = []
    for name in r.receivers:
        mobiles.extend(rules.mobiles_for(name, now))
    if r.mobiles_from:
        found = _mobiles_from(alert, r, plan)
        limit = rules.mobiles_from_limit(r)
        if len(found) > limit:
            rest = [mask_mobile(m) for m in found[limit:]]
            plan.over_limit += len(rest)
            text = (f"route {route_name}: {r.mobiles_from} holds {len(found)} valid numbers, "
                    f"max_mobiles_from is {limit}: {len(rest)} skipped ({', '.join(rest)})")
            plan.warnings.append(f"{where}: {text}" if where else text)
            log.warning("alert %s: %s", alert.name, text)
        mobiles.extend(found[:limit])
    return list(dict.fromkeys(mobiles))


def _mobiles_from(alert: Alert, r: Route, plan: Plan) -> list[str]:
    """The distinct valid numbers of ``r.mobiles_from`` in the order given; invalid ones are
    recorded in ``plan.skipped_mobiles`` and logged."""
    mobiles: list[str] = []
    if r.mobiles_from:
        raw = alert.labels.get(r.mobiles_from) or alert.annotations.get(r.mobiles_from) or ""
        for part in _SEPARATORS.split(raw):
            m = _COUNTRY_CODE.sub("", part.strip().replace("-", ""))
            if not m:
                continue
            if valid_mobile(m):
                mobiles.append(m)
            else:
                plan.skipped_mobiles.append(mask_mobile(m))
                log.warning("alert %s: %s=%s holds an invalid mobile %s, skipped",
                            alert.name, r.mobiles_from, "…", mask_mobile(m))
    return list(dict.fromkeys(mobiles))


def muted(r: Route, rules: RuleSet, now: datetime) -> bool:
    """Alertmanager semantics: muted while any ``mute_time_intervals`` is active, or while
    ``active_time_intervals`` is set and none of them is active."""
    return bool(mute_reason(r, rules.time_intervals, now))


def with_episode_start(alert: Alert, stored: datetime | None, now: datetime) -> Alert:
    """An alert without ``startsAt`` as templates see it: its stored episode start, else (when
    firing) ``now``, the start the store will record for it."""
    start = stored if stored is not None or alert.status != "firing" else now
    return alert if start is None else replace(alert, starts_at=start)


def _mark_episode(alert: Alert, plan: Plan, now: datetime,
                  episode_starts: Mapping[str, datetime | None] | None) -> Alert:
    """For an alert without ``startsAt``: its :class:`EpisodeMark` added to ``plan``, and the
    alert as its templates see it (:func:`with_episode_start`); other alerts as they are."""
    if alert.starts_at is not None:
        return alert
    plan.episodes.append(EpisodeMark(alert.fingerprint, alert.status == "firing"))
    if episode_starts is None:
        return alert
    return with_episode_start(alert, episode_starts.get(alert.fingerprint), now)


def store_policy(rules: RuleSet, zone: tzinfo, now: float) -> Policy:
    """The limits the store enforces while recording at ``now``, from ``rules.limits``
    (``day``: the day of ``now`` in ``zone``, ``BRIDGE_TZ``)."""
    limits = rules.limits
    return Policy(
        per_mobile_per_hour=limits.per_mobile_per_hour, per_day=limits.per_day,
        storm_threshold=limits.storm.threshold if limits.storm else None,
        storm_window=limits.storm.window if limits.storm else 0.0,
        day=datetime.fromtimestamp(now, zone).strftime("%Y-%m-%d"),
    )


def silence_url(alert: Alert, batch: Batch) -> str | None:
    """Where to silence ``alert``: Grafana's ``silenceURL``, or Alertmanager's
    ``externalURL`` + ``/#/silences/new?filter=...`` (its labels as matchers); ``None``."""
    if alert.silence_url:
        return alert.silence_url
    if alert.source != "alertmanager" or not batch.external_url:
        return None
    matchers = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(alert.labels.items())) + "}"
    return (batch.external_url.rstrip("/") + "/#/silences/new?filter="
            + (matchers.translate(_QUOTE_ASCII) if matchers.isascii()
               else quote(matchers, safe="")))


def episode_info(alert: Alert, batch: Batch) -> EpisodeInfo:
    """What an episode records of ``alert`` (summary: the ``summary`` annotation, else
    ``description``, else "")."""
    return EpisodeInfo(
        alertname=alert.name, labels=dict(alert.labels),
        summary=alert.annotations.get("summary") or alert.annotations.get("description") or "",
        starts_at=alert.starts_at.timestamp() if alert.starts_at is not None else None,
        silence_url=silence_url(alert, batch), annotations=dict(alert.annotations),
        source=alert.source)


def step_specs(r: Route) -> tuple[StepSpec, ...]:
    """A route's ``escalate:`` steps as notifications carry them."""
    return tuple(StepSpec(s.after, s.receiver, s.template or r.template) for s in r.escalate)


def base_context(alert: Alert, batch: Batch, escalation: int = 0) -> dict[str, Any]:
    """What a template sees: :func:`bridge.rules.render.alert_context` plus ``escalation`` and
    ``ack_code`` (:data:`ACK_PLACEHOLDER`, replaced by the stored code in the record step)."""
    return {**alert_context(alert, batch), "escalation": escalation,
            "ack_code": ACK_PLACEHOLDER}


def episode_context(episode: Episode, escalation: int) -> dict[str, Any]:
    """What an escalation step's template sees (docs/oncall.md, Escalation): the alert as the
    episode recorded it (labels, annotations, ``starts_at``, fingerprint; status ``firing``;
    the rest empty), ``escalation`` (the step's index) and ``ack_code`` as in
    :func:`base_context`."""
    starts = (datetime.fromtimestamp(episode.starts_at, UTC)
              if episode.starts_at is not None else None)
    return {**template_context(labels=episode.labels, annotations=episode.annotations,
                               status="firing", fingerprint=episode.fingerprint,
                               starts_at=starts),
            "escalation": escalation, "ack_code": ACK_PLACEHOLDER}


def _variables(rules: RuleSet, tpl_name: str, context: dict[str, Any],
               rendered: dict[str, dict[str, str]], mobile: str) -> dict[str, str]:
    """A template's variables for one mobile. A template that reads ``person`` sees the name
    of the person whose number it is (left undefined for a number that is nobody's) and is
    rendered per mobile; any other is rendered once per alert (``rendered`` caches it by
    template name, for several routes sharing one template)."""
    if "person" in rules.uses.get(tpl_name, ()):
        person = rules.person_of(mobile)
        own = {**context, "person": person} if person else context
        return rules.renderer.render(rules.compiled[tpl_name], own, rules.var_len(tpl_name))
    if tpl_name not in rendered:
        rendered[tpl_name] = rules.renderer.render(rules.compiled[tpl_name], context,
                                                   rules.var_len(tpl_name))
    return rendered[tpl_name]


def notification(rules: RuleSet, tpl_name: str, context: dict[str, Any],
                 rendered: dict[str, dict[str, str]], mobile: str, *, fingerprint: str,
                 status: Literal["firing", "resolved", "notice"], episode: str, route: str,
                 alertname: str, is_muted: bool, repeat_interval: float | None = None,
                 untimed: bool = False, resolved_template: str | None = None, level: int = 0,
                 steps: tuple[StepSpec, ...] = (), info: EpisodeInfo | None = None
                 ) -> Notification:
    """The one way a notification is built, for a route's page, a resolved SMS, an escalation
    step and a shift notice alike: template ``tpl_name``'s ``tpl_id`` and its variables
    rendered with ``context`` for ``mobile`` (:func:`_variables`; ``rendered`` caches per template),
    ``suppressed`` with reason ``muted`` when ``is_muted``. ``repeat_interval`` ``None``: the
    rules file's default (:data:`bridge.rules.defaults.DEFAULT_REPEAT_INTERVAL`).

    A voice template makes a call (docs/providers.md, Calls): addressed ``voice:<mobile>``,
    ``tpl_id`` 0, repeated at most every :data:`CALL_REPEAT` (not again for the episode) and
    with no resolved template (no resolved call)."""
    call = rules.templates[tpl_name].voice is not None
    if repeat_interval is None:
        repeat_interval = DEFAULT_REPEAT_INTERVAL
    return Notification(
        mobile=call_address(mobile) if call else mobile, fingerprint=fingerprint,
        status=status, episode=episode, route=route, alertname=alertname,
        tpl_id=rules.templates[tpl_name].tpl_id or 0,
        variables=_variables(rules, tpl_name, context, rendered, mobile),
        repeat_interval=CALL_REPEAT if call else repeat_interval,
        state="suppressed" if is_muted else "queued", reason="muted" if is_muted else "",
        untimed=untimed, resolved_template=None if call else resolved_template, level=level,
        steps=steps, info=info, template=tpl_name)


def _resolved_to_paged(alert: Alert, batch: Batch, episode: Episode, rules: RuleSet,
                       plan: Plan, now: datetime) -> None:
    """A resolved alert whose episode is stored: one notification per mobile paged for it
    that its route gave a ``resolved_template`` (the route and template recorded at the page,
    whatever the rules say now), once each. A template since removed from the rules sends
    nothing to that mobile, with a warning; a route still in the rules and muted now mutes
    it."""
    context = None
    rendered: dict[str, dict[str, str]] = {}
    for p in episode.paged:
        if p.resolved_template is None or any(
                n.mobile == p.mobile and n.fingerprint == alert.fingerprint
                and n.status == "resolved" for n in plan.notifications):
            continue
        if p.resolved_template not in rules.templates:
            w = (f"resolved {alert.name or alert.fingerprint}: template {p.resolved_template!r}"
                 f" (route {p.route}) is no longer in the rules: no resolved SMS to "
                 f"{rules.who(p.mobile)}")
            log.warning("%s", w)
            plan.warnings.append(w)
            continue
        if context is None:
            context = base_context(alert, batch)
        i = rules.route_index(p.route)
        r = rules.routes[i] if i is not None else None
        is_muted = r is not None and muted(r, rules, now)
        plan.notifications.append(notification(
            rules, p.resolved_template, context, rendered, p.mobile,
            fingerprint=alert.fingerprint, status="resolved", episode=episode.episode,
            route=p.route, alertname=alert.name, is_muted=is_muted,
            untimed=alert.starts_at is None, resolved_template=p.resolved_template))


def _resolved_to_stored_episode(alert: Alert, untimed: bool, batch: Batch, rules: RuleSet,
                                plan: Plan, now: datetime,
                                episodes: Mapping[tuple[str, str], Episode] | None) -> bool:
    """For a resolved ``alert``: note its (fingerprint, episode) in ``plan.resolved`` and, when
    its episode is in ``episodes``, plan it to who was paged (:func:`_resolved_to_paged`) and
    return True (the routes are not asked). False for a firing alert or an unknown episode."""
    if alert.status != "resolved":
        return False
    plan.resolved.append((alert.fingerprint, "" if untimed else episode_from_start(alert)))
    stored = (episodes or {}).get((alert.fingerprint, episode_from_start(alert)))
    if stored is None:
        return False
    _resolved_to_paged(alert, batch, stored, rules, plan, now)
    return True


def decide(batch: Batch, rules: RuleSet, now: datetime,
           episode_starts: Mapping[str, datetime | None] | None = None,
           episodes: Mapping[tuple[str, str], Episode] | None = None) -> Plan:
    """The notifications for every alert of ``batch`` under ``rules`` at ``now`` (aware).

    Each alert is judged by its own status. A mobile reached by several matching routes gets
    one notification, from the first of them. A resolved alert is notified only on routes with a
    ``resolved_template``. A muted route gives ``suppressed`` notifications (reason ``muted``).
    An alert without ``startsAt`` gives an :class:`EpisodeMark` and ``untimed`` notifications;
    ``episode_starts`` (fingerprint -> stored start, read without writing) gives what its
    templates see as ``starts_at`` (see :func:`with_episode_start`; ``None``: left unset).
    A route naming a schedule pages the people on call at ``now``; a template that reads
    ``person`` is rendered once per mobile. A resolved alert whose episode is in ``episodes``
    (``(fingerprint, episode)`` -> stored :class:`Episode`, read without writing) goes to who
    was paged for it (:func:`_resolved_to_paged`), not to whom the routes name now.
    """
    plan = Plan()
    for index, alert in enumerate(batch.alerts):
        untimed = alert.starts_at is None
        alert = _mark_episode(alert, plan, now, episode_starts)
        if _resolved_to_stored_episode(alert, untimed, batch, rules, plan, now, episodes):
            continue
        hits = route(alert.labels, rules.routes)
        if not hits:
            plan.unrouted += 1
            continue
        seen: set[str] = set()
        before = len(plan.notifications)
        context = None
        rendered: dict[str, dict[str, str]] = {}  # template name -> its variables
        for i in hits:
            r = rules.routes[i]
            tpl_name = r.template if alert.status == "firing" else r.resolved_template
            if tpl_name is None:
                continue
            mobiles = [m for m in mobiles_of(alert, r, rules, plan, now, f"alerts[{index}]",
                                             rules.route_names[i]) if m not in seen]
            if not mobiles:
                continue
            seen.update(mobiles)
            if context is None:
                context = base_context(alert, batch)
            is_muted = muted(r, rules, now)
            episode = episode_from_start(alert)
            for m in mobiles:
                plan.notifications.append(notification(
                    rules, tpl_name, context, rendered, m, fingerprint=alert.fingerprint,
                    status=alert.status, episode=episode, route=rules.route_names[i],
                    alertname=alert.name, is_muted=is_muted, repeat_interval=r.repeat_interval,
                    untimed=untimed, resolved_template=r.resolved_template,
                    steps=step_specs(r) if alert.status == "firing" else (),
                    info=episode_info(alert, batch) if alert.status == "firing" else None))
        if alert.status == "firing" and len(plan.notifications) == before:
            # routes matched, but none named a mobile (e.g. mobiles_from without the label)
            plan.unrouted += 1
            log.warning("firing %s matched routes %s but none named a mobile: nobody paged",
                        alert.name or alert.fingerprint,
                        ", ".join(rules.route_names[i] for i in hits))
    return plan
