"""Delivery: claim due SMS from the store, send them through Juhe, record the outcome.

Runs as a thread in every served process (started by the gunicorn config) and as ``bridge
worker``. Claims are leased atomically by the store, so deliverers never send the same SMS at
once; an SMS whose sender died goes out again when its lease ends (at least once).

Policy (SPEC "Delivery guarantees", JUHE.md):

* transient failure -> ``retrying`` with exponential backoff and jitter (``retry_base`` *
  2**attempts, at most ``retry_max``, at least Juhe's ``retry_after``), until ``retry_for``
  seconds after the first attempt, then ``failed``;
* permanent failure -> ``failed`` at once; a configuration failure is also reported to
  ``/readyz`` (store status ``juhe_config``) until a send succeeds again;
* pacing -> at most one SMS per mobile per ``min_gap``; what piled up meanwhile goes out when the
  gap ends, as one storm SMS when a storm template is set, else one by one.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bridge import metrics
from bridge.config import mask_mobiles_in
from bridge.errors import ConfigError, JuheError, StoreUnavailable, TransientError
from bridge.juhe import JuheClient, SendResult
from bridge.rules.load import RuleSet
from bridge.store.base import Claim, Item, Store

log = logging.getLogger(__name__)

STATUS_JUHE_CONFIG = "juhe_config"
#: Items of one mobile loaded per claim when nothing can fold them (no storm template).
CLAIM_ITEMS = 20


@dataclass(frozen=True)
class DeliveryPolicy:
    """Delivery timing, seconds: lease per claim, backoff base and cap, total retry time."""

    lease: float = 120.0
    retention: float = 7 * 86400.0
    prune_every: float = 600.0
    retry_base: float = 2.0
    retry_max: float = 600.0
    retry_for: float = 3600.0
    batch: int = 20


def backoff(attempts: int, policy: DeliveryPolicy, minimum: float | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1-based): exponential with ±20 %
    jitter, capped at ``retry_max``, never below ``minimum``."""
    delay = min(policy.retry_base * (2 ** max(attempts - 1, 0)), policy.retry_max)
    delay *= random.uniform(0.8, 1.2)
    return float(max(delay, minimum or 0.0))


class Deliverer:
    """Sends what the store has due. ``rules()`` returns the rules in force (storm template,
    ``min_gap``); it is called on each pass so that a reload takes effect."""

    def __init__(self, store: Store, client: JuheClient, rules: Callable[[], RuleSet],
                 policy: DeliveryPolicy | None = None) -> None:
        self.store = store
        self.client = client
        self.rules = rules
        self.policy = policy or DeliveryPolicy()
        #: when (monotonic) a successful send next clears the shared juhe_config note: at most
        #: once a second, and at once after this deliverer saw a configuration error
        self._clear_config_at = 0.0
        self.stopping = threading.Event()

    def run_once(self, now: float | None = None) -> int:
        """Claim and deliver one batch of due mobiles; returns how many claims were handled.

        Raises :class:`StoreUnavailable` when the store cannot be reached.
        """
        rules = self.rules()
        now = time.time() if now is None else now
        # load no more of a mobile's backlog than one claim can send (a storm template folds
        # all of it into one SMS, so then all of it)
        cap = 0 if rules.limits.storm is not None else CLAIM_ITEMS
        claims = self.store.claim(now, self.policy.lease, rules.limits.min_gap, self.policy.batch,
                                  cap)
        for n, claim in enumerate(claims):
            if self.stopping.is_set():  # shutting down: give the rest back at once
                self.store.release([i.id for c in claims[n:] for i in c.items], time.time())
                break
            self._deliver(claim, rules)
        return len(claims)

    def prune(self, now: float | None = None) -> int:
        """Delete finished notifications older than the retention period; returns how many."""
        now = time.time() if now is None else now
        n = self.store.prune(now - self.policy.retention)
        if n:
            log.info("pruned %d finished notifications older than %.0f days", n,
                     self.policy.retention / 86400)
        return n

    def run_forever(self, stop: threading.Event, interval: float = 0.5) -> None:
        """Deliver until ``stop`` is set, polling every ``interval`` seconds when idle, and
        prune old records every ``prune_every`` seconds (in batches, between deliveries).
        Once ``stop`` is set, the SMS in hand is finished and the rest of the claim is given
        back to the store at once (not left to its lease)."""
        self.stopping = stop
        next_prune = time.time() + random.uniform(0, self.policy.prune_every / 10)
        while not stop.is_set():
            try:
                if time.time() >= next_prune:
                    next_prune = time.time() + self.policy.prune_every
                    self.prune()
                busy = self.run_once()
            except StoreUnavailable as exc:
                log.error("delivery paused: store unavailable: %s", exc)
                busy = 0
                stop.wait(min(5.0, interval * 10))
            except Exception:  # a bug must not stop delivery for good
                log.exception("delivery pass failed")
                busy = 0
                stop.wait(interval)
            if not busy:
                stop.wait(interval)

    # -- one mobile's claim ---------------------------------------------------------------
    def _deliver(self, claim: Claim, rules: RuleSet) -> None:
        items = claim.items
        storm = rules.limits.storm
        held = [i for i in items if i.state == "held"]
        fold = storm is not None and len(items) > 1 and (bool(held) or claim.gapped)
        if fold and storm is not None:
            variables = self._storm_vars(items, rules, storm.template)
            tpl_id = rules.templates[storm.template].tpl_id
            self._send(items, tpl_id, variables, f"folded {len(items)} into one storm SMS")
            return
        if rules.limits.min_gap > 0 and len(items) > 1:
            first, rest = items[:1], items[1:]
            self.store.release([i.id for i in rest], time.time() + rules.limits.min_gap)
            items = first
        # without pacing a backlog of one mobile goes out one by one; past half the lease (or
        # when stopping) the rest is given back, so no other deliverer claims what is still
        # being sent
        deadline = claim.lease_until - self.policy.lease / 2
        for n, item in enumerate(items):
            if self.stopping.is_set() or (n and time.time() > deadline):
                self.store.release([i.id for i in items[n:]], time.time())
                return
            self._send([item], item.tpl_id, item.variables, "")

    def _storm_vars(self, items: list[Item], rules: RuleSet, template: str) -> dict[str, str]:
        names = list(dict.fromkeys(i.alertname or "?" for i in items))
        context = {
            "count": len(items),
            "alertnames": ",".join(names),
            "mobile": items[0].mobile,
            "window_start": datetime.fromtimestamp(min(i.created_at for i in items), UTC),
            "window_end": datetime.fromtimestamp(max(max(i.due_at for i in items), time.time()),
                                                 UTC),
        }
        return rules.renderer.render(rules.compiled[template], context, rules.var_len(template))

    def _send(self, items: list[Item], tpl_id: int, variables: dict[str, str],
              note: str) -> None:
        ids = [i.id for i in items]
        masked = self.rules().who(items[0].mobile)  # "zhang 138****8000"
        started = time.time()
        try:
            result: SendResult = self.client.send(items[0].mobile, tpl_id, variables)
        except JuheError as exc:
            metrics.JUHE_SECONDS.observe(time.time() - started)
            self._failed(items, exc)
            return
        now = time.time()
        metrics.JUHE_SECONDS.observe(now - started)
        if self.client.dry_run:
            log.warning("DRY-RUN (no JUHE_KEY): would send to %s tpl_id=%s vars=%s %s",
                        masked, tpl_id, mask_mobiles_in(json.dumps(variables,
                                                                   ensure_ascii=False)), note)
            metrics.JUHE_REQUESTS.labels("dry_run", "0").inc()
        else:
            metrics.JUHE_REQUESTS.labels("ok", "0").inc()
            log.info("sent to %s (%s) tpl_id=%s sid=%s fee=%s ids=%s%s %s", masked,
                     items[0].alertname or "-", tpl_id, result.sid, result.fee,
                     ",".join(ids[:5]), "…" if len(ids) > 5 else "", note)
        self.store.mark_sent(ids, result.sid, result.fee, now,
                             reason="dry-run" if self.client.dry_run else note)
        if time.monotonic() >= self._clear_config_at:
            self.store.set_status(STATUS_JUHE_CONFIG, None)
            self._clear_config_at = time.monotonic() + 1.0
        metrics.DELIVERIES.labels("sent").inc(len(ids))

    def _failed(self, items: list[Item], exc: JuheError) -> None:
        now = time.time()
        ids = [i.id for i in items]
        masked = (f"{self.rules().who(items[0].mobile)} ({items[0].alertname or '-'}, "
                  f"id {','.join(ids[:5])}{'…' if len(ids) > 5 else ''})")
        kind = "transient" if isinstance(exc, TransientError) else (
            "config" if isinstance(exc, ConfigError) else "permanent")
        metrics.JUHE_REQUESTS.labels(kind, str(exc.code)).inc()
        reason = mask_mobiles_in(f"juhe {kind} error {exc.code}: {exc.reason}")
        if isinstance(exc, TransientError):
            first = min((i.first_attempt_at or now) for i in items)
            attempts = max(i.attempts for i in items) + 1
            if now - first >= self.policy.retry_for:
                log.error("giving up on %s after %.0fs and %d attempts: %s", masked,
                          now - first, attempts, reason)
                self.store.mark_failed(ids, f"gave up after {attempts} attempts: {reason}", now)
                metrics.DELIVERIES.labels("failed").inc(len(ids))
                return
            # an SMS that may have gone out counts against the carrier's pace for that number
            floor = max(exc.retry_after or 0.0, self.rules().limits.min_gap if exc.maybe_sent
                        else 0.0)
            delay = backoff(attempts, self.policy, floor or None)
            log.warning("send to %s failed (%s), retry %d in %.1fs", masked, reason, attempts,
                        delay)
            self.store.mark_retry(ids, now + delay, reason, now)
            metrics.DELIVERIES.labels("retrying").inc(len(ids))
            return
        if isinstance(exc, ConfigError):
            log.error("CONFIGURATION ERROR from Juhe (check JUHE_KEY, account and tpl_id) "
                      "sending to %s: %s", masked, reason)
            self.store.set_status(STATUS_JUHE_CONFIG, reason)
            self._clear_config_at = 0.0
        else:
            log.error("send to %s failed permanently: %s", masked, reason)
        self.store.mark_failed(ids, reason, now)
        metrics.DELIVERIES.labels("failed").inc(len(ids))
