#!/usr/bin/env python3
"""A fake Aliyun API for the test suite: SMS ``SendSms`` and voice ``SingleCallByTts`` (both
2017-05-25) on one real HTTP server (tests/fakeprovider.py).

It verifies each request as Aliyun does, in its own code (not the bridge's): the common
parameters, the ``AccessKeyId``, the ``Timestamp`` (within 15 minutes), RPC signature 1.0 (HMAC-SHA1
keyed by ``secret + "&"`` over ``POST&%2F&`` + the percent-encoded, sorted query; parameters read
from the query string and a form body alike, as Aliyun does) and a ``SignatureNonce`` never seen
before. Then the action's own checks: numbers, sign name, template codes, ``TemplateParam`` /
``TtsParam`` a JSON object of strings, each SMS variable at most 35 characters and a call's
together under 250, and (when ``call_limits`` is set) Aliyun's flow control of calls to one number.
Answers have Aliyun's JSON shapes: ``{"Code": "OK", "Message": "OK", "BizId", "RequestId"}``,
``{"Code": "OK", "CallId", ...}``, business errors with HTTP 200 and gateway errors (signature,
key, nonce, time stamp) with HTTP 400/404, whose ``Message`` echoes the string to sign as the real
one does.

In a test::

    with FakeAliyun("LTAIkeyid", "s3cret") as fake:
        client = AliyunClient("LTAIkeyid", "s3cret", sms_url=fake.url, voice_url=fake.url)
        fake.fail_next("isv.AMOUNT_NOT_ENOUGH")      # the next good request answers this
        msgs = fake.wait_for(1, timeout=2.0)          # accepted sends: action, mobile, vars ...
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from fakeprovider import Answer, FakeProvider, Request

__all__ = ["FakeAliyun"]

MOBILE = re.compile(r"1[3-9]\d{9}")
COMMON = ("AccessKeyId", "Action", "SignatureMethod", "SignatureNonce", "SignatureVersion",
          "Timestamp", "Version", "Signature")
NONCE_TTL = 15 * 60.0
CLOCK_SKEW = 15 * 60.0


def _enc(value: str) -> str:
    return quote(value, safe="~", encoding="utf-8")


def _rid() -> str:
    return str(uuid.uuid4()).upper()


class FakeAliyun(FakeProvider):
    """Fake Aliyun accepting requests signed with ``access_key_id``/``access_key_secret``.

    ``sign_names``, ``template_codes``, ``tts_codes``: what the account has registered
    (``None``: anything). ``call_limits``: ``(per_minute, per_hour, per_day)`` calls to one
    number before ``isv.BUSINESS_LIMIT_CONTROL`` (``None``: no flow control).
    """

    name = "fakealiyun"

    def __init__(self, access_key_id: str = "LTAI5tFakeKeyId0000", access_key_secret:
                 str = "fakeSecret/+=&%key", *, sign_names: Iterable[str] | None = None,
                 template_codes: Iterable[str] | None = None,
                 tts_codes: Iterable[str] | None = None,
                 call_limits: tuple[int, int, int] | None = None, **kw: Any) -> None:
        super().__init__(**kw)
        self.access_key_id = access_key_id
        self.access_key_secret = access_key_secret
        self.sign_names = None if sign_names is None else set(sign_names)
        self.template_codes = None if template_codes is None else set(template_codes)
        self.tts_codes = None if tts_codes is None else set(tts_codes)
        self.call_limits = call_limits
        self._nonces: dict[str, float] = {}
        self._calls: dict[str, list[float]] = {}

    def fail_next(self, code: str, n: int = 1, message: str | None = None,
                  status: int = 200) -> None:
        """Answer the next ``n`` well-signed requests with Aliyun error ``code``."""
        self.respond_next(status, {"Code": code, "Message": message or f"injected {code}",
                                   "RequestId": _rid()}, n)

    # -- judging -----------------------------------------------------------------------------
    def judge(self, req: Request) -> Answer:
        params = dict(parse_qsl(urlsplit(req.path).query, keep_blank_values=True))
        if req.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(req.body.decode("utf-8"), keep_blank_values=True))
        refused = self._verify(req.method, params)
        if refused is not None:
            return refused
        scripted = self.scripted()
        if scripted is not None:
            return scripted.status, scripted.body
        if params.get("Version") != "2017-05-25":
            return 400, {"Code": "InvalidVersion", "RequestId": _rid(),
                         "Message": "Specified parameter Version is not valid."}
        if params["Action"] == "SendSms":
            return self._send_sms(params)
        if params["Action"] == "SingleCallByTts":
            return self._call(params)
        return 404, {"Code": "InvalidAction.NotFound", "RequestId": _rid(),
                     "Message": "Specified api is not found, please check your url and method."}

    def _verify(self, method: str, params: dict[str, str]) -> Answer | None:
        """Aliyun's gateway checks; an error answer, or None when the request may go on."""
        missing = [k for k in COMMON if not params.get(k)]
        if missing:
            return 400, {"Code": f"Missing{missing[0]}", "RequestId": _rid(),
                         "Message": f"{missing[0]} is mandatory for this action."}
        if params["AccessKeyId"] != self.access_key_id:
            return 404, {"Code": "InvalidAccessKeyId.NotFound", "RequestId": _rid(),
                         "Message": "Specified access key is not found."}
        if params["SignatureMethod"] != "HMAC-SHA1" or params["SignatureVersion"] != "1.0":
            return 400, {"Code": "IncompleteSignature", "RequestId": _rid(),
                         "Message": "The request signature does not conform to Aliyun "
                                    "standards."}
        try:
            stamp = datetime.strptime(params["Timestamp"], "%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            return 400, {"Code": "InvalidTimeStamp.Format", "RequestId": _rid(),
                         "Message": "Specified time stamp or date value is not well formatted."}
        if abs(stamp.replace(tzinfo=UTC).timestamp() - time.time()) > CLOCK_SKEW:
            return 400, {"Code": "InvalidTimeStamp.Expired", "RequestId": _rid(),
                         "Message": "Specified time stamp or date value is expired."}
        signed = {k: v for k, v in params.items() if k != "Signature"}
        canonical = "&".join(f"{_enc(k)}={_enc(v)}" for k, v in sorted(signed.items()))
        to_sign = f"{method}&%2F&{_enc(canonical)}"
        digest = hmac.new((self.access_key_secret + "&").encode(), to_sign.encode(),
                          hashlib.sha1).digest()
        if not hmac.compare_digest(base64.b64encode(digest).decode(), params["Signature"]):
            return 400, {"Code": "SignatureDoesNotMatch", "RequestId": _rid(),
                         "HostId": "dysmsapi.aliyuncs.com",
                         "Message": "Specified signature does not match our calculation. "
                                    f"The server string to sign is: {to_sign}"}
        with self.lock:
            now = time.time()
            self._nonces = {k: t for k, t in self._nonces.items() if now - t < NONCE_TTL}
            if params["SignatureNonce"] in self._nonces:
                return 400, {"Code": "SignatureNonceUsed", "RequestId": _rid(),
                             "Message": "Specified signature nonce was used already."}
            self._nonces[params["SignatureNonce"]] = now
        return None

    @staticmethod
    def _vars(raw: str | None) -> dict[str, str] | None:
        try:
            obj = json.loads(raw) if raw else {}
        except ValueError:
            return None
        if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
            return None
        return obj

    def _send_sms(self, p: dict[str, str]) -> Answer:
        def fail(code: str, message: str) -> Answer:
            return 200, {"Code": code, "Message": message, "RequestId": _rid()}

        numbers = p.get("PhoneNumbers", "").split(",")
        if not all(MOBILE.fullmatch(n) for n in numbers):
            return fail("isv.MOBILE_NUMBER_ILLEGAL", f"{p.get('PhoneNumbers')}invalid")
        if not p.get("SignName") or (self.sign_names is not None
                                     and p["SignName"] not in self.sign_names):
            return fail("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        if not p.get("TemplateCode") or (self.template_codes is not None
                                         and p["TemplateCode"] not in self.template_codes):
            return fail("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        tvars = self._vars(p.get("TemplateParam"))
        if tvars is None:
            return fail("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值")
        if any(len(v) > 35 for v in tvars.values()):
            return fail("isv.PARAM_LENGTH_LIMIT", "参数超出长度限制")
        biz_id = f"{uuid.uuid4().int % 10**15:015d}^0"
        self.accept({"t": time.time(), "action": "SendSms", "mobile": p["PhoneNumbers"],
                     "sign_name": p["SignName"], "template_code": p["TemplateCode"],
                     "vars": tvars, "biz_id": biz_id, "params": p})
        return 200, {"Code": "OK", "Message": "OK", "BizId": biz_id, "RequestId": _rid()}

    def _flow_controlled(self, number: str, now: float) -> str | None:
        if self.call_limits is None:
            return None
        with self.lock:
            past = [t for t in self._calls.get(number, []) if now - t < 86400]
            self._calls[number] = past
        for (limit, window, what) in zip(self.call_limits, (60, 3600, 86400),
                                         ("分钟级", "小时级", "天级"), strict=True):
            if sum(1 for t in past if now - t < window) >= limit:
                return f"触发{what}流控Permits:{limit}"
        return None

    def _call(self, p: dict[str, str]) -> Answer:
        def fail(code: str, message: str) -> Answer:
            return 200, {"Code": code, "Message": message, "RequestId": _rid()}

        number = p.get("CalledNumber", "")
        if not MOBILE.fullmatch(number):
            return fail("isv.MOBILE_NUMBER_ILLEGAL", f"{number}号码格式非法")
        if not p.get("TtsCode") or (self.tts_codes is not None
                                    and p["TtsCode"] not in self.tts_codes):
            return fail("isv.TTS_TEMPLATE_ILLEGAL", "TTS模板不合法")
        tvars = self._vars(p.get("TtsParam"))
        if tvars is None:
            return fail("isv.INVALID_PARAMETERS", "参数异常")
        if sum(len(v) for v in tvars.values()) >= 250:
            return fail("isv.PARAM_LENGTH_LIMIT", "参数长度受限")
        if any(re.search(r"https?://|www\.", v, re.I) for v in tvars.values()):
            return fail("isv.PARAM_NOT_SUPPORT_URL", "变量不支持URL参数")
        now = time.time()
        limited = self._flow_controlled(number, now)
        if limited:
            return fail("isv.BUSINESS_LIMIT_CONTROL", limited)
        with self.lock:
            self._calls.setdefault(number, []).append(now)
        call_id = f"{uuid.uuid4().int % 10**12}^{uuid.uuid4().int % 10**11}"
        self.accept({"t": now, "action": "SingleCallByTts", "mobile": number,
                     "tts_code": p["TtsCode"], "vars": tvars,
                     "show_number": p.get("CalledShowNumber"), "play_times": p.get("PlayTimes"),
                     "call_id": call_id, "params": p})
        return 200, {"Code": "OK", "Message": "OK", "CallId": call_id, "RequestId": _rid()}
