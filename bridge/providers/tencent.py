"""Sending an SMS (SMS ``SendSms``, API version 2021-01-11) and placing a call (VMS
``SendTtsVoice``, 2020-09-02) through Tencent Cloud, signed by hand as ``TC3-HMAC-SHA256``
(docs/providers.md).

Signing (TC3-HMAC-SHA256)
-------------------------

A request is a POST of a JSON body with the headers ``Content-Type: application/json;
charset=utf-8``, ``Host``, ``X-TC-Action``, ``X-TC-Version``, ``X-TC-Timestamp`` (UNIX seconds;
Tencent refuses one more than 5 minutes off), ``X-TC-Region`` and ``Authorization``::

    canonical_request = "POST\\n" + path + "\\n\\n" + "content-type:" + ctype + "\\nhost:" + host
                        + "\\n\\ncontent-type;host\\n" + hex(SHA256(body))
    scope             = DATE + "/" + SERVICE + "/tc3_request"      (DATE: UTC day of the timestamp)
    string_to_sign    = "TC3-HMAC-SHA256\\n" + timestamp + "\\n" + scope + "\\n"
                        + hex(SHA256(canonical_request))
    key               = HMAC(HMAC(HMAC("TC3" + SecretKey, DATE), SERVICE), "tc3_request")
    Authorization     = "TC3-HMAC-SHA256 Credential=" + SecretId + "/" + scope
                        + ", SignedHeaders=content-type;host, Signature=" + hex(HMAC(key, sts))

``SERVICE`` is the API's service (``sms``, ``vms``) whatever URL the request goes to
(``TENCENT_SMS_URL``/``TENCENT_VMS_URL`` may point at a proxy or a test server); ``host`` and
``path`` are those of that URL. The official SDK tests (tests/test_providers_sdk.py) pin this.

Parameters are positional: ``TemplateParamSet`` is the template's variables' values in the order
``vars`` lists them (docs/providers.md, Templates).

Outcomes
--------

An answer is ``{"Response": {...}}``. ``Response.Error.Code`` is a failure of the whole request;
otherwise ``SendSms``'s ``SendStatusSet`` entry for the number must have ``Code`` ``Ok`` (its
``SerialNo`` is kept as the result's ``sid``, its ``Fee`` as ``fee``) and ``SendTtsVoice``
answers ``SendStatus.CallId`` (kept as ``sid``). Codes are sorted by :func:`classify`:

============================================================  ============================
``InternalError*``, ``RequestLimitExceeded*``,                transient
``FailedOperation.AccessUpstreamTimeout``, ``ResourceUnavailable*``
``LimitExceeded.*``                                           throttled (after a minute)
``AuthFailure.*``, ``UnauthorizedOperation.*``, balance,      configuration / account
sign name, template, app id (``FailedOperation.
InsufficientBalanceInSmsPackage`` ...)
``InvalidParameterValue.IncorrectPhoneNumber`` and every      permanent
other code
============================================================  ============================
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

import requests

from bridge.config import Settings
from bridge.errors import (
    ProviderError,
    TransientError,
)
from bridge.providers import transport
from bridge.providers.base import SendResult

__all__ = [
    "CODES",
    "DEFAULT_REGION",
    "SMS_URL",
    "VMS_URL",
    "Kind",
    "TencentClient",
    "authorization",
    "classify",
    "e164",
]

Kind = transport.Kind

#: Endpoints and region when none is given: their defaults live in Settings
#: (docs/configuration.md).
SMS_URL: Final = Settings.tencent_sms_url
VMS_URL: Final = Settings.tencent_vms_url
DEFAULT_REGION: Final = Settings.tencent_region
SMS_VERSION: Final = "2021-01-11"
VMS_VERSION: Final = "2020-09-02"
CONTENT_TYPE: Final = "application/json; charset=utf-8"

#: Tencent Cloud ``Code`` -> class, from the SMS and VMS error-code lists. Codes not listed are
#: sorted by :func:`classify`'s prefixes, else permanent.
CODES: Final[Mapping[str, Kind]] = MappingProxyType({
    "Ok": "ok",
    "RequestLimitExceeded": "transient",
    "FailedOperation.AccessUpstreamTimeout": "transient",
    "FailedOperation.InsufficientBalanceInSmsPackage": "config",
    "FailedOperation.InsufficientBalanceInVoicePackage": "config",
    "FailedOperation.SignatureIncorrectOrUnapproved": "config",
    "FailedOperation.MissingSignature": "config",
    "FailedOperation.TemplateIncorrectOrUnapproved": "config",
    "FailedOperation.TemplateIdNotExist": "config",
    "FailedOperation.TemplateUnapprovedOrNotExist": "config",
    "FailedOperation.TemplateParamSetNotMatchApprovedTemplate": "config",
    "FailedOperation.PhonenumberUnappliedOrExpired": "config",
    "FailedOperation.ProhibitSubAccountUse": "config",
    "FailedOperation.NotEnterpriseCertification": "config",
    "InvalidParameterValue.SdkAppIdNotExist": "config",
    "InvalidParameterValue.SdkAppidNotExist": "config",
    "InvalidParameterValue.IncorrectPhoneNumber": "permanent",
    "InvalidParameterValue.CalledNumberVerifyFail": "permanent",
    "FailedOperation.PhoneNumberInBlacklist": "permanent",
})

_PREFIXES: Final[tuple[tuple[str, Kind], ...]] = (
    ("LimitExceeded.", "throttled"),
    ("AuthFailure", "config"),
    ("UnauthorizedOperation", "config"),
    ("InternalError", "transient"),
    ("RequestLimitExceeded", "transient"),
    ("ResourceUnavailable", "transient"),
)


def classify(code: str) -> Kind:
    """Class of a Tencent Cloud ``Code``: :data:`CODES`, else by prefix (``LimitExceeded.*``
    throttled; ``AuthFailure*``, ``UnauthorizedOperation*`` configuration; ``InternalError*``,
    ``RequestLimitExceeded*``, ``ResourceUnavailable*`` transient), else ``"permanent"``."""
    return transport.by_table(code, CODES, _PREFIXES)


def e164(mobile: str) -> str:
    """``13800138000`` -> ``+8613800138000`` (a number already starting with ``+`` is kept)."""
    return mobile if mobile.startswith("+") else f"+86{mobile}"


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def authorization(*, secret_id: str, secret_key: str, service: str, host: str, path: str,
                  payload: bytes, timestamp: int, content_type: str = CONTENT_TYPE) -> str:
    """The ``Authorization`` header value of a TC3-HMAC-SHA256 signed POST of ``payload`` to
    ``host`` + ``path`` at ``timestamp`` (UNIX seconds) for ``service`` (``sms``, ``vms``)."""
    canonical = "\n".join([
        "POST", path or "/", "", f"content-type:{content_type}\nhost:{host}\n",
        "content-type;host", hashlib.sha256(payload).hexdigest(),
    ])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{service}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope,
                         hashlib.sha256(canonical.encode("utf-8")).hexdigest()])
    key = _hmac(_hmac(_hmac(("TC3" + secret_key).encode("utf-8"), date), service),
                "tc3_request")
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    return (f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, "
            f"SignedHeaders=content-type;host, Signature={signature}")


class _Api:
    """Where one API goes: URL, the URL for messages, its variable, service, version."""

    def __init__(self, url: str, env: str, service: str, version: str) -> None:
        self.url = url
        self.where = transport.check_url(url, env)
        self.env = env
        self.service = service
        self.version = version
        parts = urlsplit(url)
        self.host = parts.netloc.rpartition("@")[2].lower()
        self.path = parts.path or "/"


class TencentClient(transport.PooledClient):
    """Sends SMS and places calls through Tencent Cloud, one per call, over a pooled session.

    ``secret_id``/``secret_key``: ``TENCENTCLOUD_SECRET_ID``/``_KEY`` (both required);
    ``region``: ``TENCENTCLOUD_REGION``; ``sms_url``/``vms_url``: ``TENCENT_SMS_URL``/
    ``TENCENT_VMS_URL``. ``timeout``: seconds for connecting and for each read. ``session``: a
    ``requests.Session`` to use as is (the caller closes it). ``clock`` (UNIX seconds) is
    injectable for tests.

    Raises ``ValueError`` for a missing credential, a bad URL or a timeout <= 0. Safe to share
    between threads. ``repr()`` and every error it raises hold no credential.
    """

    provider = "tencent"

    def __init__(self, secret_id: str, secret_key: str, *, region: str = DEFAULT_REGION,
                 sms_url: str = SMS_URL, vms_url: str = VMS_URL, timeout: float = 10.0,
                 session: requests.Session | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if not secret_id or not secret_key:
            raise ValueError("TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY must both be set")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, not {timeout!r}")
        self._sms = _Api(sms_url, "TENCENT_SMS_URL", "sms", SMS_VERSION)
        self._vms = _Api(vms_url, "TENCENT_VMS_URL", "vms", VMS_VERSION)
        super().__init__([secret_id, secret_key], session)
        self._id = secret_id
        self._key = secret_key
        self._region = region or DEFAULT_REGION
        self._timeout = float(timeout)
        self._clock = clock

    def __repr__(self) -> str:
        return (f"TencentClient(region={self._region!r}, sms={self._sms.where!r}, "
                f"vms={self._vms.where!r})")

    def send_sms(self, mobile: str, sign_name: str, template_id: str, sdk_app_id: str,
                 variables: Mapping[str, str]) -> SendResult:
        """Send one SMS of ``template_id`` signed ``sign_name`` from app ``sdk_app_id`` to
        ``mobile`` (11 digits, sent as ``+86...``); ``TemplateParamSet`` is ``variables``'
        values in their order. Returns ``SendResult(sid=SerialNo, fee=Fee)``.

        Raises ``TypeError`` for a value that is not a string; :class:`TransientError`,
        :class:`ThrottledError`, :class:`PermanentError` or :class:`ConfigError` (``provider``
        ``tencent``, ``code`` Tencent's ``Code``) otherwise: see the module docstring.
        """
        number = e164(mobile)
        payload = {"PhoneNumberSet": [number], "SmsSdkAppId": sdk_app_id,
                   "SignName": sign_name, "TemplateId": template_id,
                   "TemplateParamSet": transport.checked(variables)}
        answer = self._request(self._sms, "SendSms", payload)
        statuses = answer.get("SendStatusSet")
        status = None
        if isinstance(statuses, list):
            status = next((s for s in statuses if isinstance(s, dict)
                           and s.get("PhoneNumber") in (number, mobile)), None)
            if status is None and len(statuses) == 1 and isinstance(statuses[0], dict):
                status = statuses[0]
        if status is None:
            raise TransientError(f"SendSms answer from {self._sms.where} has no SendStatusSet "
                                 "entry for the number", 0, None, False, "tencent")
        code = str(status.get("Code") or "")
        if code != "Ok":
            raise self._error("SendSms", code or "?", str(status.get("Message") or code))
        fee = status.get("Fee")
        return SendResult(sid=str(status.get("SerialNo") or ""),
                          fee=fee if isinstance(fee, int) and not isinstance(fee, bool) else 0)

    def call(self, mobile: str, template_id: str, voice_sdk_app_id: str,
             variables: Mapping[str, str]) -> SendResult:
        """Call ``mobile`` (sent as ``+86...``) and read template ``template_id`` of app
        ``voice_sdk_app_id`` out (``PlayTimes`` 2); the values together are kept under
        :data:`transport.MAX_VOICE_TOTAL` characters. Returns ``SendResult(sid=CallId, fee=0)``.
        Raises as :meth:`send_sms`."""
        fitted = transport.fit_total(variables, transport.MAX_VOICE_TOTAL)
        payload = {"TemplateId": template_id, "CalledNumber": e164(mobile),
                   "VoiceSdkAppid": voice_sdk_app_id, "TemplateParamSet": transport.checked(fitted),
                   "PlayTimes": transport.PLAY_TIMES}
        answer = self._request(self._vms, "SendTtsVoice", payload)
        status = answer.get("SendStatus")
        call_id = status.get("CallId") if isinstance(status, dict) else None
        if not call_id:
            raise TransientError(f"SendTtsVoice answer from {self._vms.where} has no "
                                 "SendStatus.CallId", 0, None, False, "tencent")
        return SendResult(sid=str(call_id), fee=0)

    def headers(self, api: _Api, action: str, body: bytes) -> dict[str, str]:
        """The signed headers of a POST of ``body`` for ``action`` of ``api``, at the clock's
        current second."""
        timestamp = int(self._clock())
        auth = authorization(secret_id=self._id, secret_key=self._key, service=api.service,
                             host=api.host, path=api.path, payload=body, timestamp=timestamp)
        return {"Authorization": auth, "Content-Type": CONTENT_TYPE, "Host": api.host,
                "X-TC-Action": action, "X-TC-Version": api.version,
                "X-TC-Timestamp": str(timestamp), "X-TC-Region": self._region,
                "Accept": "application/json"}

    def _request(self, api: _Api, action: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        try:
            resp = transport.post(self._session, api.url, data=body,
                                  headers=self.headers(api, action, body),
                                  timeout=self._timeout, where=api.where, provider="tencent")
        except TransientError as exc:
            raise self._scrubbed(exc) from None
        outer = transport.json_object(resp)
        answer = outer.get("Response") if outer is not None else None
        if not isinstance(answer, dict):
            failed = transport.status_error(resp, api.where, "tencent", api.env)
            if failed is None:
                failed = TransientError(f"HTTP {resp.status_code} answer from {api.where} to "
                                        f"{action} has no Response", 0, None, False, "tencent")
            raise self._scrubbed(failed)
        error = answer.get("Error")
        if isinstance(error, dict):
            code = str(error.get("Code") or "?")
            raise self._error(action, code, str(error.get("Message") or code))
        failed = transport.status_error(resp, api.where, "tencent", api.env)
        if failed is not None:
            raise self._scrubbed(failed)
        return answer

    def _error(self, action: str, code: str, message: str) -> ProviderError:
        # scrubbed before it is cut, so that no part of a credential survives the cut
        text = self._scrubber.scrub(message)[: transport.MESSAGE_MAX]
        return transport.provider_error(classify(code), f"{action} {code}: {text}", code,
                                        "tencent")
