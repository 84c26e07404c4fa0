"""The rules file as pydantic models (docs/rules.md).

Validation here is per file and structural: types, durations, mobile numbers, matcher syntax,
variable names, time interval and schedule syntax. Cross-references (a route naming a receiver,
schedule, template or time interval; a receiver or schedule naming a person) are checked by
:mod:`bridge.rules.load` once every file is merged.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    field_validator,
    model_validator,
)

from bridge.config import parse_duration
from bridge.rules.defaults import DEFAULT_REPEAT_INTERVAL
from bridge.rules.matchers import Matcher, parse_matcher
from bridge.rules.schedules import ScheduleSpec
from bridge.rules.timeintervals import NamedTimeInterval

MOBILE_RE = re.compile(r"^1[3-9]\d{9}$")
VAR_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: A heartbeat's name is one segment of ``/heartbeat/<name>``.
HEARTBEAT_NAME_RE = re.compile(r"^[^/\s\x00-\x1f\x7f]+$")
#: The shortest ``expect`` of a heartbeat, seconds (docs/heartbeats.md).
MIN_EXPECT = 30.0
#: The prefix of a call's address. A notification's ``mobile`` is the number for an SMS and
#: ``voice:<number>`` for a phone call, and the store keys everything by it (dedup key, pacing,
#: claims, per-hour counts, the episode's paged entries), so that calls and SMS to one number
#: are deduplicated, paced and paired per channel (docs/providers.md, Calls).
VOICE_PREFIX = "voice:"


def call_address(mobile: str) -> str:
    """``13800138000`` -> ``voice:13800138000``, the address of a call to that number."""
    return VOICE_PREFIX + mobile


def split_address(address: str) -> tuple[Literal["sms", "voice"], str]:
    """``voice:13800138000`` -> ``("voice", "13800138000")``; a plain number -> ``("sms",
    number)``."""
    if address.startswith(VOICE_PREFIX):
        return "voice", address[len(VOICE_PREFIX):]
    return "sms", address


def valid_mobile(value: str) -> bool:
    """True for an 11-digit mainland China mobile number (``1[3-9]`` then 9 digits)."""
    return bool(MOBILE_RE.match(value))


def _mobile(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError("a mobile number must be a string of 11 digits")
    value = str(value).strip()
    if not valid_mobile(value):
        raise ValueError(f"not an 11-digit mainland China mobile number: {value!r}")
    return value


_LOOKS_LIKE_NUMBER = re.compile(r"[+\d][\d\s-]*")


def _receiver_entry(value: object) -> str:
    """A receiver entry: a mobile number (checked here) or a person's name (checked against
    ``people:`` once every file is merged)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return _mobile(value)
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a receiver entry is a person's name or an 11-digit mobile number")
    if _LOOKS_LIKE_NUMBER.fullmatch(value.strip()):
        return _mobile(value)
    return value.strip()


def _duration(value: Any) -> float:
    return parse_duration(value)


def _matcher(value: Any) -> Matcher:
    if isinstance(value, Matcher):
        return value
    if not isinstance(value, str):
        raise ValueError("a matcher must be a string like 'severity=\"critical\"'")
    return parse_matcher(value)


def _var_name(value: str) -> str:
    if not VAR_NAME_RE.match(value):
        raise ValueError(f"variable name must be a plain identifier: {value!r}")
    return value


Mobile = Annotated[str, BeforeValidator(_mobile)]
ReceiverEntry = Annotated[str, BeforeValidator(_receiver_entry)]
Duration = Annotated[float, BeforeValidator(_duration)]
MatcherField = Annotated[Matcher, PlainValidator(_matcher)]
VarName = Annotated[str, AfterValidator(_var_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _id_text(value: Any) -> Any:
    """A provider's id written as a YAML number (``template_id: 1234567``) as text."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


IdText = Annotated[str, BeforeValidator(_id_text), Field(min_length=1, max_length=64)]


class AliyunSms(_Strict):
    """The same SMS through Aliyun ``SendSms``: the registered sign name and template code."""

    sign_name: IdText
    template_code: IdText


class TencentSms(_Strict):
    """The same SMS through Tencent Cloud ``SendSms``: sign name, template id and SMS app id
    (``TemplateParamSet`` is ``vars`` in order: docs/providers.md, Templates)."""

    sign_name: IdText
    template_id: IdText
    sdk_app_id: IdText


def names_of(receiver: str | list[str] | None) -> list[str]:
    """A ``receiver`` field (one name, a list of names, or none) as a list of names."""
    if receiver is None:
        return []
    return [receiver] if isinstance(receiver, str) else list(receiver)


class _OneProvider(_Strict):
    """Exactly one of ``aliyun`` / ``tencent``."""

    @model_validator(mode="after")
    def _exactly_one(self) -> _OneProvider:
        named = [k for k in ("aliyun", "tencent") if getattr(self, k) is not None]
        if len(named) != 1:
            raise ValueError("name exactly one provider: aliyun or tencent")
        return self

    @property
    def provider(self) -> str:
        """``"aliyun"`` or ``"tencent"``: the one named."""
        return "aliyun" if getattr(self, "aliyun", None) is not None else "tencent"


class Fallback(_OneProvider):
    """``fallback:`` of a template: the same SMS through Aliyun or Tencent Cloud when Juhe
    cannot send it (docs/providers.md, Fallback)."""

    aliyun: AliyunSms | None = None
    tencent: TencentSms | None = None


class AliyunVoice(_Strict):
    """A call through Aliyun ``SingleCallByTts``: the TTS template code, and the number shown
    to the called person (optional: Aliyun's public pool when left out)."""

    tts_code: IdText
    called_show_number: IdText | None = None


class TencentVoice(_Strict):
    """A call through Tencent Cloud VMS ``SendTtsVoice``: template id and voice app id."""

    template_id: IdText
    voice_sdk_app_id: IdText


class Voice(_OneProvider):
    """``voice:`` of a template: a phone call that reads the variables out instead of an SMS
    (docs/providers.md, Calls)."""

    aliyun: AliyunVoice | None = None
    tencent: TencentVoice | None = None


class Template(_Strict):
    """A template: an SMS registered at Juhe (``tpl_id``), optionally with a ``fallback``
    through another provider, or a phone call (``voice``, no ``tpl_id``); its variable name
    -> Jinja2 (for Tencent Cloud the order of ``vars`` is the order of the parameters)."""

    tpl_id: int | None = Field(default=None, gt=0)
    vars: dict[VarName, str]
    max_var_len: int | None = Field(default=None, ge=2, le=500)
    fallback: Fallback | None = None
    voice: Voice | None = None

    @model_validator(mode="after")
    def _sms_or_call(self) -> Template:
        if self.voice is not None and self.tpl_id is not None:
            raise ValueError("a voice template is a call: it has no tpl_id")
        if self.voice is not None and self.fallback is not None:
            raise ValueError("a voice template has no fallback (a call is not an SMS)")
        if self.voice is None and self.tpl_id is None:
            raise ValueError("tpl_id: required (or voice: for a phone call)")
        return self

    @property
    def channel(self) -> str:
        """``"voice"`` for a call template, else ``"sms"``."""
        return "voice" if self.voice is not None else "sms"


class Storm(_Strict):
    """More than ``threshold`` SMS for one mobile within ``window`` seconds are held and folded
    into one SMS of ``template``."""

    threshold: int = Field(ge=1)
    window: Duration = Field(gt=0)
    template: str


class CallLimits(_Strict):
    """``limits.calls``: calls to one number at most one per ``min_gap`` seconds, ``per_hour``
    in any hour and ``per_day`` in any 24 hours. The defaults are Aliyun's flow control and
    the most a rules file may allow (docs/providers.md, Calls)."""

    min_gap: Duration = Field(default=60.0, ge=60.0)
    per_hour: int = Field(default=5, ge=1, le=5)
    per_day: int = Field(default=20, ge=1, le=20)


class Limits(_Strict):
    """Cost and pacing limits; ``None`` = no limit. ``min_gap`` is seconds (default 60).
    ``calls`` paces phone calls; calls do not count against the SMS limits."""

    min_gap: Duration = 60.0
    per_mobile_per_hour: int | None = Field(default=None, ge=1)
    per_day: int | None = Field(default=None, ge=1)
    storm: Storm | None = None
    calls: CallLimits = Field(default_factory=CallLimits)


class EscalationStep(_Strict):
    """One ``escalate:`` step of a route: ``after`` seconds from the route's first queued SMS
    of an episode, page ``receiver`` (a receiver or schedule) with ``template`` (default: the
    route's ``template``) unless the episode was acknowledged or resolved."""

    after: Duration = Field(gt=0)
    receiver: str
    template: str | None = None


class Route(_Strict):
    """One route: when every matcher holds, page ``receiver`` (+ ``mobiles_from``).

    ``receiver`` names receivers or schedules (one namespace), one or a list."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    matchers: list[MatcherField] = Field(default_factory=list)
    receiver: str | list[str] | None = None
    mobiles_from: str | None = None
    #: at most this many numbers from ``mobiles_from`` per alert (None: the file's, else 10)
    max_mobiles_from: int | None = Field(default=None, ge=1, le=1000)
    template: str
    resolved_template: str | None = None
    repeat_interval: Duration = Field(default=DEFAULT_REPEAT_INTERVAL, gt=0)
    continue_: bool = Field(default=False, alias="continue")
    mute_time_intervals: list[str] = Field(default_factory=list)
    active_time_intervals: list[str] = Field(default_factory=list)
    escalate: list[EscalationStep] = Field(default_factory=list)

    @property
    def receivers(self) -> list[str]:
        """``receiver`` as a list (empty when only ``mobiles_from`` pages)."""
        return names_of(self.receiver)


class Heartbeat(_Strict):
    """One ``heartbeats:`` entry (docs/heartbeats.md): a firing alert matching every one of
    ``matchers`` (none: only ``/heartbeat/<name>`` beats) is a beat; with no beat for
    ``expect`` seconds (at least :data:`MIN_EXPECT`) it is missing and pages ``receiver``
    (receivers or schedules, one or a list) with ``template``, as an episode of the alert
    ``HeartbeatMissing``; ``resolved_template`` goes to those paged when beats come back;
    ``escalate`` as for routes. ``receiver`` and ``template`` are optional here only so that
    the loader can say that they are missing in its own words, with their place."""

    matchers: list[MatcherField] = Field(default_factory=list)
    expect: Duration
    receiver: str | list[str] | None = None
    template: str | None = None
    resolved_template: str | None = None
    escalate: list[EscalationStep] = Field(default_factory=list)

    @field_validator("expect")
    @classmethod
    def _expect_long_enough(cls, value: float) -> float:
        if value < MIN_EXPECT:
            raise ValueError(f"expect must be at least {MIN_EXPECT:g}s (got {value:g}s)")
        return value

    @property
    def receivers(self) -> list[str]:
        """``receiver`` as a list (empty when none is given)."""
        return names_of(self.receiver)


class RulesFile(_Strict):
    """One rules file; in a folder each file holds a part of the whole."""

    people: dict[str, Mobile] = Field(default_factory=dict)
    receivers: dict[str, list[ReceiverEntry]] = Field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = Field(default_factory=dict)
    templates: dict[str, Template] = Field(default_factory=dict)
    time_intervals: list[NamedTimeInterval] = Field(default_factory=list)
    limits: Limits | None = None
    max_var_len: int | None = Field(default=None, ge=2, le=500)
    max_mobiles_from: int | None = Field(default=None, ge=1, le=1000)
    routes: list[Route] = Field(default_factory=list)
    heartbeats: dict[str, Heartbeat] = Field(default_factory=dict)

    @field_validator("heartbeats")
    @classmethod
    def _heartbeat_names(cls, value: dict[str, Heartbeat]) -> dict[str, Heartbeat]:
        for name in value:
            if not HEARTBEAT_NAME_RE.match(name):
                raise ValueError(f"heartbeat name {name!r} cannot be part of a URL path "
                                 "(/heartbeat/<name>): no '/', spaces or control characters")
        return value

    @field_validator("receivers")
    @classmethod
    def _receivers_not_empty(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, mobiles in value.items():
            if not mobiles:
                raise ValueError(f"receiver {name!r} has no mobile numbers")
        return value
