"""Episodes, ack codes and escalation steps as data (docs/oncall.md, Episodes, Escalation).

Pure: dataclasses and functions of ``now``; the stores keep these records
(:class:`bridge.store.base.Store`) and :mod:`bridge.deliver.escalation` runs the due steps.

The words, one meaning each:

- an **episode** is one firing episode of one alert, named by ``(fingerprint, episode text)``;
- its **episode text** is the alert's ``startsAt`` as UTC ISO, the last part of a dedup key
  (``Notification.episode``);
- an **untimed start** is what stands in for ``startsAt`` for an alert without one (legacy
  Grafana): when the store first saw it firing (:meth:`bridge.store.base.Store.untimed_starts`);
  its episode text is that start's;
- an :class:`Episode` is the stored record of an episode that paged somebody (ack codes,
  acknowledgement, escalation steps): the record step creates it with the first firing
  notification of the episode that ends ``queued`` or ``held``.

Times are UNIX seconds.
"""

from __future__ import annotations

import secrets
import string
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any, Literal

from bridge.rules.render import ACK_PLACEHOLDER

EpisodeState = Literal["firing", "acknowledged", "resolved"]
StepState = Literal["pending", "done", "cancelled"]
EPISODE_STATES: tuple[EpisodeState, ...] = ("firing", "acknowledged", "resolved")

#: Letters and digits an ack code is drawn from.
CODE_ALPHABET = string.ascii_letters + string.digits
#: Characters in an ack code (docs/oncall.md, Ack codes: 8 to 16).
CODE_LEN = 12
#: A code stays valid this long after its episode resolved (seconds).
CODE_TTL_AFTER_RESOLVED = 24 * 3600.0
#: Unknown codes one client may try within one fixed minute before it gets 429.
UNKNOWN_CODE_LIMIT = 20

#: the placeholder stands in for a code, so it is cut like one
assert len(ACK_PLACEHOLDER) == CODE_LEN


#: Random bytes below this map evenly onto :data:`CODE_ALPHABET` (``b % 62``); the rest are
#: dropped (rejection sampling keeps every character equally likely).
_EVEN_BELOW = 256 - 256 % len(CODE_ALPHABET)


def new_code() -> str:
    """A fresh ack code: :data:`CODE_LEN` letters and digits, each drawn evenly from
    :mod:`secrets` bytes (one ``token_bytes`` call per code rather than a ``secrets.choice``
    per character: codes are made inside the intake's record step)."""
    chars: list[str] = []
    while len(chars) < CODE_LEN:
        chars.extend(CODE_ALPHABET[b % len(CODE_ALPHABET)]
                     for b in secrets.token_bytes(CODE_LEN + 4) if b < _EVEN_BELOW)
    return "".join(chars[:CODE_LEN])


def new_id() -> str:
    """A fresh opaque episode id: 25 hex digits, the first 9 the UNIX second it was made, the
    other 16 (64 bits) from :mod:`secrets`, so that ids made in the same second never clash
    in practice (neither store checks). Time first so that new episodes land at the end of the
    stores' indexes on the id instead of on a random page each (a quarter of a webhook's
    SQLite commit, issue 14). Not a secret: the ack code is (:func:`new_code`)."""
    return f"{int(time.time()):09x}{secrets.token_hex(8)}"


def valid_code(code: str) -> bool:
    """True when ``code`` has the shape of an ack code (8 to 16 letters and digits)."""
    return 8 <= len(code) <= 16 and all(c in CODE_ALPHABET for c in code)


@dataclass(frozen=True)
class StepSpec:
    """One ``escalate:`` step as a firing notification carries it to the record step:
    ``after`` seconds, ``receiver`` (receiver or schedule name), ``template`` (the route's own
    when the step names none)."""

    after: float
    receiver: str
    template: str


@dataclass(frozen=True)
class EpisodeInfo:
    """What an episode records of its alert, from the firing notification that created it."""

    alertname: str
    labels: dict[str, str]
    summary: str
    starts_at: float | None
    silence_url: str | None
    annotations: dict[str, str] = field(default_factory=dict)
    #: the alert's source (``alertmanager``, ``grafana``): an acknowledgement silences
    #: Alertmanager's alerts there (docs/oncall.md, "Silences in Alertmanager")
    source: str = ""


@dataclass(frozen=True)
class Paged:
    """One mobile paged for an episode (docs/oncall.md, Episodes). ``at`` is when it was
    paged (its firing SMS queued); ``sent_at`` when a firing SMS of the episode to it was
    first sent (UNIX seconds), ``None`` while none was: its resolved SMS goes only once one
    was (docs/oncall.md, "Resolved goes to who was paged"). An entry stored before the stores
    kept ``sent_at`` has ``at`` there (it counts as sent, as it did)."""

    mobile: str
    route: str
    resolved_template: str | None
    at: float
    level: int
    item_id: str | None
    code: str | None
    sent_at: float | None = None


#: What a store keeps as ``due_at`` of a step whose clock has not started (SQLite: a REAL).
NOT_STARTED = float("inf")


@dataclass(frozen=True)
class Step:
    """One escalation step of the route that started the episode (docs/oncall.md,
    Escalation); ``index`` is 1-based, as ``escalation`` in templates.

    ``due_at`` is ``None`` until the route's first SMS for the episode went out (sent, or
    ended failed) or an attempt of it met a configuration/account error, then that moment +
    ``after`` (docs/oncall.md, Escalation: nobody is escalated over before the first person
    could see the page, however long pacing held it; nor left unescalated while a refused key
    keeps the page from anyone).
    ``ran_at`` is when the escalation runner ended the step (``done``, or ``cancelled`` by it),
    else ``None``."""

    index: int
    after: float
    receiver: str
    template: str | None
    due_at: float | None
    state: StepState
    reason: str
    ran_at: float | None = None


@dataclass(frozen=True)
class Episode:
    """One firing episode that paged somebody (docs/oncall.md, Episodes)."""

    id: str
    fingerprint: str
    episode: str
    alertname: str
    labels: dict[str, str]
    summary: str
    starts_at: float | None
    silence_url: str | None
    route: str
    state: EpisodeState
    acknowledged_by: str | None
    acknowledged_at: float | None
    acknowledged_via: str | None
    resolved_at: float | None
    created_at: float
    paged: tuple[Paged, ...]
    steps: tuple[Step, ...]
    #: the alert's annotations at the first page (what escalation steps render with)
    annotations: dict[str, str] = field(default_factory=dict)
    #: the alert's source (``alertmanager``, ``grafana``; ``""`` for episodes stored before
    #: it was recorded)
    source: str = ""
    #: the id of the Alertmanager silence its acknowledgement created, else ``None``
    silence_id: str | None = None

    def paged_mobiles(self) -> set[str]:
        """Every mobile paged for the episode."""
        return {p.mobile for p in self.paged}

    def paged_to(self, address: str) -> Paged | None:
        """The Paged entry of ``address`` (a mobile, or ``voice:<mobile>``), else ``None``."""
        return next((p for p in self.paged if p.mobile == address), None)

    def to_json(self) -> dict[str, Any]:
        """The plain shape (mobiles still in clear: the caller masks them)."""
        return {
            "id": self.id, "fingerprint": self.fingerprint, "episode": self.episode,
            "alertname": self.alertname, "labels": dict(self.labels), "summary": self.summary,
            "annotations": dict(self.annotations),
            "starts_at": self.starts_at, "silence_url": self.silence_url, "route": self.route,
            "state": self.state, "acknowledged_by": self.acknowledged_by,
            "acknowledged_at": self.acknowledged_at, "acknowledged_via": self.acknowledged_via,
            "resolved_at": self.resolved_at, "created_at": self.created_at,
            "source": self.source, "silence_id": self.silence_id,
            "paged": [{"mobile": p.mobile, "route": p.route, "at": p.at, "level": p.level,
                       "item_id": p.item_id, "resolved_template": p.resolved_template}
                      for p in self.paged],
            "escalation": [{"index": s.index, "after": s.after, "receiver": s.receiver,
                            "template": s.template, "due_at": s.due_at, "state": s.state,
                            "reason": s.reason, "ran_at": s.ran_at} for s in self.steps],
        }


@dataclass(frozen=True)
class StepClaim:
    """A due step leased to one runner until ``lease_until``; ``finish_step`` with ``token``
    (a lapsed lease's token changes nothing)."""

    episode_id: str
    index: int
    token: str
    lease_until: float


StepAction = Literal["wait", "cancel", "page"]


def step_action(episode: Episode, step: Step, now: float) -> tuple[StepAction, str]:
    """What to do with ``step`` of ``episode`` at ``now``: ``wait`` (pending, not due yet),
    ``cancel`` (the episode was acknowledged or resolved: the reason says so; also a step
    no longer pending, reason ``""``) or ``page`` (due and the episode still firing). A step
    whose clock has not started (``due_at`` ``None``) waits."""
    if step.state != "pending":
        return "cancel", ""
    if episode.state == "acknowledged":
        return "cancel", f"acknowledged by {episode.acknowledged_by}"
    if episode.state == "resolved":
        return "cancel", "resolved"
    if step.due_at is None or now < step.due_at:
        return "wait", ""
    return "page", ""


#: The longest acknowledger name (``by``) accepted, in characters (docs/oncall.md).
NAME_MAX = 64
#: Characters that reorder text (bidirectional embeddings, overrides, isolates and marks): an
#: acknowledger name with one could make "Acknowledged by" read as somebody else.
BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                          "\u2066\u2067\u2068\u2069")


def name_problem(by: str) -> str | None:
    """Why ``by`` cannot name an acknowledger, or ``None`` when it can: more than
    :data:`NAME_MAX` characters, a control character (Unicode categories Cc, Zl, Zp: NUL, tab,
    newline ...), one of :data:`BIDI_CONTROLS` or a lone surrogate (JSON's ``"\\ud800"``,
    which no UTF-8 store can keep), or no visible character at all although not empty (only
    spaces, zero-width and combining characters: "Acknowledged by" would show nothing)
    (docs/oncall.md, "Acknowledging"). An empty name is the caller's to handle."""
    if len(by) > NAME_MAX:
        return f"the name is longer than {NAME_MAX} characters"
    for c in by:
        if c in BIDI_CONTROLS:
            return f"the name contains a bidirectional control character (U+{ord(c):04X})"
        if unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            return f"the name contains a control character (U+{ord(c):04X})"
        if unicodedata.category(c) == "Cs":
            return f"the name contains a lone surrogate (U+{ord(c):04X})"
    if by.strip() and not any(unicodedata.category(c)[0] in "LNPS" for c in by):
        return "the name has no visible character"
    return None


def already_reason(episode: Episode, zone: tzinfo) -> str:
    """Why an acknowledgement of ``episode`` changed nothing, times in ``zone``
    (``BRIDGE_TZ``) to the minute: ``already acknowledged by zhang at 2026-12-08 03:24`` or
    ``already resolved at 2026-12-08 03:24`` (docs/api.md, acknowledging); ``""`` for a
    firing episode."""
    def at(ts: float | None) -> str:
        return "?" if ts is None else datetime.fromtimestamp(ts, zone).strftime("%Y-%m-%d %H:%M")

    if episode.state == "acknowledged":
        return f"already acknowledged by {episode.acknowledged_by} at {at(episode.acknowledged_at)}"
    if episode.state == "resolved":
        return f"already resolved at {at(episode.resolved_at)}"
    return ""


def code_expired(episode: Episode, now: float) -> bool:
    """True when ``episode``'s ack codes no longer open it: 24 h after it resolved."""
    return episode.resolved_at is not None and now > episode.resolved_at + CODE_TTL_AFTER_RESOLVED


def fill_code(variables: dict[str, str], code: str) -> dict[str, str]:
    """``variables`` with :data:`ACK_PLACEHOLDER` replaced by ``code``."""
    return {k: v.replace(ACK_PLACEHOLDER, code) for k, v in variables.items()}


def has_placeholder(variables: dict[str, str]) -> bool:
    """True when some variable renders ``{{ ack_code }}``."""
    return any(ACK_PLACEHOLDER in v for v in variables.values())
