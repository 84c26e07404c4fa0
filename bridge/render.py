"""Rendering SMS template variables from an alert, in a Jinja2 sandbox.

Each variable of a rules-file template is a Jinja2 template compiled once when the rules load.
Alert text only ever enters as context data, so ``{{ 7*7 }}`` inside an annotation stays those
nine characters. Rendered values are folded (control characters and newlines -> one space) and
cut to ``max_var_len`` characters, the last of which is then ``…``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import ChainableUndefined, TemplateSyntaxError
from jinja2.environment import Template
from jinja2.exceptions import SecurityError, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.alert import Alert, Batch

log = logging.getLogger(__name__)

ELLIPSIS = "…"
#: Runs of C0/C1 control characters (newline, tab, CR, ...) and Unicode line separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
#: Invisible characters that can hide or reorder text on a phone: zero-width spaces and
#: joiners' neighbours, bidirectional embeddings/overrides/isolates, the BOM.
_INVISIBLE = re.compile(
    r"[\u00ad\u061c\u180e\u200b\u200c\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")
#: Pictographs an emoji ZWJ sequence is made of (with a variation selector or skin tone).
_EMOJI = "\u00a9\u00ae\u203c-\u2bff\u3030\u303d\u3297\u3299\U0001F000-\U0001FAFF"
#: A zero-width joiner outside an emoji sequence (it stays inside one: 👨‍👩‍👧 is one glyph).
_STRAY_ZWJ = re.compile(rf"(?<![{_EMOJI}\ufe0f])\u200d|\u200d(?![{_EMOJI}])")
RENDER_ERROR = "?"


def fold_and_cut(value: str, max_len: int) -> str:
    """Drop invisible characters (zero-width, bidi overrides; a zero-width joiner only outside
    an emoji sequence), fold each run of control
    characters to one space, strip, and cut to ``max_len`` characters; a cut value ends with
    ``…`` (the ``…`` counts in ``max_len``)."""
    value = _CONTROL.sub(" ", _STRAY_ZWJ.sub("", _INVISIBLE.sub("", value))).strip()
    if len(value) > max_len:
        return value[: max_len - 1].removesuffix("\u200d") + ELLIPSIS
    return value


def _localtime(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S", tz: str = "Asia/Shanghai") -> str:
    """Jinja2 filter ``localtime(fmt)``: an aware datetime (or UNIX seconds) shown in
    ``BRIDGE_TZ``; anything else (e.g. a missing time) renders as ``-``."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.fromtimestamp(value, ZoneInfo("UTC"))
    if not isinstance(value, datetime):
        return "-"
    return value.astimezone(ZoneInfo(tz)).strftime(fmt)


class Renderer:
    """Compiles and renders template variables. ``tz`` is ``BRIDGE_TZ`` for ``localtime``."""

    def __init__(self, tz: str = "Asia/Shanghai") -> None:
        self.tz = tz
        self.env = ImmutableSandboxedEnvironment(autoescape=False, undefined=ChainableUndefined)

        def localtime(value: Any, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
            return _localtime(value, fmt, self.tz)

        self.env.filters["localtime"] = localtime

    def compile(self, source: str) -> Template:
        """Compile one variable's expression; raises ``ValueError`` with Jinja2's message."""
        try:
            return self.env.from_string(source)
        except TemplateSyntaxError as exc:
            raise ValueError(f"template syntax error: {exc.message} (line {exc.lineno})") from None

    def render(self, templates: Mapping[str, Template], context: Mapping[str, Any],
               max_len: int) -> dict[str, str]:
        """Render every variable with ``context``; returns name -> folded, cut value.

        A variable whose rendering fails at run time (e.g. a filter given the wrong type)
        renders as ``?`` and is logged, so one odd alert never loses the page.
        """
        out: dict[str, str] = {}
        for name, tpl in templates.items():
            try:
                value = tpl.render(context)
            except (TemplateError, SecurityError, TypeError, ValueError, ArithmeticError,
                    AttributeError, LookupError) as exc:
                log.warning("variable %s failed to render: %s", name, exc)
                value = RENDER_ERROR
            out[name] = fold_and_cut(value, max_len)
        return out


def alert_context(alert: Alert, batch: Batch) -> dict[str, Any]:
    """What a template variable sees of an alert (SPEC "Rules file")."""
    return {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "status": alert.status,
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at,
        "fingerprint": alert.fingerprint,
        "source": alert.source,
        "generator_url": alert.generator_url,
        "values": dict(alert.values),
        "receiver": batch.receiver,
        "external_url": batch.external_url,
        "common_labels": dict(batch.common_labels),
        "group_labels": dict(batch.group_labels),
    }
