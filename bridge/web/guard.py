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
