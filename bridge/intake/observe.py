"""What intake reports about one webhook: metrics and log lines, in one place.

:meth:`bridge.intake.service.Bridge.intake` decides and stores; it hands the typed result to
:func:`observe_intake`, which counts it in the Prometheus metrics and writes the log lines that
answer "why was I (not) paged": one INFO line per webhook that lists every decision (the alert,
the person or masked mobile, the route, the state and its reason), and the same decisions one
per line at DEBUG. Neither changes anything stored.

One line per webhook rather than one per decision, and one metric increment per label set
rather than per notification: at the storm rates this service exists for, a logging call per
SMS was an eighth of the intake's CPU (issue 14, ``bench/RESULTS.md``).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

from bridge import metrics
from bridge.alert import Batch
from bridge.decide.plan import Plan
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Outcome

log = logging.getLogger("bridge.service")

#: Decisions listed in one INFO line (about 100 characters each).
DECISIONS_PER_LINE = 50


@dataclass(frozen=True)
class IntakeResult:
    """What intake decided for one webhook: the parsed ``batch``, its ``plan`` (notifications
    and what was dropped on the way) and the store's ``outcomes``, one per notification in
    order (state and reason); ``heartbeats``, how many of its alerts were beats."""

    batch: Batch
    plan: Plan
    outcomes: list[Outcome]
    #: alerts of ``batch`` that were heartbeat beats (not routed; docs/heartbeats.md)
    heartbeats: int = 0


def observe_before(batch: Batch) -> None:
    """Count the webhook's alerts and say what the sender left out (``truncatedAlerts``), before
    deciding: counted even when the store then refuses the webhook (503)."""
    for status, n in Counter(alert.status for alert in batch.alerts).items():
        metrics.ALERTS.labels(batch.source, status).inc(n)
    if batch.truncated_alerts:
        metrics.TRUNCATED.inc(batch.truncated_alerts)
        log.warning("%s left out %d alerts (truncatedAlerts): they cannot be paged",
                    batch.source, batch.truncated_alerts)


def decision_text(outcome: Outcome, rules: RuleSet) -> str:
    """One decision as the log says it: ``firing DiskFull [fp] -> zhang 138****8000 via route
    db: queued`` (the reason in parentheses after the state when there is one)."""
    n = outcome.notification
    return (f"{n.status} {n.alertname or '-'} [{n.fingerprint}] -> {rules.who(n.mobile)} via "
            f"route {n.route}: {outcome.state}"
            + (f" ({outcome.reason})" if outcome.reason else ""))


def observe_intake(result: IntakeResult, rules: RuleSet) -> None:
    """Metrics and log lines of a stored webhook; ``rules`` names the people (mobiles masked).

    The INFO line: ``alertmanager webhook: 2 alerts, 2 decisions: <decision>; <decision>``
    (:func:`decision_text`), then ``; N of M alerts matched no route`` when some did. A webhook
    of more than :data:`DECISIONS_PER_LINE` decisions gets one such line per that many, marked
    ``(decisions 51-100 of 240)``: journald and Docker split longer lines.
    """
    batch, plan = result.batch, result.plan
    if plan.skipped_mobiles:
        metrics.SKIPPED_MOBILES.inc(len(plan.skipped_mobiles))
    if plan.over_limit:
        metrics.MOBILES_OVER_LIMIT.inc(plan.over_limit)
    for (state, reason), n in Counter((o.state, o.reason or "-")
                                      for o in result.outcomes).items():
        metrics.NOTIFICATIONS.labels(state, reason).inc(n)
    if plan.unrouted:
        metrics.UNROUTED.labels(batch.source).inc(plan.unrouted)
    if log.isEnabledFor(logging.INFO):
        _log_decisions(batch, plan.unrouted, [decision_text(o, rules) for o in result.outcomes])
    for w in batch.warnings:
        log.warning("%s webhook: %s", batch.source, w)


def _log_decisions(batch: Batch, unrouted: int, decisions: list[str]) -> None:
    """The INFO line(s) of :func:`observe_intake`, and a DEBUG line per decision."""
    if log.isEnabledFor(logging.DEBUG):
        for text in decisions:
            log.debug("decision: %s", text)
    tail = f"; {unrouted} of {len(batch.alerts)} alerts matched no route" if unrouted else ""
    head = f"{batch.source} webhook: {len(batch.alerts)} alerts, {len(decisions)} decisions"
    if len(decisions) <= DECISIONS_PER_LINE:
        log.info("%s%s%s%s", head, ": " if decisions else "", "; ".join(decisions), tail)
        return
    for start in range(0, len(decisions), DECISIONS_PER_LINE):
        part = decisions[start:start + DECISIONS_PER_LINE]
        last = start + len(part) == len(decisions)
        log.info("%s (decisions %d-%d of %d): %s%s", head, start + 1, start + len(part),
                 len(decisions), "; ".join(part), tail if last else "")
