"""Sending an SMS (``SendSms``) and placing a call (``SingleCallByTts``) through Aliyun, both API
version 2017-05-25, signed by hand as Aliyun's RPC signature version 1.0 (docs/providers.md).

Signing (RPC signature 1.0)
---------------------------

Every request carries the common parameters ``AccessKeyId``, ``Action``, ``Format`` (``JSON``),
``SignatureMethod`` (``HMAC-SHA1``), ``SignatureNonce`` (fresh for every request: Aliyun refuses
a nonce it has seen within 15 minutes), ``SignatureVersion`` (``1.0``), ``Timestamp`` (UTC,
``YYYY-MM-DDThh:mm:ssZ``) and ``Version``, beside the action's own. The signature is::

    canonical      = "&".join(enc(k) + "=" + enc(v) for k, v in sorted(params))
    string_to_sign = "POST&%2F&" + enc(canonical)
    Signature      = base64(HMAC-SHA1(AccessKeySecret + "&", string_to_sign))

where ``enc`` is RFC 3986 percent-encoding of the UTF-8 bytes (``urllib.parse.quote`` with only
``~`` safe besides letters, digits, ``-``, ``_`` and ``.``; a space is ``%20``). The parameters
and the signature go in a form body, so that the URL (which a proxy may log) carries none of
them. The official SDK tests (tests/test_providers_sdk.py) pin this against Aliyun's own code.

Outcomes
--------

``Code`` ``OK`` is success: ``BizId`` (SMS) or ``CallId`` (call) is kept as the result's ``sid``.
Other codes are sorted by :func:`classify` (table :data:`CODES`, then prefixes):

============================================================  ============================
``isp.SYSTEM_ERROR``, ``ServiceUnavailable``, ``InternalError``, transient (retried with
``SignatureNonceUsed``, other ``isp.*``                       backoff)
``isv.BUSINESS_LIMIT_CONTROL``, ``Throttling*``               throttled (after a minute)
templates, sign names, show numbers, balance, account,        configuration / account
credentials, signature (``isv.SMS_TEMPLATE_ILLEGAL``,         (``/readyz``, retried at
``isv.AMOUNT_NOT_ENOUGH``, ``isv.OUT_OF_SERVICE``,            least once a minute)
``SignatureDoesNotMatch``, ``InvalidAccessKeyId.*`` ...)
``isv.MOBILE_NUMBER_ILLEGAL`` and every other code            permanent
============================================================  ============================

An answer without a ``Code`` is sorted by its HTTP status (:func:`~bridge.providers.transport.
status_error`); a 2xx answer that is not JSON is transient. Aliyun's ``Message`` is kept in the
reason with credentials scrubbed and mobile numbers masked (its signature error echoes the whole
request), at most :data:`~bridge.providers.transport.MESSAGE_MAX` characters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote

import requests

from bridge.config import Settings
from bridge.errors import (
    TransientError,
)
from bridge.providers import transport
from bridge.providers.base import SendResult

__all__ = [
    "CODES",
    "MAX_SMS_VAR",
    "SMS_URL",
    "VERSION",
    "VOICE_URL",
    "AliyunClient",
    "Kind",
    "canonical_query",
    "classify",
    "sign",
    "string_to_sign",
]

Kind = transport.Kind

#: The endpoints when none is given: their defaults live in Settings (docs/configuration.md).
SMS_URL: Final = Settings.aliyun_sms_url
VOICE_URL: Final = Settings.aliyun_voice_url
#: API version of both ``SendSms`` (dysmsapi) and ``SingleCallByTts`` (dyvmsapi).
VERSION: Final = "2017-05-25"
#: Aliyun's bound for one variable of a notification template (characters).
MAX_SMS_VAR: Final = 35

#: Aliyun ``Code`` -> class, from Aliyun's SMS and voice error-code pages. Codes not listed are
#: sorted by :func:`classify`'s prefixes, else permanent.
CODES: Final[Mapping[str, Kind]] = MappingProxyType({
    "OK": "ok",
    "isp.SYSTEM_ERROR": "transient",
    "ServiceUnavailable": "transient",
    "InternalError": "transient",
    "SignatureNonceUsed": "transient",  # a fresh nonce on the next try
    "isv.BUSINESS_LIMIT_CONTROL": "throttled",
    "Throttling": "throttled",
    "isp.RAM_PERMISSION_DENY": "config",
    "isv.OUT_OF_SERVICE": "config",
    "isv.PRODUCT_UN_SUBSCRIPT": "config",
    "isv.PRODUCT_UNSUBSCRIBE": "config",
    "isv.ACCOUNT_NOT_EXISTS": "config",
    "isv.ACCOUNT_ABNORMAL": "config",
    "isv.AMOUNT_NOT_ENOUGH": "config",
    "isv.DAY_LIMIT_CONTROL": "config",
    "isv.MONTH_LIMIT_CONTROL": "config",
    "isv.DENY_IP_RANGE": "config",
    "isv.SMS_TEMPLATE_ILLEGAL": "config",
    "isv.SMS_SIGNATURE_ILLEGAL": "config",
    "isv.SMS_SIGN_ILLEGAL": "config",
    "isv.SMS_SIGNATURE_SCENE_ILLEGAL": "config",
    "isv.TEMPLATE_MISSING_PARAMETERS": "config",
    "isv.TTS_TEMPLATE_ILLEGAL": "config",
    "isv.TEMPLATE_ILLEGAL": "config",
    "isv.DISPLAY_NUMBER_ILLEGAL": "config",
    "isv.BILLID_NOT_EXIST": "config",
    "SignatureDoesNotMatch": "config",
    "IncompleteSignature": "config",
    "InvalidTimeStamp.Expired": "config",  # this machine's clock is off
    "Forbidden.RAM": "config",
    "Forbidden.AccessKeyDisabled": "config",
    "isv.MOBILE_NUMBER_ILLEGAL": "permanent",
    "isv.MOBILE_COUNT_OVER_LIMIT": "permanent",
    "isv.INVALID_PARAMETERS": "permanent",
    "isv.INVALID_JSON_PARAM": "permanent",
    "isv.PARAM_LENGTH_LIMIT": "permanent",
    "isv.PARAM_NOT_SUPPORT_URL": "permanent",
    "isv.BLACK_KEY_CONTROL_LIMIT": "permanent",
    "isv.SMS_CONTENT_ILLEGAL": "permanent",
    "isv.COMPLAINT_REJECT": "permanent",
})

_PREFIXES: Final[tuple[tuple[str, Kind], ...]] = (
    ("Throttling.", "throttled"),
    ("InvalidAccessKeyId", "config"),
    ("Forbidden", "config"),
    ("InvalidTimeStamp", "config"),
    ("isp.", "transient"),
    ("InternalError", "transient"),
    ("ServiceUnavailable", "transient"),
)


def classify(code: str) -> Kind:
    """Class of an Aliyun ``Code``: :data:`CODES`, else by prefix (``Throttling.*`` throttled,
    ``InvalidAccessKeyId*``/``Forbidden*``/``InvalidTimeStamp*`` configuration, ``isp.*``,
    ``InternalError*``, ``ServiceUnavailable*`` transient), else ``"permanent"``."""
    return transport.by_table(code, CODES, _PREFIXES)


def _enc(value: str) -> str:
    return quote(value, safe="~", encoding="utf-8")


def canonical_query(params: Mapping[str, str]) -> str:
    """``k1=v1&k2=v2`` over ``params`` sorted by name, names and values percent-encoded
    (RFC 3986, UTF-8; ``Signature`` itself must not be in ``params``)."""
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(params.items()))


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    """``METHOD&%2F&enc(canonical_query(params))``."""
    return f"{method}&%2F&{_enc(canonical_query(params))}"


def sign(method: str, params: Mapping[str, str], secret: str) -> str:
    """RPC signature 1.0 of ``params`` sent with HTTP ``method``: base64 of HMAC-SHA1 keyed by
    ``secret + "&"`` over :func:`string_to_sign`."""
    digest = hmac.new((secret + "&").encode("utf-8"),
                      string_to_sign(method, params).encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def _as_json(variables: Mapping[str, str]) -> str:
    transport.checked(variables)
    return json.dumps(dict(variables), ensure_ascii=False, separators=(",", ":"))


class AliyunClient(transport.PooledClient):
    """Sends SMS and places calls through Aliyun, one per call, over a pooled session.

    ``access_key_id``/``access_key_secret``: ``ALIYUN_ACCESS_KEY_ID``/``_SECRET`` (both
    required). ``sms_url``/``voice_url``: ``ALIYUN_SMS_URL``/``ALIYUN_VOICE_URL``. ``timeout``:
    seconds for connecting and for each read. ``session``: a ``requests.Session`` to use as is
    (the caller closes it). ``clock`` (UNIX seconds) and ``nonce`` are injectable for tests.

    Raises ``ValueError`` for a missing credential, a bad URL or a timeout <= 0. Safe to share
    between threads. ``repr()`` and every error it raises hold no credential.
    """

    provider = "aliyun"

    def __init__(self, access_key_id: str, access_key_secret: str, *, sms_url: str = SMS_URL,
                 voice_url: str = VOICE_URL, timeout: float = 10.0,
                 session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time,
                 nonce: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        if not access_key_id or not access_key_secret:
            raise ValueError("ALIYUN_ACCESS_KEY_ID and ALIYUN_ACCESS_KEY_SECRET must both be set")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self._sms = (sms_url, transport.check_url(sms_url, "ALIYUN_SMS_URL"), "ALIYUN_SMS_URL")
        self._voice = (voice_url, transport.check_url(voice_url, "ALIYUN_VOICE_URL"),
                       "ALIYUN_VOICE_URL")
        super().__init__([access_key_id, access_key_secret], session)
        self._id = access_key_id
        self._secret = access_key_secret
        self._timeout = float(timeout)
        self._clock = clock
        self._nonce = nonce

    def __repr__(self) -> str:
        return f"AliyunClient(sms={self._sms[1]!r}, voice={self._voice[1]!r})"

    def send_sms(self, mobile: str, sign_name: str, template_code: str,
                 variables: Mapping[str, str]) -> SendResult:
        """Send one SMS of ``template_code`` signed ``sign_name`` to ``mobile`` (11 digits)
        through ``SendSms``; each variable is cut to :data:`MAX_SMS_VAR` characters (marked
        ``…``). Returns ``SendResult(sid=BizId, fee=0)``.

        Raises ``TypeError`` for a value that is not a string; :class:`TransientError`,
        :class:`ThrottledError`, :class:`PermanentError` or :class:`ConfigError` (``provider``
        ``aliyun``, ``code`` Aliyun's ``Code``) otherwise: see the module docstring.
        """
        cut = {k: transport.cut(v, MAX_SMS_VAR) if isinstance(v, str) else v
               for k, v in variables.items()}
        params = {"PhoneNumbers": mobile, "SignName": sign_name,
                  "TemplateCode": template_code, "TemplateParam": _as_json(cut)}
        body = self._request(self._sms, "SendSms", params)
        return SendResult(sid=str(body.get("BizId") or ""), fee=0)

    def call(self, mobile: str, tts_code: str, variables: Mapping[str, str],
             called_show_number: str | None = None) -> SendResult:
        """Call ``mobile`` and read TTS template ``tts_code`` out (``PlayTimes`` 2) through
        ``SingleCallByTts``, showing ``called_show_number`` when given; the values together are
        kept under :data:`transport.MAX_VOICE_TOTAL` characters (:func:`transport.fit_total`).
        Returns ``SendResult(sid=CallId, fee=0)``. Raises as :meth:`send_sms`."""
        fitted = transport.fit_total(variables, transport.MAX_VOICE_TOTAL)
        params = {"CalledNumber": mobile, "TtsCode": tts_code, "TtsParam": _as_json(fitted),
                  "PlayTimes": str(transport.PLAY_TIMES)}
        if called_show_number:
            params["CalledShowNumber"] = called_show_number
        body = self._request(self._voice, "SingleCallByTts", params)
        return SendResult(sid=str(body.get("CallId") or ""), fee=0)

    def signed(self, action: str, params: Mapping[str, str]) -> dict[str, str]:
        """``params`` with the common parameters (a fresh ``SignatureNonce``, the current
        ``Timestamp``) and their ``Signature`` for a POST of ``action``."""
        now = datetime.fromtimestamp(self._clock(), UTC)
        full = {
            "AccessKeyId": self._id,
            "Action": action,
            "Format": "JSON",
            "SignatureMethod": "HMAC-SHA1",
            "SignatureNonce": self._nonce(),
            "SignatureVersion": "1.0",
            "Timestamp": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Version": VERSION,
            **params,
        }
        full["Signature"] = sign("POST", full, self._secret)
        return full

    def _request(self, target: tuple[str, str, str], action: str,
                 params: Mapping[str, str]) -> dict[str, Any]:
        url, where, env = target
        full = self.signed(action, params)
        data = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in full.items()).encode("ascii")
        headers = {"Content-Type": "application/x-www-form-urlencoded",
                   "Accept": "application/json"}
        try:
            resp = transport.post(self._session, url, data=data, headers=headers,
                                  timeout=self._timeout, where=where, provider="aliyun")
        except TransientError as exc:
            raise self._scrubbed(exc) from None
        return self._outcome(resp, where, env, action)

    def _outcome(self, resp: requests.Response, where: str, env: str,
                 action: str) -> dict[str, Any]:
        body = transport.json_object(resp)
        code = body.get("Code") if body is not None else None
        if body is None or not isinstance(code, str) or not code:
            failed = transport.status_error(resp, where, "aliyun", env)
            if failed is None:
                failed = TransientError(f"HTTP {resp.status_code} answer from {where} to "
                                        f"{action} has no Code", 0, None, False, "aliyun")
            raise self._scrubbed(failed)
        kind = classify(code)
        if kind == "ok":
            return body
        # scrubbed before it is cut, so that no part of a credential survives the cut
        message = self._scrubber.scrub(str(body.get("Message") or code))
        reason = f"{action} {code}: {message[: transport.MESSAGE_MAX]}"
        wait = transport.retry_after(resp.headers.get("Retry-After"))
        raise transport.provider_error(kind, reason, code, "aliyun", wait)
