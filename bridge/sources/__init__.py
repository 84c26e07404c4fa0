"""Payload parsers: one per webhook source, each turning a decoded JSON body into a Batch.

``PARSERS[source](payload)`` returns a :class:`~bridge.alert.Batch` or raises
:class:`~bridge.errors.PayloadError`; ``source`` is ``"alertmanager"`` or ``"grafana"``, as in
the endpoint path ``/webhook/<source>``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.alert import Batch
from bridge.sources import alertmanager, grafana

__all__ = ["PARSERS"]

PARSERS: dict[str, Callable[[Any], Batch]] = {
    "alertmanager": alertmanager.parse,
    "grafana": grafana.parse,
}
