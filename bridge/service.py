"""The bridge as one object: settings, rules, store and Juhe client, and the intake of one
webhook (parse -> plan -> record). Flask views and the CLI call this; it knows no HTTP."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from bridge import metrics
from bridge.alert import Batch
from bridge.config import Settings
from bridge.delivery import (
    STATUS_JUHE_CONFIG,
    Deliverer,
    DeliveryPolicy,
    DryRunSender,
    Sender,
    config_id,
    juhe_config_note,
)
from bridge.juhe import JuheClient
from bridge.oncall import OnCall, oncall_view
from bridge.plan import decide
from bridge.privacy import mask_mobile, redact_url
from bridge.reload import RulesHolder
from bridge.store import open_store
from bridge.store.base import Policy, Store

log = logging.getLogger(__name__)


class Bridge:
    """Everything one process needs to take webhooks and deliver SMS.

    Raises :class:`bridge.errors.RulesError` when the rules fail their checks and
    ``ValueError`` for an unusable ``BRIDGE_STORE``.
    """

    def __init__(self, settings: Settings, store: Store | None = None,
                 state_dir: str | None = None, client: Sender | None = None) -> None:
        self.settings = settings
        self.holder = RulesHolder(settings.rules_path, settings.tz, state_dir,
                                  retention=settings.retention)
        self.store = store or open_store(settings.store)
        self.sender: Sender = client or (DryRunSender() if settings.dry_run else JuheClient(
            settings.juhe_key, settings.juhe_url, timeout=settings.juhe_timeout))
        self.delivery_policy = DeliveryPolicy.from_settings(settings)
        #: names the Juhe configuration in force (never the key), for the juhe_config note
        self.config_id = config_id(settings)
        self.started_at = time.time()

    def deliverer(self) -> Deliverer:
        """A deliverer sharing this bridge's store, sender and rules."""
        return Deliverer(self.store, self.sender, lambda: self.holder.rules, self.delivery_policy,
                         config=self.config_id)

    def describe(self) -> list[str]:
        """Start-up lines: what is in force (never the key)."""
        s = self.settings
        lines = [
            f"store: {redact_url(self.store.url)}",
            f"rules: {self.holder.rules.summary()}",
            "juhe: " + ("DRY-RUN: JUHE_KEY is not set, nothing will be sent" if s.dry_run
                        else s.juhe_url),
            f"auth: {'bearer/basic token required' if s.token else 'OPEN: BRIDGE_TOKEN is not set'}"
            f"; grafana hmac: {'on' if s.grafana_hmac_secret else 'off'}",
            f"time zone: {s.tz}; retry for {s.retry_for:.0f}s; max body {s.max_body_bytes} bytes",
            *(f"WARNING: {w}" for w in s.warnings),
            *self.oncall_lines(),
        ]
        return lines

    # -- on call --------------------------------------------------------------------------
    def oncall(self, next_n: int = 3, at: float | None = None,
               only: str | None = None) -> list[OnCall]:
        """Who is on call in every schedule of the rules in force at ``at`` (UNIX seconds,
        default now) and the ``next_n`` shifts after (:func:`bridge.oncall.oncall_view`).
        Raises ``KeyError`` for an unknown ``only``."""
        rules = self.holder.rules
        when = datetime.fromtimestamp(time.time() if at is None else at, UTC)
        return oncall_view(rules.schedules, rules.people, when, next_n, only)

    def oncall_lines(self) -> list[str]:
        """One start-up line per schedule naming who is on call now (mobiles masked)."""
        lines = []
        for view in self.oncall(next_n=0):
            shift = view.now
            who = ", ".join(f"{p} {mask_mobile(view.mobiles.get(p, ''))}" for p in shift.people)
            lines.append(f"on call: {view.schedule.name}: {who} until "
                         f"{shift.end:%Y-%m-%d %H:%M %Z}"
                         + (" (override)" if shift.override else ""))
        return lines

    # -- intake ---------------------------------------------------------------------------
    def intake(self, batch: Batch, now: float | None = None) -> dict[str, Any]:
        """Decide and durably store the notifications of one batch.

        Returns the counts the webhook answers with: ``alerts``, ``queued``, ``suppressed``
        (muted, duplicates, over a limit, resolved never paged), ``held`` (storm), and
        ``truncated``/``ignored``/``unrouted``/``skipped`` when non-zero, and ``warnings`` (what
        was read leniently, with its place) when any. Raises :class:`StoreUnavailable`.
        """
        now = time.time() if now is None else now
        rules = self.holder.rules
        for alert in batch.alerts:
            metrics.ALERTS.labels(batch.source, alert.status).inc()
        if batch.truncated_alerts:
            metrics.TRUNCATED.inc(batch.truncated_alerts)
            log.warning("%s left out %d alerts (truncatedAlerts): they cannot be paged",
                        batch.source, batch.truncated_alerts)
        # what templates see as starts_at of an alert without one: read only, the record
        # step below settles the episode (so a webhook answered 503 changes nothing)
        starts = {a.fingerprint: self.store.episode_of(a.fingerprint)
                  for a in batch.alerts if a.starts_at is None}
        plan = decide(batch, rules, datetime.fromtimestamp(now, UTC),
                      {fp: None if s is None else datetime.fromisoformat(s)
                       for fp, s in starts.items()})
        if plan.skipped_mobiles:
            metrics.SKIPPED_MOBILES.inc(len(plan.skipped_mobiles))
        if plan.over_limit:
            metrics.MOBILES_OVER_LIMIT.inc(plan.over_limit)
        limits = rules.limits
        policy = Policy(
            per_mobile_per_hour=limits.per_mobile_per_hour, per_day=limits.per_day,
            storm_threshold=limits.storm.threshold if limits.storm else None,
            storm_window=limits.storm.window if limits.storm else 0.0,
            day=datetime.fromtimestamp(now, self.settings.zone).strftime("%Y-%m-%d"),
        )
        outcomes = self.store.record(plan.notifications, policy, now, plan.episodes)
        counts: dict[str, Any] = {"alerts": len(batch.alerts), "queued": 0, "suppressed": 0,
                                  "held": 0}
        for o in outcomes:
            counts[o.state] = counts.get(o.state, 0) + 1
            metrics.NOTIFICATIONS.labels(o.state, o.reason or "-").inc()
            n = o.notification
            log.info("%s %s [%s] -> %s via route %s: %s%s", n.status, n.alertname or "-",
                     n.fingerprint, rules.who(n.mobile), n.route, o.state,
                     f" ({o.reason})" if o.reason else "")
        if plan.unrouted:
            metrics.UNROUTED.labels(batch.source).inc(plan.unrouted)
            counts["unrouted"] = plan.unrouted
            log.info("%d of %d alerts matched no route", plan.unrouted, len(batch.alerts))
        if batch.truncated_alerts:
            counts["truncated"] = batch.truncated_alerts
        if batch.ignored:
            counts["ignored"] = batch.ignored
        if batch.skipped:
            counts["skipped"] = batch.skipped
        if batch.warnings:
            for w in batch.warnings:
                log.warning("%s webhook: %s", batch.source, w)
        if batch.warnings or plan.warnings:
            counts["warnings"] = [*batch.warnings, *plan.warnings]
        return counts

    # -- health ---------------------------------------------------------------------------
    def readiness(self) -> list[str]:
        """Why the service is not ready (empty when ready): store, rules, and a Juhe
        configuration error met by the configuration in force since this process started or
        the rules were last reloaded (see :func:`bridge.delivery.juhe_config_note`)."""
        problems = []
        try:
            self.store.ping()
            since = max(self.started_at, float(self.holder.state.get("success_ts") or 0))
            juhe = juhe_config_note(self.store.get_status(STATUS_JUHE_CONFIG), self.config_id,
                                    since)
            if juhe:
                problems.append(f"juhe configuration error: {juhe}")
        except Exception as exc:  # StoreUnavailable or a driver error: not ready, say why
            problems.append(f"store unavailable: {exc}")
        return problems
