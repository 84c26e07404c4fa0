"""The store: dedup state and the durable outbox, behind one interface.

Two implementations share this contract and one test suite (``tests/test_store.py``):
:class:`bridge.store.sqlite.store.SqliteStore` and :class:`bridge.store.redis.store.RedisStore`.
Every method raises :class:`bridge.errors.StoreUnavailable` when the backend cannot be reached or
written.
Times are UNIX seconds (float); durations are seconds.

Methods documented as **atomic** must be all-or-nothing and safe against any number of
concurrent callers in other processes and on other machines sharing the store. There is no
default implementation of an atomic method here on purpose.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from bridge.decide.episodes import Episode, Paged, StepClaim, StepState
from bridge.decide.heartbeats import Action, HeartbeatClaim, HeartbeatRecord
from bridge.decide.types import EpisodeMark, Notification, Policy, State
from bridge.privacy import redact_url
from bridge.rules.model import call_address, split_address

STATES: tuple[State, ...] = ("queued", "sent", "retrying", "failed", "suppressed", "held")
#: Providers whose message id the store keeps as ``provider:id`` (a plain id is Juhe's).
PROVIDER_IDS = frozenset({"aliyun", "tencent"})


def stored_sid(provider: str, sid: str) -> str:
    """The message id as the store keeps it: Juhe's as it is, another provider's as
    ``provider:id`` (:class:`Item` splits it again)."""
    return f"{provider}:{sid}" if provider in PROVIDER_IDS else sid


#: States whose SMS may still be sent.
PENDING: tuple[State, ...] = ("queued", "retrying", "held")

#: The reason of a call that ended ``suppressed`` because another call to its number went out
#: while it waited (docs/providers.md, Calls).
FOLDED = "folded"


def folds_into_call(state: str, created_at: float, lease_until: float, lease_token: str, *,
                    sent_at: float, token: str) -> bool:
    """Whether a call to a number ends ``suppressed`` (:data:`FOLDED`) because another call to
    that number went out at ``sent_at`` (UNIX seconds) under claim ``token``
    (docs/providers.md, Calls): yes when it was waiting at that moment, i.e. still pending
    (held by the call pacing, due in the same pass, or retrying), created at or before
    ``sent_at``, and not leased by another claim (no lease, a lapsed one, or this claim's).
    A call created later is made as usual. The Redis store's MARK_LUA decides alike."""
    if state not in PENDING or created_at > sent_at:
        return False
    return lease_until <= sent_at or lease_token == token


#: An episode never resolved (its resolved webhook never came) is pruned this long after
#: ``before`` (seconds): 30 days more than the retention.
EPISODE_STALE = 30 * 86400.0


def dedup_key(mobile: str, fingerprint: str, status: str, episode: str) -> str:
    """The dedup key of a notification: ``mobile|fingerprint|status|episode``."""
    return f"{mobile}|{fingerprint}|{status}|{episode}"


def episode_text(start: float) -> str:
    """The episode string of an episode that began at ``start`` (UNIX seconds): its UTC ISO
    form, as :func:`bridge.decide.plan.episode_from_start` writes a ``startsAt``."""
    return datetime.fromtimestamp(start, UTC).isoformat()


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Store.record` did with one notification: its final ``state`` and ``reason``,
    and ``id`` when a row was stored (``None`` for duplicates, which are only counted)."""

    notification: Notification
    state: State
    reason: str
    id: str | None = None
    #: the alert episode the notification paged for (firing queued/held), else ``None``
    episode_id: str | None = None


@dataclass
class Item:
    """One stored notification as the outbox and the API see it. Times are UNIX seconds."""

    id: str
    mobile: str
    fingerprint: str
    status: str
    episode: str
    route: str
    alertname: str
    tpl_id: int
    variables: dict[str, str]
    state: State
    reason: str
    created_at: float
    updated_at: float
    due_at: float
    attempts: int = 0
    first_attempt_at: float | None = None
    sid: str | None = None
    fee: int | None = None
    #: the template's name (``None`` for items stored before templates were kept)
    template: str | None = None
    #: ``sms`` or ``voice``; a call's stored address ``voice:<number>`` is split into this and
    #: ``mobile`` when the item is made
    channel: Literal["sms", "voice"] = "sms"
    #: who sent it (``juhe``, ``aliyun``, ``tencent``); ``None`` until sent. A message id of
    #: Aliyun or Tencent Cloud is stored as ``provider:id`` and split here
    provider: str | None = None

    def __post_init__(self) -> None:
        self.channel, self.mobile = split_address(self.mobile)
        if self.sid is not None and self.provider is None:
            name, sep, rest = self.sid.partition(":")
            if sep and name in PROVIDER_IDS:
                self.provider, self.sid = name, rest
            elif self.state == "sent":
                self.provider = "juhe"

    @property
    def address(self) -> str:
        """Where the store keys it: the mobile, or ``voice:<mobile>`` for a call."""
        return call_address(self.mobile) if self.channel == "voice" else self.mobile

    def to_json(self) -> dict[str, Any]:
        """The API shape (mobile still in clear: the caller masks it)."""
        return {
            "id": self.id,
            "route": self.route,
            "mobile": self.mobile,
            "alertname": self.alertname,
            "fingerprint": self.fingerprint,
            "status": self.status,
            "episode": self.episode,
            "state": self.state,
            "reason": self.reason,
            "tpl_id": self.tpl_id,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "sid": self.sid,
            "channel": self.channel,
            "provider": self.provider,
            "template": self.template,
        }


@dataclass
class Claim:
    """The due items of one mobile, leased to one deliverer until ``lease_until``.

    The deliverer sends them (one SMS, or one storm SMS for several) and then calls
    ``mark_sent`` / ``mark_retry`` / ``mark_failed`` / ``release`` for every item, with
    ``token``: the lease's fence (a mark carrying another token changes nothing). While the
    claim is held the mobile is held too (no other claim of it until a mark ends the hold).
    ``gapped`` is true when some of the items arrived while the mobile's pacing gap ran, i.e.
    they piled up and may be folded into one storm SMS. ``confirmed`` is false when the store
    took the claim but fewer replicas confirmed it than ``BRIDGE_REDIS_WAIT`` asks (Redis): a
    failover under way may drop it (docs/design.md, Redis).
    """

    mobile: str
    items: list[Item] = field(default_factory=list)
    lease_until: float = 0.0
    gapped: bool = False
    token: str = ""
    confirmed: bool = True


JobState = Literal["pending", "done", "failed"]


@dataclass(frozen=True)
class Job:
    """One durable background job (docs/oncall.md: silences in Alertmanager, shift notices):
    ``key`` names it once across every process sharing the store (adding a key that exists
    changes nothing), ``kind`` says which runner handles it, ``payload`` is JSON-able data.
    ``since`` is when it was added (a runner gives up some time after it), ``due_at`` when it
    runs next, ``attempts`` how often it ran and failed, ``error`` the last failure. A finished
    job (``done``, ``failed``) is kept until ``keep_until``, so its key is not added again
    before then; times are UNIX seconds."""

    key: str
    kind: str
    payload: dict[str, Any]
    state: JobState
    due_at: float
    since: float
    keep_until: float
    attempts: int = 0
    error: str = ""


@dataclass(frozen=True)
class JobClaim:
    """A due job leased to one runner until ``lease_until``; :meth:`Store.settle_job` with
    ``token`` (a lapsed lease's token changes nothing)."""

    job: Job
    token: str
    lease_until: float


#: One encoder for every store write (``json.dumps`` with options builds a new one per call).
_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def dumps_vars(variables: Any) -> str:
    """Variables (or any JSON value) as compact JSON text (keeps Chinese readable)."""
    return _COMPACT.encode(variables)


class Wakeup(Protocol):
    """What a deliverer waits on between passes for new work (docs/operations.md, "Prompt
    delivery")."""

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a wake; True when one came. Never raises."""
        ...


class Store(abc.ABC):
    """Dedup state and durable outbox. See the module docstring for the common rules.

    Isolation: :meth:`record` must run as if alone (serialisable) across every process and
    machine sharing the store: it reads dedup records, episode starts, day and hour counts and
    the storm window and writes them back in one step, so two webhooks carrying the same alert
    at the same moment see each other's writes, never an interleaving of them; and it is
    all-or-nothing, so a webhook answered 503 and sent again is decided as if it came first.
    :meth:`claim` needs the same for leases; marks are fenced by the claim's token.
    """

    url: str = ""
    #: True when :meth:`record` itself wakes every deliverer listening
    #: (:meth:`work_listener`) once it stored an SMS that is due now
    wakes_deliverers: bool = False

    @abc.abstractmethod
    def record(self, notes: Sequence[Notification], policy: Policy, now: float,
               episodes: Sequence[EpisodeMark] = (),
               resolved: Sequence[tuple[str, str]] = ()) -> list[Outcome]:
        """**Atomically** settle ``episodes`` and decide and store a webhook's notifications,
        in order, by :data:`PAGING_POLICY`, keeping the alert episodes (see "episodes" below;
        ``resolved``: the (fingerprint, episode) of the batch's resolved alerts, episode ``""``
        for an alert without startsAt, settled like its notifications).

        Returns one :class:`Outcome` per notification, in order; its ``notification`` carries
        the settled episode.
        """

    # -- episodes (docs/oncall.md, Episodes; bridge/decide/episodes.py) ----------------------------
    # Inside record's one atomic step, after a notification's policy rows (sub-steps named
    # ``episode: <name>`` in both stores): ``upsert`` (a firing that ends queued or held creates
    # its episode when missing, with the notification's info and its steps not started: a
    # step's ``due_at`` is set by mark_sent / mark_failed (or mark_retry with start_clock) of
    # a firing SMS to a mobile the route paged itself (level 0), at that moment + after, once;
    # docs/oncall.md, Escalation),
    # ``paged`` (adds the mobile's Paged entry once, and fills its ack code: the one stored for
    # the (episode, mobile), else a new unique one), ``resolved close`` (after the batch: each
    # (fingerprint, episode) of ``resolved`` marks its episode resolved at now and cancels
    # its pending steps, reason ``resolved``). Row ``acknowledged`` of PAGING_POLICY reads the
    # episode's state.

    @abc.abstractmethod
    def episodes_by_key(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], Episode]:
        """The stored :class:`Episode` records of ``(fingerprint, episode text)`` keys (those
        that have one); reads only."""

    def episode_states(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The state (``firing``, ``acknowledged``, ``resolved``) of the stored episodes of
        ``(fingerprint, episode text)`` keys (those that have one); reads only. What the
        deliverer checks before each send: a store may answer it cheaper than
        :meth:`episodes_by_key`, which this default uses."""
        return {k: e.state for k, e in self.episodes_by_key(keys).items()}

    @abc.abstractmethod
    def episodes(self, state: str | None = None, limit: int = 50) -> list[Episode]:
        """Stored episodes, newest (created) first, optionally of one state."""

    @abc.abstractmethod
    def episode(self, id: str) -> Episode | None:
        """The episode ``id``, or ``None``."""

    @abc.abstractmethod
    def episode_by_code(self, code: str, now: float) -> tuple[Episode, Paged] | None:
        """The episode and Paged entry an ack code was sent with; ``None`` when unknown or
        expired (24 h after the episode resolved)."""

    @abc.abstractmethod
    def acknowledge(self, id: str, by: str, via: str, now: float) -> tuple[Episode, bool]:
        """**Atomically** acknowledge a firing episode: ``by`` (a name or masked mobile),
        ``via`` (link, page, api) at ``now``; cancels its pending steps (reason
        ``acknowledged by BY``). The bool is true when this call acknowledged it; false when it
        was already acknowledged or resolved (the first acknowledgement stands). Raises
        ``KeyError`` for an unknown id."""

    @abc.abstractmethod
    def unknown_code_hit(self, client: str, now: float) -> int:
        """**Atomically** count one unknown-code try by ``client`` in the fixed minute of
        ``now``; returns the count so far in that minute."""

    @abc.abstractmethod
    def unknown_code_hits(self, client: str, now: float) -> int:
        """How many tries :meth:`unknown_code_hit` counted for ``client`` in the fixed minute
        of ``now`` (0 when none); reads only."""

    @abc.abstractmethod
    def claim_steps(self, now: float, lease: float, limit: int = 20) -> list[StepClaim]:
        """**Atomically** lease pending steps due at ``now`` (``due_at <= now``, no unexpired
        lease) until ``now + lease``, at most ``limit``, oldest due first."""

    @abc.abstractmethod
    def finish_step(self, claim: StepClaim, state: StepState, reason: str,
                    now: float) -> bool:
        """**Atomically** end a claimed step ``done`` or ``cancelled`` with ``reason``, ``ran_at``
        ``now``; false
        (nothing changed) when the lease lapsed and the step was claimed again, or it is no
        longer pending (e.g. cancelled by an acknowledgement meanwhile)."""

    # -- heartbeats (docs/heartbeats.md; bridge/decide/heartbeats.py) -----------------------
    @abc.abstractmethod
    def beat(self, names: Sequence[str], now: float) -> None:
        """**Atomically** record a beat of each heartbeat in ``names`` at ``now``: its last
        beat becomes ``now`` (never earlier than it was); a first beat makes its record, state
        ``up``."""

    @abc.abstractmethod
    def heartbeats(self) -> dict[str, HeartbeatRecord]:
        """Every stored heartbeat record by name (a heartbeat that never beat has none)."""

    @abc.abstractmethod
    def claim_heartbeat(self, name: str, action: Action, last_seen: float, since: float,
                        now: float, lease: float) -> HeartbeatClaim | None:
        """**Atomically** lease a transition of heartbeat ``name`` until ``now + lease`` when
        no unexpired lease holds it and it is still as the caller read it: ``miss`` when its
        state is ``up`` and its last beat is ``last_seen`` (the miss begins at ``since``, or
        at the stored ``missing_since`` when a lapsed miss left one later than the last
        beat; refused while a lapsed miss earlier than the last beat awaits ``back``);
        ``back`` when ``missing_since`` is set and a beat came after it (the claim carries
        that ``missing_since``). ``None`` otherwise."""

    @abc.abstractmethod
    def finish_heartbeat(self, claim: HeartbeatClaim, now: float) -> bool:
        """**Atomically** end a leased transition, fenced by its token: ``miss`` makes the
        state ``missing``; ``back`` makes it ``up`` and clears ``missing_since``. False
        (nothing changed) when the lease lapsed and the transition was claimed again."""

    @abc.abstractmethod
    def set_silence(self, id: str, silence_id: str | None) -> None:
        """Keep the Alertmanager silence ``silence_id`` with episode ``id`` (``None`` clears
        it); an unknown id changes nothing."""

    # -- jobs (durable background work with leases, like the steps) -------------------------
    @abc.abstractmethod
    def add_job(self, key: str, kind: str, payload: dict[str, Any], due_at: float,
                keep_until: float, now: float) -> bool:
        """**Atomically** add job ``key`` pending, due at ``due_at``, kept until at least
        ``keep_until`` once finished; true when added, false when a job of that key exists
        (pending or finished): each key runs once."""

    @abc.abstractmethod
    def claim_jobs(self, now: float, lease: float, limit: int = 20) -> list[JobClaim]:
        """**Atomically** lease pending jobs due at ``now`` (no unexpired lease) until
        ``now + lease``, at most ``limit``, oldest due first."""

    @abc.abstractmethod
    def settle_job(self, claim: JobClaim, state: JobState, now: float, *,
                   due_at: float | None = None, error: str = "") -> bool:
        """**Atomically** end a claimed job's lease: ``pending`` runs it again at ``due_at``
        (one more attempt, ``error`` kept), ``done``/``failed`` finish it. False (nothing
        changed) when the lease lapsed and the job was claimed again or finished."""

    @abc.abstractmethod
    def job(self, key: str) -> Job | None:
        """The job ``key`` (pending or kept), or ``None``."""

    @abc.abstractmethod
    def claim(self, now: float, lease: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        """**Atomically** lease due items, grouped by mobile, to the caller.

        An item is due when its state is pending (queued, retrying, held), its ``due_at`` has
        passed and no unexpired lease holds it. A mobile is skipped while its pacing gap runs or
        while another claim holds it; claiming a mobile holds it until ``now + lease`` (a mark
        with ``pace_until`` turns the hold into the gap, or ends it). Returns at most
        ``max_mobiles`` claims, each with a fresh ``token``; each holds the due items of its
        mobile, oldest first: all of them, or at most ``max_items`` when that is above 0
        (the rest stay due).
        """

    # Marks: each changes only the items still leased under ``token`` (the others were claimed
    # again after this lease lapsed: ignored, and the caller logs it) and returns how many it
    # changed. ``pace_until`` (UNIX seconds) ends the mobile's hold: its pacing gap now ends
    # then (``now`` or earlier: no gap); ``None`` leaves hold or gap as they are. Only a send
    # that may have gone out should book a gap.
    @abc.abstractmethod
    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float, reason: str = "",
                  *, token: str, pace_until: float | None, fold: bool = False) -> int:
        """Mark items sent with Juhe's ``sid`` and ``fee``; counts an attempt; ends the lease;
        a firing SMS of its route's own page starts its episode's escalation clock (see
        "episodes" above). With ``fold`` (a call went out), in the same atomic step every
        other item of the same address that :func:`folds_into_call` at ``now`` ends
        ``suppressed`` with reason :data:`FOLDED` (counted in the result)."""

    def mark_sent_and_check(self, ids: Sequence[str], sid: str, fee: int, now: float,
                            reason: str = "", *, token: str, pace_until: float | None,
                            check: Sequence[tuple[str, str]]
                            ) -> tuple[int, dict[tuple[str, str], str]]:
        """:meth:`mark_sent` (without ``fold``), then :meth:`episode_states` of the ``check``
        keys, read after the mark; returns (items changed, states). What the deliverer does
        between two sends of one claim: it stores the mark of the SMS it sent and checks the
        episode of the next one before sending it (docs/oncall.md, "Acknowledging"). Redis
        does both in one script, a round trip less per SMS; this default (SQLite) makes the
        two calls, whose reads cost no round trip there (bench/TARGETS.md: no measured gain
        from one transaction)."""
        changed = self.mark_sent(ids, sid, fee, now, reason, token=token,
                                 pace_until=pace_until)
        return changed, (self.episode_states(check) if check else {})

    @abc.abstractmethod
    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float, *,
                   token: str, pace_until: float | None, start_clock: bool = False) -> int:
        """Mark items ``retrying``, due again at ``due_at``; counts an attempt; ends the lease.
        With ``start_clock`` (the attempt met a configuration/account error: the page cannot
        reach anyone until the provider is fixed) it starts the escalation clock like
        :meth:`mark_sent` (set once: a clock already started stays; docs/oncall.md,
        Escalation)."""

    @abc.abstractmethod
    def mark_failed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                    pace_until: float | None) -> int:
        """Mark items ``failed`` for good with ``reason``; counts an attempt; ends the lease.
        A failed SMS did not page: its dedup record is deleted, so a later re-send of the same
        alert pages again (and a resolved is not paired with a failed firing). Like
        :meth:`mark_sent`, it starts the escalation clock."""

    @abc.abstractmethod
    def mark_suppressed(self, ids: Sequence[str], reason: str, now: float, *, token: str,
                        pace_until: float | None) -> int:
        """Mark items ``suppressed`` with ``reason`` without sending them (their episode was
        acknowledged or resolved meanwhile: docs/oncall.md, "What acknowledgement stops"; a held
        call likewise: docs/providers.md, Calls);
        counts no attempt; keeps their dedup records; ends the lease."""

    @abc.abstractmethod
    def release(self, ids: Sequence[str], due_at: float, *, token: str,
                pace_until: float | None = None) -> int:
        """Give leased items back unchanged, due again at ``due_at``; ends their lease."""

    @abc.abstractmethod
    def untimed_starts(self, fingerprints: Sequence[str]) -> dict[str, str]:
        """The untimed starts of alerts without ``startsAt``: when the store first saw each one
        firing, as episode text (:func:`episode_text`), by fingerprint (absent: none stored),
        in one read; reads only (what templates see as ``starts_at``; :meth:`record` settles
        them)."""

    def untimed_start(self, fingerprint: str) -> str | None:
        """:meth:`untimed_starts` for one alert: its stored start as episode text, or
        ``None``."""
        return self.untimed_starts([fingerprint]).get(fingerprint)

    @abc.abstractmethod
    def pending(self, address: str) -> list[Item]:
        """The pending (queued, retrying, held) items of ``address`` (a mobile, or
        ``voice:<mobile>``), oldest first, due or not, leased or not; reads only."""

    @abc.abstractmethod
    def recent(self, limit: int = 50, state: str | None = None,
               mobile: str | None = None) -> list[Item]:
        """The most recent stored items, newest first, optionally of one state or mobile."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """Number of stored items per state (all of :data:`STATES` present)."""

    @abc.abstractmethod
    def prune(self, before: float) -> int:
        """Delete finished items (sent, failed, suppressed) and dedup records last touched
        before ``before``, and episodes resolved before ``before`` or created before ``before -
        EPISODE_STALE`` (with their Paged entries, codes and steps), and finished jobs kept
        until before ``before``; returns how many items were deleted. Never blocks webhooks
        long."""

    @abc.abstractmethod
    def oldest_due(self, now: float) -> float | None:
        """Since when (UNIX seconds) the longest-waiting due SMS has been claimable, among
        those claimable at ``now`` (see :meth:`claim`): the later of its ``due_at``, the end of
        its last lease and the end of its mobile's pacing gap or hold; ``None`` when nothing is
        claimable. An SMS in a claim (being sent), backing off before a retry, or waiting for
        its mobile's gap or storm window is not due (docs/operations.md, "Watched delivery")."""

    @abc.abstractmethod
    def next_due(self) -> float | None:
        """When (UNIX seconds) something pending next becomes claimable, maybe already past:
        the earliest time at which :meth:`claim` would find an SMS (the later of its
        ``due_at``, its lease's end and its mobile's pacing gap or hold), :meth:`claim_steps`
        a step or :meth:`claim_jobs` a job (the later of its ``due_at`` and its lease's end);
        ``None`` when nothing is pending. A deliverer sleeps until then at most."""

    def work_listener(self) -> Wakeup | None:
        """A listener woken when a :meth:`record` of any process sharing this store stored an
        SMS that is due now (see :attr:`wakes_deliverers`), or ``None`` when the store wakes
        nobody (then the caller brings its own, or polls). Each call makes a new one."""
        return None

    @abc.abstractmethod
    def set_status(self, key: str, value: str | None) -> None:
        """Set (or with ``None`` clear) a shared status note, e.g. Juhe's last config error,
        so that every process's ``/readyz`` sees it."""

    @abc.abstractmethod
    def get_status(self, key: str) -> str | None:
        """The status note ``key``, or ``None``."""

    @abc.abstractmethod
    def ping(self) -> None:
        """Return when the store answers and can be written; raise StoreUnavailable otherwise."""

    def describe(self) -> str:
        """What store is in use, for the start-up line (never a password)."""
        return redact_url(self.url)

    def config_warnings(self) -> list[str]:
        """What in the backend's configuration weakens the guarantees, for the start-up log
        (e.g. Redis without AOF). Empty by default."""
        return []

    def maintain(self) -> None:  # noqa: B027 - optional hook
        """Upkeep the delivery loop runs about once a second, off the webhooks' path (SQLite:
        a WAL checkpoint). Raises :class:`StoreUnavailable`."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (safe to call twice)."""
