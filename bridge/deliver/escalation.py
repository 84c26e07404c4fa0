"""Running due escalation steps (docs/oncall.md, Escalation).

Steps are durable timers in the store (:meth:`bridge.store.base.Store.claim_steps`), leased
like outbox items, so each step is decided once per episode across workers, instances and
restarts; one that fell due while the bridge was down is claimed at the first pass after
start. :class:`Escalator` runs inside the delivery loop (:meth:`bridge.deliver.deliverer.Deliverer.
run_forever` calls :meth:`Escalator.run_once` on every pass, at most ``BRIDGE_DELIVERY_INTERVAL``
apart), so a step runs within about a second of falling due.

What a due step does is :func:`bridge.decide.episodes.step_action` (pure, a function of ``now``):
an acknowledged or resolved episode cancels it; otherwise the step's receiver (a schedule is
resolved at ``now``) is paged, without the mobiles already paged for the episode, as firing
notifications recorded like any other (pacing, limits, storms and the route's mute intervals
apply; an acknowledgement that lands meanwhile suppresses them in the record step, reason
``acknowledged``). A crash between the record and the finish leaves the step pending: its lease
lapses, it runs again and finds its people already paged (``nobody new to page``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from bridge import metrics
from bridge.decide.episodes import Episode, Step, StepClaim, step_action
from bridge.decide.heartbeats import step_context
from bridge.decide.plan import address_for, episode_context, muted, notification, store_policy
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Store

log = logging.getLogger("bridge.escalation")  # stable log name (not the module path)

#: Seconds a claimed step is leased to one runner.
STEP_LEASE = 60.0


class Escalator:
    """Claims and runs due escalation steps. ``rules()`` gives the rules in force; ``zone``
    is ``BRIDGE_TZ`` (the day of ``per_day``); ``clock`` gives UNIX seconds."""

    def __init__(self, store: Store, rules: Callable[[], RuleSet], zone: tzinfo, *,
                 clock: Callable[[], float] = time.time, lease: float = STEP_LEASE) -> None:
        self.store = store
        self.rules = rules
        self.zone = zone
        self.clock = clock
        self.lease = lease

    def run_once(self, now: float | None = None) -> int:
        """Claim the steps due at ``now`` (default the clock) and run each; returns how many
        were claimed. Raises :class:`bridge.errors.StoreUnavailable`."""
        now = self.clock() if now is None else now
        claims = self.store.claim_steps(now, self.lease)
        for claim in claims:
            self._run(claim, now)
        return len(claims)

    def _run(self, claim: StepClaim, now: float) -> None:
        episode = self.store.episode(claim.episode_id)
        if episode is None or not 0 < claim.index <= len(episode.steps):
            return
        step = episode.steps[claim.index - 1]
        action, reason = step_action(episode, step, now)
        if action == "wait":
            return
        if action == "cancel":
            if reason:
                self._finish(claim, episode, step, "cancelled", reason, now)
            return
        rules = self.rules()
        problem = self._unusable(rules, step)
        if problem:
            log.warning("episode %s (%s) step %d: %s: cancelled", episode.id,
                        episode.alertname or episode.fingerprint, step.index, problem)
            self._finish(claim, episode, step, "cancelled", problem, now)
            return
        self._finish(claim, episode, step, "done", self._page(episode, step, rules, now), now)

    @staticmethod
    def _unusable(rules: RuleSet, step: Step) -> str:
        """Why the step cannot page under the rules in force (a reload removed its receiver
        or template), or ``""``."""
        if step.receiver not in rules.receivers and step.receiver not in rules.schedules:
            return f"receiver {step.receiver!r} is no longer in the rules"
        if step.template is None or step.template not in rules.templates:
            return f"template {step.template!r} is no longer in the rules"
        return ""

    def _page(self, episode: Episode, step: Step, rules: RuleSet, now: float) -> str:
        """Record the step's notifications; returns the step's reason (whom it paged)."""
        at = datetime.fromtimestamp(now, UTC)
        tpl = str(step.template)
        # a call step calls every number, also those paged by SMS (their SMS did not wake
        # them), but no number already called for the episode: paged entries are kept per
        # address, a call's being voice:<number> (docs/providers.md, Calls)
        already = episode.paged_mobiles()
        mobiles = [m for m in dict.fromkeys(rules.mobiles_for(step.receiver, at))
                   if address_for(rules, tpl, m) not in already]
        if not mobiles:
            log.info("episode %s (%s) escalation step %d: %s: nobody new to page", episode.id,
                     episode.alertname or episode.fingerprint, step.index, step.receiver)
            return "nobody new to page"
        i = rules.route_index(episode.route)
        route = rules.routes[i] if i is not None else None
        is_muted = route is not None and muted(route, rules, at)
        own = next((p for p in episode.paged if p.level == 0), None)
        resolved_template = (route.resolved_template if route is not None
                             else own.resolved_template if own is not None else None)
        # a missing heartbeat's steps also see name, expect and last_seen (docs/heartbeats.md)
        context = {**episode_context(episode, step.index), **step_context(episode, rules)}
        rendered: dict[str, dict[str, str]] = {}
        notes = [notification(
            rules, tpl, context, rendered, m, fingerprint=episode.fingerprint, status="firing",
            episode=episode.episode, route=episode.route, alertname=episode.alertname,
            is_muted=is_muted, repeat_interval=route.repeat_interval if route else None,
            level=step.index, resolved_template=resolved_template) for m in mobiles]
        outcomes = self.store.record(notes, store_policy(rules, self.zone, now), now)
        parts = []
        for o in outcomes:
            who = rules.who(o.notification.mobile)
            parts.append(who if o.state in ("queued", "held") else f"{who} ({o.reason})")
            log.info("episode %s (%s) escalation step %d via %s: %s -> %s%s", episode.id,
                     episode.alertname or episode.fingerprint, step.index, step.receiver, who,
                     o.state, f" ({o.reason})" if o.reason else "")
        paged = sum(1 for o in outcomes if o.state in ("queued", "held"))
        return f"paged {paged}: " + ", ".join(parts)

    def _finish(self, claim: StepClaim, episode: Episode, step: Step, state: str, reason: str,
                now: float) -> None:
        done = self.store.finish_step(claim, "done" if state == "done" else "cancelled",
                                      reason, now)
        if not done:
            log.info("episode %s step %d: changed meanwhile (lease lapsed or cancelled)",
                     episode.id, step.index)
            return
        if state == "done":
            metrics.ESCALATIONS.labels(episode.route, str(step.index)).inc()
        else:
            log.info("episode %s (%s) escalation step %d cancelled: %s", episode.id,
                     episode.alertname or episode.fingerprint, step.index, reason)
