"""What intake reports about one webhook: metrics and log lines, in one place.

:meth:`bridge.service.Bridge.intake` decides and stores; it hands the typed result to
:func:`observe_intake`, which counts it in the Prometheus metrics and writes the log lines that
answer "why was I (not) paged" (one per decision, naming the alert, the person or masked mobile,
the route, the state and its reason). Neither changes anything stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from bridge import metrics
from bridge.alert import Batch
from bridge.plan import Plan
from bridge.rules.load import RuleSet
from bridge.store.base import Outcome

log = logging.getLogger("bridge.service")


@dataclass(frozen=True)
class IntakeResult:
    """What intake decided for one webhook: the parsed ``batch``, its ``plan`` (notifications
    and what was dropped on the way) and the store's ``outcomes``, one per notification in
    order (state and reason)."""

    batch: Batch
    plan: Plan
    outcomes: list[Outcome]


def observe_before(batch: Batch) -> None:
    """Count the webhook's alerts and say what the sender left out (``truncatedAlerts``), before
    deciding: counted even when the store then refuses the webhook (503)."""
    for alert in batch.alerts:
        metrics.ALERTS.labels(batch.source, alert.status).inc()
    if batch.truncated_alerts:
        metrics.TRUNCATED.inc(batch.truncated_alerts)
        log.warning("%s left out %d alerts (truncatedAlerts): they cannot be paged",
                    batch.source, batch.truncated_alerts)


def observe_intake(result: IntakeResult, rules: RuleSet) -> None:
    """Metrics and log lines of a stored webhook; ``rules`` names the people (mobiles masked)."""
    batch, plan = result.batch, result.plan
    if plan.skipped_mobiles:
        metrics.SKIPPED_MOBILES.inc(len(plan.skipped_mobiles))
    if plan.over_limit:
        metrics.MOBILES_OVER_LIMIT.inc(plan.over_limit)
    for o in result.outcomes:
        metrics.NOTIFICATIONS.labels(o.state, o.reason or "-").inc()
        n = o.notification
        log.info("%s %s [%s] -> %s via route %s: %s%s", n.status, n.alertname or "-",
                 n.fingerprint, rules.who(n.mobile), n.route, o.state,
                 f" ({o.reason})" if o.reason else "")
    if plan.unrouted:
        metrics.UNROUTED.labels(batch.source).inc(plan.unrouted)
        log.info("%d of %d alerts matched no route", plan.unrouted, len(batch.alerts))
    for w in batch.warnings:
        log.warning("%s webhook: %s", batch.source, w)

