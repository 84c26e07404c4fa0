"""The bridge as one object: settings, rules, store and SMS sender, and the intake of one
webhook's batch, already read and parsed by the caller (plan -> record -> report). Flask views
and the CLI call this; it knows no HTTP."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from bridge import metrics
from bridge.alert import Alert, Batch
from bridge.config import Settings
from bridge.decide.episodes import EPISODE_STATES, Episode, Paged, valid_code
from bridge.decide.heartbeats import HeartbeatView, heartbeat_view, split_beats
from bridge.decide.plan import Plan, decide, episode_from_start, merge, store_policy
from bridge.deliver import notices
from bridge.deliver.deliverer import (
    STATUS_DELIVERY_PASS,
    STATUS_JUHE_CONFIG,
    Deliverer,
    DeliveryPolicy,
    config_id,
    delivery_problems,
    juhe_config_note,
    recorded_pass,
)
from bridge.deliver.escalation import Escalator
from bridge.deliver.heartbeats import HeartbeatWatch
from bridge.deliver.jobs import Handler, JobRunner
from bridge.deliver.notices import Notifier
from bridge.deliver.silences import Silencer
from bridge.deliver.wake import LocalWake
from bridge.errors import StoreUnavailable
from bridge.intake.observe import IntakeResult, observe_before, observe_intake
from bridge.intake.reload import RulesHolder
from bridge.privacy import mask_mobile
from bridge.providers.base import DryRunSender, Sender
from bridge.providers.dispatch import STATUS_CONFIG, Providers
from bridge.providers.juhe import JuheClient, encode_tpl_value
from bridge.rules.model import Heartbeat
from bridge.rules.schedules import OnCall, oncall_view
from bridge.store import open_store
from bridge.store.base import Outcome, Store

log = logging.getLogger("bridge.service")  # stable log name (not the module path)


#: Alerts decided and stored in the first part of a webhook's intake (see :func:`intake_parts`).
PART_FIRST = 16
#: The most alerts of one part.
PART_MOST = 256


def intake_parts(n: int, first: int = PART_FIRST, most: int = PART_MOST) -> list[slice]:
    """The parts a batch of ``n`` alerts is decided and stored in, in order: all of it when
    ``n <= first``; else ``first`` alerts, then parts doubling in size up to ``most``.

    Why parts (docs/operations.md, "Prompt delivery"): deciding and storing a storm of 1,000
    alerts takes a few hundred milliseconds; stored in one step, none of its SMS could go out
    before the last alert was decided. In parts, the first SMS go out while the rest is
    decided (the delivery process is woken after each part), and the parts grow so that a
    large batch takes few store steps."""
    parts: list[slice] = []
    start, size = 0, first
    while start < n or not parts:
        end = n if n <= first else min(n, start + size)
        parts.append(slice(start, end))
        start, size = end, min(size * 2, most)
    return parts


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
        self.store = store or open_store(settings.store, redis_wait=settings.redis_wait,
                                         redis_wait_timeout=settings.redis_wait_timeout,
                                         retention=settings.retention)
        self.sender: Sender = client if client is not None else (
            DryRunSender(encode_tpl_value) if settings.dry_run else JuheClient(
                settings.juhe_key, settings.juhe_url, timeout=settings.juhe_timeout))
        #: Aliyun and Tencent Cloud, when their credentials are set (docs/providers.md)
        self.providers = Providers.from_settings(settings)
        self.delivery_policy = DeliveryPolicy.from_settings(settings)
        #: names the Juhe configuration in force (never the key), for the juhe_config note
        self.config_id = config_id(settings)
        self.started_at = time.time()
        #: the local wake of one ``bridge serve`` (SQLite; a Redis store wakes deliverers
        #: itself), or ``None``
        self.local_wake = None if self.store.wakes_deliverers else LocalWake.from_env()
        #: the Alertmanager silences of acknowledgements, when BRIDGE_ALERTMANAGER_URL is set
        self.silencer = (Silencer(self.store, settings.alertmanager_url, settings.ack_silence,
                                  resolve=self.resolved_in_alertmanager)
                         if settings.alertmanager_url else None)

    def deliverer(self, on_pass: Callable[[], object] | None = None) -> Deliverer:
        """A deliverer sharing this bridge's store, sender and rules; its loop also runs the
        due escalation steps (:meth:`escalator`), the heartbeats' timer (:meth:`heartbeat_watch`)
        and background jobs (:meth:`jobs`), and calls ``on_pass`` after each pass (see
        :class:`~bridge.deliver.deliverer.Deliverer`); between passes it waits for a wake
        from the store (Redis) or from this ``bridge serve``'s web workers (:attr:`local_wake`),
        else it polls."""
        escalator, watch, notifier = self.escalator(), self.heartbeat_watch(), self.notifier()
        jobs = self.jobs(notifier)

        def sidecar() -> int:
            return (escalator.run_once() + watch.run_once() + notifier.run_once()
                    + jobs.run_once())

        return Deliverer(self.store, self.sender, lambda: self.holder.rules, self.delivery_policy,
                         config=self.config_id, sidecar=sidecar, on_pass=on_pass,
                         providers=self.providers,
                         wake=self.store.work_listener() or self.local_wake)

    def notifier(self) -> Notifier:
        """What adds and sends the shift notices of this bridge's schedules."""
        return Notifier(self.store, lambda: self.holder.rules, self.settings.zone)

    def jobs(self, notifier: Notifier | None = None) -> JobRunner:
        """The runner of background jobs on this bridge's store: shift notices (``notifier``'s,
        in the delivery loop) and Alertmanager silences (in a thread pool: outside calls never
        hold up the SMS)."""
        handlers: dict[str, Handler] = {notices.KIND: (notifier or self.notifier()).send}
        background: set[str] = set()
        if self.silencer is not None:
            from bridge.deliver import silences

            handlers.update({silences.CREATE: self.silencer.create,
                             silences.EXPIRE: self.silencer.expire,
                             silences.WATCH: self.silencer.watch})
            background.update((silences.CREATE, silences.EXPIRE, silences.WATCH))
        return JobRunner(self.store, handlers, background=frozenset(background))

    def escalator(self) -> Escalator:
        """The runner of due escalation steps on this bridge's store and rules."""
        return Escalator(self.store, lambda: self.holder.rules, self.settings.zone)

    # -- heartbeats (docs/heartbeats.md) ---------------------------------------------------
    @property
    def service_started_at(self) -> float:
        """When the service started (UNIX seconds): the first load of the rules by the
        ``bridge serve`` master (shared with its workers through the runtime folder), else by
        this process. No heartbeat counts as missing sooner than its ``expect`` after it."""
        return float(self.holder.state.get("started_at") or self.started_at)

    def heartbeat_watch(self) -> HeartbeatWatch:
        """The heartbeats' timer on this bridge's store and rules (run by the delivery loop)."""
        return HeartbeatWatch(self.store, lambda: self.holder.rules, self.settings.zone,
                              self.service_started_at)

    def heartbeat_views(self, now: float | None = None) -> list[tuple[str, Heartbeat,
                                                                      HeartbeatView]]:
        """Every heartbeat of the rules in force, in rules order, with its state at ``now``
        (:func:`bridge.decide.heartbeats.heartbeat_view`). Raises :class:`StoreUnavailable`."""
        heartbeats = self.holder.rules.heartbeats
        if not heartbeats:
            return []
        now = time.time() if now is None else now
        records = self.store.heartbeats()
        started = self.service_started_at
        return [(name, hb, heartbeat_view(records.get(name), hb.expect, started, now))
                for name, hb in heartbeats.items()]

    def beat(self, name: str, now: float | None = None) -> HeartbeatView:
        """A beat of heartbeat ``name`` now (``/heartbeat/<name>``); returns its state after.
        Raises ``KeyError`` for a name the rules do not declare, :class:`StoreUnavailable`."""
        hb = self.holder.rules.heartbeats[name]
        now = time.time() if now is None else now
        self.store.beat([name], now)
        record = self.store.heartbeats().get(name)
        return heartbeat_view(record, hb.expect, self.service_started_at, now)

    def heartbeat_lines(self) -> list[str]:
        """Start-up lines: how many heartbeats are watched and which are waiting (never beat:
        nothing is paged for them until they do)."""
        if not self.holder.rules.heartbeats:
            return []
        try:
            views = self.heartbeat_views()
        except StoreUnavailable as exc:
            return [f"heartbeats: {len(self.holder.rules.heartbeats)}, state unknown: {exc}"]
        waiting = [n for n, _, v in views if v.state == "waiting"]
        others = ", ".join(f"{n} {v.state}" for n, _, v in views if v.state != "waiting")
        return [f"heartbeats: {len(views)}"
                + (f"; waiting for a first beat (nothing paged until then): {', '.join(waiting)}"
                   if waiting else "") + (f"; {others}" if others else "")]

    # -- episodes (docs/oncall.md, Episodes) -----------------------------------------------
    def episodes(self, state: str | None = None, limit: int = 50) -> list[Episode]:
        """Stored episodes, newest first, optionally of one state (``firing``,
        ``acknowledged``, ``resolved``). Raises ``ValueError`` for another state and
        :class:`StoreUnavailable`."""
        if state is not None and state not in EPISODE_STATES:
            raise ValueError(f"state must be one of {', '.join(EPISODE_STATES)}")
        return self.store.episodes(state, limit)

    def episode(self, id: str) -> Episode | None:
        """The episode ``id``, or ``None``. Raises :class:`StoreUnavailable`."""
        return self.store.episode(id)

    def episode_by_code(self, code: str, now: float | None = None) -> tuple[Episode, Paged] | None:
        """The episode and Paged entry of an ack code; ``None`` when the code is malformed,
        unknown or expired. Raises :class:`StoreUnavailable`."""
        if not valid_code(code):
            return None
        return self.store.episode_by_code(code, time.time() if now is None else now)

    def acknowledge(self, id: str, by: str, via: str,
                    now: float | None = None) -> tuple[Episode, bool]:
        """Acknowledge episode ``id`` as ``by`` (a person's name, or a masked mobile) ``via``
        ``link``/``page``/``api``; the bool says whether this call acknowledged it (False:
        already acknowledged or resolved; the Episode says by whom and when). Counts
        ``bridge_acks_total{via}`` and logs one INFO line. Raises ``KeyError`` for an unknown
        id, ``ValueError`` for another ``via`` or an empty ``by``, :class:`StoreUnavailable`."""
        if via not in ("link", "page", "api"):
            raise ValueError("via must be link, page or api")
        if not by.strip():
            raise ValueError("by must name who acknowledges")
        episode, done = self.store.acknowledge(id, by.strip(), via,
                                               time.time() if now is None else now)
        if done:
            metrics.ACKS.labels(via).inc()
            log.info("episode %s (%s) acknowledged by %s via %s; pending steps cancelled",
                     episode.id, episode.alertname or episode.fingerprint, episode.acknowledged_by,
                     via)
            self._silence(episode, time.time() if now is None else now)
        return episode, done

    def _silence(self, episode: Episode, now: float) -> None:
        """Add the Alertmanager silence job of a first acknowledgement (docs/oncall.md); the
        acknowledgement stands whatever happens here."""
        if self.silencer is None:
            return
        try:
            self.silencer.on_acknowledged(episode, now)
        except StoreUnavailable as exc:
            log.error("episode %s: acknowledged, but its alertmanager silence could not be "
                      "queued: %s", episode.id, exc)

    def resolved_in_alertmanager(self, episode: Episode, now: float) -> None:
        """Take the resolve of ``episode``'s alert that its Alertmanager silence held back, as
        the webhook would have brought it (docs/oncall.md, "Silences in Alertmanager"): the
        resolved SMS to who was paged, the episode resolved, the silence expired. Raises
        :class:`StoreUnavailable`."""
        starts = datetime.fromisoformat(episode.episode) if episode.episode else None
        alert = Alert(labels=dict(episode.labels), annotations=dict(episode.annotations),
                      status="resolved", fingerprint=episode.fingerprint, source="alertmanager",
                      starts_at=starts, ends_at=datetime.fromtimestamp(now, UTC))
        self.intake(Batch(source="alertmanager", alerts=[alert]), now)

    def unknown_code_hit(self, client: str, now: float | None = None) -> int:
        """Count an unknown-code try of ``client`` in the current minute (shared by every
        process on the store); returns the count (the web answers 429 above
        :data:`bridge.decide.episodes.UNKNOWN_CODE_LIMIT`)."""
        return self.store.unknown_code_hit(client, time.time() if now is None else now)

    def by_of(self, paged: Paged) -> str:
        """Who acknowledges with the code sent to ``paged``: the person's name, else the
        masked mobile (docs/design.md, Privacy and logs)."""
        return self.holder.rules.person_of(paged.mobile) or mask_mobile(paged.mobile)

    def describe(self) -> list[str]:
        """Start-up lines: what is in force (never the key)."""
        s = self.settings
        lines = [
            f"store: {self.store.describe()}",
            f"rules: {self.holder.rules.summary()}",
            "juhe: " + ("DRY-RUN: JUHE_KEY is not set, nothing will be sent" if s.dry_run
                        else s.juhe_url),
            f"auth: {'bearer/basic token required' if s.token else 'OPEN: BRIDGE_TOKEN is not set'}"
            f"; grafana hmac: {'on' if s.grafana_hmac_secret else 'off'}",
            f"time zone: {s.tz}; retry for {s.retry_for:.0f}s; max body {s.max_body_bytes} bytes",
            *(f"WARNING: {w}" for w in s.warnings),
            *self.oncall_lines(),
            *self.heartbeat_lines(),
        ]
        return lines

    # -- on call --------------------------------------------------------------------------
    def oncall(self, next_n: int = 3, at: float | None = None,
               only: str | None = None) -> list[OnCall]:
        """Who is on call in every schedule of the rules in force at ``at`` (UNIX seconds,
        default now) and the ``next_n`` shifts after (:func:`bridge.rules.schedules.oncall_view`).
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
    def intake(self, batch: Batch, now: float | None = None) -> IntakeResult:
        """Decide and durably store the notifications of one batch, in one atomic store step
        (a batch of more than :data:`PART_FIRST` alerts: one per part, see
        :func:`intake_parts`), and report them (metrics and log lines:
        :mod:`bridge.intake.observe`).

        First the batch's heartbeat beats are recorded (:meth:`Store.beat`; they are not
        routed: docs/heartbeats.md; a beat recorded twice, when a webhook answered 503 comes
        again, changes nothing). Before deciding, two reads (no writes, so a webhook answered
        503 records no notification): the stored episode start of alerts without ``startsAt``
        (what templates see as ``starts_at``), and who was paged for the episodes that resolve
        here. Returns the typed :class:`~bridge.intake.observe.IntakeResult` (the webhook's
        JSON is built from it by :func:`bridge.web.api.answer`). When a part queued an SMS,
        the delivery process of this ``bridge serve`` is woken (:attr:`local_wake`; a Redis
        store wakes every deliverer itself), so that it sends while the next part is decided.

        Raises :class:`StoreUnavailable`; the parts stored before it stay stored (their SMS
        go out, logged as usual), and the sender's retry of the webhook finds them as
        duplicates: nothing is lost or paged twice.
        """
        now = time.time() if now is None else now
        rules = self.holder.rules
        observe_before(batch)
        routed, beaten, beats = split_beats(batch, rules.heartbeats)
        if beaten:
            self.store.beat(beaten, now)
            log.debug("%s webhook: beat of %s", batch.source, ", ".join(beaten))
        untimed = [a.fingerprint for a in routed.alerts if a.starts_at is None]
        stored = self.store.untimed_starts(untimed) if untimed else {}
        starts = {fp: stored.get(fp) for fp in untimed}
        keys = [(a.fingerprint, episode_from_start(a) if a.starts_at is not None
                 else starts.get(a.fingerprint) or "")
                for a in routed.alerts if a.status == "resolved"]
        paged = self.store.episodes_by_key([k for k in keys if k[1]]) if keys else {}
        at = datetime.fromtimestamp(now, UTC)
        episode_starts = {fp: None if s is None else datetime.fromisoformat(s)
                          for fp, s in starts.items()}
        policy = store_policy(rules, self.settings.zone, now)
        plans: list[Plan] = []
        outcomes: list[Outcome] = []
        try:
            for part in intake_parts(len(routed.alerts)):
                plan = decide(routed, rules, at, episode_starts, paged, part)
                recorded = self.store.record(plan.notifications, policy, now, plan.episodes,
                                             plan.resolved)
                plans.append(plan)
                outcomes += recorded
                if self.local_wake is not None and any(o.state == "queued" for o in recorded):
                    self.local_wake.notify()  # docs/operations.md, "Prompt delivery"
        except StoreUnavailable:
            if plans:  # what the stored parts decided is logged like any webhook's
                observe_intake(IntakeResult(batch, merge(plans), outcomes, beats), rules)
            raise
        result = IntakeResult(batch, merge(plans), outcomes, beats)
        observe_intake(result, rules)
        if self.silencer is not None and result.plan.resolved:
            self._expire_silences(self.silencer, [k for k in keys if k[1]], now)
        return result

    def _expire_silences(self, silencer: Silencer, keys: list[tuple[str, str]],
                         now: float) -> None:
        """After the record step: the silences of the episodes resolved here are expired in
        the background (read again now, so that a silence created meanwhile is seen)."""
        try:
            silencer.on_resolved(self.store.episodes_by_key(keys).values(), now)
        except StoreUnavailable as exc:
            log.error("silences of resolved episodes not queued for expiry: %s", exc)

    # -- health ---------------------------------------------------------------------------
    def delivery_state(self, now: float) -> tuple[float | None, float | None]:
        """``(last_pass, oldest_due)``, UNIX seconds or ``None``: when any deliverer last
        finished a pass, and since when the longest-waiting due SMS has been due
        (:meth:`Store.oldest_due`). Raises :class:`StoreUnavailable`."""
        return (recorded_pass(self.store.get_status(STATUS_DELIVERY_PASS)),
                self.store.oldest_due(now))

    def readiness(self) -> list[str]:
        """Why the service is not ready (empty when ready): store, rules, a Juhe
        configuration error met by the configuration in force since this process started or
        the rules were last reloaded (see :func:`bridge.deliver.deliverer.juhe_config_note`),
        and a hung or absent deliverer (:func:`bridge.deliver.deliverer.delivery_problems`)."""
        problems = []
        try:
            self.store.ping()
            since = max(self.started_at, float(self.holder.state.get("success_ts") or 0))
            juhe = juhe_config_note(self.store.get_status(STATUS_JUHE_CONFIG), self.config_id,
                                    since)
            if juhe:
                problems.append(f"juhe configuration error: {juhe}")
            for provider, key in STATUS_CONFIG.items():
                note = juhe_config_note(self.store.get_status(key),
                                        self.providers.config_ids.get(provider, ""), since)
                if note:
                    problems.append(f"{provider} configuration error: {note}")
            now = time.time()
            last_pass, oldest_due = self.delivery_state(now)
            problems += delivery_problems(now, last_pass, self.started_at, oldest_due,
                                          self.settings.delivery_stall)
        except Exception as exc:  # StoreUnavailable or a driver error: not ready, say why
            problems.append(f"store unavailable: {exc}")
        return problems
