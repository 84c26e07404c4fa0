"""The store: dedup state and the durable outbox, behind one interface.

Two implementations share this contract and one test suite (``tests/test_store.py``):
:class:`bridge.store.sqlite.SqliteStore` and :class:`bridge.store.redis.RedisStore`. Every method
raises :class:`bridge.errors.StoreUnavailable` when the backend cannot be reached or written.
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
from typing import Any, Literal

from bridge.config import REDIS_SCHEMES, redact_url

State = Literal["queued", "sent", "retrying", "failed", "suppressed", "held"]
STATES: tuple[State, ...] = ("queued", "sent", "retrying", "failed", "suppressed", "held")
#: States whose SMS may still be sent.
PENDING: tuple[State, ...] = ("queued", "retrying", "held")


@dataclass(frozen=True)
class Notification:
    """One SMS decided for one mobile about one alert (the output of :mod:`bridge.plan`).

    The dedup key is ``(mobile, fingerprint, status, episode)``; ``episode`` is the alert's
    ``startsAt`` as an ISO string (the firing episode). ``variables`` are already rendered and
    cut; ``repeat_interval`` is seconds. ``state`` is ``queued`` unless the plan already
    decided ``suppressed`` (e.g. reason ``muted``).
    """

    mobile: str
    fingerprint: str
    status: Literal["firing", "resolved"]
    episode: str
    route: str
    alertname: str
    tpl_id: int
    variables: dict[str, str]
    repeat_interval: float = 4 * 3600.0
    state: State = "queued"
    reason: str = ""

    @property
    def dedup_key(self) -> str:
        """``mobile|fingerprint|status|episode``."""
        return f"{self.mobile}|{self.fingerprint}|{self.status}|{self.episode}"

    @property
    def firing_key(self) -> str:
        """The dedup key of the firing notification of the same episode."""
        return f"{self.mobile}|{self.fingerprint}|firing|{self.episode}"

    @property
    def resolved_key(self) -> str:
        """The dedup key of the resolved notification of the same episode."""
        return f"{self.mobile}|{self.fingerprint}|resolved|{self.episode}"


@dataclass(frozen=True)
class Policy:
    """The limits the store enforces atomically while recording (rules file ``limits:``).

    ``None`` means no limit. ``storm_window`` is seconds. ``day`` names the current day in
    ``BRIDGE_TZ`` (e.g. ``2026-11-29``), the unit of ``per_day``.
    """

    per_mobile_per_hour: int | None = None
    per_day: int | None = None
    storm_threshold: int | None = None
    storm_window: float = 0.0
    day: str = ""


@dataclass(frozen=True)
class Outcome:
    """What :meth:`Store.record` did with one notification: its final ``state`` and ``reason``,
    and ``id`` when a row was stored (``None`` for duplicates, which are only counted)."""

    notification: Notification
    state: State
    reason: str
    id: str | None = None


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
        }


@dataclass
class Claim:
    """The due items of one mobile, leased to one deliverer until ``lease_until``.

    The deliverer sends them (one SMS, or one storm SMS for several) and then calls
    ``mark_sent`` / ``mark_retry`` / ``mark_failed`` / ``release`` for every item.
    ``gapped`` is true when some of the items arrived while the mobile's pacing gap ran, i.e.
    they piled up and may be folded into one storm SMS.
    """

    mobile: str
    items: list[Item] = field(default_factory=list)
    lease_until: float = 0.0
    gapped: bool = False


def dumps_vars(variables: dict[str, str]) -> str:
    """Variables as compact JSON text (keeps Chinese readable)."""
    return json.dumps(variables, ensure_ascii=False, separators=(",", ":"))


class Store(abc.ABC):
    """Dedup state and durable outbox. See the module docstring for the common rules."""

    url: str = ""

    @abc.abstractmethod
    def record(self, notes: Sequence[Notification], policy: Policy, now: float) -> list[Outcome]:
        """**Atomically** decide and store a webhook's notifications, in order.

        For each notification: ``suppressed`` ones from the plan (``muted``) are stored as they
        are; a firing one whose dedup key was recorded less than ``repeat_interval`` ago is a
        ``duplicate``, and one whose episode already resolved is ``already resolved`` (a stale
        or out-of-order redelivery; both only counted, not stored); a resolved one is stored
        only when the firing of the same episode was paged to that mobile and it was not already
        recorded (else ``not paged`` / ``duplicate``; either way the episode is marked resolved
        for that mobile); then ``policy`` applies: ``per_day`` and
        ``per_mobile_per_hour`` (counting SMS queued or sent) turn it ``suppressed`` with the
        limit's name as reason; past ``storm_threshold`` SMS for one mobile within a storm window
        it is ``held`` until the window ends; otherwise it is ``queued`` and due now.
        Returns one :class:`Outcome` per notification, in order.
        """

    @abc.abstractmethod
    def claim(self, now: float, lease: float, min_gap: float, max_mobiles: int,
              max_items: int = 0) -> list[Claim]:
        """**Atomically** lease due items, grouped by mobile, to the caller.

        An item is due when its state is pending (queued, retrying, held), its ``due_at`` has
        passed and no unexpired lease holds it. A mobile is skipped while its pacing gap runs
        (``min_gap`` seconds after its last claim); claiming a mobile starts its gap. Returns at
        most ``max_mobiles`` claims; each claim holds the due items of its mobile, oldest first:
        all of them, or at most ``max_items`` when that is above 0 (the rest stay due).
        """

    @abc.abstractmethod
    def mark_sent(self, ids: Sequence[str], sid: str, fee: int, now: float,
                  reason: str = "") -> None:
        """Mark items sent with Juhe's ``sid`` and ``fee``; ends their lease."""

    @abc.abstractmethod
    def mark_retry(self, ids: Sequence[str], due_at: float, reason: str, now: float) -> None:
        """Mark items ``retrying``, due again at ``due_at``; counts an attempt; ends the lease."""

    @abc.abstractmethod
    def mark_failed(self, ids: Sequence[str], reason: str, now: float) -> None:
        """Mark items ``failed`` for good with ``reason``; ends their lease."""

    @abc.abstractmethod
    def release(self, ids: Sequence[str], due_at: float) -> None:
        """Give leased items back unchanged, due again at ``due_at`` (pacing)."""

    @abc.abstractmethod
    def episode_start(self, fingerprint: str, firing: bool, now: float) -> float | None:
        """**Atomically** get the start of an alert's current episode, for sources that send no
        ``startsAt`` (legacy Grafana). Firing: the stored start, or ``now`` stored as the start.
        Resolved: the stored start (``None`` if never seen firing), and the episode is closed.
        """

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
        before ``before``; returns how many items were deleted. Never blocks webhooks long."""

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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (safe to call twice)."""


def open_store(url: str, *, redis_wait: int = 0, redis_wait_timeout: float = 1.0) -> Store:
    """Open the store a ``BRIDGE_STORE`` URL names: ``sqlite:///PATH``, or Redis
    (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``; see
    :class:`bridge.store.redis.RedisStore`) with ``redis_wait`` replicas confirming each write
    within ``redis_wait_timeout`` seconds (``BRIDGE_REDIS_WAIT``). Raises ``ValueError``
    otherwise."""
    if url.startswith("sqlite:///"):
        from bridge.store.sqlite import SqliteStore

        return SqliteStore(url[len("sqlite:///"):])
    if url.startswith(REDIS_SCHEMES):
        from bridge.store.redis import RedisStore

        return RedisStore(url, wait=redis_wait, wait_timeout=redis_wait_timeout)
    scheme = url.split(":", 1)[0]
    raise ValueError(f"BRIDGE_STORE: expected sqlite:///PATH or redis://..., got {scheme}:")
