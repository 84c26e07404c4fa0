"""Aliyun and Tencent Cloud through the real ``bridge serve`` with the fake servers
(docs/providers.md): an escalation step calls each paged number once with the variables in
``TtsParam``, and a later call step calls nobody again; Juhe answering 10012 sends the SMS once
through its Aliyun fallback and never through Juhe; a throttled call is retried later, not
failed; the provider's secret appears nowhere (logs, ``/api/notifications``, ``/metrics``,
``/readyz``) in plain, URL-encoded or base64 form."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from fakealiyun import FakeAliyun
from fakejuhe import FakeJuhe
from faketencent import FakeTencent
from support import wait_until

ZHANG, LI = "13800138000", "13800138001"
ALI_ID, ALI_SECRET = "LTAI5tE2eKeyId9876543", "e2e/Secret+Key=&%x"
TC_ID, TC_SECRET = "AKIDe2eSecretId7654321", "e2e/TcKey+=&%y"
FIRING = {"alerts": [{"status": "firing", "startsAt": "2026-11-29T01:00:00Z",
                      "labels": {"alertname": "DBDown", "severity": "critical",
                                 "instance": "db-01"}}]}
RESOLVED = {"alerts": [{**FIRING["alerts"][0], "status": "resolved",
                        "endsAt": "2026-11-29T02:00:00Z"}]}

RULES = f"""\
people: {{zhang: "{ZHANG}", li: "{LI}"}}
receivers: {{team: [zhang, li]}}
templates:
  page:
    tpl_id: 111
    vars: {{name: "{{{{ labels.alertname }}}}"}}
    fallback: {{aliyun: {{sign_name: 运维告警, template_code: SMS_1}}}}
  ok: {{tpl_id: 222, vars: {{name: "{{{{ labels.alertname }}}}"}}}}
  call_ali:
    voice: {{aliyun: {{tts_code: TTS_1, called_show_number: "057112345678"}}}}
    vars: {{name: "{{{{ labels.alertname }}}}", host: "{{{{ labels.instance }}}}"}}
  call_tc:
    voice: {{tencent: {{template_id: "333", voice_sdk_app_id: "1400000001"}}}}
    vars: {{name: "{{{{ labels.alertname }}}}", host: "{{{{ labels.instance }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - name: db
    matchers: ['severity="critical"']
    receiver: team
    template: page
    resolved_template: ok
    escalate: ESCALATE
"""


@pytest.fixture
def aliyun() -> Iterator[FakeAliyun]:
    with FakeAliyun(ALI_ID, ALI_SECRET, template_codes={"SMS_1"}, tts_codes={"TTS_1"}) as fake:
        yield fake


@pytest.fixture
def tencent() -> Iterator[FakeTencent]:
    with FakeTencent(TC_ID, TC_SECRET, voice_apps={"1400000001"},
                     templates={"333": 2}) as fake:
        yield fake


def _env(aliyun: FakeAliyun, tencent: FakeTencent, secret: str = ALI_SECRET) -> dict[str, str]:
    return {"ALIYUN_ACCESS_KEY_ID": ALI_ID, "ALIYUN_ACCESS_KEY_SECRET": secret,
            "ALIYUN_SMS_URL": aliyun.url, "ALIYUN_VOICE_URL": aliyun.url,
            "TENCENTCLOUD_SECRET_ID": TC_ID, "TENCENTCLOUD_SECRET_KEY": TC_SECRET,
            "TENCENT_SMS_URL": tencent.url, "TENCENT_VMS_URL": tencent.url}


def _rules(escalate: str = "[]") -> str:
    return RULES.replace("ESCALATE", escalate)


def _notifications(bridge: Any) -> list[dict[str, Any]]:
    r = bridge.get("/api/notifications", params={"limit": 50})
    assert r.status_code == 200
    return list(r.json()["notifications"])


def test_call_steps_call_each_paged_number_once(make_bridge: Any, fake_juhe: FakeJuhe,
                                                aliyun: FakeAliyun,
                                                tencent: FakeTencent) -> None:
    bridge = make_bridge(rules=_rules("[{after: 1s, receiver: team, template: call_ali},"
                                      " {after: 2s, receiver: team, template: call_tc}]"),
                         **_env(aliyun, tencent))
    assert bridge.post("/webhook/alertmanager", FIRING).status_code == 200
    assert len(fake_juhe.wait_for(2, timeout=10)) == 2
    calls = aliyun.wait_for(2, timeout=15)
    assert sorted(c["mobile"] for c in calls) == [ZHANG, LI]
    assert all(c["vars"] == {"name": "DBDown", "host": "db-01"} and c["tts_code"] == "TTS_1"
               and c["show_number"] == "057112345678" and c["play_times"] == "2"
               for c in calls)
    # the second call step finds both numbers called already: nobody is called again
    assert wait_until(lambda: any(
        e["escalation"][1]["state"] == "done" for e in
        bridge.get("/api/episodes").json()["episodes"]), 15)
    assert tencent.messages == [] and len(aliyun.messages) == 2
    voice = [n for n in _notifications(bridge) if n["channel"] == "voice"]
    assert sorted((n["mobile"], n["state"], n["provider"]) for n in voice) == [
        ("138****8000", "sent", "aliyun"), ("138****8001", "sent", "aliyun")]
    assert {n["sid"] for n in voice} == {c["call_id"] for c in calls}
    # a number's calls are found by its number too
    mine = bridge.get("/api/notifications", params={"mobile": ZHANG}).json()["notifications"]
    assert sorted(n["channel"] for n in mine) == ["sms", "voice"]
    # resolved: the resolved SMS to both numbers paged by SMS, no resolved call
    assert bridge.post("/webhook/alertmanager", RESOLVED).status_code == 200
    sms = fake_juhe.wait_for(4, timeout=10)
    assert sorted(m["tpl_id"] for m in sms) == ["111", "111", "222", "222"]
    time.sleep(0.5)
    assert len(aliyun.messages) == 2 and tencent.messages == []


def test_tencent_call_step_sends_positional_params(make_bridge: Any, fake_juhe: FakeJuhe,
                                                   aliyun: FakeAliyun,
                                                   tencent: FakeTencent) -> None:
    bridge = make_bridge(rules=_rules("[{after: 1s, receiver: team, template: call_tc}]"),
                         **_env(aliyun, tencent))
    assert bridge.post("/webhook/alertmanager", FIRING).status_code == 200
    calls = tencent.wait_for(2, timeout=15)
    assert sorted(c["mobile"] for c in calls) == [f"+86{ZHANG}", f"+86{LI}"]
    assert all(c["params"] == ["DBDown", "db-01"] and c["play_times"] == 2 for c in calls)


def _forms(secret: str) -> list[str]:
    raw = secret.encode()
    return [secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode().rstrip("=")]


def test_juhe_10012_goes_through_aliyun_once(make_bridge: Any, fake_juhe: FakeJuhe,
                                             aliyun: FakeAliyun, tencent: FakeTencent) -> None:
    fake_juhe.fail_next(10012, 100)
    bridge = make_bridge(rules=_rules(), **_env(aliyun, tencent))
    assert bridge.post("/webhook/alertmanager", FIRING).status_code == 200
    sent = aliyun.wait_for(2, timeout=15)
    assert sorted(m["mobile"] for m in sent) == [ZHANG, LI]
    assert all(m["vars"] == {"name": "DBDown"} and m["template_code"] == "SMS_1" for m in sent)
    assert wait_until(lambda: all(n["state"] == "sent" for n in _notifications(bridge)), 10)
    time.sleep(0.5)
    assert fake_juhe.messages == [] and len(aliyun.messages) == 2
    notes = _notifications(bridge)
    assert sorted((n["provider"], n["channel"]) for n in notes) == [("aliyun", "sms")] * 2
    assert {n["sid"] for n in notes} == {m["biz_id"] for m in sent}
    metrics = bridge.get("/metrics").text
    assert 'bridge_sms_sent_total{provider="aliyun"} 2.0' in metrics
    assert "via aliyun" in bridge.log()


def test_throttled_call_is_retried_later_not_failed(make_bridge: Any, fake_juhe: FakeJuhe,
                                                    aliyun: FakeAliyun,
                                                    tencent: FakeTencent) -> None:
    aliyun.fail_next("isv.BUSINESS_LIMIT_CONTROL", 2, message="触发分钟级流控Permits:1")
    bridge = make_bridge(rules=_rules("[{after: 1s, receiver: team, template: call_ali}]"),
                         **_env(aliyun, tencent))
    assert bridge.post("/webhook/alertmanager", FIRING).status_code == 200

    def voice() -> list[dict[str, Any]]:
        return [n for n in _notifications(bridge) if n["channel"] == "voice"]

    assert wait_until(lambda: len(voice()) == 2 and all(
        n["state"] == "retrying" for n in voice()), 15)
    for n in voice():
        assert n["reason"].startswith("aliyun throttled error isv.BUSINESS_LIMIT_CONTROL")
    time.sleep(1.0)  # retried after a minute, not at the retry base's pace
    assert [n["state"] for n in voice()] == ["retrying", "retrying"]
    assert aliyun.messages == []


def test_no_secret_anywhere(make_bridge: Any, fake_juhe: FakeJuhe, aliyun: FakeAliyun,
                            tencent: FakeTencent) -> None:
    """Aliyun refuses a wrong secret with SignatureDoesNotMatch, echoing the request it
    signed: the bridge shows the configuration error without any credential."""
    wrong = "wrong/Secret+=&%z"
    fake_juhe.fail_next(10012, 100)
    bridge = make_bridge(rules=_rules("[{after: 1s, receiver: team, template: call_ali}]"),
                         **_env(aliyun, tencent, secret=wrong))
    assert bridge.post("/webhook/alertmanager", FIRING).status_code == 200
    assert wait_until(lambda: any("SignatureDoesNotMatch" in n["reason"]
                                  for n in _notifications(bridge)), 15)
    assert wait_until(lambda: bridge.get("/readyz").status_code == 503, 10)
    ready = bridge.get("/readyz")
    assert "aliyun configuration error" in ready.text
    texts = {"log": bridge.log(), "notifications": json.dumps(_notifications(bridge)),
             "metrics": bridge.get("/metrics").text, "readyz": ready.text,
             "episodes": bridge.get("/api/episodes").text}
    assert "138****8000" in texts["notifications"] and ZHANG not in texts["notifications"]
    for where, text in texts.items():
        for secret in (wrong, ALI_ID, TC_SECRET, TC_ID):
            for form in _forms(secret):
                assert form not in text, (where, form)


def test_two_calls_to_one_number_at_once_are_one_call(
        make_bridge: Any, fake_juhe: FakeJuhe, aliyun: FakeAliyun,
        tencent: FakeTencent) -> None:
    """Two alerts call one number at once: the first call goes out, the second was waiting for
    the minute and is folded into it (``suppressed``, reason ``folded``; docs/providers.md,
    Calls). A held call dropped on acknowledgement: tests/test_calls.py."""
    rules = RULES.replace("escalate: ESCALATE", "").replace(
        "receiver: team\n    template: page\n    resolved_template: ok",
        "receiver: one\n    template: call_ali").replace(
        "receivers: {team: [zhang, li]}", "receivers: {team: [zhang, li], one: [zhang]}")
    bridge = make_bridge(rules=rules, **_env(aliyun, tencent))
    two = {"alerts": [{**FIRING["alerts"][0], "labels": {**FIRING["alerts"][0]["labels"],
                                                         "alertname": name}}
                      for name in ("DBDown", "DiskFull")]}
    assert bridge.post("/webhook/alertmanager", two).status_code == 200
    [first] = aliyun.wait_for(1, timeout=10)
    assert wait_until(lambda: any(n["state"] == "suppressed" for n in _notifications(bridge)),
                      10, 0.2)
    other = ({"DBDown", "DiskFull"} - {first["vars"]["name"]}).pop()
    states = sorted((n["alertname"], n["state"], n["reason"]) for n in _notifications(bridge))
    assert states == sorted([(first["vars"]["name"], "sent", ""),
                             (other, "suppressed", "folded")])
    assert len(aliyun.messages) == 1 and fake_juhe.messages == []
