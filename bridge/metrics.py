"""Prometheus metrics, correct across gunicorn workers (prometheus_client multiprocess mode).

``bridge serve`` sets ``PROMETHEUS_MULTIPROC_DIR`` to a fresh folder before gunicorn starts, so
every worker writes its samples there and ``/metrics`` sums them. Without it (tests, ``bridge
worker``), the default registry of the one process is used. Numbers that live in the store
(queue depth per state) and the rules reload state are read when ``/metrics`` is scraped.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

WEBHOOKS = Counter("bridge_webhooks_total", "Webhook requests by source and HTTP status.",
                   ["source", "code"])
ALERTS = Counter("bridge_alerts_received_total", "Alerts received, by source and status.",
                 ["source", "status"])
UNROUTED = Counter("bridge_alerts_unrouted_total",
                   "Alerts that matched no route (nobody was paged for them).", ["source"])
TRUNCATED = Counter("bridge_alerts_truncated_total",
                    "Alerts Alertmanager left out of a webhook (truncatedAlerts); not pageable.")
NOTIFICATIONS = Counter("bridge_notifications_total",
                        "Notifications decided, by state (queued, held, suppressed) and reason.",
                        ["state", "reason"])
DELIVERIES = Counter("bridge_deliveries_total",
                     "Delivery outcomes of stored SMS: sent, retrying, failed.", ["outcome"])
JUHE_REQUESTS = Counter("bridge_juhe_requests_total", "Requests to Juhe by outcome and code.",
                        ["outcome", "code"])
JUHE_SECONDS = Histogram("bridge_juhe_send_seconds", "Latency of one Juhe send, seconds.",
                         buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
SMS_SENT = Counter("bridge_sms_sent_total",
                   "SMS accepted by a provider, by provider (juhe, aliyun, tencent).",
                   ["provider"])
CALLS_MADE = Counter("bridge_calls_total",
                     "Phone calls accepted by a provider, by provider (aliyun, tencent).",
                     ["provider"])
ESCALATIONS = Counter("bridge_escalations_total",
                      "Escalation steps run (done), by route and step index.", ["route", "step"])
LOGIN_FAILURES = Counter("bridge_login_failures_total",
                         "Wrong tokens posted to the operator page's /login.")
ACKS = Counter("bridge_acks_total", "Episodes acknowledged, by way (link, page, api).", ["via"])
SILENCE_ERRORS = Counter("bridge_silence_errors_total",
                         "Alertmanager silences given up on after 10 minutes of retries, by "
                         "operation (create, expire).", ["op"])
SHIFT_NOTICES = Counter("bridge_shift_notices_total",
                        "Shift notices recorded, by schedule and outcome state.",
                        ["schedule", "state"])
SKIPPED_MOBILES = Counter("bridge_mobiles_skipped_total",
                          "Invalid mobile numbers found through mobiles_from, skipped.")
MOBILES_OVER_LIMIT = Counter("bridge_mobiles_from_over_limit_total",
                             "Valid numbers from mobiles_from past max_mobiles_from, skipped.")


class _Snapshot(Collector):
    """Metrics read at scrape time: ``fn()`` returns the metric families to expose."""

    def __init__(self, fn: Callable[[], list[Metric]]) -> None:
        self.fn = fn

    def collect(self) -> Iterator[Metric]:
        yield from self.fn()


class _SizedFiles(MultiProcessCollector):
    """prometheus_client's multiprocess collector, minus files too short to hold a header.

    A process creates its metrics file empty and sizes it a moment later (client_python issue
    #1199, open in 0.26.0); read in that window, or left so by a process killed in it, the
    upstream collector raises ``struct.error`` and the whole scrape fails. Such a file holds
    no samples yet, so it is skipped. A file only grows, so a size read first bounds the read.
    """

    def collect(self) -> Iterator[Metric]:
        files = [f for f in glob.glob(os.path.join(self._path, "*.db")) if _size(f) >= _HEADER]
        return self.merge(files, accumulate=True)  # type: ignore[no-untyped-call,no-any-return]


_HEADER = 8  # bytes: the used-length int and its padding at the start of every file


def _size(path: str) -> int:
    """The file's size in bytes, -1 when it is gone (a dead process's live gauge)."""
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return -1


def gauge(name: str, doc: str, values: dict[str, float], label: str | None = None) -> Metric:
    """A gauge family; ``values`` maps a label value (or ``""`` without label) to the value."""
    g = GaugeMetricFamily(name, doc, labels=[label] if label else None)
    for key, value in values.items():
        g.add_metric([key] if label else [], value)
    return g


def render(snapshot: Callable[[], list[Metric]]) -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: all processes' samples plus ``snapshot()``."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        _SizedFiles(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001
            registry.register(collector)
    registry.register(_Snapshot(snapshot))
    return generate_latest(registry), CONTENT_TYPE_LATEST
