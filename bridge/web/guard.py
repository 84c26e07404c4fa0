"""Who may call the bridge, and what every view needs of the request it serves.

- the shared token (``BRIDGE_TOKEN``, :func:`token_ok`) and Grafana's HMAC signature
  (:func:`grafana_signature_problem`), both compared in constant time
  (:func:`hmac.compare_digest`); :func:`protected` requires the token of a view;
- the operator page's session (:func:`session_key`, :class:`SessionInterface`,
  :func:`logged_in`) and its CSRF token (:func:`csrf_token`, :func:`check_csrf`);
- :func:`bridge`, the one way a view reaches the :class:`~bridge.intake.service.Bridge`, and
  :func:`error`, the JSON error answer.

The views (:mod:`bridge.web.api`, :mod:`bridge.web.page`, :mod:`bridge.web.ack`) import this
module; it imports none of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, Protocol, TypeVar

from flask import Flask, Request, Response, abort, current_app, jsonify, request, session
from flask.sessions import SecureCookieSessionInterface

from bridge.config import Settings
from bridge.intake.service import Bridge

#: a stable log name (these lines were logged as ``bridge.app``), not the module path
log = logging.getLogger("bridge.app")
P = ParamSpec("P")
R = TypeVar("R")

#: How long a login lasts, hours (docs/operator-page.md, Login and session).
SESSION_HOURS = 12
#: How old (or how far in the future) a signed Grafana timestamp may be, seconds.
HMAC_MAX_AGE = 300.0


class Headers(Protocol):
    """What :func:`grafana_signature_problem` needs of request headers: a ``Mapping[str, str]``
    or werkzeug's case-insensitive ``Headers``."""

    def get(self, key: str, default: str) -> str: ...


def token_ok(authorization: str | None, token: str) -> bool:
    """True when ``authorization`` is ``Bearer TOKEN`` or HTTP basic auth whose password is
    TOKEN (any user name), as Alertmanager's ``http_config`` and Grafana's contact point send."""
    if not authorization:
        return False
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    expected = token.encode("utf-8")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.encode("utf-8"), expected)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return False
        _, sep, password = decoded.partition(b":")
        return bool(sep) and hmac.compare_digest(password, expected)
    return False


def grafana_signature_problem(body: bytes, headers: Headers, secret: str,
                              timestamp_header: str | None, now: float | None = None) -> str:
    """Why a Grafana webhook's ``X-Grafana-Alerting-Signature`` is not valid ("" when valid).

    The signature is the hex HMAC-SHA256 of the body, or of ``TIMESTAMP:BODY`` when
    ``timestamp_header`` names the header carrying the timestamp (UNIX seconds), which must be
    within :data:`HMAC_MAX_AGE` seconds of ``now`` either way. Source: Grafana's webhook
    notifier ``hmacConfig``.
    """
    signature = headers.get("X-Grafana-Alerting-Signature", "").strip().lower()
    if not signature:
        return "missing X-Grafana-Alerting-Signature"
    message = body
    if timestamp_header:
        raw = headers.get(timestamp_header, "").strip()
        if not raw:
            return f"missing {timestamp_header}"
        try:
            ts = float(raw)
        except ValueError:
            return f"{timestamp_header} is not a UNIX timestamp"
        if not math.isfinite(ts):  # "nan" would pass the age check below
            return f"{timestamp_header} is not a UNIX timestamp"
        if ts > 1e11:  # milliseconds
            ts /= 1000.0
        now = time.time() if now is None else now
        if abs(now - ts) > HMAC_MAX_AGE:
            return f"{timestamp_header} is more than {HMAC_MAX_AGE:.0f}s away from now"
        message = raw.encode("utf-8") + b":" + body
    expected = hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
        return "invalid X-Grafana-Alerting-Signature"
    return ""


def bridge() -> Bridge:
    """The :class:`Bridge` of the current app (the one way views reach it)."""
    return current_app.extensions["bridge"]  # type: ignore[no-any-return]


def bridge_of(app: Flask) -> Bridge:
    """The :class:`Bridge` an app built by :func:`bridge.web.app.create_app` serves, outside a
    request (tests)."""
    return app.extensions["bridge"]  # type: ignore[no-any-return]


def error(message: str, status: int) -> tuple[Response, int]:
    """A JSON error answer."""
    return jsonify({"error": message}), status


def protected(view: Callable[P, R]) -> Callable[P, R | tuple[Response, int]]:
    """Require ``BRIDGE_TOKEN`` (Bearer or basic password) when it is set. A ``GET`` also
    passes with the operator page's session (its own scripts read ``/api/*``)."""

    @wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | tuple[Response, int]:
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


def session_key(settings: Settings) -> bytes:
    """The session signing key: from ``BRIDGE_TOKEN`` when set (the same in every instance;
    a new token makes old cookies invalid), else from the rules path and store URL."""
    if settings.token:
        return hmac.new(settings.token.encode("utf-8"), b"bridge operator page session v1",
                        hashlib.sha256).digest()
    return hashlib.sha256(f"bridge open page\0{settings.rules_path}\0{settings.store}"
                          .encode()).digest()


def came_over_https(req: Request) -> bool:
    """True when the request came over https, directly or behind a proxy that says so with
    ``X-Forwarded-Proto: https``."""
    forwarded = req.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return req.is_secure or forwarded == "https"


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie session, ``Secure`` per request (https or forwarded https)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return came_over_https(request)


def logged_in() -> bool:
    """True when this request carries a page session that logged in less than 12 h ago
    (always true when no ``BRIDGE_TOKEN`` is set)."""
    if not bridge().settings.token:
        return True
    at = session.get("login_at")
    return isinstance(at, int | float) and 0 <= time.time() - at < SESSION_HOURS * 3600


def csrf_token() -> str:
    """This session's CSRF token (made on first use); every form carries it."""
    token = session.get("csrf")
    if not isinstance(token, str) or not token:
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf() -> None:
    """Abort with 400 unless the form's ``csrf`` equals the session's."""
    sent = request.form.get("csrf", "")
    expected = session.get("csrf")
    if not isinstance(expected, str) or not expected or not hmac.compare_digest(
            sent.encode(), expected.encode()):
        abort(400, description="missing or stale form token (CSRF): reload the page")


# -- the login throttle (docs/operator-page.md, "Logging in") --------------------------------
#: Wrong tokens one client address may post to ``/login`` within one fixed minute; past it,
#: every ``POST /login`` from that address gets 429 until the minute ends.
LOGIN_LIMIT = 10


class MinuteCounter(Protocol):
    """What the throttle needs of the store (:class:`bridge.store.base.Store`): its per-client
    fixed-minute counter, shared by every worker and instance on the store."""

    def unknown_code_hit(self, client: str, now: float) -> int: ...

    def unknown_code_hits(self, client: str, now: float) -> int: ...


def _login_key(client: str) -> str:
    """The counter's name for ``client``'s wrong tokens (apart from its unknown ack codes)."""
    return f"login|{client}"


def login_wait(store: MinuteCounter, client: str, now: float) -> float:
    """Seconds until ``client`` may try a token again (the rest of the minute) when it posted
    more than :data:`LOGIN_LIMIT` wrong ones in the minute of ``now``, else 0. Raises
    :class:`bridge.errors.StoreUnavailable`."""
    if store.unknown_code_hits(_login_key(client), now) <= LOGIN_LIMIT:
        return 0.0
    return 60.0 - now % 60


def login_failed(store: MinuteCounter, client: str, now: float) -> float:
    """Count one wrong token of ``client`` at ``now``; returns :func:`login_wait` after it."""
    if store.unknown_code_hit(_login_key(client), now) <= LOGIN_LIMIT:
        return 0.0
    return 60.0 - now % 60
