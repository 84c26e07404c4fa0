#!/usr/bin/env python3
"""A fake Tencent Cloud API for the test suite: SMS ``SendSms`` (2021-01-11) and VMS
``SendTtsVoice`` (2020-09-02) on one real HTTP server (tests/fakeprovider.py).

It verifies each request as Tencent Cloud does, in its own code (not the bridge's): a POST of a
JSON body, the ``X-TC-Action``/``X-TC-Version`` pair, ``X-TC-Timestamp`` within 5 minutes of now,
the ``Authorization`` header (``TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request,
SignedHeaders=..., Signature=...``: the known SecretId, DATE the UTC day of the timestamp,
SERVICE the one the action belongs to (``sms`` for ``SendSms``, ``vms`` for ``SendTtsVoice``,
whatever host the request was sent to), the signature over the canonical request built from the
signed headers as received). Then the action's own checks: app ids, sign name, templates and
their parameter counts, ``+86`` numbers, and (when ``call_limits`` is set) a frequency limit of
calls to one number. Answers have Tencent's shapes: ``{"Response": {"SendStatusSet": [...],
"RequestId"}}``, ``{"Response": {"SendStatus": {"CallId", "SessionContext"}, "RequestId"}}`` and
``{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`` (HTTP 200, as Tencent answers).

In a test::

    with FakeTencent("AKIDfake", "s3cret") as fake:
        client = TencentClient("AKIDfake", "s3cret", sms_url=fake.url, vms_url=fake.url)
        fake.fail_next("AuthFailure.SecretIdNotFound")        # whole request refused
        fake.fail_number_next("LimitExceeded.PhoneNumberOneHourLimit")  # SendStatusSet entry
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from fakeprovider import Answer, FakeProvider, Request

__all__ = ["FakeTencent"]

E164 = re.compile(r"\+861[3-9]\d{9}")
ACTIONS = {("SendSms", "2021-01-11"): "sms", ("SendTtsVoice", "2020-09-02"): "vms"}
AUTH = re.compile(r"TC3-HMAC-SHA256 Credential=([^/]+)/(\d{4}-\d{2}-\d{2})/([a-z]+)/tc3_request,"
                  r" ?SignedHeaders=([a-z0-9;-]+), ?Signature=([0-9a-f]{64})")
SKEW = 300


def _rid() -> str:
    return str(uuid.uuid4())


def _error(code: str, message: str) -> Answer:
    return 200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": _rid()}}


def _h(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class FakeTencent(FakeProvider):
    """Fake Tencent Cloud accepting requests signed with ``secret_id``/``secret_key``.

    ``sms_apps``/``voice_apps``: SmsSdkAppId/VoiceSdkAppid values of the account (``None``:
    any); ``sign_names``; ``templates``: template id -> its number of parameters (``None``: any
    id, any count). ``call_limits``: ``(per_minute, per_hour, per_day)`` calls to one number
    before ``LimitExceeded.DeliveryFrequencyLimit`` (``None``: no limit).
    """

    name = "faketencent"
    content_type = "application/json"

    def __init__(self, secret_id: str = "AKIDfakeSecretId00000", secret_key:
                 str = "fakeKey/+=&%secret", *, sms_apps: Iterable[str] | None = None,
                 voice_apps: Iterable[str] | None = None,
                 sign_names: Iterable[str] | None = None,
                 templates: Mapping[str, int] | None = None,
                 call_limits: tuple[int, int, int] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.secret_id = secret_id
        self.secret_key = secret_key
        self.sms_apps = None if sms_apps is None else set(sms_apps)
        self.voice_apps = None if voice_apps is None else set(voice_apps)
        self.sign_names = None if sign_names is None else set(sign_names)
        self.templates = None if templates is None else dict(templates)
        self.call_limits = call_limits
        self._number_codes: deque[str] = deque()
        self._calls: dict[str, list[float]] = {}

    def fail_next(self, code: str, n: int = 1, message: str | None = None) -> None:
        """Answer the next ``n`` well-signed requests with ``Response.Error`` ``code``."""
        self.respond_next(200, _error(code, message or f"injected {code}")[1], n)

    def fail_number_next(self, code: str, n: int = 1) -> None:
        """Give the next ``n`` numbers of well-formed ``SendSms`` requests the
        ``SendStatusSet`` ``Code`` ``code`` (the request as a whole succeeds)."""
        with self.lock:
            self._number_codes.extend([code] * n)

    # -- judging -----------------------------------------------------------------------------
    def judge(self, req: Request) -> Answer:
        if req.method != "POST":
            return _error("InvalidParameter", "only POST with a JSON body is served here")
        action = req.headers.get("x-tc-action", "")
        service = ACTIONS.get((action, req.headers.get("x-tc-version", "")))
        if service is None:
            return _error("InvalidAction", f"接口`{action}`不存在或者正在维护中")
        refused = self._verify(req, service)
        if refused is not None:
            return refused
        try:
            payload = json.loads(req.body)
        except ValueError:
            return _error("FailedOperation.JsonParseFail", "解析请求包体时候失败")
        if not isinstance(payload, dict):
            return _error("FailedOperation.JsonParseFail", "解析请求包体时候失败")
        scripted = self.scripted()
        if scripted is not None:
            return scripted.status, scripted.body
        if action == "SendSms":
            return self._send_sms(payload)
        return self._call(payload)

    def _verify(self, req: Request, service: str) -> Answer | None:
        """Tencent Cloud's signature checks; an error answer, or None."""
        m = AUTH.fullmatch(req.headers.get("authorization", "").strip())
        if m is None:
            return _error("AuthFailure.InvalidAuthorization", "Authorization 格式不正确")
        secret_id, date, scope_service, signed_headers, signature = m.groups()
        try:
            stamp = int(req.headers.get("x-tc-timestamp", ""))
        except ValueError:
            return _error("AuthFailure.InvalidAuthorization", "X-TC-Timestamp 缺失或不正确")
        if abs(stamp - time.time()) > SKEW:
            return _error("AuthFailure.SignatureExpire",
                          "签名过期。Timestamp 和服务器时间相差不得超过五分钟。")
        if secret_id != self.secret_id:
            return _error("AuthFailure.SecretIdNotFound", "密钥不存在。")
        names = signed_headers.split(";")
        if "content-type" not in names or "host" not in names:
            return _error("AuthFailure.InvalidAuthorization",
                          "SignedHeaders 须含 content-type 与 host")
        # header names and values lower case, trimmed (TC3's canonical headers)
        canonical_headers = "".join(f"{n}:{req.headers.get(n, '').strip().lower()}\n"
                                    for n in names)
        url = urlsplit(req.path)
        canonical = "\n".join([req.method, url.path or "/", url.query, canonical_headers,
                               signed_headers, hashlib.sha256(req.body).hexdigest()])
        day = datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d")
        to_sign = "\n".join(["TC3-HMAC-SHA256", str(stamp), f"{day}/{service}/tc3_request",
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = _h(_h(_h(f"TC3{self.secret_key}".encode(), day), service), "tc3_request")
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if date != day or scope_service != service or not hmac.compare_digest(expected,
                                                                               signature):
            return _error("AuthFailure.SignatureFailure",
                          "The provided credentials could not be validated. "
                          "Please check your signature is correct.")
        return None

    def _template_ok(self, template_id: object, params: object) -> str | None:
        """The error code for a template id / parameter set the account does not have."""
        if not isinstance(params, list) or not all(isinstance(x, str) for x in params):
            return "InvalidParameterValue.TemplateParameterFormatError"
        if self.templates is None:
            return None
        if template_id not in self.templates:
            return "FailedOperation.TemplateIncorrectOrUnapproved"
        if self.templates[str(template_id)] != len(params):
            return "FailedOperation.TemplateParamSetNotMatchApprovedTemplate"
        return None

    def _send_sms(self, p: dict[str, Any]) -> Answer:
        if self.sms_apps is not None and p.get("SmsSdkAppId") not in self.sms_apps:
            return _error("InvalidParameterValue.SdkAppIdNotExist", "SdkAppId 不存在。")
        if not p.get("SignName") or (self.sign_names is not None
                                     and p["SignName"] not in self.sign_names):
            return _error("FailedOperation.SignatureIncorrectOrUnapproved", "签名未审批或格式错误")
        bad = self._template_ok(p.get("TemplateId"), p.get("TemplateParamSet"))
        if bad is not None:
            return _error(bad, "模板未审批或请求的内容与审核通过的模板内容不匹配")
        numbers = p.get("PhoneNumberSet")
        if not isinstance(numbers, list) or not numbers:
            return _error("MissingParameter.EmptyPhoneNumberSet", "传入的号码列表为空")
        statuses = []
        for number in numbers:
            with self.lock:
                code = self._number_codes.popleft() if self._number_codes else "Ok"
            if code == "Ok" and not (isinstance(number, str) and E164.fullmatch(number)):
                code = "InvalidParameterValue.IncorrectPhoneNumber"
            serial = f"2433:{uuid.uuid4().int % 10**20}" if code == "Ok" else ""
            statuses.append({"SerialNo": serial, "PhoneNumber": number,
                             "Fee": 1 if code == "Ok" else 0, "SessionContext": "",
                             "Code": code, "Message": "send success" if code == "Ok" else code,
                             "IsoCode": "CN"})
            if code == "Ok":
                self.accept({"t": time.time(), "action": "SendSms", "mobile": number,
                             "app": p.get("SmsSdkAppId"), "sign_name": p["SignName"],
                             "template_id": p["TemplateId"], "params": p["TemplateParamSet"],
                             "serial_no": serial})
        return 200, {"Response": {"SendStatusSet": statuses, "RequestId": _rid()}}

    def _limited(self, number: str, now: float) -> bool:
        if self.call_limits is None:
            return False
        with self.lock:
            past = [t for t in self._calls.get(number, []) if now - t < 86400]
            self._calls[number] = past
        return any(sum(1 for t in past if now - t < window) >= limit
                   for limit, window in zip(self.call_limits, (60, 3600, 86400), strict=True))

    def _call(self, p: dict[str, Any]) -> Answer:
        if self.voice_apps is not None and p.get("VoiceSdkAppid") not in self.voice_apps:
            return _error("InvalidParameterValue.SdkAppidNotExist", "SdkAppid 不存在。")
        bad = self._template_ok(p.get("TemplateId"), p.get("TemplateParamSet", []))
        if bad is not None:
            return _error(bad, "模板未审核或请求的内容与审核通过的模板内容不匹配")
        number = p.get("CalledNumber")
        if not (isinstance(number, str) and E164.fullmatch(number)):
            return _error("InvalidParameterValue.CalledNumberVerifyFail",
                          "被叫手机号码格式校验失败")
        now = time.time()
        if self._limited(number, now):
            return _error("LimitExceeded.DeliveryFrequencyLimit", "下发语音消息时命中频率限制策略")
        with self.lock:
            self._calls.setdefault(number, []).append(now)
        call_id = str(uuid.uuid4())
        self.accept({"t": now, "action": "SendTtsVoice", "mobile": number,
                     "app": p.get("VoiceSdkAppid"), "template_id": p.get("TemplateId"),
                     "params": p.get("TemplateParamSet", []), "play_times": p.get("PlayTimes"),
                     "call_id": call_id})
        return 200, {"Response": {"SendStatus": {"CallId": call_id, "SessionContext": ""},
                                  "RequestId": _rid()}}
