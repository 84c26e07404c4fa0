"""What a webhook body would cause, without storing or sending: ``bridge render`` and the
operator page's playground give this same answer.

:func:`preview` parses the body (naming or detecting its source), plans every alert under the
rules at ``now`` and, per alert, says what each route made of it
(:func:`bridge.decide.routing.explain`). :func:`render_lines` is the text ``bridge render`` prints.
Pure apart from parsing: nothing is stored, nothing is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime

from bridge.alert import Alert, Batch
from bridge.decide.episodes import fill_code
from bridge.decide.plan import decide
from bridge.decide.routing import RouteVerdict, explain
from bridge.decide.types import Notification
from bridge.rules.load import RuleSet
from bridge.sources import detect, parse_body, read_body


@dataclass(frozen=True)
class AlertPreview:
    """One alert of the body: the notifications it would cause (variables as
    :func:`shown_variables` shows them) and every route's verdict. ``pages_nobody`` is true when
    none of its notifications would be queued."""

    alert: Alert
    notifications: list[Notification]
    verdicts: list[RouteVerdict]

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


def preview(body: bytes, source: str | None, rules: RuleSet, now: datetime) -> Preview:
    """Read ``body`` as ``source`` (``None``: detected from its fields) and plan it under
    ``rules`` at ``now`` (aware). Raises :class:`~bridge.errors.PayloadError` for a body the
    webhook would refuse with 400 (also for an unknown source)."""
    src = source or detect(read_body(body))
    batch = parse_body(src, body)
    alerts, skipped = [], []
    for alert in batch.alerts:
        plan = decide(replace(batch, alerts=[alert]), rules, now)
        skipped.extend(plan.skipped_mobiles)
        verdicts = explain(alert.labels, alert.status, rules.routes, rules.route_names,
                           rules.time_intervals, now)
        shown = [replace(n, variables=shown_variables(n)) for n in plan.notifications]
        alerts.append(AlertPreview(alert, shown, verdicts))
    return Preview(src, batch, alerts, skipped)


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
        person = rules.person_of(n.mobile)
        out.append(f"- route {n.route}: {n.status} {n.alertname or '-'} -> "
                   f"{person + ' ' if person else ''}{n.mobile} tpl_id {n.tpl_id} [{state}]")
        out.extend(f"    {k} = {v}" for k, v in shown_variables(n).items())
        out.append(f"    tpl_value: {encode(shown_variables(n))}")
        out.extend(f"    escalates: step {i} after {st.after:g}s -> {st.receiver} (template "
                   f"{st.template}) unless acknowledged or resolved"
                   for i, st in enumerate(n.steps, start=1))
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
    out.append(f"(dedup, repeat_interval and limits are decided by the store when served: "
               f"min_gap {lim.min_gap:.0f}s, per_mobile_per_hour {lim.per_mobile_per_hour}, "
               f"per_day {lim.per_day}, storm {'on' if lim.storm else 'off'})")
    return out
