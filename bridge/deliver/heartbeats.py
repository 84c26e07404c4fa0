"""The heartbeats' timer (docs/heartbeats.md): pages once when a heartbeat goes missing and
resolves that page when its beats come back.

:class:`HeartbeatWatch` runs inside the delivery loop beside the escalation steps
(:meth:`bridge.intake.service.Bridge.deliverer` hands both to
:meth:`bridge.deliver.deliverer.Deliverer.run_forever`, which calls them on every pass, at most
``delivery_interval`` apart); it looks at the heartbeats at most every :data:`CHECK_EVERY`
seconds, so a miss is decided within about a second of ``expect`` passing. What to do is
:func:`bridge.decide.heartbeats.heartbeat_action` (pure, a function of ``now``); each
transition is leased in the store (:meth:`bridge.store.base.Store.claim_heartbeat`) like an
escalation step, so it is decided once across workers, instances and restarts.

A miss is recorded like any alert's page: :func:`bridge.decide.heartbeats.plan_missing` builds
the notifications of the alert ``HeartbeatMissing`` and :meth:`Store.record` stores them in
one atomic step (dedup, ack codes, the episode and its escalation steps). A crash between the
record and the finish leaves the lease to lapse: the miss is decided again with the same
moment, so the same dedup keys, and nobody is paged twice. Coming back records the resolved
notifications to those paged (:func:`bridge.decide.heartbeats.plan_back`) and closes the
episode in the same step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from bridge.decide.heartbeats import (
    HeartbeatClaim,
    due_at,
    heartbeat_action,
    missing_alert,
    plan_back,
    plan_missing,
)
from bridge.decide.plan import episode_from_start, store_policy
from bridge.rules.model import Heartbeat
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Store

log = logging.getLogger(__name__)

#: Seconds a claimed transition is leased to one runner.
LEASE = 60.0
#: The heartbeats are looked at no more often than this (seconds).
CHECK_EVERY = 1.0


def _at(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class HeartbeatWatch:
    """Decides and records the heartbeats' transitions. ``rules()`` gives the rules in force;
    ``zone`` is ``BRIDGE_TZ`` (the day of ``per_day``); ``started_at`` the service's start
    (UNIX seconds); ``clock`` gives UNIX seconds."""

    def __init__(self, store: Store, rules: Callable[[], RuleSet], zone: tzinfo,
                 started_at: float, *, clock: Callable[[], float] = time.time,
                 lease: float = LEASE, every: float = CHECK_EVERY) -> None:
        self.store = store
        self.rules = rules
        self.zone = zone
        self.started_at = started_at
        self.clock = clock
        self.lease = lease
        self.every = every
        self._next = 0.0

    def run_once(self, now: float | None = None) -> int:
        """Look at the heartbeats (at most every ``every`` seconds of the monotonic clock) and
        run each transition due at ``now`` (default the clock) that this runner leases;
        returns how many it ran. Raises :class:`bridge.errors.StoreUnavailable`."""
        # throttled on the monotonic clock: a wall clock set back must not pause the watch
        if time.monotonic() < self._next:
            return 0
        self._next = time.monotonic() + self.every
        now = self.clock() if now is None else now
        rules = self.rules()
        if not rules.heartbeats:
            return 0
        records = self.store.heartbeats()
        ran = 0
        for name, hb in rules.heartbeats.items():
            record = records.get(name)
            action = heartbeat_action(record, hb.expect, self.started_at, now)
            if record is None or action is None or record.lease_until > now:
                continue
            claim = self.store.claim_heartbeat(
                name, action, record.last_seen, due_at(record.last_seen, self.started_at,
                                                       hb.expect), now, self.lease)
            if claim is None:
                continue
            if action == "miss":
                self._miss(claim, hb, rules, now)
            else:
                self._back(claim, hb, rules, now)
            ran += 1
        return ran

    def _miss(self, claim: HeartbeatClaim, hb: Heartbeat, rules: RuleSet, now: float) -> None:
        notes = plan_missing(claim.name, hb, rules, claim.missing_since, claim.last_seen, now)
        outcomes = self.store.record(notes, store_policy(rules, self.zone, now), now)
        who = ", ".join(rules.who(o.notification.mobile) + f" -> {o.state}"
                        + (f" ({o.reason})" if o.reason else "") for o in outcomes)
        log.warning("heartbeat %s missing since %s (last beat %s, expect %gs): %s",
                    claim.name, _at(claim.missing_since), _at(claim.last_seen), hb.expect,
                    who or "nobody to page")
        if not self.store.finish_heartbeat(claim, now):
            log.info("heartbeat %s: changed meanwhile (lease lapsed)", claim.name)

    def _back(self, claim: HeartbeatClaim, hb: Heartbeat, rules: RuleSet, now: float) -> None:
        alert = missing_alert(claim.name, claim.missing_since, hb.expect)
        key = (alert.fingerprint, episode_from_start(alert))
        episode = self.store.episodes_by_key([key]).get(key)
        notes = plan_back(claim.name, hb, episode, rules, claim.last_seen) if episode else []
        outcomes = self.store.record(notes, store_policy(rules, self.zone, now), now,
                                     resolved=[key])
        who = ", ".join(rules.who(o.notification.mobile) + f" -> {o.state}"
                        + (f" ({o.reason})" if o.reason else "") for o in outcomes)
        log.info("heartbeat %s back (beat at %s after missing since %s): %s", claim.name,
                 _at(claim.last_seen), _at(claim.missing_since), who or "no resolved SMS")
        if not self.store.finish_heartbeat(claim, now):
            log.info("heartbeat %s: changed meanwhile (lease lapsed)", claim.name)
