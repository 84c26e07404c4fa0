"""Prometheus Alertmanager webhook bodies.

Source: Alertmanager's webhook notifier (``notify/webhook``, ``"version": "4"``), documented in
prometheus/alertmanager ``docs/configuration.md`` under ``<webhook_config>``. The older
``"version": "3"`` body and a body without ``version`` are read the same way (docs/api.md).
"""

from __future__ import annotations

from typing import Any

from bridge.alert import Batch
from bridge.sources.common import parse_group


def parse(payload: Any) -> Batch:
    """Parse a decoded Alertmanager webhook body into a :class:`Batch` (``source="alertmanager"``).

    ``payload``: the decoded JSON, ``{"alerts": [{"labels": {...}, ...}], ...}``. Each alert
    keeps its own ``status``; ``fingerprint`` as sent or computed from the labels;
    ``startsAt``/``endsAt`` become UTC datetimes (zero time -> ``None``); ``truncatedAlerts``
    becomes ``Batch.truncated_alerts``.

    Raises :class:`~bridge.errors.PayloadError` naming the place of the problem, e.g.
    ``"body must be a JSON object"``, ``"missing alerts"``, ``"alerts[0]: missing labels"``.
    """
    return parse_group(payload, "alertmanager")
