"""The Flask application: thin views over :class:`bridge.service.Bridge`.

Every answer is JSON; errors are ``{"error": "..."}`` with a 4xx (bad input, auth, size) or
503 (store unavailable). No exception ever reaches the client as an HTML traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Response, current_app, jsonify, request
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException

from bridge import metrics
from bridge.auth import grafana_signature_problem, token_ok
from bridge.config import mask_mobile
from bridge.errors import PayloadError, StoreUnavailable
from bridge.service import Bridge
from bridge.sources import parse_body
from bridge.store.base import STATES

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")


def bridge() -> Bridge:
    """The :class:`Bridge` of the current app."""
    return current_app.extensions["bridge"]  # type: ignore[no-any-return]


def error(message: str, status: int) -> tuple[Response, int]:
    """A JSON error answer."""
    return jsonify({"error": message}), status


def protected(view: Callable[P, R]) -> Callable[P, R | tuple[Response, int]]:
    """Require ``BRIDGE_TOKEN`` (Bearer or basic password) when it is set."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | tuple[Response, int]:
        token = bridge().settings.token
        if token and not token_ok(request.headers.get("Authorization"), token):
            log.warning("401 for %s %s from %s", request.method, request.path,
                        request.remote_addr)
            resp = error("unauthorized: send Authorization: Bearer TOKEN or basic auth", 401)
            resp[0].headers["WWW-Authenticate"] = 'Bearer realm="bridge", Basic realm="bridge"'
            return resp
        return view(*args, **kwargs)

    return wrapper


def create_app(b: Bridge) -> Flask:
    """Build the app around a ready :class:`Bridge`."""
    app = Flask("bridge")
    app.extensions["bridge"] = b
    # One byte more than allowed: werkzeug cuts a chunked body (no Content-Length) at this limit
    # without an error, so the webhook reads up to limit + 1 bytes and refuses what is longer.
    app.config["MAX_CONTENT_LENGTH"] = b.settings.max_body_bytes + 1
    app.json.ensure_ascii = False  # type: ignore[attr-defined]

    @app.post("/webhook/<source>")
    @protected
    def webhook(source: str) -> Any:
        if source not in ("alertmanager", "grafana"):
            return error(f"unknown source {source!r}: use alertmanager or grafana", 404)
        length = request.content_length
        if length is not None and length > b.settings.max_body_bytes:
            return error(f"body over {b.settings.max_body_bytes} bytes", 413)
        body = request.get_data(cache=False)
        if len(body) > b.settings.max_body_bytes:  # chunked, so not refused by its length
            return error(f"body over {b.settings.max_body_bytes} bytes", 413)
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
        return jsonify(b.intake(batch))

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    @app.get("/readyz")
    def readyz() -> Any:
        problems = b.readiness()
        if problems:
            return jsonify({"status": "not ready", "problems": problems}), 503
        return jsonify({"status": "ready", "rules": b.holder.rules.version})

    @app.post("/-/reload")
    @protected
    def reload() -> Any:
        problems = b.holder.reload()
        if problems:
            return jsonify({"error": "rules refused, old rules stay in force",
                            "problems": problems}), 400
        return jsonify({"status": "reloaded", "rules": b.holder.rules.summary()})

    @app.get("/api/notifications")
    @protected
    def notifications() -> Any:
        try:
            limit = max(1, min(int(request.args.get("limit", "50")), 1000))
        except ValueError:
            return error("limit must be a whole number", 400)
        state = request.args.get("status") or request.args.get("state") or None
        if state is not None and state not in STATES:
            return error(f"status must be one of {', '.join(STATES)}", 400)
        mobile = request.args.get("mobile") or None
        rules = b.holder.rules
        items = []
        for item in b.store.recent(limit, state, mobile):
            data = item.to_json()
            data["mobile"] = mask_mobile(item.mobile)
            data["person"] = rules.person_of(item.mobile)  # by the rules in force now
            items.append(data)
        return jsonify({"notifications": items})

    @app.get("/api/oncall")
    @protected
    def oncall() -> Any:
        try:
            next_n = int(request.args.get("next", "3"))
        except ValueError:
            return error("next must be a whole number", 400)
        if not 0 <= next_n <= 100:
            return error("next must be from 0 to 100", 400)
        return jsonify({"schedules": [v.to_json(mask=True) for v in b.oncall(next_n)]})

    @app.get("/metrics")
    def metrics_view() -> Any:
        body, ctype = metrics.render(lambda: snapshot(b))
        return Response(body, content_type=ctype)

    @app.errorhandler(StoreUnavailable)
    def store_down(exc: StoreUnavailable) -> Any:
        log.error("503: %s", exc)
        return error(f"store unavailable, retry later: {exc}", 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        if code == 413:
            return error(f"body over {b.settings.max_body_bytes} bytes", 413)
        return error(exc.description or exc.name, code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return error(f"internal error ({type(exc).__name__}); nothing was stored", 500)

    @app.after_request
    def count(resp: Response) -> Response:
        # From the URL, not from the view: a 401 answered before the view runs counts too.
        source = (request.view_args or {}).get("source") if request.endpoint == "webhook" \
            else None
        if source in ("alertmanager", "grafana"):
            metrics.WEBHOOKS.labels(source, str(resp.status_code)).inc()
        return resp

    return app


def snapshot(b: Bridge) -> list[Any]:
    """Scrape-time gauges: stored notifications per state, who is on call, and the rules
    reload state."""
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
    state = b.holder.state
    out.append(metrics.gauge("bridge_rules_last_reload_successful",
                             "1 when the last rules reload succeeded.",
                             {"": 1.0 if state.get("ok") else 0.0}))
    out.append(metrics.gauge("bridge_rules_last_reload_success_timestamp_seconds",
                             "When the rules last loaded successfully, UNIX seconds.",
                             {"": float(state.get("success_ts") or 0)}))
    return out
