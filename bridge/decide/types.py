"""The values the decide stage hands the store: what the plan decided (:class:`Notification`,
:class:`EpisodeMark`) and how the store records it (:class:`Policy`, :data:`PAGING_POLICY`).

A leaf: it imports only :mod:`bridge.decide.episodes` and :mod:`bridge.rules.defaults` (no rules
loading, pydantic or YAML behind either), so the store contract (:mod:`bridge.store.base`) and
the plan (:mod:`bridge.decide.plan`) both import it and neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.decide.episodes import EpisodeInfo, StepSpec
from bridge.rules.defaults import DEFAULT_REPEAT_INTERVAL
from bridge.rules.model import split_address

#: The state of a stored notification.
State = Literal["queued", "sent", "retrying", "failed", "suppressed", "held"]


@dataclass(frozen=True)
class Notification:
    """One SMS decided for one mobile about one alert.

    The dedup key is ``(mobile, fingerprint, status, episode)``; ``episode`` is the alert's
    ``startsAt`` as a UTC ISO string (the firing episode). For an alert without ``startsAt``
    (legacy Grafana) ``untimed`` is true and the store settles ``episode`` inside its atomic
    record step (see :class:`EpisodeMark`); what the plan put there is only what it rendered
    with. ``variables`` are already rendered and cut; ``repeat_interval`` is seconds.
    ``state`` is ``queued`` unless the plan already decided ``suppressed`` (e.g. reason
    ``muted``).
    """

    mobile: str
    fingerprint: str
    #: ``notice`` for a shift notice (docs/oncall.md): deduplicated like a firing, no episode
    status: Literal["firing", "resolved", "notice"]
    episode: str
    route: str
    alertname: str
    tpl_id: int
    variables: dict[str, str]
    repeat_interval: float = DEFAULT_REPEAT_INTERVAL
    state: Literal["queued", "suppressed"] = "queued"
    reason: str = ""
    untimed: bool = False
    #: the template of the resolved SMS the route that decided this firing would send
    resolved_template: str | None = None
    #: 0 for a route's own page, N for escalation step N
    level: int = 0
    #: the route's escalation steps (a firing that opens an episode schedules them)
    steps: tuple[StepSpec, ...] = ()
    #: what the episode records of the alert (firing notifications)
    info: EpisodeInfo | None = None
    #: the name of the template (for its fallback provider or its call); ``tpl_id`` is 0 for
    #: a call
    template: str | None = None

    @property
    def channel(self) -> Literal["sms", "voice"]:
        """``voice`` for a phone call (``mobile`` is ``voice:<number>``), else ``sms``."""
        return split_address(self.mobile)[0]


@dataclass(frozen=True)
class EpisodeMark:
    """An alert without ``startsAt`` seen in a webhook, routed or not: the store's record step
    opens its episode when ``firing`` (stored start, else ``now`` stored) and closes it when
    resolved (after deciding the batch's notifications with the stored start)."""

    fingerprint: str
    firing: bool


@dataclass(frozen=True)
class PolicyRow:
    """One row of the paging policy: in sub-step ``step``, when ``condition`` holds, the
    notification ends ``state`` with ``reason`` (``None``: the plan's own reason); ``stored``
    says whether a row is written (else it is only counted); ``effect`` is what the sub-step
    writes whether or not its condition held (the state later rows and later webhooks read)."""

    step: str
    condition: str
    state: State
    reason: str | None
    stored: bool
    effect: str = ""


#: The paging policy of :meth:`bridge.store.base.Store.record`, the one place it is written
#: down (issue 16). Before the rows, sub-step ``episodes`` settles the episode of alerts
#: without ``startsAt``: for each :class:`EpisodeMark` that is firing the stored start, else
#: ``now`` stored as the start; an ``untimed`` notification's episode becomes the stored
#: start's :func:`bridge.store.base.episode_text` (``""`` when none: a resolved never seen
#: firing). After the rows, the episodes of resolved marks are closed. Then each notification,
#: in order, goes down the rows and stops at the first whose condition holds; the dedup keys
#: are computed inside the step from the settled episode (:func:`bridge.store.base.dedup_key`).
#: Both implementations name these sub-steps in the same order (``store/sqlite/record.py``
#: ``RecordStep.decide``, ``store/redis/store.py`` ``RECORD_LUA``: comments
#: ``policy row: <step>``); a third store is written from this table alone.
PAGING_POLICY: tuple[PolicyRow, ...] = (
    PolicyRow("planned", "the plan decided it suppressed (muted)", "suppressed", None, True),
    PolicyRow("dedup", "firing whose dedup key was recorded less than its repeat_interval ago,"
              " or resolved whose dedup key was recorded at all", "suppressed", "duplicate",
              False),
    PolicyRow("already_resolved", "firing whose episode was already resolved for that mobile"
              " (a stale or out-of-order redelivery)", "suppressed", "already resolved",
              False),
    PolicyRow("acknowledged", "firing of an episode that was acknowledged (repeats and"
              " escalation pages)", "suppressed", "acknowledged", True),
    PolicyRow("resolved_pairing", "resolved whose firing of the same episode was not paged to"
              " that mobile", "suppressed", "not paged", False,
              effect="its dedup key is recorded not paged, so a late firing of the episode is"
                     " 'already resolved'"),
    PolicyRow("per_day", "an SMS (not a call: address voice:<mobile>) when per_day SMS were"
              " already queued on policy.day (all mobiles)",
              "suppressed", "per_day limit", True,
              effect="from here on the dedup key is recorded at now, paged only when no limit"
                     " row holds (a limited firing never pairs a resolved)"),
    PolicyRow("per_mobile_per_hour", "an SMS (not a call) when per_mobile_per_hour SMS to that"
              " mobile were queued in the last 3600 s", "suppressed",
              "per_mobile_per_hour limit", True),
    PolicyRow("storm", "an SMS (a call is never held for a storm) when more than"
              " storm_threshold SMS for that mobile are in its storm window (one"
              " opens at the first SMS past a closed window, lasting storm_window)", "held",
              "storm", True,
              effect="the window counts every notification that reaches this row; a held one"
                     " is due when the window ends"),
    PolicyRow("queued", "otherwise (a shift notice, status notice, keeps its reason 'shift"
              " notice'; it is deduplicated like a firing and pairs with nothing)", "queued",
              "", True,
              effect="an SMS counts for per_day and per_mobile_per_hour; due now"),
)


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
