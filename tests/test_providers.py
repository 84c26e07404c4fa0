"""The Aliyun and Tencent Cloud clients against the fake servers: every answer sorted into its
error class (table-driven), message ids kept, variables cut to the providers' bounds, the
signature checks of the fakes (nonce reuse, clock skew, the service in the credential scope),
and no credential in any error, in any encoding."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
import requests
from fakealiyun import FakeAliyun
from faketencent import FakeTencent

from bridge.errors import (
    ConfigError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)
from bridge.providers import aliyun as ali
from bridge.providers import tencent as tc
from bridge.providers.transport import Scrubber, fit_total

MOBILE = "13800138000"
ALI_ID, ALI_SECRET = "LTAI5tTestKeyId123456", "Sec/ret+Key=&%with~odd chars"
TC_ID, TC_SECRET = "AKIDtestSecretId1234567", "TcKey/+=&%secret value"


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def _assert_clean(exc: BaseException, *secrets: str) -> None:
    """No credential in the error, its repr, its args or any chained cause."""
    texts = []
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    blob = "\n".join(texts)
    for secret in secrets:
        for form in _forms(secret):
            assert form not in blob, form
    assert exc.__cause__ is None


@pytest.fixture
def fake_aliyun() -> Iterator[FakeAliyun]:
    with FakeAliyun(ALI_ID, ALI_SECRET) as fake:
        yield fake


@pytest.fixture
def fake_tencent() -> Iterator[FakeTencent]:
    with FakeTencent(TC_ID, TC_SECRET) as fake:
        yield fake


def _ali(fake: FakeAliyun, secret: str = ALI_SECRET, **kw: object) -> ali.AliyunClient:
    return ali.AliyunClient(ALI_ID, secret, sms_url=fake.url, voice_url=fake.url,
                            timeout=2.0, **kw)  # type: ignore[arg-type]


def _tc(fake: FakeTencent, secret: str = TC_SECRET, **kw: object) -> tc.TencentClient:
    return tc.TencentClient(TC_ID, secret, sms_url=fake.url, vms_url=fake.url, timeout=2.0,
                            **kw)  # type: ignore[arg-type]


# -- sorting -------------------------------------------------------------------------------

ALIYUN_CODES = [
    ("isp.SYSTEM_ERROR", 200, TransientError),
    ("ServiceUnavailable", 503, TransientError),
    ("SignatureNonceUsed", 400, TransientError),
    ("isp.SOMETHING_NEW", 200, TransientError),
    ("isv.BUSINESS_LIMIT_CONTROL", 200, ThrottledError),
    ("Throttling.User", 400, ThrottledError),
    ("isv.SMS_TEMPLATE_ILLEGAL", 200, ConfigError),
    ("isv.AMOUNT_NOT_ENOUGH", 200, ConfigError),
    ("isv.OUT_OF_SERVICE", 200, ConfigError),
    ("isv.TTS_TEMPLATE_ILLEGAL", 200, ConfigError),
    ("SignatureDoesNotMatch", 400, ConfigError),
    ("InvalidAccessKeyId.NotFound", 404, ConfigError),
    ("InvalidTimeStamp.Expired", 400, ConfigError),
    ("isv.MOBILE_NUMBER_ILLEGAL", 200, PermanentError),
    ("isv.SOMETHING_NEW", 200, PermanentError),
]


@pytest.mark.parametrize("code,status,cls", ALIYUN_CODES, ids=[c[0] for c in ALIYUN_CODES])
def test_aliyun_answers_are_sorted(fake_aliyun: FakeAliyun, code: str, status: int,
                                   cls: type[ProviderError]) -> None:
    fake_aliyun.fail_next(code, message=f"said {code} to {MOBILE}", status=status)
    with _ali(fake_aliyun) as client, pytest.raises(ProviderError) as info:
        client.send_sms(MOBILE, "sig", "SMS_1", {"a": "b"})
    assert type(info.value) is cls
    assert (info.value.code, info.value.provider) == (code, "aliyun")
    assert info.value.reason == f"SendSms {code}: said {code} to 138****8000"
    assert info.value.retry_after == (60.0 if cls is ThrottledError else None)


TENCENT_CODES = [
    ("InternalError.Timeout", TransientError),
    ("RequestLimitExceeded", TransientError),
    ("FailedOperation.AccessUpstreamTimeout", TransientError),
    ("LimitExceeded.PhoneNumberOneHourLimit", ThrottledError),
    ("LimitExceeded.DeliveryFrequencyLimit", ThrottledError),
    ("AuthFailure.SecretIdNotFound", ConfigError),
    ("UnauthorizedOperation.ServiceSuspendDueToArrears", ConfigError),
    ("FailedOperation.InsufficientBalanceInSmsPackage", ConfigError),
    ("FailedOperation.TemplateIncorrectOrUnapproved", ConfigError),
    ("InvalidParameterValue.IncorrectPhoneNumber", PermanentError),
    ("FailedOperation.PhoneNumberInBlacklist", PermanentError),
    ("UnsupportedOperation", PermanentError),
]


@pytest.mark.parametrize("code,cls", TENCENT_CODES, ids=[c[0] for c in TENCENT_CODES])
@pytest.mark.parametrize("where", ["Error", "SendStatusSet"])
def test_tencent_answers_are_sorted(fake_tencent: FakeTencent, code: str,
                                    cls: type[ProviderError], where: str) -> None:
    if where == "Error":
        fake_tencent.fail_next(code, message=f"said {code} to +86{MOBILE}")
    else:
        fake_tencent.fail_number_next(code)
    with _tc(fake_tencent) as client, pytest.raises(ProviderError) as info:
        client.send_sms(MOBILE, "sig", "1", "1400000000", {"a": "b"})
    assert type(info.value) is cls
    assert (info.value.code, info.value.provider) == (code, "tencent")
    said = f"said {code} to +86138****8000" if where == "Error" else code
    assert info.value.reason == f"SendSms {code}: {said}"


@pytest.mark.parametrize("status,cls", [(500, TransientError), (502, TransientError),
                                        (429, TransientError), (404, ConfigError),
                                        (302, ConfigError), (400, PermanentError)],
                         ids=["500", "502", "429", "404", "302", "400"])
def test_answers_without_a_code_are_sorted_by_http_status(status: int,
                                                          cls: type[ProviderError]) -> None:
    with FakeAliyun(ALI_ID, ALI_SECRET) as fa, FakeTencent(TC_ID, TC_SECRET) as ft:
        fa.respond_next(status, {"html": "<h1>gateway</h1>"})
        ft.respond_next(status, {"html": "<h1>gateway</h1>"})
        with _ali(fa) as a, pytest.raises(ProviderError) as ai:
            a.call(MOBILE, "TTS_1", {})
        with _tc(ft) as t, pytest.raises(ProviderError) as ti:
            t.call(MOBILE, "1", "1400000001", {})
    assert (type(ai.value), type(ti.value)) == (cls, cls)
    assert ai.value.reason.startswith(f"HTTP {status}") and ti.value.reason.startswith(
        f"HTTP {status}")


def test_unreachable_and_timeout_are_transient_and_carry_no_credential() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    a = ali.AliyunClient(ALI_ID, ALI_SECRET, sms_url=url, voice_url=url, timeout=1.0)
    with pytest.raises(TransientError) as info:
        a.send_sms(MOBILE, "sig", "SMS_1", {})
    assert info.value.reason.startswith("connection error") and not info.value.maybe_sent
    _assert_clean(info.value, ALI_ID, ALI_SECRET)
    with FakeTencent(TC_ID, TC_SECRET) as fake:
        fake.delay = 1.0
        t = _tc(fake)
        t._timeout = 0.2
        with pytest.raises(TransientError) as tinfo:
            t.call(MOBILE, "1", "1400000001", {})
    assert tinfo.value.maybe_sent and tinfo.value.reason.startswith("read timeout")
    _assert_clean(tinfo.value, TC_ID, TC_SECRET)


# -- ids, variables, credentials -------------------------------------------------------------

def test_aliyun_keeps_ids_and_cuts_sms_variables_to_35(fake_aliyun: FakeAliyun) -> None:
    long = "磁盘" * 30
    with _ali(fake_aliyun) as client:
        sms = client.send_sms(MOBILE, "sig", "SMS_1", {"summary": long, "host": "h"})
        call = client.call(MOBILE, "TTS_1", {"summary": long * 5, "host": "h"})
    sent, called = fake_aliyun.messages
    assert sent["vars"] == {"summary": long[:34] + "…", "host": "h"}
    assert sms.sid == sent["biz_id"] and call.sid == called["call_id"]
    assert sum(len(v) for v in called["vars"].values()) == 249
    assert called["vars"]["host"] == "h" and called["vars"]["summary"].endswith("…")
    assert "CalledShowNumber" not in called["params"]


@pytest.mark.parametrize("values,expected", [
    ({"a": "x" * 10}, {"a": "x" * 10}),
    ({"a": "x" * 300}, {"a": "x" * 248 + "…"}),
    ({"a": "x" * 200, "b": "y" * 200, "c": "z"}, {"a": "x" * 123 + "…", "b": "y" * 123 + "…",
                                                   "c": "z"}),
], ids=["short", "one-long", "two-long-one-short"])
def test_fit_total(values: dict[str, str], expected: dict[str, str]) -> None:
    assert fit_total(values, 250) == expected


def test_aliyun_signature_error_is_config_and_masks_the_echoed_request(
        fake_aliyun: FakeAliyun) -> None:
    with _ali(fake_aliyun, secret="wrong-secret") as client, \
            pytest.raises(ConfigError) as info:
        client.send_sms(MOBILE, "sig", "SMS_1", {"who": "call 13900139000"})
    reason = info.value.reason
    assert info.value.code == "SignatureDoesNotMatch"
    assert "The server string to sign is: POST&%2F&AccessKeyId%3D***" in reason
    assert "13800138000" not in reason and "13900139000" not in reason
    _assert_clean(info.value, ALI_ID, ALI_SECRET, "wrong-secret")
    assert fake_aliyun.messages == []


def test_aliyun_nonce_is_fresh_and_a_reused_one_refused(fake_aliyun: FakeAliyun) -> None:
    with _ali(fake_aliyun) as client:
        client.send_sms(MOBILE, "sig", "SMS_1", {})
        client.send_sms(MOBILE, "sig", "SMS_1", {})
    with _ali(fake_aliyun, nonce=lambda: "same-nonce") as client:
        client.send_sms(MOBILE, "sig", "SMS_1", {})
        with pytest.raises(TransientError) as info:
            client.send_sms(MOBILE, "sig", "SMS_1", {})
    assert info.value.code == "SignatureNonceUsed"
    assert len(fake_aliyun.messages) == 3


def test_aliyun_timestamp_off_by_more_than_15_minutes_is_refused(
        fake_aliyun: FakeAliyun) -> None:
    with _ali(fake_aliyun, clock=lambda: time.time() - 16 * 60) as client, \
            pytest.raises(ConfigError) as info:
        client.send_sms(MOBILE, "sig", "SMS_1", {})
    assert info.value.code == "InvalidTimeStamp.Expired"


@pytest.mark.parametrize("skew,ok", [(-290, True), (290, True), (-310, False), (310, False)],
                         ids=["-290s", "+290s", "-310s", "+310s"])
def test_tencent_timestamp_must_be_within_5_minutes(fake_tencent: FakeTencent, skew: int,
                                                    ok: bool) -> None:
    with _tc(fake_tencent, clock=lambda: time.time() + skew) as client:
        if ok:
            client.call(MOBILE, "1", "1400000001", {})
        else:
            with pytest.raises(ConfigError) as info:
                client.call(MOBILE, "1", "1400000001", {})
            assert info.value.code == "AuthFailure.SignatureExpire"


def test_tencent_scope_names_the_service_whatever_the_url(fake_tencent: FakeTencent) -> None:
    """Both APIs sent to one host: the scope still says sms / vms; a request whose scope names
    the wrong service is refused by the fake."""
    with _tc(fake_tencent) as client:
        client.send_sms(MOBILE, "sig", "1", "1400000000", {"a": "1", "b": "2"})
        client.call(MOBILE, "2", "1400000001", {"a": "1"})
        scopes = [r["headers"]["authorization"].split("/")[2] for r in fake_tencent.requests]
        assert scopes == ["sms", "vms"]
        body = json.dumps({"TemplateId": "2", "CalledNumber": f"+86{MOBILE}",
                           "VoiceSdkAppid": "1", "TemplateParamSet": []}).encode()
        headers = client.headers(client._sms, "SendTtsVoice", body)  # signed for "sms"
        headers["X-TC-Version"] = tc.VMS_VERSION
    answer = requests.post(fake_tencent.url, data=body, headers=headers, timeout=2).json()
    assert answer["Response"]["Error"]["Code"] == "AuthFailure.SignatureFailure"


def test_tencent_params_are_positional_in_vars_order(fake_tencent: FakeTencent) -> None:
    with _tc(fake_tencent) as client:
        client.send_sms(MOBILE, "sig", "1", "1400000000", {"z": "first", "a": "second"})
    assert fake_tencent.messages[0]["params"] == ["first", "second"]


def test_scrubber_replaces_every_encoding_and_masks_mobiles() -> None:
    s = Scrubber(["a b/c+d"])
    text = " ".join(_forms("a b/c+d")) + " 13800138000 +8613900139000"
    assert s.scrub(text) == "*** *** *** *** *** 138****8000 +86139****9000"


def test_repr_holds_no_credential() -> None:
    a = ali.AliyunClient(ALI_ID, ALI_SECRET)
    t = tc.TencentClient(TC_ID, TC_SECRET)
    for text in (repr(a), repr(t)):
        for secret in (ALI_ID, ALI_SECRET, TC_ID, TC_SECRET):
            assert secret not in text
