"""Helpers shared by the payload parsers.

The checks every webhook body must pass (an object with an ``alerts`` list whose items have
``labels``: docs/api.md, POST /webhook/alertmanager, POST /webhook/grafana), RFC 3339 times, label
maps, and the Alertmanager-shaped group body that Alertmanager and Grafana unified alerting both
send. Pure functions: no I/O, no clock.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from bridge.alert import Alert, Batch, Source, Status, labels_fingerprint
from bridge.errors import PayloadError

T = TypeVar("T")
#: A sent fingerprint longer than this (characters) is replaced by the labels' fingerprint.
MAX_FINGERPRINT = 128

# RFC 3339 section 5.6 date-time, with Go's 9-digit (nanosecond) fractions.
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})"
    r"[Tt](?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})"
    r"(?:\.(?P<fraction>[0-9]{1,9}))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<off_hour>[0-9]{2}):(?P<off_minute>[0-5][0-9]))"
)


def parse_time(value: Any, where: str) -> datetime | None:
    """Parse an RFC 3339 timestamp into an aware datetime in UTC.

    Accepts 0 to 9 fraction digits (nanoseconds are truncated to microseconds) and a ``Z`` or
    ``±hh:mm`` offset. Returns ``None`` for ``None``, ``""`` and any time in year 1, which is
    how Go (and so Alertmanager and Grafana) writes its zero time ``0001-01-01T00:00:00Z``
    ("still firing" for ``endsAt``).

    Raises :class:`PayloadError` ``"<where>: not an RFC 3339 time"`` for anything else,
    including non-strings and impossible dates.
    """
    if value is None or value == "":
        return None
    match = _RFC3339.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise PayloadError(f"{where}: not an RFC 3339 time")
    year = int(match["year"])
    if year == 1:
        return None
    microsecond = int((match["fraction"] or "").ljust(6, "0")[:6])
    try:
        if match["utc"]:
            tz = UTC
        else:
            offset = timedelta(hours=int(match["off_hour"]), minutes=int(match["off_minute"]))
            tz = timezone(-offset if match["sign"] == "-" else offset)
        local = datetime(
            year,
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            microsecond,
            tzinfo=tz,
        )
        return local.astimezone(UTC)
    except (ValueError, OverflowError):
        # month 13, second 60, an offset of 24h or more, a year out of range after the offset
        raise PayloadError(f"{where}: not an RFC 3339 time") from None


def _text(value: Any) -> str:
    """A JSON value as label text: ``None`` -> ``""``; JSON literals and containers keep their
    JSON spelling (``true``, not ``True``); other values go through ``str()``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | dict | list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def str_map(value: Any, where: str) -> dict[str, str]:
    """Read a labels/annotations object as ``{str: str}``.

    ``None`` (field missing or ``null``) -> ``{}``. Non-string values are converted to text
    (``None`` -> ``""``, numbers with ``str()``, booleans as ``true``/``false``).

    Raises :class:`PayloadError` ``"<where>: not an object"`` when ``value`` is not a dict.
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: not an object")
    return {str(name): _text(item) for name, item in value.items()}


def opt_str(value: Any) -> str:
    """An optional scalar field (URL, receiver name) as a string: ``None`` -> ``""``."""
    return _text(value)


def require_object(payload: Any) -> dict[str, Any]:
    """Return the decoded JSON body if it is an object.

    Raises :class:`PayloadError` ``"body must be a JSON object"`` otherwise (e.g. a top-level
    array, as some forwarders send).
    """
    if not isinstance(payload, dict):
        raise PayloadError("body must be a JSON object")
    return payload


def alert_objects(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Return ``body["alerts"]`` after checking what a webhook body must hold (docs/api.md).

    Raises :class:`PayloadError` with one of ``"missing alerts"``, ``"alerts is not a list"``,
    ``"alerts[i]: not an object"``, ``"alerts[i]: missing labels"`` and
    ``"alerts[i].labels: not an object"``. An empty list and empty ``labels`` are fine.
    """
    if "alerts" not in body:
        raise PayloadError("missing alerts")
    alerts = body["alerts"]
    if not isinstance(alerts, list):
        raise PayloadError("alerts is not a list")
    for i, item in enumerate(alerts):
        if not isinstance(item, dict):
            raise PayloadError(f"alerts[{i}]: not an object")
        if "labels" not in item:
            raise PayloadError(f"alerts[{i}]: missing labels")
        if not isinstance(item["labels"], dict):
            raise PayloadError(f"alerts[{i}].labels: not an object")
    return alerts


def alert_status(value: Any, default: Status, where: str) -> Status:
    """An alert's own ``status``: ``"firing"`` or ``"resolved"``; missing or ``""`` -> ``default``.

    Raises :class:`PayloadError` ``'<where>: must be "firing" or "resolved"'`` otherwise.
    """
    if value is None or value == "":
        return default
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise PayloadError(f'{where}: must be "firing" or "resolved"')


def _count(value: Any) -> int:
    """A non-negative JSON integer, or 0 when missing or not one."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return 0


def _values(value: Any, where: str) -> dict[str, Any]:
    """Grafana's ``values`` (name -> number, as sent); ``null`` or missing -> ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: not an object")
    return {str(name): item for name, item in value.items()}


def parse_group(payload: Any, source: Source, *, with_values: bool = False) -> Batch:
    """Parse an Alertmanager-shaped webhook body (Alertmanager v3/v4, Grafana unified v1).

    Shape: ``{"alerts": [{"labels": {...}, "annotations"?, "status"?, "startsAt"?, "endsAt"?,
    "generatorURL"?, "fingerprint"?, "values"?}, ...], "status"?, "receiver"?, "externalURL"?,
    "commonLabels"?, "groupLabels"?, "truncatedAlerts"?}``; ``version`` is not checked and
    unknown fields are ignored.

    Each alert is judged by its own ``status`` (docs/api.md); when it has none, the group's
    ``status`` if that is ``"resolved"``, else ``"firing"``. The fingerprint is the one sent, or
    Alertmanager's :func:`labels_fingerprint` of the labels when missing or empty, so a firing
    and a resolved body of the same labels agree. ``values`` are read only when
    ``with_values`` (Grafana). ``truncatedAlerts`` that is missing or not a non-negative
    integer counts as 0.

    What makes the body unreadable raises :class:`PayloadError` naming the place (see
    :func:`require_object`, :func:`alert_objects`: not an object, no ``alerts`` list, an alert
    without ``labels``). Everything else is read leniently so that one odd alert never costs
    the others their page (Alertmanager does not retry a 4xx): a bad time is read as missing,
    bad ``annotations``/``values``/group labels as empty, and an alert whose ``status`` is
    neither firing nor resolved is skipped; each is listed in ``Batch.warnings``.
    """
    body = require_object(payload)
    items = alert_objects(body)
    group_status: Status = "resolved" if body.get("status") == "resolved" else "firing"
    alerts: list[Alert] = []
    warnings: list[str] = []
    skipped = 0

    def lenient(read: Callable[[Any, str], T], value: Any, where: str, fallback: T,
                how: str) -> T:
        try:
            return read(value, where)
        except PayloadError as exc:
            warnings.append(f"{exc}; {how}")
            return fallback

    for i, item in enumerate(items):
        where = f"alerts[{i}]"
        labels = str_map(item["labels"], f"{where}.labels")
        try:
            status = alert_status(item.get("status"), group_status, f"{where}.status")
        except PayloadError as exc:
            warnings.append(f"{exc}; alert skipped")
            skipped += 1
            continue
        fingerprint = item.get("fingerprint")
        alerts.append(
            Alert(
                labels=labels,
                annotations=lenient(str_map, item.get("annotations"), f"{where}.annotations",
                                    {}, "read as empty"),
                status=status,
                fingerprint=(
                    fingerprint
                    if isinstance(fingerprint, str) and 0 < len(fingerprint) <= MAX_FINGERPRINT
                    else labels_fingerprint(labels)
                ),
                source=source,
                starts_at=lenient(parse_time, item.get("startsAt"), f"{where}.startsAt", None,
                                  "read as missing"),
                ends_at=lenient(parse_time, item.get("endsAt"), f"{where}.endsAt", None,
                                "read as missing"),
                generator_url=opt_str(item.get("generatorURL")),
                silence_url=opt_str(item.get("silenceURL")),
                values=lenient(_values, item.get("values"), f"{where}.values", {},
                               "read as empty") if with_values else {},
            )
        )
    return Batch(
        source=source,
        alerts=alerts,
        receiver=opt_str(body.get("receiver")),
        external_url=opt_str(body.get("externalURL")),
        common_labels=lenient(str_map, body.get("commonLabels"), "commonLabels", {},
                              "read as empty"),
        group_labels=lenient(str_map, body.get("groupLabels"), "groupLabels", {},
                             "read as empty"),
        truncated_alerts=_count(body.get("truncatedAlerts")),
        skipped=skipped,
        warnings=tuple(warnings),
    )
