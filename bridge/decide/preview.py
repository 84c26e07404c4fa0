"""What a webhook body would cause, without storing or sending: ``bridge render`` and the
operator page's playground give this same answer.

:func:`preview` parses the body (naming or detecting its source), plans every alert under the
rules at ``now`` and, per alert, says what each route made of it
(:func:`bridge.decide.routing.explain`). :func:`render_lines` is the text ``bridge render`` prints.
A resolved alert goes, as intake sends it, to those paged for its stored episode, read from
the store when one is given (docs/operator-page.md, "Playground"). Nothing is stored, nothing
is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

from bridge.alert import Alert, Batch
from bridge.decide.episodes import Episode, fill_code
from bridge.decide.plan import decide, episode_from_start
from bridge.decide.routing import RouteVerdict, explain
from bridge.decide.types import Notification
from bridge.errors import StoreUnavailable
from bridge.rules.model import call_address, split_address
from bridge.rules.ruleset import RuleSet
from bridge.sources import detect, parse_body, read_body


@dataclass(frozen=True)
class AlertPreview:
    """One alert of the body: the notifications it would cause (variables as
    :func:`shown_variables` shows them) and every route's verdict. ``pages_nobody`` is true when
    none of its notifications would be queued."""

    alert: Alert
    notifications: list[Notification]
    verdicts: list[RouteVerdict]
    #: for a resolved alert, whom its resolved SMS goes to and why (see :func:`preview`)
    note: str = ""

    @property
    def pages_nobody(self) -> bool:
        """True when no SMS would be queued for this alert (no route, muted, no mobile)."""
        return not any(n.state == "queued" for n in self.notifications)


@dataclass(frozen=True)
class Preview:
    """The whole answer for one body: its ``source``, the batch read, one
    :class:`AlertPreview` per alert, and the invalid ``mobiles_from`` numbers skipped (masked)."""

    source: str
    batch: Batch
    alerts: list[AlertPreview]
    skipped_mobiles: list[str] = field(default_factory=list)
    #: the time it was planned at (aware): when escalation steps would fall due
    at: datetime | None = None

    @property
    def notifications(self) -> list[Notification]:
        """Every notification, alert by alert."""
        return [n for a in self.alerts for n in a.notifications]

    @property
    def unrouted(self) -> int:
        """Firing alerts that page nobody because no route gives them a notification."""
        return sum(1 for a in self.alerts if a.alert.status == "firing" and not a.notifications)


def shown_variables(n: Notification) -> dict[str, str]:
    """``n``'s variables as a preview shows them: ``{{ ack_code }}`` as ``<ack_code>`` (the
    record step fills in the stored code when served)."""
    return fill_code(n.variables, "<ack_code>")


class EpisodeReader(Protocol):
    """The two reads of the store intake makes before planning a resolved alert
    (:class:`bridge.store.base.Store` has them)."""

    def untimed_starts(self, fingerprints: Sequence[str]) -> dict[str, str]:
        """The stored episode start of alerts without ``startsAt``."""

    def episodes_by_key(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Episode]:
        """The stored episodes of ``(fingerprint, episode)`` keys."""


#: What a preview says of a resolved alert when no store was read.
NO_STORE = ("no store read{why}: shown going to the routes as they are now; intake sends it "
            "only to the mobiles paged for its episode")


def _stored_episode(alert: Alert, store: EpisodeReader) -> tuple[str, Episode | None]:
    """The episode text of a resolved ``alert`` (the stored start for one without
    ``startsAt``) and its stored episode, as intake reads them. Raises StoreUnavailable."""
    if alert.starts_at is None:
        episode = store.untimed_starts([alert.fingerprint]).get(alert.fingerprint) or ""
    else:
        episode = episode_from_start(alert)
    if not episode:
        return episode, None
    return episode, store.episodes_by_key([(alert.fingerprint, episode)]).get(
        (alert.fingerprint, episode))


def _plan_resolved(batch: Batch, alert: Alert, rules: RuleSet, now: datetime,
                   store: EpisodeReader | None, why: str) -> tuple[list[Notification], str]:
    """The notifications of a resolved ``alert`` as intake decides them, and the note
    saying whom they go to."""
    one = replace(batch, alerts=[alert])
    if store is None:
        return decide(one, rules, now).notifications, NO_STORE.format(why=why)
    try:
        episode, stored = _stored_episode(alert, store)
    except StoreUnavailable as exc:
        return decide(one, rules, now).notifications, NO_STORE.format(
            why=f" (the store could not be read: {exc})")
    if stored is None:
        plan = decide(one, rules, now)
        return ([replace(n, state="suppressed", reason="not paged") for n in plan.notifications],
                "no episode of it is stored: nobody was paged for it, so intake sends no "
                "resolved SMS")
    start = datetime.fromisoformat(episode) if alert.starts_at is None else None
    plan = decide(one, rules, now, {alert.fingerprint: start} if start else None,
                  {(alert.fingerprint, episode): stored})
    paged = ", ".join(dict.fromkeys(rules.who(p.mobile) for p in stored.paged))
    return plan.notifications, (f"goes to those paged for its stored episode {stored.id} "
                                f"({paged}), as intake sends it")


def preview(body: bytes, source: str | None, rules: RuleSet, now: datetime,
            store: EpisodeReader | None = None, no_store_why: str = "") -> Preview:
    """Read ``body`` as ``source`` (``None``: detected from its fields) and plan it under
    ``rules`` at ``now`` (aware). A resolved alert is planned as intake plans it: to the
    mobiles paged for its episode as ``store`` holds it (none stored: nobody, the
    notifications shown ``suppressed``, reason ``not paged``); without a ``store`` (or one
    that cannot be read) to the routes as they are now, and its note says so
    (``no_store_why`` says why there is none). Raises :class:`~bridge.errors.PayloadError`
    for a body the webhook would refuse with 400 (also for an unknown source)."""
    src = source or detect(read_body(body))
    batch = parse_body(src, body)
    alerts, skipped = [], []
    for alert in batch.alerts:
        note = ""
        if alert.status == "resolved":
            notes, note = _plan_resolved(batch, alert, rules, now, store, no_store_why)
        else:
            plan = decide(replace(batch, alerts=[alert]), rules, now)
            skipped.extend(plan.skipped_mobiles)
            notes = plan.notifications
        verdicts = explain(alert.labels, alert.status, rules.routes, rules.route_names,
                           rules.time_intervals, now)
        shown = [replace(n, variables=shown_variables(n)) for n in notes]
        alerts.append(AlertPreview(alert, shown, verdicts, note))
    return Preview(src, batch, alerts, skipped, now)


def _limit(name: str, value: int | None) -> str:
    return f"{name} {value}" if value is not None else f"no {name} limit"


def _step_pages(rules: RuleSet, receiver: str, at: datetime | None, paged: set[str],
                voice: bool = False) -> str:
    """Whom a step's ``receiver`` would page at ``at`` (a schedule: who is on call then):
    ``secondary: li 13800138001``; a mobile whose address is in ``paged`` (already paged for
    the alert: by SMS, or called when ``voice``) is marked, since a step does not page it again
    (docs/providers.md, Calls: a call step calls those paged by SMS too). The addresses it
    would page are added to ``paged``, for the later steps."""
    if at is None:
        return receiver
    try:
        mobiles = rules.mobiles_for(receiver, at)
    except KeyError:
        return receiver
    addresses = [call_address(m) if voice else m for m in mobiles]
    who = [" ".join(x for x in (rules.person_of(m), m) if x)
           + (" (already paged: not again)" if a in paged else "")
           for m, a in zip(mobiles, addresses, strict=True)]
    paged.update(addresses)
    return f"{receiver}: {', '.join(who) or 'nobody'}"


def render_lines(p: Preview, rules: RuleSet, name: str,
                 encode: Callable[[Mapping[str, str]], str]) -> list[str]:
    """The lines ``bridge render`` prints for ``p``; ``name`` names the body (its file);
    ``encode`` turns shown variables into the provider's ``tpl_value`` (for Juhe
    :func:`bridge.providers.juhe.encode_tpl_value`)."""
    out = [f"{name}: {p.source}, {len(p.batch.alerts)} alerts, "
           f"{len(p.notifications)} notifications"
           + (f", {p.unrouted} matched no route" if p.unrouted else "")]
    for n in p.notifications:
        state = n.state + (f" ({n.reason})" if n.reason else "")
        channel, number = split_address(n.mobile)
        person = rules.person_of(number)
        what = (f"call (template {n.template})" if channel == "voice"
                else f"tpl_id {n.tpl_id}")
        out.append(f"- route {n.route}: {n.status} {n.alertname or '-'} -> "
                   f"{person + ' ' if person else ''}{number} {what} [{state}]")
        out.extend(f"    {k} = {v}" for k, v in shown_variables(n).items())
        if channel == "sms":
            out.append(f"    tpl_value: {encode(shown_variables(n))}")
        paged = {x.mobile for x in p.notifications if x.fingerprint == n.fingerprint}
        for i, st in enumerate(n.steps, start=1):
            tpl = rules.templates.get(st.template or n.template or "")
            pages = _step_pages(rules, st.receiver, _due(p.at, st.after), paged,
                                voice=tpl is not None and tpl.channel == "voice")
            out.append(f"    escalates: step {i} after {st.after:g}s -> {pages} (template "
                       f"{st.template}) unless acknowledged or resolved")
    out.extend(f"- {a.alert.status} {a.alert.name or '-'} [{a.alert.fingerprint}]: {a.note}"
               for a in p.alerts if a.note)
    for m in p.skipped_mobiles:
        out.append(f"- skipped invalid mobile {m} from mobiles_from")
    for a in p.alerts:
        if not a.pages_nobody:
            continue
        out.append(f"- {a.alert.status} {a.alert.name or '-'} [{a.alert.fingerprint}] "
                   f"pages nobody:")
        out.extend(f"    route {v.route}: {v.outcome}" + (f": {v.why}" if v.why else "")
                   for v in a.verdicts)
    lim = rules.limits
    hourly = _limit("per_mobile_per_hour", lim.per_mobile_per_hour)
    out.append(f"(dedup, repeat_interval and limits are decided by the store when served: "
               f"min_gap {lim.min_gap:.0f}s, {hourly}, {_limit('per_day', lim.per_day)}, "
               f"storm {'on' if lim.storm else 'off'})")
    return out


def _due(at: datetime | None, after: float) -> datetime | None:
    """When a step ``after`` seconds would fall due, counted from ``at`` (the earliest the
    route's first SMS could go out)."""
    return None if at is None else at + timedelta(seconds=after)
