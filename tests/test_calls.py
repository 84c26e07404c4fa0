"""Calls in the deliverer on both stores (real SQLite file, real redis-server) and the fake
Aliyun, with an injected clock (docs/providers.md, Calls): paced per number (one a minute,
``limits.calls.per_hour``), a held call of an episode acknowledged meanwhile is dropped
(``suppressed``, reason ``acknowledged``), calls count for no SMS limit and are never folded
into a storm SMS, and the record step keeps calls and SMS apart (dedup per channel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fakealiyun import FakeAliyun
from fakejuhe import FakeJuhe

from bridge.config import Settings
from bridge.decide.plan import Notification
from bridge.deliver.deliverer import Deliverer, DeliveryPolicy, use_fallback
from bridge.providers.aliyun import AliyunClient
from bridge.providers.dispatch import Providers
from bridge.providers.juhe import JuheClient
from bridge.rules.load import load_rules
from bridge.rules.model import call_address
from bridge.rules.ruleset import RuleSet
from bridge.store.base import Policy, Store

ZHANG = "13800138000"
KEY_ID, SECRET = "LTAI5tCallsKeyId1234", "calls/secret+="
T0 = 1_790_000_000.0

RULES = """\
receivers: {team: ["13800138000"]}
templates:
  page: {tpl_id: 111, vars: {name: "{{ labels.alertname }}"}}
  storm: {tpl_id: 333, vars: {n: "{{ count }}"}}
  call:
    voice: {aliyun: {tts_code: TTS_1}}
    vars: {name: "{{ labels.alertname }}"}
limits:
  min_gap: 0s
  per_day: 1
  storm: {threshold: 1, window: 10m, template: storm}
  calls: {per_hour: 2}
routes:
  - {matchers: [], receiver: team, template: page}
"""


class Clock:
    def __init__(self) -> None:
        self.at = T0

    def __call__(self) -> float:
        return self.at


@pytest.fixture
def rules(tmp_path: Path) -> RuleSet:
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    return load_rules(tmp_path / "rules.yaml", env={})


def _call(i: int, template: str = "call") -> Notification:
    return Notification(mobile=call_address(ZHANG), fingerprint=f"fp{i}", status="firing",
                        episode=f"2026-11-29T0{i}:00:00+00:00", route="r", alertname=f"A{i}",
                        tpl_id=0, variables={"name": f"A{i}"}, template=template,
                        repeat_interval=30 * 86400.0)


def _deliverer(store: Store, rules: RuleSet, fake: FakeAliyun, juhe: JuheClient,
               clock: Clock) -> Deliverer:
    client = AliyunClient(KEY_ID, SECRET, sms_url=fake.url, voice_url=fake.url, timeout=2)
    policy = DeliveryPolicy.from_settings(Settings(), lease=30.0)
    return Deliverer(store, juhe, lambda: rules, policy, clock=clock,
                     providers=Providers(aliyun=client))


def _states(store: Store) -> list[tuple[str, str, str]]:
    return sorted((i.alertname, i.state, i.reason) for i in store.recent(50)
                  if i.channel == "voice")


def test_calls_are_paced_and_a_held_call_is_dropped_on_ack(store: Store, rules: RuleSet,
                                                           fake_juhe: FakeJuhe) -> None:
    clock = Clock()
    policy = Policy(per_day=1, storm_threshold=1, storm_window=600.0, day="2026-11-29")
    outcomes = store.record([_call(1), _call(2), _call(3)], policy, T0)
    # calls count for no SMS limit (per_day 1) and are never held for a storm (threshold 1)
    assert [o.state for o in outcomes] == ["queued", "queued", "queued"]
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient("k", fake_juhe.url) as juhe:
        d = _deliverer(store, rules, fake, juhe, clock)
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A1"]
        clock.at = T0 + 30  # within the minute: nothing
        d.run_once()
        assert len(fake.messages) == 1
        clock.at = T0 + 61
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A1", "A2"]
        # per_hour 2: the third waits for the hour since the first call; its episode is
        # acknowledged meanwhile, so it is dropped when it may go
        clock.at = T0 + 130
        d.run_once()
        assert len(fake.messages) == 2
        third = next(e for e in store.episodes() if e.fingerprint == "fp3")
        store.acknowledge(third.id, "zhang", "api", T0 + 200)
        clock.at = T0 + 3601
        d.run_once()
        assert len(fake.messages) == 2
    assert _states(store) == [("A1", "sent", ""), ("A2", "sent", ""),
                              ("A3", "suppressed", "acknowledged")]
    assert fake_juhe.messages == []


def test_calls_and_sms_are_deduplicated_per_channel(store: Store, rules: RuleSet) -> None:
    sms = Notification(mobile=ZHANG, fingerprint="fp1", status="firing",
                       episode="2026-11-29T01:00:00+00:00", route="r", alertname="A1",
                       tpl_id=111, variables={"name": "A1"}, template="page",
                       resolved_template="page")
    first = store.record([sms, _call(1)], Policy(), T0)
    again = store.record([sms, _call(1)], Policy(), T0 + 5)
    assert [(o.state, o.reason) for o in first] == [("queued", ""), ("queued", "")]
    assert [(o.state, o.reason) for o in again] == [("suppressed", "duplicate")] * 2
    [episode] = store.episodes()
    assert sorted(p.mobile for p in episode.paged) == [ZHANG, call_address(ZHANG)]
    # the resolved SMS is paired with the SMS page only
    items: dict[str, Any] = {i.channel: i for i in store.recent(10)}
    assert items["voice"].mobile == ZHANG and items["voice"].template == "call"
    assert items["sms"].mobile == ZHANG and items["sms"].provider is None


FALLBACK_CASES = [
    ("fresh", [""], None, 0.0, False),
    ("juhe-config", ["juhe config error 10012: 请求超过次数限制"], T0, T0 + 1, True),
    ("juhe-transient-early", ["juhe transient error 205403: 网络错误"], T0, T0 + 119, False),
    ("juhe-transient-2m", ["juhe transient error 205403: 网络错误"], T0, T0 + 120, True),
    ("juhe-throttled-long", ["juhe throttled error 205405: 号码异常"], T0, T0 + 3000, False),
    ("juhe-10014-maybe-sent", ["juhe transient error 10014: 系统内部异常"], T0, T0 + 999,
     False),
    ("read-timeout-maybe-sent", ["juhe transient error 0: read timeout after 10 s (the SMS may"
                                 " have been sent): ReadTimeout"], T0, T0 + 999, False),
    ("fallback-kept", ["aliyun transient error isp.SYSTEM_ERROR: x"], T0, T0 + 1, True),
    ("other-provider-not-kept", ["tencent config error AuthFailure.SecretIdNotFound: x"], T0,
     T0 + 1, False),
]


@pytest.mark.parametrize("reasons,first,now,expected", [c[1:] for c in FALLBACK_CASES],
                         ids=[c[0] for c in FALLBACK_CASES])
def test_when_an_sms_goes_through_its_fallback(reasons: list[str], first: float | None,
                                               now: float, expected: bool) -> None:
    assert use_fallback(reasons, first, now, "aliyun", 120.0) is expected
