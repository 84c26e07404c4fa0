"""Who may call the bridge: the shared token (``BRIDGE_TOKEN``) and Grafana's HMAC signature.

Both comparisons are constant-time (:func:`hmac.compare_digest`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import time
from typing import Protocol

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
