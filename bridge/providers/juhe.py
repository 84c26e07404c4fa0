"""Sending one SMS through Juhe's ``sms/send`` API (docs/juhe.md).

Encoding ``tpl_value``
----------------------

``tpl_value`` is ``#name1#=value1&#name2#=value2``. Every *value* is utf-8 url-encoded on its own
with ``urllib.parse.quote(value, safe="")`` (so ``#``, ``&``, ``=``, ``%``, ``+`` and spaces in an
alert's text arrive intact and cannot forge another variable); the ``#name#`` markers stay
literal (Juhe refuses encoded markers with 模板变量不符合规范), so names must be plain
identifiers. The pairs are joined with ``&`` and the whole string is form-encoded once more by
the POST (``requests`` does that; never encode the whole string by hand as well).

Worked example (docs/juhe.md, Encoding tpl_value), variables ``host = "web-01"``,
``msg = "CPU#1 负载=95% & +5"``::

    tpl_value (before the form encoding):
    #host#=web-01&#msg#=CPU%231%20%E8%B4%9F%E8%BD%BD%3D95%25%20%26%20%2B5

    POST body:
    mobile=13800138000&tpl_id=123456&tpl_value=%23host%23%3Dweb-01%26%23msg%23%3DCPU%25231%2520
    %25E8%25B4%259F%25E8%25BD%25BD%253D95%2525%2520%2526%2520%252B5&key=KEY   (one line)

Juhe decodes by form-decoding the body, splitting ``tpl_value`` on ``&``, splitting each pair on
its first ``=`` and url-decoding name and value (:func:`decode_tpl_value` does the same).

Outcomes
--------

The error-code table (:data:`CODES`, used by :func:`classify`) is docs/juhe.md, Error codes;
an unknown non-zero code is permanent. :meth:`JuheClient.send` maps every outcome to
:class:`SendResult` or to one of :mod:`bridge.errors`' ``TransientError`` / ``PermanentError`` /
``ConfigError``:

============================================  =============================================
what happened                                 raised
============================================  =============================================
``error_code`` 0 (int or ``"0"``)             nothing; ``SendResult(sid, fee)``
``error_code`` transient (205403, 10014 ...)  ``TransientError(reason, code)``
205405 (carrier refused, number too often)    ``ThrottledError`` (a ``TransientError``),
                                              ``retry_after`` >= 60 s
``error_code`` permanent / unknown            ``PermanentError(reason, code)``
``error_code`` config (10001, 205402 ...)     ``ConfigError(reason, code)``
connection error, timeout                     ``TransientError(..., code=0)``
HTTP 5xx, 408, 429                            ``TransientError`` (``retry_after`` from a
                                              ``Retry-After`` header in seconds, if any)
HTTP 3xx (not followed: it would turn the     ``ConfigError`` (fix ``JUHE_URL``)
POST into a GET), 401, 403, 404, 405, 410
other HTTP 4xx                                ``PermanentError(code=0)``
body not JSON / no integer ``error_code``     ``TransientError(code=0)``
============================================  =============================================

A timeout or 10014 may mean the SMS went out anyway: Juhe has no idempotency key, so delivery is
at least once. The client never retries by itself (``max_retries=0``); the caller does.

The key never appears in an exception: messages are built here (class names, status codes,
Juhe's ``reason``) rather than from ``str()`` of a ``requests`` exception, the errors are raised
outside the ``except`` blocks (no chained cause that would print the request), and any text
that is included is scrubbed of the key (raw and url-encoded forms).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from http.client import HTTPException
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, Self
from urllib.parse import quote, quote_plus, unquote_plus, urlsplit

import requests
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from bridge.config import Settings
from bridge.errors import ConfigError, JuheError, PermanentError, ThrottledError, TransientError
from bridge.providers.base import SendResult
from bridge.providers.transport import cause_names, new_session, retry_after

__all__ = [
    "CODES",
    "RETRY_AFTER_205405",
    "JuheClient",
    "Kind",
    "SendResult",
    "classify",
    "decode_tpl_value",
    "encode_tpl_value",
]

Kind = Literal["ok", "transient", "permanent", "config"]

#: Minimum wait (seconds) before retrying after 205405 (the carrier's per-number limit: about
#: one SMS a minute to one number). The caller lengthens it on further tries.
RETRY_AFTER_205405: Final = 60.0

#: Juhe ``error_code`` -> (class, meaning), as docs/juhe.md (Error codes) lists them.
#: Codes not listed are permanent.
CODES: Final[Mapping[int, tuple[Kind, str]]] = MappingProxyType(
    {
        205401: ("permanent", "wrong mobile number"),
        205402: ("config", "wrong template ID"),
        205403: ("transient", "network error, retry"),
        205404: ("permanent", "send failed, see reason"),
        205405: ("transient", "number abnormal / same number sent to too often"),
        205406: ("config", "template not supported"),
        205407: ("permanent", "too many numbers in one batch"),
        205408: ("config", "quota used up"),
        205409: ("transient", "system busy"),
        205410: ("config", "wrong request method"),
        10001: ("config", "wrong key"),
        10002: ("config", "key has no permission for this API"),
        10003: ("config", "key expired"),
        10004: ("config", "wrong OPENID"),
        10005: ("config", "account not verified in time"),
        10007: ("config", "unknown request source"),
        10008: ("config", "IP forbidden"),
        10009: ("config", "key forbidden"),
        10011: ("transient", "this IP over its request limit"),
        10012: ("config", "request count over the limit (quota)"),
        10013: ("config", "test key over its limit"),
        10014: ("transient", "system internal error (the SMS may already have gone out)"),
        10020: ("transient", "API under maintenance"),
        10021: ("config", "API discontinued"),
    }
)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"\s*[-+]?\d+\s*")
_CONFIG_HTTP: Final = frozenset({401, 403, 404, 405, 410})
_TRANSIENT_HTTP: Final = frozenset({408, 429})


def encode_tpl_value(variables: Mapping[str, str]) -> str:
    """Build Juhe's ``tpl_value`` from ``{name: value}``, before the form encoding.

    Returns ``"#name1#=value1&#name2#=value2"`` in the mapping's order, each value encoded with
    ``urllib.parse.quote(value, safe="")`` and each name left literal; ``{}`` gives ``""``.

    Raises ``ValueError`` when a name is not a plain identifier (``[A-Za-z_][A-Za-z0-9_]*``),
    ``UnicodeEncodeError`` (a ``ValueError``) for a value with a lone surrogate, and
    ``TypeError`` when a value is not a string.
    """
    pairs: list[str] = []
    for name, value in variables.items():
        if not isinstance(name, str) or _NAME.fullmatch(name) is None:
            raise ValueError(f"template variable name is not a plain identifier: {name!r}")
        if not isinstance(value, str):
            raise TypeError(
                f"template variable {name} must be a string, not {type(value).__name__}"
            )
        pairs.append(f"#{name}#={quote(value, safe='')}")
    return "&".join(pairs)


def decode_tpl_value(raw: str) -> dict[str, str]:
    """Decode a ``tpl_value`` (already form-decoded) the way Juhe does.

    Splits on ``&`` (empty parts skipped), each pair on its first ``=``, url-decodes name and
    value with ``unquote_plus`` and strips the ``#`` markers; a repeated name keeps the last value.
    Returns ``{name: value}``.

    Raises ``ValueError`` for a pair without ``=`` or a name not in ``#name#`` form.
    """
    out: dict[str, str] = {}
    for part in raw.split("&"):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"tpl_value pair without '=': {part!r}")
        name, value = part.split("=", 1)
        name = unquote_plus(name)
        if not (len(name) >= 3 and name.startswith("#") and name.endswith("#")):
            raise ValueError(f"tpl_value variable name not in #name# form: {name!r}")
        out[name[1:-1]] = unquote_plus(value)
    return out


def classify(code: int) -> Kind:
    """Class of a Juhe ``error_code``: ``"ok"`` for 0, else from :data:`CODES`; an unknown
    non-zero code is ``"permanent"`` (log it as unknown: ``code not in CODES``)."""
    if code == 0:
        return "ok"
    entry = CODES.get(code)
    return entry[0] if entry is not None else "permanent"


def _as_int(value: object) -> int | None:
    """``error_code``/``fee`` as an int: ints, integral floats and digit strings; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    return None


class JuheClient:
    """Sends one SMS per call through Juhe, over a pooled keep-alive HTTP session.

    ``key``: the Juhe AppKey; ``None`` or ``""`` means dry-run (nothing is sent). ``url``: the
    send endpoint (``JUHE_URL``). ``timeout``: seconds, applied to connecting and to each read
    (not a total). ``session``: an existing ``requests.Session`` to use as is (the caller
    closes it); by default the client makes its own (:func:`transport.new_session`: a pool of
    ``POOL_MAXSIZE`` connections, no automatic retries), and :meth:`close` closes it.

    Raises ``ValueError`` for a URL that is not ``http(s)://host/...`` or a timeout <= 0.
    Safe to share between threads (``requests`` pools connections thread-safely).
    """

    def __init__(
        self,
        key: str | None,
        url: str = Settings.juhe_url,
        timeout: float = Settings.juhe_timeout,
        session: requests.Session | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("Juhe URL must be http(s)://host/path")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self._key = key or ""
        self._url = url
        self._timeout = float(timeout)
        # Where, for messages: scheme://host[:port]/path, without userinfo or query.
        port = f":{parts.port}" if parts.port else ""
        self._where = f"{parts.scheme}://{parts.hostname}{port}{parts.path}"
        forms = {self._key, quote_plus(self._key), quote(self._key, safe="")} - {""}
        self._key_forms = sorted(forms, key=len, reverse=True)
        self._own_session = session is None
        if session is None:
            session = new_session()
        self._session = session

    def __repr__(self) -> str:
        return f"JuheClient(url={self._where!r}, dry_run={self.dry_run})"

    @property
    def dry_run(self) -> bool:
        """True when no key is set: :meth:`send` sends nothing."""
        return not self._key

    @property
    def url(self) -> str:
        """The send endpoint."""
        return self._url

    def _scrub(self, text: str) -> str:
        """``text`` with every form of the key replaced by ``***``."""
        for form in self._key_forms:
            text = text.replace(form, "***")
        return text

    def _error(
        self, cls: type[JuheError], reason: str, code: int = 0, retry_after: float | None = None,
        maybe_sent: bool = False,
    ) -> JuheError:
        return cls(self._scrub(reason), code, retry_after, maybe_sent)

    def send(self, mobile: str, tpl_id: int, variables: Mapping[str, str]) -> SendResult:
        """Send one SMS: POST form ``mobile``, ``tpl_id``, ``tpl_value``, ``key`` to the URL.

        ``variables`` are the template's ``{name: value}`` (see :func:`encode_tpl_value`).
        Returns :class:`SendResult` when Juhe answers ``error_code`` 0; in dry-run returns
        ``SendResult(sid="dry-run", fee=0)`` without any request.

        Raises ``ValueError``/``TypeError`` for bad variables (also in dry-run);
        ``TransientError`` (retry later; ``retry_after`` seconds is a minimum wait, if set),
        ``PermanentError`` (never retried) or ``ConfigError`` (the operator's configuration)
        otherwise: see the module docstring.
        ``code`` is Juhe's ``error_code``, 0 when there was none. No message holds the key.
        """
        tpl_value = encode_tpl_value(variables)
        if self.dry_run:
            return SendResult(sid="dry-run", fee=0)
        form = [
            ("mobile", mobile),
            ("tpl_id", str(tpl_id)),
            ("tpl_value", tpl_value),
            ("key", self._key),
        ]
        failure: str | None = None
        maybe_sent = False
        resp: requests.Response | None = None
        try:
            resp = self._session.post(
                self._url,
                data=form,
                timeout=self._timeout,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            )
        except requests.ConnectTimeout as exc:
            failure = f"connect timeout after {self._timeout:g} s: {cause_names(exc)}"
        except requests.Timeout as exc:
            maybe_sent = True
            failure = (
                f"read timeout after {self._timeout:g} s (the SMS may have been sent): "
                f"{cause_names(exc)}"
            )
        except requests.ConnectionError as exc:
            failure = f"connection error: {cause_names(exc)}"
        except (requests.RequestException, OSError, HTTPException, Urllib3HTTPError) as exc:
            failure = f"request failed: {cause_names(exc)}"
        # Raised outside the except blocks: no chained requests exception (which carries the
        # request and its body) in the traceback.
        if failure is not None or resp is None:
            raise self._error(TransientError, f"{failure} ({self._where})",
                              maybe_sent=maybe_sent)
        return self._outcome(resp)

    def _outcome(self, resp: requests.Response) -> SendResult:
        """The result of Juhe's answer ``resp``; raises the JuheError its HTTP status or its
        ``error_code`` means."""
        self._check_status(resp)
        body = self._body(resp)
        code = _as_int(body.get("error_code"))
        if code is None:
            raise self._error(TransientError, f"HTTP {resp.status_code} answer from "
                              f"{self._where} has no integer error_code")
        reason_raw = body.get("reason")
        reason = str(reason_raw) if reason_raw not in (None, "") else f"error_code {code}"
        kind = classify(code)
        if kind == "ok":
            result = body.get("result")
            sid: object = None
            fee: object = None
            if isinstance(result, dict):
                sid, fee = result.get("sid"), result.get("fee")
            return SendResult(sid="" if sid is None else str(sid), fee=_as_int(fee) or 0)
        if kind == "transient":
            if code == 205405:  # the carrier's per-number limit: throttled, not a failover
                raise self._error(ThrottledError, reason, code, RETRY_AFTER_205405)
            raise self._error(TransientError, reason, code, None, maybe_sent=code == 10014)
        if kind == "config":
            raise self._error(ConfigError, reason, code)
        raise self._error(PermanentError, reason, code)

    def _check_status(self, resp: requests.Response) -> None:
        """Raise the JuheError an HTTP status other than 2xx means."""
        status = resp.status_code
        where = self._where
        if status >= 500 or status in _TRANSIENT_HTTP:
            wait = retry_after(resp.headers.get("Retry-After"))
            raise self._error(TransientError, f"HTTP {status} from {where}", 0, wait)
        if 300 <= status < 400:
            raise self._error(
                ConfigError,
                f"HTTP {status} redirect from {where} (not followed: a redirected POST loses "
                "its form); set JUHE_URL to the final address",
            )
        if status in _CONFIG_HTTP:
            raise self._error(ConfigError, f"HTTP {status} from {where}: check JUHE_URL")
        if status >= 400:
            raise self._error(PermanentError, f"HTTP {status} from {where}")

    def _body(self, resp: requests.Response) -> dict[str, Any]:
        """The JSON object of a 2xx answer; a TransientError when it is not one."""
        body: object
        try:
            body = json.loads(resp.content)
        except ValueError:  # JSONDecodeError, UnicodeDecodeError
            body = None
        if not isinstance(body, dict):
            ctype = resp.headers.get("Content-Type", "?")
            raise self._error(
                TransientError,
                f"HTTP {resp.status_code} answer from {self._where} is not a JSON object "
                f"({ctype}, {len(resp.content)} bytes)",
            )
        return body

    def close(self) -> None:
        """Close the pooled connections (only of a session the client made itself)."""
        if self._own_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
