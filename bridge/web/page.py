"""The operator's page (docs/operator-page.md): ``GET /``, ``/login``, ``/logout``, the
playground, and the security headers of every answer.

Server-rendered Jinja2 templates with autoescape (``bridge/web/templates/``) and a little plain
JavaScript (``bridge/web/static/page.js``) that refreshes the notifications from
``/api/notifications`` and opens rows. The page reads through :mod:`bridge.intake.readside`, the
same functions as the JSON API.

Sessions are Flask's signed cookie (itsdangerous). With ``BRIDGE_TOKEN`` set the signing key is
derived from the token (HMAC-SHA256 of a fixed label), so every instance sharing the token
accepts the cookie and a changed token ends every session; it is valid 12 h from the login.
Without a token the page is open (with a warning banner) and the key is derived from the rules
path and store URL: the cookie then only carries the CSRF token, which a cross-site page can
neither read nor send (SameSite=Strict).
"""

from __future__ import annotations

import hmac
import logging
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Response,
    abort,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from bridge import metrics
from bridge.config import Settings
from bridge.decide.episodes import name_problem
from bridge.decide.preview import Preview, preview, shown_variables
from bridge.decide.types import Notification
from bridge.errors import PayloadError
from bridge.intake import readside
from bridge.privacy import mask_mobile
from bridge.providers.juhe import encode_tpl_value
from bridge.sources import SOURCES
from bridge.store.base import STATES
from bridge.web import guard, pictures
from bridge.web.calendar import feed_path
from bridge.web.guard import (
    SESSION_HOURS,
    SessionInterface,
    bridge,
    check_csrf,
    csrf_token,
    logged_in,
    session_key,
)

log = logging.getLogger(__name__)

#: Episodes section: at most this many firing and as many acknowledged episodes ...
ACTIVE_LIMIT = 50
#: ... and this many recently resolved ones (page.js asks /api/episodes for the same).
RESOLVED_LIMIT = 10
#: The Load section reads at most this many sent notifications ...
LOAD_ITEMS = 5000
#: ... and this many episodes (newest first).
LOAD_EPISODES = 2000
#: Who an Acknowledge from the page is recorded as when its name field is left empty.
DEFAULT_ACK_BY = "operator"
#: Content-Security-Policy of every answer: only the bridge's own scripts and styles.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
       "object-src 'none'")

page = Blueprint("page", __name__, template_folder="templates", static_folder="static",
                 static_url_path="/static")


def init_app(app: Flask, settings: Settings) -> None:
    """Register the page on ``app``: blueprint, session settings, security headers."""
    app.secret_key = session_key(settings)
    app.session_interface = SessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="bridge_session", SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict", SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
        # a pasted body in the playground is a form field: allow what a webhook may send
        MAX_FORM_MEMORY_SIZE=settings.max_body_bytes + 4096)
    app.register_blueprint(page)
    app.after_request(security_headers)


def security_headers(resp: Response) -> Response:
    """CSP allowing only ``'self'``, no sniffing, no framing, no referrer."""
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["X-Frame-Options"] = "DENY"
    resp.headers["Referrer-Policy"] = "no-referrer"
    if resp.mimetype == "text/html":
        resp.headers["Cache-Control"] = "no-store"
    return resp


def _render(name: str, status: int = 200, **context: Any) -> tuple[str, int]:
    b = bridge()
    return render_template(name, csrf=csrf_token(), open=not b.settings.token,
                           mask=mask_mobile, **context), status


def tpl_value(n: Notification) -> str:
    """The encoded ``tpl_value`` Juhe would get for the previewed ``n`` (docs/providers.md,
    Juhe), the ack code shown as ``<ack_code>``."""
    return encode_tpl_value(shown_variables(n))


def _filters() -> dict[str, str]:
    args = request.args
    state = args.get("state") or args.get("status") or ""
    return {"state": state if state in STATES else "", "mobile": args.get("mobile", ""),
            "alertname": args.get("alertname", "")}


def _pictures(b: Any) -> dict[str, Any]:
    """The On call and Load pictures (:mod:`bridge.web.pictures`) and each schedule's feed
    URL. The load reads at most :data:`LOAD_ITEMS` sent notifications and
    :data:`LOAD_EPISODES` episodes: as far back as ``BRIDGE_RETENTION`` keeps them."""
    rules = b.holder.rules
    zone = b.settings.zone
    now = datetime.now(UTC)

    def who(mobile: str) -> str:
        return str(rules.person_of(mobile) or mask_mobile(mobile))

    sent = [(i.updated_at, who(i.mobile)) for i in b.store.recent(LOAD_ITEMS, "sent")]
    days, per_day = pictures.sent_per_day(sent, now, zone)
    since = (now - timedelta(days=pictures.LOAD_DAYS)).timestamp()
    loads = pictures.person_load(
        (pictures.EpisodeLoad(tuple((who(p.mobile), p.at) for p in e.paged),
                              e.acknowledged_by, e.acknowledged_at)
         for e in b.store.episodes(None, LOAD_EPISODES)), since)
    colours = pictures.colour_of([*rules.people, *per_day, *(r.person for r in loads)])
    start = pictures.day_start(now, zone)
    root = request.url_root.rstrip("/")
    return {
        "oncall_svg": pictures.oncall_svg(
            pictures.oncall_rows(rules.schedules.values(), start), start, now, zone, colours),
        "feeds": {name: root + feed_path(b.settings.token, name) for name in rules.schedules},
        "sent_svg": pictures.sent_svg(days, per_day, colours),
        "sent_totals": [(w, sum(c), colours[w]) for w, c in per_day.items()],
        "load_svg": pictures.load_svg(loads, colours), "loads": loads,
        "oncall_legend": [(p, colours[p]) for p in dict.fromkeys(
            p for sch in rules.schedules.values() for m in sch.members for p in m)],
        "duration_short": pictures.duration_short, "load_days": pictures.LOAD_DAYS,
    }


def _index(status: int = 200, **playground: Any) -> Any:
    b = bridge()
    f = _filters()
    return _render(
        "index.html", status, status_=readside.status(b), oncall=readside.oncall(b),
        person_of=b.holder.rules.person_of, **_pictures(b),
        heartbeats=readside.heartbeats(b),
        firing=readside.episodes(b, "firing", ACTIVE_LIMIT),
        acknowledged=readside.episodes(b, "acknowledged", ACTIVE_LIMIT),
        resolved=readside.episodes(b, "resolved", RESOLVED_LIMIT), resolved_limit=RESOLVED_LIMIT,
        filters=f, states=STATES, sources=sorted(SOURCES),
        notifications=readside.notifications(b, 50, f["state"] or None, f["mobile"] or None,
                                             f["alertname"] or None),
        tpl_value=tpl_value, **playground)


@page.get("/")
def index() -> Any:
    """The operator page, or a redirect to the login form."""
    if not logged_in():
        return redirect(url_for("page.login_form"))
    return _index()


@page.get("/favicon.ico")
def favicon() -> Any:
    """The bridge's icon from the package (browsers ask for it on every page: no 404), open
    like the page's styles, cached for a day."""
    resp = page.send_static_file("favicon.ico")
    resp.mimetype = "image/vnd.microsoft.icon"
    resp.cache_control.max_age = 86400
    resp.cache_control.public = True
    return resp


@page.get("/login")
def login_form() -> Any:
    if not bridge().settings.token or logged_in():
        return redirect(url_for("page.index"))
    return _render("login.html")


@page.post("/login")
def login() -> Any:
    """Log in with ``BRIDGE_TOKEN`` (form field ``token``); 401 with the form again when it is
    wrong (logged with the client address, never the token; ``bridge_login_failures_total``).
    A client address that posted more than :data:`guard.LOGIN_LIMIT` wrong tokens within the
    current minute gets 429 (``Retry-After``) until the minute ends, right token or not
    (counted in the store, across workers and instances; docs/operator-page.md)."""
    check_csrf()
    b = bridge()
    token = b.settings.token
    if not token:
        return redirect(url_for("page.index"))
    client = request.remote_addr or "-"
    now = time.time()
    wait = guard.login_wait(b.store, client, now)
    if not wait:
        if hmac.compare_digest(request.form.get("token", "").encode(), token.encode()):
            return _logged_in()
        metrics.LOGIN_FAILURES.inc()
        wait = guard.login_failed(b.store, client, now)
        log.warning("wrong token on POST /login from %s%s", client,
                    f": 429 for {wait:.0f}s" if wait else "")
        if not wait:
            return _render("login.html", 401, error="wrong token")
    body, status = _render("login.html", 429,
                           error=f"too many wrong tokens from {client}: try again in"
                                 f" {math.ceil(wait)} s")
    return body, status, {"Retry-After": str(math.ceil(wait))}


def _logged_in() -> Any:
    """Start a session (12 h, with its CSRF token) and go to the page."""
    session.clear()
    session.permanent = True
    session["login_at"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)
    return redirect(url_for("page.index"), 303)


@page.post("/logout")
def logout() -> Any:
    check_csrf()
    session.clear()
    return redirect(url_for("page.login_form" if bridge().settings.token else "page.index"),
                    303)


@page.post("/episodes/<id>/ack")
def acknowledge(id: str) -> Any:
    """The page's Acknowledge button (form ``csrf``, optional ``by``: who acknowledges, as
    :func:`bridge.decide.episodes.name_problem` allows, :data:`DEFAULT_ACK_BY` when empty):
    acknowledges ``via=page`` through :meth:`bridge.intake.service.Bridge.acknowledge` and
    answers 303 back to the episodes. The first acknowledgement stands; a later one changes
    nothing (the episode shows who and when).
    404 for an unknown episode, 400 for a missing CSRF token or a name refused."""
    if not logged_in():
        return redirect(url_for("page.login_form"))
    check_csrf()
    raw = request.form.get("by", "")
    problem = name_problem(raw)
    if problem:
        abort(400, description=problem)
    by = " ".join(raw.split()) or DEFAULT_ACK_BY
    try:
        bridge().acknowledge(id, by, "page")
    except KeyError:
        abort(404, description=f"no episode {id!r}")
    return redirect(url_for("page.index") + "#episodes", 303)


@page.post("/playground")
def playground() -> Any:
    """Preview a pasted body (form ``body``, ``source`` = a source name or ``detect``) under
    the rules in force, now: nothing is stored or sent. Answers the page with the result."""
    if not logged_in():
        return redirect(url_for("page.login_form"))
    check_csrf()
    b = bridge()
    body = request.form.get("body", "")
    source = request.form.get("source", "detect")
    if len(body.encode("utf-8")) > b.settings.max_body_bytes:
        return _index(413, pg_body=body, pg_source=source,
                      pg_error=f"body over {b.settings.max_body_bytes} bytes")
    rules = b.holder.rules
    try:
        result: Preview = preview(body.encode("utf-8"),
                                  source if source in SOURCES else None, rules,
                                  readside.now_utc(), b.store)
    except PayloadError as exc:
        return _index(400, pg_body=body, pg_source=source, pg_error=str(exc))
    return _index(pg_body=body, pg_source=source, pg=result)
