"""Payload sources: the one registry of webhook sources, each turning a decoded JSON body
into a Batch.

:data:`SOURCES` names every source once (``"alertmanager"``, ``"grafana"``, as in the endpoint
path ``/webhook/<source>``): its parser and how a body of it is told apart. The webhook views,
``bridge render`` and the operator page's playground all read it. :func:`read_body` turns the
raw bytes into JSON as every entry point reads them; ``PARSERS[source](payload)`` returns a
:class:`~bridge.alert.Batch`; :func:`parse_body` does both; :func:`detect` names the source of
a decoded body. All raise :class:`~bridge.errors.PayloadError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.alert import Batch
from bridge.errors import PayloadError
from bridge.sources import alertmanager, grafana

__all__ = ["PARSERS", "SOURCES", "PayloadSource", "detect", "parse_body", "read_body",
           "without_lone_surrogates"]


@dataclass(frozen=True)
class PayloadSource:
    """One webhook source: ``parse(payload) -> Batch`` (raises :class:`PayloadError`) and
    ``looks_like(payload) -> bool``, true when a decoded body is recognisably of this source
    (used by :func:`detect` where no source is named)."""

    name: str
    parse: Callable[[Any], Batch]
    looks_like: Callable[[Any], bool]


def _looks_like_grafana(payload: Any) -> bool:
    """Grafana unified alerting says ``"version": "1"`` (Alertmanager says ``"4"``) and has
    ``orgId``; the legacy dashboard alert has ``ruleName``/``state``/``evalMatches``."""
    return isinstance(payload, dict) and (
        payload.get("version") == "1" or "orgId" in payload
        or (payload.get("alerts") is None and any(k in payload for k in grafana.LEGACY_FIELDS)))


#: Every source, by name, in the order :func:`detect` tries them; the last is the default.
SOURCES: dict[str, PayloadSource] = {
    "grafana": PayloadSource("grafana", grafana.parse, _looks_like_grafana),
    "alertmanager": PayloadSource("alertmanager", alertmanager.parse, lambda payload: True),
}

#: ``name -> parse``, in name order (``alertmanager``, ``grafana``).
PARSERS: dict[str, Callable[[Any], Batch]] = {name: SOURCES[name].parse
                                              for name in sorted(SOURCES)}


def detect(payload: Any) -> str:
    """The name of the source a decoded body looks like: Grafana where its fields say so
    (:func:`_looks_like_grafana`), else Alertmanager."""
    return next(s.name for s in SOURCES.values() if s.looks_like(payload))


def without_lone_surrogates(payload: Any) -> Any:
    """``payload`` with every lone UTF-16 surrogate replaced by U+FFFD.

    JSON may spell one (``"\\ud800"``) but it is not Unicode: SQLite, the fingerprint hash and
    the Juhe request cannot encode it. Replacing it keeps the alert pageable. Raises
    ``RecursionError`` for a payload nested too deeply to re-encode.
    """
    text = json.dumps(payload, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.loads(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    return payload


def read_body(body: bytes) -> Any:
    """The JSON value of a webhook body (lone surrogates replaced). Raises
    :class:`PayloadError` ``body is not valid JSON: ...`` (also for nesting too deep)."""
    try:
        return without_lone_surrogates(json.loads(body))
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise PayloadError("body is not valid JSON: nested too deeply") from None


def parse_body(source: str | None, body: bytes) -> Batch:
    """:func:`read_body`, then the parser of ``source`` (``None``: the one :func:`detect`
    names). Raises :class:`PayloadError`, also for an unknown source name."""
    payload = read_body(body)
    if source is None:
        source = detect(payload)
    if source not in SOURCES:
        raise PayloadError(f"unknown source {source!r}: use {' or '.join(sorted(SOURCES))}")
    try:
        return SOURCES[source].parse(payload)
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
