"""The fake Aliyun and Tencent Cloud servers are faithful: what each official SDK sends them is
accepted, the same signed with a wrong secret is refused with the provider's own error code, and
what the bridge's own clients send is accepted too (so the bridge signs as the SDKs do).

The SDKs are test-only dependencies (docs/providers.md, Why hand signing). Aliyun's SDKs sign
ACS3-HMAC-SHA256 by default; ``signature_algorithm="v2"`` makes them sign RPC signature 1.0, the
one the bridge uses.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from alibabacloud_dysmsapi20170525 import models as sms_models
from alibabacloud_dysmsapi20170525.client import Client as AliyunSmsClient
from alibabacloud_dyvmsapi20170525 import models as vms_models
from alibabacloud_dyvmsapi20170525.client import Client as AliyunVmsClient
from alibabacloud_tea_openapi.exceptions import ClientException
from alibabacloud_tea_openapi.utils_models import Config
from fakealiyun import FakeAliyun
from faketencent import FakeTencent
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models as tsms
from tencentcloud.sms.v20210111.sms_client import SmsClient as TencentSmsClient
from tencentcloud.vms.v20200902 import models as tvms
from tencentcloud.vms.v20200902.vms_client import VmsClient as TencentVmsClient

from bridge.providers.aliyun import AliyunClient
from bridge.providers.tencent import TencentClient

MOBILE = "13800138000"
# alert text with every character that percent-encoding and JSON treat specially
VARS = {"name": "CPU 高 & +%=#~*", "host": "web-01/a?b"}


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with FakeAliyun(sign_names={"运维告警"}, template_codes={"SMS_1"},
                    tts_codes={"TTS_1"}) as fake:
        yield fake


@pytest.fixture
def tencent() -> Iterator[FakeTencent]:
    with FakeTencent(sms_apps={"1400000000"}, voice_apps={"1400000001"},
                     sign_names={"运维告警"}, templates={"111": 2, "222": 2}) as fake:
        yield fake


def _aliyun_config(fake: FakeAliyun, secret: str) -> Config:
    return Config(access_key_id=fake.access_key_id, access_key_secret=secret,
                  endpoint=f"127.0.0.1:{fake.port}", protocol="http", signature_algorithm="v2")


def _sdk_sms(config: Config) -> object:
    return AliyunSmsClient(config).send_sms(sms_models.SendSmsRequest(
        phone_numbers=MOBILE, sign_name="运维告警", template_code="SMS_1",
        template_param=json.dumps(VARS, ensure_ascii=False)))


def _sdk_call(config: Config) -> object:
    return AliyunVmsClient(config).single_call_by_tts(vms_models.SingleCallByTtsRequest(
        called_number=MOBILE, tts_code="TTS_1", tts_param=json.dumps(VARS, ensure_ascii=False),
        play_times=2))


@pytest.mark.parametrize("send", [_sdk_sms, _sdk_call], ids=["SendSms", "SingleCallByTts"])
def test_aliyun_sdk_request_is_accepted_and_a_wrong_secret_refused(aliyun: FakeAliyun,
                                                                   send: object) -> None:
    assert callable(send)
    resp = send(_aliyun_config(aliyun, aliyun.access_key_secret))
    body = resp.body.to_map()  # type: ignore[attr-defined]
    assert body["Code"] == "OK"
    [msg] = aliyun.messages
    assert msg["vars"] == VARS and msg["mobile"] == MOBILE
    assert (body.get("BizId") or body.get("CallId")) == (msg.get("biz_id") or msg.get("call_id"))
    with pytest.raises(ClientException) as info:
        send(_aliyun_config(aliyun, "not-the-secret"))
    assert info.value.code == "SignatureDoesNotMatch"
    assert len(aliyun.messages) == 1


def test_bridge_aliyun_client_is_accepted(aliyun: FakeAliyun) -> None:
    with AliyunClient(aliyun.access_key_id, aliyun.access_key_secret, sms_url=aliyun.url,
                      voice_url=aliyun.url) as client:
        sms = client.send_sms(MOBILE, "运维告警", "SMS_1", VARS)
        call = client.call(MOBILE, "TTS_1", VARS, called_show_number="057112345678")
    sent, called = aliyun.messages
    assert (sent["action"], sent["vars"], sms.sid) == ("SendSms", VARS, sent["biz_id"])
    assert (called["action"], called["vars"], call.sid) == ("SingleCallByTts", VARS,
                                                            called["call_id"])
    assert (called["show_number"], called["play_times"]) == ("057112345678", "2")
    # the credentials travel in the body, never in the URL
    assert all(r["path"] == "/" for r in aliyun.requests)


def _tencent(fake: FakeTencent, secret: str) -> tuple[TencentSmsClient, TencentVmsClient]:
    profile = ClientProfile(httpProfile=HttpProfile(endpoint=f"127.0.0.1:{fake.port}",
                                                    protocol="http"))
    cred = credential.Credential(fake.secret_id, secret)
    return (TencentSmsClient(cred, "ap-guangzhou", profile),
            TencentVmsClient(cred, "ap-guangzhou", profile))


def _tsms(fake: FakeTencent, secret: str) -> object:
    req = tsms.SendSmsRequest()
    req.PhoneNumberSet = [f"+86{MOBILE}"]
    req.SmsSdkAppId, req.SignName, req.TemplateId = "1400000000", "运维告警", "111"
    req.TemplateParamSet = list(VARS.values())
    return _tencent(fake, secret)[0].SendSms(req)


def _tvms(fake: FakeTencent, secret: str) -> object:
    req = tvms.SendTtsVoiceRequest()
    req.TemplateId, req.CalledNumber, req.VoiceSdkAppid = "222", f"+86{MOBILE}", "1400000001"
    req.TemplateParamSet, req.PlayTimes = list(VARS.values()), 2
    return _tencent(fake, secret)[1].SendTtsVoice(req)


@pytest.mark.parametrize("send", [_tsms, _tvms], ids=["SendSms", "SendTtsVoice"])
def test_tencent_sdk_request_is_accepted_and_a_wrong_secret_refused(tencent: FakeTencent,
                                                                    send: object) -> None:
    assert callable(send)
    send(tencent, tencent.secret_key)
    [msg] = tencent.messages
    assert msg["params"] == list(VARS.values()) and msg["mobile"] == f"+86{MOBILE}"
    with pytest.raises(TencentCloudSDKException) as info:
        send(tencent, "not-the-secret")
    assert info.value.code == "AuthFailure.SignatureFailure"
    assert len(tencent.messages) == 1


def test_bridge_tencent_client_is_accepted(tencent: FakeTencent) -> None:
    with TencentClient(tencent.secret_id, tencent.secret_key, sms_url=tencent.url,
                       vms_url=tencent.url) as client:
        sms = client.send_sms(MOBILE, "运维告警", "111", "1400000000", VARS)
        call = client.call(MOBILE, "222", "1400000001", VARS)
    sent, called = tencent.messages
    assert (sent["action"], sent["params"], sms.sid, sms.fee) == (
        "SendSms", list(VARS.values()), sent["serial_no"], 1)
    assert (called["action"], called["params"], call.sid, called["play_times"]) == (
        "SendTtsVoice", list(VARS.values()), called["call_id"], 2)
