"""The normalised alert model every payload source is parsed into.

An :class:`Alert` is source-independent; a :class:`Batch` is one webhook's alerts together with
the group fields Alertmanager (and Grafana) send beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Status = Literal["firing", "resolved"]
#: where an alert came from; ``bridge`` for the bridge's own (``HeartbeatMissing``)
Source = Literal["alertmanager", "grafana", "bridge"]

_FNV_OFFSET = 14695981039346656037
_FNV_PRIME = 1099511628211
_MASK = (1 << 64) - 1
_SEP = 255


def _fnv1a(h: int, data: bytes) -> int:
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & _MASK
    return h


def labels_fingerprint(labels: Mapping[str, str]) -> str:
    """Return the fingerprint Alertmanager computes for a label set, as 16 hex digits.

    Source: prometheus/common ``model.LabelSet.Fingerprint`` — FNV-1a 64 over the label names
    in sorted order, each name and value followed by the separator byte 255; an empty set
    hashes to the FNV offset basis.
    """
    h = _FNV_OFFSET
    for name in sorted(labels):
        h = _fnv1a(h, name.encode("utf-8"))
        h = _fnv1a(h, bytes([_SEP]))
        h = _fnv1a(h, str(labels[name]).encode("utf-8"))
        h = _fnv1a(h, bytes([_SEP]))
    return f"{h:016x}"


@dataclass(frozen=True)
class Alert:
    """One alert, whatever sent it.

    ``labels``/``annotations``: str -> str. ``status``: each alert's own, not the group's.
    ``starts_at``/``ends_at``: timezone-aware datetimes, ``None`` when absent (``ends_at`` is
    ``None`` for Alertmanager's zero time ``0001-01-01T00:00:00Z``). ``starts_at`` is ``None``
    for a legacy Grafana alert: its episode is the time the bridge first saw it alerting.
    ``fingerprint``: as sent, or :func:`labels_fingerprint` of the labels when missing.
    ``values``: Grafana's ``values`` (name -> number), empty otherwise.
    """

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    status: Status
    fingerprint: str
    source: Source
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    generator_url: str = ""
    #: Grafana's ``silenceURL`` ("" when the webhook gave none)
    silence_url: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The ``alertname`` label, or ``""``."""
        return self.labels.get("alertname", "")


@dataclass(frozen=True)
class Batch:
    """One webhook body, normalised.

    ``truncated_alerts``: alerts Alertmanager left out of the body (cannot be paged).
    ``ignored``: alerts read but deliberately not acted on (legacy Grafana ``paused``/``pending``).
    ``skipped``: alerts left out because they could not be read (e.g. an unknown ``status``).
    ``warnings``: what was read leniently or skipped, each with its place
    (``alerts[1].startsAt: not an RFC 3339 time; read as missing``).
    """

    source: Source
    alerts: list[Alert]
    receiver: str = ""
    external_url: str = ""
    common_labels: Mapping[str, str] = field(default_factory=dict)
    group_labels: Mapping[str, str] = field(default_factory=dict)
    truncated_alerts: int = 0
    ignored: int = 0
    skipped: int = 0
    warnings: tuple[str, ...] = ()
