"""The webhooks, health, metrics and the JSON API (:data:`api`): thin views over
:class:`bridge.intake.service.Bridge`, reached one way (:func:`bridge.web.guard.bridge`).

Every answer of :data:`api` is JSON; errors are ``{"error": "..."}`` with a 4xx (bad input,
auth, size) or 503 (store unavailable). No exception ever reaches the client as an HTML
traceback.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException

from bridge import metrics
from bridge.errors import PayloadError, StoreUnavailable
from bridge.intake import readside
from bridge.intake.observe import IntakeResult
from bridge.intake.service import Bridge
from bridge.sources import SOURCES, parse_body
from bridge.web.guard import bridge, error, grafana_signature_problem, protected

log = logging.getLogger("bridge.app")  # stable log name (not the module path)

#: The webhooks, health, metrics and the JSON API.
api = Blueprint("api", __name__)


def too_large() -> tuple[Response, int]:
    """The 413 answer for a body over ``BRIDGE_MAX_BODY_BYTES``."""
    return error(f"body over {bridge().settings.max_body_bytes} bytes", 413)


@api.post("/webhook/<source>")
@protected
def webhook(source: str) -> Any:
    """Take one webhook body of ``source`` (a name in :data:`~bridge.sources.SOURCES`)."""
    b = bridge()
    if source not in SOURCES:
        return error(f"unknown source {source!r}: use {' or '.join(sorted(SOURCES))}", 404)
    length = request.content_length
    if length is not None and length > b.settings.max_body_bytes:
        return too_large()
    body = request.get_data(cache=False)
    if len(body) > b.settings.max_body_bytes:  # chunked, so not refused by its length
        return too_large()
    if source == "grafana" and b.settings.grafana_hmac_secret:
        problem = grafana_signature_problem(
            body, request.headers, b.settings.grafana_hmac_secret,
            b.settings.grafana_hmac_timestamp_header)
        if problem:
            log.warning("401 grafana webhook: %s", problem)
            return error(problem, 401)
    try:
        batch = parse_body(source, body)
    except PayloadError as exc:
        return error(str(exc), 400)
    return jsonify(answer(b.intake(batch)))


@api.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@api.get("/readyz")
def readyz() -> Any:
    b = bridge()
    problems = b.readiness()
    if problems:
        return jsonify({"status": "not ready", "problems": problems}), 503
    return jsonify({"status": "ready", "rules": b.holder.rules.version})


@api.post("/-/reload")
@protected
def reload() -> Any:
    b = bridge()
    problems = b.holder.reload()
    if problems:
        return jsonify({"error": "rules refused, old rules stay in force",
                        "problems": problems}), 400
    return jsonify({"status": "reloaded", "rules": b.holder.rules.summary()})


@api.get("/api/notifications")
@protected
def notifications() -> Any:
    """``?limit=``, ``?state=`` (or ``?status=``, as docs/api.md names it),
    ``?mobile=``, ``?alertname=``: see :func:`bridge.intake.readside.notifications`."""
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        return error("limit must be a whole number", 400)
    state = request.args.get("state") or request.args.get("status") or None
    try:
        items = readside.notifications(bridge(), limit, state,
                                       request.args.get("mobile") or None,
                                       request.args.get("alertname") or None)
    except ValueError as exc:  # named as the caller named it
        name = "state" if request.args.get("state") else "status"
        return error(str(exc).replace("state", name, 1), 400)
    return jsonify({"notifications": items})


@api.get("/api/oncall")
@protected
def oncall() -> Any:
    """``?next=N`` (0 to 100, default 3): see :func:`bridge.intake.readside.oncall`."""
    try:
        next_n = int(request.args.get("next", "3"))
    except ValueError:
        return error("next must be a whole number", 400)
    if not 0 <= next_n <= 100:
        return error("next must be from 0 to 100", 400)
    return jsonify({"schedules": readside.oncall(bridge(), next_n)})


@api.get("/metrics")
def metrics_view() -> Any:
    b = bridge()
    body, ctype = metrics.render(lambda: snapshot(b))
    return Response(body, content_type=ctype)


@api.app_errorhandler(StoreUnavailable)
def store_down(exc: StoreUnavailable) -> Any:
    log.error("503: %s", exc)
    return error(f"store unavailable, retry later: {exc}", 503)


@api.app_errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Any:
    code = exc.code or 500
    if code == 413:
        return too_large()
    return error(exc.description or exc.name, code)


@api.app_errorhandler(Exception)
def unexpected(exc: Exception) -> Any:
    log.exception("unexpected error on %s %s", request.method, request.path)
    return error(f"internal error ({type(exc).__name__}); nothing was stored", 500)


@api.after_app_request
def count(resp: Response) -> Response:
    # From the URL, not from the view: a 401 answered before the view runs counts too.
    source = (request.view_args or {}).get("source") if request.endpoint == "api.webhook" \
        else None
    if source in SOURCES:
        metrics.WEBHOOKS.labels(source, str(resp.status_code)).inc()
    return resp


def snapshot(b: Bridge) -> list[Any]:
    """Scrape-time gauges: stored notifications per state, delivery lag and last pass, who is
    on call, the heartbeats and the rules reload state."""
    out = []
    try:
        counts = b.store.counts()
        out.append(metrics.gauge("bridge_queue_depth",
                                 "Stored notifications by state (queued/retrying/held are due).",
                                 {k: float(v) for k, v in counts.items()}, "state"))
    except StoreUnavailable:
        pass
    oncall = GaugeMetricFamily("bridge_oncall", "1 for whoever is on call now, per schedule.",
                               labels=["schedule", "person"])
    for view in b.oncall(next_n=0):
        for person in view.now.people:
            oncall.add_metric([view.schedule.name, person], 1.0)
    out.append(oncall)
    try:
        now = time.time()
        last_pass, oldest_due = b.delivery_state(now)
        out.append(metrics.gauge(
            "bridge_delivery_lag_seconds",
            "How long the oldest due SMS has waited unsent, seconds (0 when none).",
            {"": max(now - oldest_due, 0.0) if oldest_due is not None else 0.0}))
        out.append(metrics.gauge(
            "bridge_delivery_last_pass_timestamp_seconds",
            "When a deliverer (of any process or instance) last finished a pass of its loop,"
            " UNIX seconds (0 when never).", {"": last_pass or 0.0}))
    except StoreUnavailable:
        pass
    out.extend(heartbeat_gauges(b))
    state = b.holder.state
    out.append(metrics.gauge("bridge_rules_last_reload_successful",
                             "1 when the last rules reload succeeded.",
                             {"": 1.0 if state.get("ok") else 0.0}))
    out.append(metrics.gauge("bridge_rules_last_reload_success_timestamp_seconds",
                             "When the rules last loaded successfully, UNIX seconds.",
                             {"": float(state.get("success_ts") or 0)}))
    return out


def heartbeat_gauges(b: Bridge) -> list[Any]:
    """``bridge_heartbeat_up{name}`` (1 up, 0 missing, absent while waiting) and
    ``bridge_heartbeat_last_seen_timestamp_seconds{name}`` (docs/heartbeats.md); none when
    the store cannot be read."""
    try:
        views = b.heartbeat_views()
    except StoreUnavailable:
        return []
    seen = [(n, v) for n, _, v in views if v.state != "waiting"]
    return [
        metrics.gauge("bridge_heartbeat_up", "1 while a heartbeat is up, 0 while missing "
                      "(absent while waiting for its first beat).",
                      {n: 1.0 if v.state == "up" else 0.0 for n, v in seen}, "name"),
        metrics.gauge("bridge_heartbeat_last_seen_timestamp_seconds",
                      "When a heartbeat last beat, UNIX seconds.",
                      {n: float(v.last_seen or 0) for n, v in seen}, "name"),
    ]


def answer(result: IntakeResult) -> dict[str, Any]:
    """The webhook's JSON answer (docs/api.md, POST /webhook/...): ``alerts``, ``queued``,
    ``suppressed``, ``held`` always; ``heartbeats`` (beats: docs/heartbeats.md), ``unrouted``,
    ``truncated``, ``ignored``, ``skipped`` when not zero; ``warnings`` (what was read
    leniently or skipped, with its place) when any."""
    batch, plan = result.batch, result.plan
    counts: dict[str, Any] = {"alerts": len(batch.alerts), "queued": 0, "suppressed": 0,
                              "held": 0}
    for o in result.outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    extra = {"heartbeats": result.heartbeats, "unrouted": plan.unrouted,
             "truncated": batch.truncated_alerts,
             "ignored": batch.ignored, "skipped": batch.skipped}
    counts.update({k: v for k, v in extra.items() if v})
    if batch.warnings or plan.warnings:
        counts["warnings"] = [*batch.warnings, *plan.warnings]
    return counts
