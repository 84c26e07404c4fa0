"""Delivery: claim due SMS from the store, send them through a :class:`Sender`, record the
outcome.

Runs in the delivery process of ``bridge serve`` (forked and supervised by its master, beside the
web workers: :mod:`bridge.deliveryproc`) and as ``bridge worker``. Claims are leased atomically by
the store, so deliverers never send the same SMS at once; an SMS whose sender died goes out again
when its lease ends (at least once). Every mark carries the claim's lease token: a deliverer whose
lease lapsed (a long pause, a stalled request) and whose items were claimed again changes nothing,
and logs it.

Policy (docs/juhe.md, Answers and error classes; docs/design.md, Delivery and Juhe):

* transient failure -> ``retrying`` with exponential backoff and jitter (``retry_base`` *
  2**attempts, at most ``retry_max``, at least Juhe's ``retry_after``), until ``retry_for``
  seconds after the first attempt, then ``failed``;
* configuration failure (key, account, template) -> ``retrying`` likewise but at least every
  :data:`CONFIG_RETRY_EVERY` seconds, so the SMS goes out once the key or account is fixed; it
  is reported to ``/readyz`` (store status ``juhe_config``, tied to the configuration that met
  it) until a send succeeds;
* permanent failure -> ``failed`` at once. A ``failed`` SMS did not page: the store forgets its
  dedup record, so a later re-send of the alert pages again;
* pacing -> at most one SMS per mobile per ``min_gap``, booked by a send that may have gone out
  (sent, or a timeout/10014), never by a claim or a send that surely did not go out; what piled
  up meanwhile goes out when the gap ends, as one storm SMS when a storm template is set, else
  one by one;
* acknowledged or resolved -> ``suppressed``: before every send (and every re-send after a
  crash: a re-claimed SMS passes here again) the episode of each firing SMS in hand is read,
  and one that is acknowledged or resolved by then ends ``suppressed`` with reason
  ``acknowledged`` / ``resolved`` instead of going out (docs/oncall.md, "What acknowledgement
  stops"). SMS of no episode are sent as they are;
* resolved, not paged -> ``suppressed``: a resolved SMS goes only to a mobile whose firing SMS
  of the episode was sent (its Paged entry's ``sent_at``); after a firing SMS that ended
  ``suppressed`` or ``failed`` it ends ``suppressed`` with reason ``not paged``, decided after
  that firing SMS: one still pending (a retry not due yet) is waited for (docs/oncall.md,
  "Resolved goes to who was paged");
* providers (docs/providers.md): an SMS whose template has a ``fallback`` goes through it once
  Juhe answered a configuration/account error, or has failed transiently for
  ``failover_after`` seconds (unless an attempt may have gone out); a throttled answer
  (Aliyun's flow control, Tencent's ``LimitExceeded.*``, Juhe's 205405) waits a minute and
  never fails over. The provider that accepted an SMS ends it (its message id is stored as
  ``provider:id``); a fallback, once used, is kept for the SMS;
* calls (address ``voice:<mobile>``): one per claim item, never folded into a storm SMS,
  paced per number (``limits.calls``: ``min_gap``, ``per_hour``, ``per_day``); a call whose
  episode was acknowledged or resolved by then ends ``suppressed`` instead; when a call goes
  out, every other call waiting for that number at that moment ends ``suppressed``, reason
  ``folded`` (one call wakes the person for all of them);
* escalation clock: a firing SMS that went out (sent, failed) or met a configuration/account
  error starts its episode's escalation clock (in the store's mark; docs/oncall.md,
  Escalation).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge import metrics
from bridge.config import Settings
from bridge.decide.episodes import Episode
from bridge.errors import (
    ConfigError,
    JuheError,
    StoreUnavailable,
    StoreUnconfirmed,
    ThrottledError,
    TransientError,
)
from bridge.privacy import mask_mobile, mask_mobiles_in
from bridge.providers.base import Sender
from bridge.providers.dispatch import STATUS_CONFIG, Providers
from bridge.rules.model import VOICE_PREFIX, Fallback
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Claim, Item, Store, Wakeup, stored_sid

log = logging.getLogger("bridge.delivery")  # stable log name (not the module path)

STATUS_JUHE_CONFIG = "juhe_config"
#: Items of one mobile loaded per claim when nothing can fold them (no storm template).
CLAIM_MAX_ITEMS = 20
#: A configuration error is tried again at least this often (seconds; docs/juhe.md, Answers
#: and error classes).
CONFIG_RETRY_EVERY = 60.0
#: The reason of a resolved SMS whose firing SMS never went out (docs/oncall.md, "Resolved
#: goes to who was paged"; the record step gives it to one whose firing was never paged).
NOT_PAGED = "not paged"
#: A resolved SMS waiting for its firing SMS to be decided is looked at again after at least
#: this many seconds.
RESOLVED_WAIT = 1.0
#: Seconds between two :meth:`Store.maintain` calls of a delivery loop.
MAINTAIN_EVERY = 1.0
#: The longest wait (seconds) between two passes while the rules have heartbeats, whose timer
#: (bridge.deliver.heartbeats) decides a miss within about a second of its deadline.
HEARTBEAT_LOOK = 1.0
#: The shortest wait (seconds) between two passes that found nothing to do.
MIN_IDLE = 0.002
#: The status note (:meth:`Store.set_status`) holding when a deliverer of any process or
#: instance last finished a pass of its loop (UNIX seconds, as text): what ``/readyz`` reads.
STATUS_DELIVERY_PASS = "delivery_pass"
#: A deliverer writes :data:`STATUS_DELIVERY_PASS` at most this often (seconds; a quarter of
#: ``BRIDGE_DELIVERY_STALL`` when that is shorter), not on every pass: on SQLite each write
#: takes the write lock the webhooks need.
PASS_RECORD_EVERY = 5.0


def config_id(settings: Settings) -> str:
    """A short hash naming the Juhe configuration in force (URL and key; never the key
    itself), which a ``juhe_config`` note is tied to."""
    raw = f"{settings.juhe_url}\0{settings.juhe_key or ''}".encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class DeliveryPolicy:
    """Delivery timing, seconds: lease per claim, backoff base and cap, total retry time,
    retention of finished records and how often they are pruned, ``stall``
    (``BRIDGE_DELIVERY_STALL``: a loop with no finished pass for that long is hung);
    ``max_mobiles``: mobiles per claim. Build it with :meth:`from_settings`: what the
    environment configures has its default only in :class:`bridge.config.Settings`."""

    retention: float
    retry_base: float
    retry_for: float
    lease: float = 120.0
    #: how long storing a send's result is retried while the store is unavailable (long
    #: enough for a Redis failover, well within the lease)
    mark_retry_for: float = 30.0
    #: how long delivery sends nothing of a claim too few Redis replicas confirmed
    #: (``BRIDGE_REDIS_WAIT``; long enough for a failover, after which the replicas follow the
    #: new master): past it, replicas away for longer do not stop delivery
    confirm_wait: float = 30.0
    prune_every: float = 600.0
    retry_max: float = 600.0
    max_mobiles: int = 20
    stall: float = Settings.delivery_stall
    #: seconds of transient Juhe failure before an SMS goes through its template's fallback
    failover_after: float = Settings.failover_after

    @classmethod
    def from_settings(cls, settings: Settings, **fixed: Any) -> DeliveryPolicy:
        """The policy ``settings`` configure; ``fixed`` sets the other fields (e.g. ``lease``)."""
        return cls(retention=settings.retention, retry_base=settings.retry_base,
                   retry_for=settings.retry_for, stall=settings.delivery_stall,
                   failover_after=settings.failover_after, **fixed)


def backoff(attempts: int, policy: DeliveryPolicy, minimum: float | None = None,
            cap: float | None = None) -> float:
    """Seconds to wait after ``attempts`` failed attempts (1-based): exponential with ±20 %
    jitter, capped at ``retry_max`` (and ``cap``), never below ``minimum``."""
    delay = min(policy.retry_base * (2 ** max(attempts - 1, 0)), policy.retry_max)
    delay *= random.uniform(0.8, 1.2)
    if cap is not None:
        delay = min(delay, cap)
    return float(max(delay, minimum or 0.0))


class Deliverer:
    """Sends what the store has due. ``rules()`` returns the rules in force (storm template,
    ``min_gap``); it is called on each pass so that a reload takes effect. ``clock`` gives UNIX
    seconds (injected by tests); ``config`` is :func:`config_id` of the sender's configuration.

    Marks are not batched: each SMS sent is marked in a store transaction of its own before the
    next one of the claim is sent, so a crash between two sends re-sends at most the one in
    hand. One transaction for a claim's results would have to wait for its last send, and a
    crash before it would send every SMS of the claim again after its lease. What is already
    one step stays one: a storm SMS marks all it folded, the rest of a claim goes back in one
    release. The mark of a sent SMS also reads the episode state of the claim's next one
    (:meth:`Store.mark_sent_and_check`): that is its check before its send, read after the
    mark, in one round trip instead of two (bench/TARGETS.md, "Time to page").

    Watched (docs/operations.md, "Watched delivery"): after each finished pass of
    :meth:`run_forever`, and after each SMS marked within a long pass, ``on_pass()`` is called
    (the supervisor's heartbeat of ``bridge serve``'s delivery process) and, at most every
    :data:`PASS_RECORD_EVERY` seconds, the time is stored as :data:`STATUS_DELIVERY_PASS`.

    Prompt (docs/operations.md, "Prompt delivery"): between passes with nothing to do it waits
    on ``wake`` (:class:`~bridge.store.base.Wakeup`: a web worker or the store wakes it when an
    SMS due now was stored), at most until the store's next due time
    (:meth:`Store.next_due`), and at most the polling interval.
    """

    def __init__(self, store: Store, sender: Sender, rules: Callable[[], RuleSet],
                 policy: DeliveryPolicy | None = None, *, config: str = "",
                 clock: Callable[[], float] = time.time,
                 sidecar: Callable[[], int] | None = None,
                 on_pass: Callable[[], object] | None = None,
                 providers: Providers | None = None,
                 wake: Wakeup | None = None) -> None:
        self.store = store
        self.on_pass = on_pass
        self.wake = wake
        #: Aliyun and Tencent Cloud, for fallback SMS and calls (none: those fail as
        #: configuration errors)
        self.providers = providers or Providers()
        #: run on every pass of :meth:`run_forever` after delivering (the escalation
        #: steps, :meth:`bridge.deliver.escalation.Escalator.run_once`); returns how much it did
        self.sidecar = sidecar
        self.sender = sender
        self.rules = rules
        self.policy = policy or DeliveryPolicy.from_settings(Settings())
        self.config = config
        self.clock = clock
        #: when (monotonic) a successful send next clears the shared juhe_config note: at most
        #: once a second, and at once after this deliverer saw a configuration error
        self._clear_config_at = 0.0
        #: providers other than Juhe whose configuration error this deliverer noted
        self._provider_errors: set[str] = set()
        self.stopping = threading.Event()
        #: set when a mark of the claim in hand was fenced or needed the store back (see
        #: _settle): the claim may be lost, so no more of it is sent
        self._interrupted = False
        #: since when (monotonic) the store's replicas have not confirmed this deliverer's
        #: claims or results (None: they did); see _await_replicas
        self._short_since: float | None = None
        self._next_prune = 0.0
        self._next_maintain = 0.0
        self._next_record = 0.0

    def run_once(self, now: float | None = None) -> int:
        """Claim and deliver one batch of due mobiles; returns how many claims were handled.

        Raises :class:`StoreUnavailable` when the store cannot be reached, and
        :class:`StoreUnconfirmed` when it gave the batch back unsent because too few replicas
        confirmed the claim (:meth:`_await_replicas`).
        """
        rules = self.rules()
        now = self.clock() if now is None else now
        # load no more of a mobile's backlog than one claim can send (a storm template folds
        # all of it into one SMS, so then all of it)
        cap = 0 if rules.limits.storm is not None else CLAIM_MAX_ITEMS
        claims = self.store.claim(now, self.policy.lease, self.policy.max_mobiles, cap)
        if claims and all(c.confirmed for c in claims):
            self._short_since = None
        elif claims and self._await_replicas():
            self._give_back(claims)
        for n, claim in enumerate(claims):
            self._interrupted = False
            # shutting down, or past half the lease (a slow provider: the later mobiles' leases
            # would lapse before their turn and another deliverer page them too): give the rest
            # back at once, unpaced
            late = n > 0 and self.clock() > claim.lease_until - self.policy.lease / 2
            if self.stopping.is_set() or late:
                if late:
                    log.warning("past half the lease: %d mobiles of this pass given back unsent",
                                len(claims) - n)
                for rest in claims[n:]:
                    at = self.clock()
                    self._release(rest, rest.items, at, pace_until=at)
                break
            self._deliver(claim, rules)
        return len(claims)

    def _await_replicas(self) -> bool:
        """The store took a claim or a result that fewer replicas confirmed than
        ``BRIDGE_REDIS_WAIT`` asks: whether delivery waits for them. It does for
        ``policy.confirm_wait`` seconds from the first such answer since a claim was last
        confirmed: a failover may be under way, and a claim or result on a master that a
        failover replaces is dropped, so its SMS would go out again. Replicas away for longer
        do not stop delivery (a result then stands on the master alone; docs/design.md,
        Redis)."""
        now = time.monotonic()
        if self._short_since is None:
            self._short_since = now
        return now - self._short_since < self.policy.confirm_wait

    def _give_back(self, claims: list[Claim]) -> None:
        """Give ``claims`` back unsent at once (too few replicas confirmed them; see
        :meth:`_await_replicas`) and raise :class:`StoreUnconfirmed`, so that delivery pauses
        as for a store outage."""
        for claim in claims:
            at = self.clock()
            self._release(claim, claim.items, at, pace_until=at)
        raise StoreUnconfirmed(
            f"{sum(len(c.items) for c in claims)} SMS of {len(claims)} claims given back unsent: "
            "too few redis replicas confirmed the claim (BRIDGE_REDIS_WAIT; a failover may be "
            f"under way); delivery waits for them up to {self.policy.confirm_wait:g}s")

    def prune(self, now: float | None = None) -> int:
        """Delete finished notifications older than the retention period; returns how many."""
        now = self.clock() if now is None else now
        n = self.store.prune(now - self.policy.retention)
        if n:
            log.info("pruned %d finished notifications older than %.0f days", n,
                     self.policy.retention / 86400)
        return n

    def run_forever(self, stop: threading.Event,
                    interval: float = Settings.delivery_interval) -> None:
        """Deliver until ``stop`` is set, and prune old records every ``prune_every`` seconds
        (in batches, between deliveries). When a pass found nothing to do, wait for a wake or
        the next due time (:meth:`_idle`), at most ``interval`` seconds (the polling fallback;
        at most a quarter of ``policy.stall``, so that an idle loop is never taken for a hung
        one). Once ``stop`` is set, the SMS in hand is finished and the rest of the claim is
        given back to the store at once (not left to its lease)."""
        self.stopping = stop
        self._next_prune = self.clock() + random.uniform(0, self.policy.prune_every / 10)
        interval = min(interval, self.policy.stall / 4)
        while not stop.is_set():
            try:
                # SMS first, upkeep last: a woken pass sends before it checkpoints or prunes
                busy = self.run_once()
                busy += self.sidecar() if self.sidecar is not None else 0
                self._chores()
                self._progress()
                if not busy:
                    self._idle(stop, interval)
            except StoreUnavailable as exc:
                log.error("delivery paused: store unavailable: %s", exc)
                self._beat()  # alive, only the store is not: not a hung loop
                stop.wait(min(5.0, interval * 10, self.policy.stall / 4))
            except Exception:  # a bug must not stop delivery for good
                log.exception("delivery pass failed")
                self._beat()
                stop.wait(interval)

    def _idle(self, stop: threading.Event, interval: float) -> None:
        """Wait until the store's next due time (:meth:`Store.next_due`: a retry's backoff,
        the end of a pacing gap, hold or storm window, an escalation step), a wake, or
        ``interval`` seconds (at most :data:`HEARTBEAT_LOOK` while the rules have
        heartbeats), whichever comes first; at least :data:`MIN_IDLE` seconds, so
        that a due time the last claim could not use yet (a clock step) costs no busy loop.
        Raises :class:`StoreUnavailable`."""
        due = self.store.next_due()
        timeout = interval if due is None else min(interval, max(due - self.clock(), MIN_IDLE))
        if self.rules().heartbeats:  # their timer looks every second (docs/heartbeats.md)
            timeout = min(timeout, HEARTBEAT_LOOK)
        if self.wake is None:
            stop.wait(timeout)
        else:
            self.wake.wait(timeout)

    def _beat(self) -> None:
        """Tell the supervisor (``on_pass``) that the loop is not hung."""
        if self.on_pass is not None:
            self.on_pass()

    def _progress(self) -> None:
        """A pass (or one SMS of a long pass) has finished: :meth:`_beat`, and store the time
        as :data:`STATUS_DELIVERY_PASS` when the last one stored is older than
        :data:`PASS_RECORD_EVERY` (or a quarter of the stall time). A store that cannot take
        it is skipped: the next pass tries again."""
        self._beat()
        now = self.clock()
        if now < self._next_record:
            return
        self._next_record = now + min(PASS_RECORD_EVERY, self.policy.stall / 4)
        try:
            self.store.set_status(STATUS_DELIVERY_PASS, repr(now))
        except StoreUnavailable as exc:
            log.debug("recording the delivery pass failed: %s", exc)
            self._next_record = 0.0

    def _chores(self) -> None:
        """Between deliveries: prune every ``prune_every`` seconds, and let the store do its
        upkeep every :data:`MAINTAIN_EVERY` seconds (:meth:`Store.maintain`: SQLite's WAL
        checkpoint, done here so that no webhook waits for it)."""
        now = self.clock()
        if now >= self._next_prune:
            self._next_prune = now + self.policy.prune_every
            self.prune()
        if now >= self._next_maintain:
            self._next_maintain = now + MAINTAIN_EVERY
            self.store.maintain()

    # -- one mobile's claim ---------------------------------------------------------------
    def _deliver(self, claim: Claim, rules: RuleSet) -> None:
        if claim.mobile.startswith(VOICE_PREFIX):
            self._calls(claim, rules)
            return
        items = self._unstopped(claim, claim.items, last=True)
        if not items:
            return
        if self._interrupted:  # the suppress mark was fenced: the claim may be lost
            at = self.clock()
            self._release(claim, items, at, pace_until=at)
            return
        storm = rules.limits.storm
        gap = rules.limits.min_gap
        held = [i for i in items if i.state == "held"]
        fold = storm is not None and len(items) > 1 and (bool(held) or claim.gapped)
        if fold and storm is not None:
            variables = self._storm_vars(items, rules, storm.template)
            tpl_id = rules.templates[storm.template].tpl_id or 0
            self._send(claim, items, tpl_id, variables, f"folded {len(items)} into one storm SMS",
                       rules, last=True, template=storm.template)
            return
        if gap > 0 and len(items) > 1:
            # the rest waits for the gap; the mobile stays held until the first one's mark
            first, rest = items[:1], items[1:]
            self._release(claim, rest, self.clock() + gap, pace_until=None)
            items = first
        # without pacing a backlog of one mobile goes out one by one; past half the lease (or
        # when stopping) the rest is given back, so no other deliverer claims what is still
        # being sent
        deadline = claim.lease_until - self.policy.lease / 2
        # the episode states of the item at hand, read with the mark of the one before it
        # (Store.mark_sent_and_check: a round trip less per SMS); None: not read yet
        states: dict[tuple[str, str], str] | None = None
        for n, item in enumerate(items):
            if self._interrupted:  # see _fenced and _settle: send no more of it
                # give back what this claim still holds (the release is fenced by the claim's
                # token: what another deliverer claimed since is left alone), so that a Redis
                # failover delays the rest by seconds, not by the lease
                log.warning("claim on %s may be lost: %d SMS of it given back unsent",
                            mask_mobile(claim.mobile), len(items) - n)
                at = self.clock()
                self._release(claim, items[n:], at, pace_until=at + gap if n else at)
                return
            if self.stopping.is_set() or (n and self.clock() > deadline):
                at = self.clock()
                self._release(claim, items[n:], at, pace_until=at + gap)
                return
            if n and not self._unstopped(claim, [item], last=n == len(items) - 1,
                                         states=states):
                states = None
                continue
            after = items[n + 1] if n + 1 < len(items) else None
            check = ([(after.fingerprint, after.episode)]
                     if after is not None and after.status == "firing" else None)
            states = self._send(claim, [item], item.tpl_id, item.variables, "", rules,
                                last=after is None, template=item.template, check=check)

    def _unstopped(self, claim: Claim, items: list[Item], last: bool,
                   states: dict[tuple[str, str], str] | None = None) -> list[Item]:
        """``items`` without those that must not go out now, each marked fenced by the claim's
        token: first the firing SMS whose episode is acknowledged or resolved by now end
        ``suppressed`` (reason ``acknowledged`` / ``resolved``), then the resolved SMS whose
        firing SMS never went out end ``suppressed`` (reason ``not paged``), and those whose
        firing SMS is still to be decided are given back until it is (:meth:`_unpaged`).
        When none is left and ``last``, the last mark ends the mobile's hold without a gap
        (nothing went out). ``states``: the episode states of the firing SMS of ``items``,
        when the caller read them since the last send (with its mark); else they are read
        here. Raises :class:`StoreUnavailable`."""
        firing = {(i.fingerprint, i.episode) for i in items if i.status == "firing"}
        resolved = {(i.fingerprint, i.episode) for i in items if i.status == "resolved"}
        if not firing and not resolved:
            return items
        # states only for the firing SMS (one cheap read before each send); whole episodes,
        # with who was paged, only for the resolved ones
        if states is None:
            states = self.store.episode_states(sorted(firing)) if firing else {}
        episodes = self.store.episodes_by_key(sorted(resolved)) if resolved else {}
        stopped: dict[str, list[Item]] = {}
        for i in items:
            state = states.get((i.fingerprint, i.episode)) if i.status == "firing" else None
            if state is not None and state != "firing":
                stopped.setdefault(state, []).append(i)
        marks = sorted(stopped.items())
        unpaged, waiting, until = self._unpaged(claim, items, episodes,
                                                {i.id for _, g in marks for i in g})
        if unpaged:
            marks.append((NOT_PAGED, unpaged))
        if not marks and not waiting:
            return items
        gone_ids = {i.id for _, g in marks for i in g} | {i.id for i in waiting}
        rest = [i for i in items if i.id not in gone_ids]
        now = self.clock()
        for n, (reason, gone) in enumerate(marks):
            ids = [i.id for i in gone]
            final = last and not rest and not waiting and n == len(marks) - 1
            log.info("not sent to %s (%s): %s, ids=%s", mask_mobile(gone[0].mobile),
                     gone[0].alertname or "-", "no firing SMS of the episode went out to it"
                     if reason == NOT_PAGED else f"episode {reason} by now", ",".join(ids[:5]))
            pace = now if final else None

            def mark(ids: list[str] = ids, reason: str = reason,
                     pace: float | None = pace) -> int:
                return self.store.mark_suppressed(ids, reason, now, token=claim.token,
                                                  pace_until=pace)

            self._fenced(claim, ids, "suppressed", mark)
            metrics.DELIVERIES.labels("suppressed").inc(len(ids))
        if waiting:
            log.info("resolved SMS to %s (%s) waits %.0fs for its firing SMS, ids=%s",
                     mask_mobile(claim.mobile), waiting[0].alertname or "-", until - now,
                     ",".join(i.id for i in waiting[:5]))
            self._release(claim, waiting, until, pace_until=now if last and not rest else None)
        return rest

    def _unpaged(self, claim: Claim, items: list[Item], episodes: dict[tuple[str, str], Episode],
                 stopped: set[str]) -> tuple[list[Item], list[Item], float]:
        """The resolved SMS of ``items`` that must not go out now, as ``(unpaged, waiting,
        until)`` (docs/oncall.md, "Resolved goes to who was paged": only to a mobile whose
        firing SMS of the episode was sent). One whose Paged entry has no ``sent_at`` is
        ``waiting`` while a firing SMS of its episode to the mobile is pending outside
        ``items`` (a retry not due yet): it is due again at ``until``, when the last of those
        is (at least :data:`RESOLVED_WAIT` from now); else it is ``unpaged``, unless a firing
        SMS of its episode in ``items`` goes out before it (not among ``stopped``, the ids
        suppressed now). One of no stored episode or no Paged entry (stored by an older
        version) goes as it is."""
        unsent = [i for i in items if i.status == "resolved" and not _firing_sent(i, episodes)]
        going = {(i.fingerprint, i.episode) for i in items
                 if i.status == "firing" and i.id not in stopped}
        unsent = [i for i in unsent if (i.fingerprint, i.episode) not in going]
        if not unsent:
            return [], [], 0.0
        hand = {i.id for i in items}
        due: dict[tuple[str, str], float] = {}
        for f in self.store.pending(claim.mobile):
            if f.status == "firing" and f.id not in hand:
                key = (f.fingerprint, f.episode)
                due[key] = max(due.get(key, f.due_at), f.due_at)
        waiting = [i for i in unsent if (i.fingerprint, i.episode) in due]
        until = max([self.clock() + RESOLVED_WAIT,
                     *(due[(i.fingerprint, i.episode)] for i in waiting)])
        unpaged = [i for i in unsent if (i.fingerprint, i.episode) not in due]
        return unpaged, waiting, until

    def _storm_vars(self, items: list[Item], rules: RuleSet, template: str) -> dict[str, str]:
        names = list(dict.fromkeys(i.alertname or "?" for i in items))
        context = {
            "count": len(items),
            "firing": sum(1 for i in items if i.status == "firing"),
            "resolved": sum(1 for i in items if i.status == "resolved"),
            "alertnames": ",".join(names),
            "mobile": items[0].mobile,
            "window_start": datetime.fromtimestamp(min(i.created_at for i in items), UTC),
            "window_end": datetime.fromtimestamp(max(max(i.due_at for i in items), self.clock()),
                                                 UTC),
        }
        return rules.renderer.render(rules.compiled[template], context, rules.var_len(template))

    def _release(self, claim: Claim, items: list[Item], due_at: float,
                 pace_until: float | None) -> None:
        ids = [i.id for i in items]
        self._fenced(claim, ids, "release", lambda: self.store.release(
            ids, due_at, token=claim.token, pace_until=pace_until))

    def _fenced(self, claim: Claim, ids: list[str], what: str, mark: Callable[[], int]) -> int:
        """Store a mark (:meth:`_settle`) and log the marks a lapsed lease made void (another
        deliverer holds those items now, or a Redis failover lost the claim); then no more of
        the claim is sent. Returns what the mark returned (items changed)."""
        changed = self._settle(mask_mobile(claim.mobile), mark)
        self._progress()
        if changed < len(ids):
            self._interrupted = True
            log.warning("lease on %s lapsed: mark %s ignored for %d of %d items (claimed again"
                        " since)", mask_mobile(claim.mobile), what, len(ids) - changed, len(ids))
        return changed

    def _settle(self, masked: str, mark: Callable[[], int]) -> int:
        """Store the result of a send (``mark``; returns how many items it changed), retrying
        while the store is briefly unavailable, e.g. a Redis failover: a result that is not
        stored lets the SMS go out again when its lease ends.

        Unreachable: retried with backoff (0.1 s doubling to 2 s) for up to
        ``policy.mark_retry_for`` seconds (5 s once stopping), then :class:`StoreUnavailable`
        is raised and delivery pauses (at least once: the SMS may go again after its lease).
        Written but not confirmed by enough replicas (:class:`StoreUnconfirmed`, after the
        ``WAIT`` already waited): while delivery waits for replicas (:meth:`_await_replicas`:
        a failover may be under way, and a master that is replaced drops what it took) it is
        stored again likewise until they confirm it (a mark is fenced by the claim's token, so
        storing it twice changes nothing more); then, or once they are away for longer, it is
        accepted with a warning (counted as changing every item), since the result stands on
        the master and delivery must go on while replicas are away. After an unreachable store
        or an unconfirmed result the rest of the claim is not sent (a failover may have lost
        it).
        """
        started = time.monotonic()
        delay = 0.1
        stood = False  # an attempt was written but not confirmed

        def late() -> bool:  # no time left for another attempt
            budget = 5.0 if self.stopping.is_set() else self.policy.mark_retry_for
            return time.monotonic() - started + delay > budget

        while True:
            try:
                changed = mark()
                return 1 << 30 if stood else changed
            except StoreUnconfirmed as exc:
                stood = True
                if not self._await_replicas() or late():
                    log.warning("result for %s stored on the redis master only: %s", masked,
                                exc)
                    return 1 << 30
                self._interrupted = True  # a failover may be under way: send no more of it
                log.warning("result for %s not confirmed by the redis replicas, storing it "
                            "again in %.1fs: %s", masked, delay, exc)
            except StoreUnavailable as exc:
                # a failover may have lost this deliverer's claim, so another may be sending
                # the rest of it now: send no more of it (its lease, if kept, ends normally)
                self._interrupted = True
                if late():
                    raise
                log.warning("storing the result for %s failed, retrying in %.1fs: %s", masked,
                            delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _provider(self, items: list[Item], rules: RuleSet,
                  template: str | None) -> tuple[str, Fallback | None]:
        """Which provider sends this SMS now: ``("juhe", None)``, or the template's fallback
        when the last attempt went through it, or Juhe's last answer was a configuration or
        account error, or Juhe has failed transiently for ``failover_after`` seconds (and no
        attempt may have gone out). Read from the items' stored reasons (see :meth:`_failed`)."""
        tpl = rules.templates.get(template) if template else None
        fallback = tpl.fallback if tpl is not None else None
        if fallback is None:
            return "juhe", None
        first = min((i.first_attempt_at for i in items if i.first_attempt_at), default=None)
        if use_fallback([i.reason for i in items], first, self.clock(), fallback.provider,
                        self.policy.failover_after):
            return fallback.provider, fallback
        return "juhe", None

    def _send(self, claim: Claim, items: list[Item], tpl_id: int, variables: dict[str, str],
              note: str, rules: RuleSet, last: bool, template: str | None = None,
              check: list[tuple[str, str]] | None = None
              ) -> dict[tuple[str, str], str] | None:
        """Send ``items`` as one SMS and store the outcome. With ``check`` (the episode keys
        of the claim's next SMS) a sent mark also reads their states
        (:meth:`Store.mark_sent_and_check`), returned for the check before that send;
        ``None`` when they were not read (not asked, the send failed, or the mark was not
        confirmed)."""
        ids = [i.id for i in items]
        masked = rules.who(items[0].mobile)  # "zhang 138****8000"
        provider, fallback = self._provider(items, rules, template)
        started = self.clock()
        try:
            if fallback is not None:
                result = self.providers.send_sms(fallback, items[0].mobile, variables)
            else:
                result = self.sender.send(items[0].mobile, tpl_id, variables)
        except JuheError as exc:
            metrics.JUHE_SECONDS.observe(max(self.clock() - started, 0.0))
            self._failed(claim, items, exc, rules)
            return None
        now = self.clock()
        metrics.JUHE_SECONDS.observe(max(now - started, 0.0))
        metrics.JUHE_REQUESTS.labels(result.outcome, "0").inc()
        dry = result.outcome == "dry_run"
        if not dry:
            metrics.SMS_SENT.labels(provider).inc()
        log.info("%s to %s (%s) tpl_id=%s sid=%s fee=%s via %s ids=%s%s %s",
                 "dry-run, not sent" if dry else "sent", masked, items[0].alertname or "-",
                 tpl_id, result.sid, result.fee, provider, ",".join(ids[:5]),
                 "…" if len(ids) > 5 else "", note)
        # the gap starts at the send; before the last SMS of the claim the mobile stays held
        sid, reason = stored_sid(provider, result.sid), "dry-run" if dry else (
            note or _notice_reason(items))
        pace_until = now + rules.limits.min_gap if last else None
        read: list[dict[tuple[str, str], str]] = []

        def mark() -> int:
            if not check:
                return self.store.mark_sent(ids, sid, result.fee, now, reason,
                                            token=claim.token, pace_until=pace_until)
            changed, states = self.store.mark_sent_and_check(
                ids, sid, result.fee, now, reason, token=claim.token, pace_until=pace_until,
                check=check)
            read.append(states)
            return changed

        self._fenced(claim, ids, "sent", mark)
        self._config_ok(provider)
        metrics.DELIVERIES.labels("sent").inc(len(ids))
        return read[-1] if read else None

    def _config_ok(self, provider: str) -> None:
        """A send through ``provider`` succeeded: its configuration note is cleared (Juhe's at
        most once a second, at once after this deliverer saw an error)."""
        if provider != "juhe":
            if provider in self._provider_errors:
                self.store.set_status(STATUS_CONFIG[provider], None)
                self._provider_errors.discard(provider)
            return
        if time.monotonic() >= self._clear_config_at:
            self.store.set_status(STATUS_JUHE_CONFIG, None)
            self._clear_config_at = time.monotonic() + 1.0

    # -- calls ------------------------------------------------------------------------------
    def _calls(self, claim: Claim, rules: RuleSet) -> None:
        """A number's due calls: those whose episode was acknowledged or resolved meanwhile
        end ``suppressed`` (:meth:`_unstopped`); the first of the rest is made (or held by the
        pacing), the others given back until the gap ends; once a call went out, those (and
        every other call then waiting for the number) end ``suppressed``, reason ``folded``, in
        the store's sent mark (docs/providers.md, Calls)."""
        items = self._unstopped(claim, claim.items, last=True)
        if not items:
            return
        now = self.clock()
        if self._interrupted:  # the suppress mark was fenced: the claim may be lost
            self._release(claim, items, now, pace_until=now)
            return
        calls = rules.limits.calls
        first, rest = items[0], items[1:]
        if rest:
            self._release(claim, rest, now + calls.min_gap, pace_until=None)
        wait = self._call_wait(claim.mobile, rules, now)
        if wait > 0:
            log.info("call to %s (%s) held %.0fs by the call limits", rules.who(claim.mobile),
                     first.alertname or "-", wait)
            self._fenced(claim, [first.id], "release", lambda: self.store.release(
                [first.id], now + wait, token=claim.token, pace_until=now + wait))
            return
        self._call(claim, first, rules)

    def _call_wait(self, address: str, rules: RuleSet, now: float) -> float:
        """Seconds until one more call to ``address`` keeps within ``limits.calls`` (0: now),
        from the calls made to it in the last day."""
        calls = rules.limits.calls
        made = sorted((i.updated_at for i in self.store.recent(
            calls.per_day + 1, "sent", address) if now - i.updated_at < 86400), reverse=True)
        waits = [0.0]
        if made:
            waits.append(made[0] + calls.min_gap - now)
        hour = [t for t in made if now - t < 3600]
        if len(hour) >= calls.per_hour:
            waits.append(hour[calls.per_hour - 1] + 3600 - now)
        if len(made) >= calls.per_day:
            waits.append(made[calls.per_day - 1] + 86400 - now)
        return max(waits)

    def _call(self, claim: Claim, item: Item, rules: RuleSet) -> None:
        tpl = rules.templates.get(item.template or "")
        voice = tpl.voice if tpl is not None else None
        if voice is None:
            now = self.clock()
            reason = f"template {item.template!r} is no longer a voice template in the rules"
            log.error("call to %s failed: %s", rules.who(claim.mobile), reason)
            self._fenced(claim, [item.id], "failed", lambda: self.store.mark_failed(
                [item.id], reason, now, token=claim.token, pace_until=None))
            metrics.DELIVERIES.labels("failed").inc()
            return
        try:
            result = self.providers.call(voice, item.mobile, item.variables)
        except JuheError as exc:
            self._failed(claim, [item], exc, rules, gap=rules.limits.calls.min_gap)
            return
        now = self.clock()
        dry = result.outcome == "dry_run"
        if not dry:
            metrics.CALLS_MADE.labels(voice.provider).inc()
        log.info("%s %s (%s) via %s template=%s call_id=%s id=%s",
                 "dry-run, not called:" if dry else "called", rules.who(claim.mobile),
                 item.alertname or "-", voice.provider, item.template, result.sid, item.id)
        # one call wakes the person for every call waiting for the number: those end
        # suppressed, reason folded (docs/providers.md, Calls)
        changed = self._fenced(claim, [item.id], "sent", lambda: self.store.mark_sent(
            [item.id], stored_sid(voice.provider, result.sid), result.fee, now,
            reason="dry-run" if dry else "", token=claim.token,
            pace_until=now + rules.limits.calls.min_gap, fold=True))
        self._config_ok(voice.provider)
        metrics.DELIVERIES.labels("sent").inc()
        if changed > 1:
            log.info("%d more calls waiting for %s folded into this one", changed - 1,
                     rules.who(claim.mobile))
            metrics.DELIVERIES.labels("suppressed").inc(changed - 1)

    def _failed(self, claim: Claim, items: list[Item], exc: JuheError, rules: RuleSet,
                gap: float | None = None) -> None:
        now = self.clock()
        ids = [i.id for i in items]
        masked = (f"{rules.who(claim.mobile)} ({items[0].alertname or '-'}, "
                  f"id {','.join(ids[:5])}{'…' if len(ids) > 5 else ''})")
        kind = "throttled" if isinstance(exc, ThrottledError) else (
            "transient" if isinstance(exc, TransientError) else (
                "config" if isinstance(exc, ConfigError) else "permanent"))
        if exc.provider == "juhe":
            metrics.JUHE_REQUESTS.labels(kind, str(exc.code)).inc()
        # the stored reason names the provider and the class: the next attempt's provider is
        # read from it (_provider)
        reason = mask_mobiles_in(f"{exc.provider} {kind} error {exc.code}: {exc.reason}")
        gap = rules.limits.min_gap if gap is None else gap
        # only a send that may have gone out books the carrier's gap for that number
        pace_until = now + gap if exc.maybe_sent else now
        if isinstance(exc, ConfigError):
            self._config_error(exc.provider, masked, reason, now)
        if isinstance(exc, TransientError | ConfigError):
            first = min((i.first_attempt_at or now) for i in items)
            attempts = max(i.attempts for i in items) + 1
            if now - first >= self.policy.retry_for:
                log.error("giving up on %s after %.0fs and %d attempts: %s", masked,
                          now - first, attempts, reason)
                self._fenced(claim, ids, "failed", lambda: self.store.mark_failed(
                    ids, f"gave up after {attempts} attempts: {reason}", now,
                    token=claim.token, pace_until=pace_until))
                metrics.DELIVERIES.labels("failed").inc(len(ids))
                return
            floor = max(exc.retry_after or 0.0, gap if exc.maybe_sent else 0.0)
            cap = CONFIG_RETRY_EVERY if isinstance(exc, ConfigError) else None
            delay = backoff(attempts, self.policy, floor or None, cap)
            log.warning("send to %s failed (%s), retry %d in %.1fs", masked, reason, attempts,
                        delay)
            # a configuration/account error starts the escalation clock: the page reaches
            # nobody until someone fixes the provider (docs/oncall.md, Escalation)
            self._fenced(claim, ids, "retrying", lambda: self.store.mark_retry(
                ids, now + delay, reason, now, token=claim.token, pace_until=pace_until,
                start_clock=isinstance(exc, ConfigError)))
            metrics.DELIVERIES.labels("retrying").inc(len(ids))
            return
        log.error("send to %s failed permanently: %s", masked, reason)
        self._fenced(claim, ids, "failed", lambda: self.store.mark_failed(
            ids, reason, now, token=claim.token, pace_until=pace_until))
        metrics.DELIVERIES.labels("failed").inc(len(ids))

    def _config_error(self, provider: str, masked: str, reason: str, now: float) -> None:
        """Log a configuration/account error and note it for ``/readyz``."""
        if provider == "juhe":
            log.error("CONFIGURATION ERROR from Juhe (check JUHE_KEY, account and tpl_id) "
                      "sending to %s: %s", masked, reason)
            self.store.set_status(STATUS_JUHE_CONFIG, json.dumps(
                {"reason": reason, "config": self.config, "at": now}, ensure_ascii=False))
            self._clear_config_at = 0.0
            return
        log.error("CONFIGURATION ERROR from %s (check its credentials, account, sign name and "
                  "template) sending to %s: %s", provider, masked, reason)
        self.store.set_status(STATUS_CONFIG[provider], json.dumps(
            {"reason": reason, "config": self.providers.config_ids.get(provider, ""), "at": now},
            ensure_ascii=False))
        self._provider_errors.add(provider)


def _firing_sent(item: Item, episodes: dict[tuple[str, str], Episode]) -> bool:
    """Whether ``item``'s mobile counts as told of its episode: its Paged entry there has a
    ``sent_at``, or there is no stored episode or no Paged entry to tell (an alert stored by an
    older version: sent as it was)."""
    e = episodes.get((item.fingerprint, item.episode))
    p = e.paged_to(item.address) if e is not None else None
    return p is None or p.sent_at is not None


def _notice_reason(items: list[Item]) -> str:
    """The reason a sent shift notice keeps (docs/oncall.md, "Shift notices"), else ``""``."""
    return "shift notice" if items and all(i.status == "notice" for i in items) else ""


def delivery_problems(now: float, last_pass: float | None, started_at: float,
                      oldest_due: float | None, stall: float) -> list[str]:
    """Why ``/readyz`` names delivery (docs/operations.md, "Watched delivery"); empty when
    delivery is fine. Times are UNIX seconds: ``last_pass`` when any deliverer last finished
    a pass (:data:`STATUS_DELIVERY_PASS`; ``None`` if never), ``started_at`` when the asking
    process started (no deliverer is blamed for the time before it), ``oldest_due`` since when
    the longest-waiting due SMS has been due (:meth:`Store.oldest_due`; ``None``: none due);
    ``stall`` is ``BRIDGE_DELIVERY_STALL``. Each problem is reported once it has lasted
    ``stall`` seconds."""
    problems = []
    if now - max(last_pass or 0.0, started_at) >= stall:
        since = (f"for {now - last_pass:.1f}s" if last_pass
                 else f"since this process started {now - started_at:.1f}s ago")
        problems.append(f"delivery: no deliverer has finished a pass of its loop {since} "
                        f"(BRIDGE_DELIVERY_STALL {stall:g}s)")
    if oldest_due is not None and now - oldest_due >= stall:
        problems.append(f"delivery: an SMS has been due and unsent for {now - oldest_due:.1f}s "
                        f"(BRIDGE_DELIVERY_STALL {stall:g}s)")
    return problems


def recorded_pass(raw: str | None) -> float | None:
    """:data:`STATUS_DELIVERY_PASS` as UNIX seconds (``None`` when missing or unreadable)."""
    try:
        return float(raw) if raw else None
    except ValueError:
        return None


def use_fallback(reasons: list[str], first_attempt_at: float | None, now: float,
                 fallback: str, failover_after: float) -> bool:
    """Whether an SMS goes through its template's ``fallback`` provider now, from the stored
    reasons of its last attempts (docs/providers.md, Fallback): yes once the fallback was
    tried; no after an attempt that may have gone out (one provider at most); yes after Juhe's
    configuration/account error, or after Juhe's transient failures since ``first_attempt_at``
    lasting ``failover_after`` seconds by ``now``; no for throttling and otherwise."""
    if any(r.startswith(f"{fallback} ") for r in reasons):
        return True
    if any(maybe_sent(r) for r in reasons):
        return False
    if any(r.startswith("juhe config error") for r in reasons):
        return True
    return (first_attempt_at is not None
            and any(r.startswith("juhe transient error") for r in reasons)
            and now - first_attempt_at >= failover_after)


def maybe_sent(reason: str) -> bool:
    """Whether a stored reason tells of an attempt that may have gone out (a read timeout:
    "... may have been sent", or Juhe's 10014), after which no other provider sends that SMS
    (docs/providers.md, Fallback)."""
    return "may have been sent" in reason or reason.startswith("juhe transient error 10014:")


def juhe_config_note(raw: str | None, config: str, since: float) -> str | None:
    """The ``juhe_config`` note as ``/readyz`` shows it: its reason when the configuration in
    force (``config``, see :func:`config_id`) met it since ``since`` (this process's start or
    its last rules reload, UNIX seconds), else ``None``. A note in the old plain-text form is
    shown as it is only when ``config`` is empty."""
    if not raw:
        return None
    try:
        note = json.loads(raw)
    except ValueError:
        note = None
    if not isinstance(note, dict):
        return raw if not config else None
    if note.get("config") != config or float(note.get("at") or 0) < since:
        return None
    return str(note.get("reason") or "")


