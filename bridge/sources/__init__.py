"""Payload parsers: one per webhook source, each turning a decoded JSON body into a Batch.

:func:`read_body` turns the raw bytes into JSON as every entry point reads them (the webhook,
``bridge render``); ``PARSERS[source](payload)`` returns a :class:`~bridge.alert.Batch`;
:func:`parse_body` does both. All raise :class:`~bridge.errors.PayloadError`; ``source`` is
``"alertmanager"`` or ``"grafana"``, as in the endpoint path ``/webhook/<source>``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from bridge.alert import Batch
from bridge.errors import PayloadError
from bridge.sources import alertmanager, grafana

__all__ = ["PARSERS", "parse_body", "read_body", "without_lone_surrogates"]

PARSERS: dict[str, Callable[[Any], Batch]] = {
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
}


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


def parse_body(source: str, body: bytes) -> Batch:
    """:func:`read_body`, then the parser of ``source``. Raises :class:`PayloadError`."""
    payload = read_body(body)
    try:
        return PARSERS[source](payload)
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
