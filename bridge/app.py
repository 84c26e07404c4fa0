"""The Flask application: thin views over :class:`bridge.service.Bridge`.

:func:`create_app` is the factory, as in Flask's tutorial: it builds the bridge (or takes the
parts a test hands it), registers the blueprints (:data:`api` here, the operator page in
:mod:`bridge.page`) and the error handlers. Views reach the bridge one way, :func:`bridge`.

Every answer of :data:`api` is JSON; errors are ``{"error": "..."}`` with a 4xx (bad input,
auth, size) or 503 (store unavailable). No exception ever reaches the client as an HTML
traceback.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import HTTPException

from bridge import metrics, operator
from bridge.auth import grafana_signature_problem, token_ok
from bridge.config import Settings
from bridge.delivery import Sender
from bridge.errors import PayloadError, StoreUnavailable
from bridge.observe import IntakeResult
from bridge.service import Bridge
from bridge.sources import SOURCES, parse_body
from bridge.store.base import Store

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

#: The webhooks, health, metrics and the JSON API.
api = Blueprint("api", __name__)


def bridge() -> Bridge:
    """The :class:`Bridge` of the current app (the one way views reach it)."""
    return current_app.extensions["bridge"]  # type: ignore[no-any-return]


def bridge_of(app: Flask) -> Bridge:
    """The :class:`Bridge` an app built by :func:`create_app` serves (for gunicorn hooks)."""
    return app.extensions["bridge"]  # type: ignore[no-any-return]


def error(message: str, status: int) -> tuple[Response, int]:
    """A JSON error answer."""
    return jsonify({"error": message}), status


def too_large() -> tuple[Response, int]:
    """The 413 answer for a body over ``BRIDGE_MAX_BODY_BYTES``."""
    return error(f"body over {bridge().settings.max_body_bytes} bytes", 413)


def protected(view: Callable[P, R]) -> Callable[P, R | tuple[Response, int]]:
    """Require ``BRIDGE_TOKEN`` (Bearer or basic password) when it is set. A ``GET`` also
    passes with the operator page's session (its own scripts read ``/api/*``)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | tuple[Response, int]:
        from bridge.page import logged_in

        token = bridge().settings.token
        if token and not token_ok(request.headers.get("Authorization"), token) and not (
                request.method == "GET" and logged_in()):
            log.warning("401 for %s %s from %s", request.method, request.path,
                        request.remote_addr)
            resp = error("unauthorized: send Authorization: Bearer TOKEN or basic auth", 401)
            resp[0].headers["WWW-Authenticate"] = 'Bearer realm="bridge", Basic realm="bridge"'
            return resp
        return view(*args, **kwargs)

    return wrapper


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
    """``?limit=``, ``?state=`` (``?status=`` is the SPEC's name for it, also accepted),
    ``?mobile=``, ``?alertname=``: see :func:`bridge.operator.notifications`."""
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        return error("limit must be a whole number", 400)
    state = request.args.get("state") or request.args.get("status") or None
    try:
        items = operator.notifications(bridge(), limit, state,
                                       request.args.get("mobile") or None,
                                       request.args.get("alertname") or None)
    except ValueError as exc:  # named as the caller named it
        name = "state" if request.args.get("state") else "status"
        return error(str(exc).replace("state", name, 1), 400)
    return jsonify({"notifications": items})


@api.get("/api/oncall")
@protected
def oncall() -> Any:
    """``?next=N`` (0 to 100, default 3): see :func:`bridge.operator.oncall`."""
    try:
        next_n = int(request.args.get("next", "3"))
    except ValueError:
        return error("next must be a whole number", 400)
    if not 0 <= next_n <= 100:
        return error("next must be from 0 to 100", 400)
    return jsonify({"schedules": operator.oncall(bridge(), next_n)})


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


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               client: Sender | None = None, state_dir: str | None = None) -> Flask:
    """Build the app: ``settings`` default to the environment (``Settings.from_env()``);
    ``store`` and ``client`` default to the ones the settings name; ``state_dir`` is the
    runtime folder one ``bridge serve`` shares (default ``$BRIDGE_RUNTIME_DIR``, or none).

    Raises :class:`~bridge.errors.RulesError` when the rules fail their checks and
    ``ValueError`` for unreadable settings or an unusable ``BRIDGE_STORE``.
    """
    from bridge import ack, page
    from bridge.web.calendar import calendar

    settings = settings or Settings.from_env()
    b = Bridge(settings, store=store, client=client,
               state_dir=state_dir or os.environ.get("BRIDGE_RUNTIME_DIR") or None)
    app = Flask("bridge", static_folder=None)  # the page blueprint serves /static
    app.extensions["bridge"] = b
    # One byte more than allowed: werkzeug cuts a chunked body (no Content-Length) at this limit
    # without an error, so the webhook reads up to limit + 1 bytes and refuses what is longer.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(api)
    page.init_app(app, settings)
    app.register_blueprint(ack.ack)
    app.register_blueprint(calendar)
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


def answer(result: IntakeResult) -> dict[str, Any]:
    """The webhook's JSON answer (README "Endpoints"): ``alerts``, ``queued``, ``suppressed``,
    ``held`` always; ``unrouted``, ``truncated``, ``ignored``, ``skipped`` when not zero;
    ``warnings`` (what was read leniently or skipped, with its place) when any."""
    batch, plan = result.batch, result.plan
    counts: dict[str, Any] = {"alerts": len(batch.alerts), "queued": 0, "suppressed": 0,
                              "held": 0}
    for o in result.outcomes:
        counts[o.state] = counts.get(o.state, 0) + 1
    extra = {"unrouted": plan.unrouted, "truncated": batch.truncated_alerts,
             "ignored": batch.ignored, "skipped": batch.skipped}
    counts.update({k: v for k, v in extra.items() if v})
    if batch.warnings or plan.warnings:
        counts["warnings"] = [*batch.warnings, *plan.warnings]
    return counts
