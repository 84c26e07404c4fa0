"""Calls in the deliverer on both stores (real SQLite file, real redis-server) and the fake
Aliyun, with an injected clock (docs/providers.md, Calls): paced per number (one a minute,
``limits.calls.per_hour``), a held call of an episode acknowledged meanwhile is dropped
(``suppressed``, reason ``acknowledged``), the calls waiting for a number when a call to it goes
out are folded into it (``suppressed``, reason ``folded``), a refused Juhe key starts the
escalation clock, calls count for no SMS limit and are never folded
into a storm SMS, and the record step keeps calls and SMS apart (dedup per channel)."""

from __future__ import annotations

from dataclasses import replace
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
from bridge.store.base import Policy, Store, folds_into_call

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
    outcomes = store.record([_call(1)], policy, T0)
    # calls count for no SMS limit (per_day 1) and are never held for a storm (threshold 1)
    assert [o.state for o in outcomes] == ["queued"]
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient("k", fake_juhe.url) as juhe:
        d = _deliverer(store, rules, fake, juhe, clock)
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A1"]
        # calls that come after one went out are not folded into it: paced
        outcomes = store.record([_call(2)], policy, T0 + 10)
        assert [o.state for o in outcomes] == ["queued"]
        clock.at = T0 + 30  # within the minute: nothing
        d.run_once()
        assert len(fake.messages) == 1
        clock.at = T0 + 61
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A1", "A2"]
        # per_hour 2: the third waits for the hour since the first call; its episode is
        # acknowledged meanwhile, so it is dropped when it may go
        store.record([_call(3)], policy, T0 + 70)
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


# -- a storm of escalations calls once; a refused key still escalates ----------------------------
ESCALATING = """\
receivers: {team: ["13800138000"]}
templates:
  page: {tpl_id: 111, vars: {name: "{{ labels.alertname }}", ack: "{{ ack_code }}"}}
  call:
    voice: {aliyun: {tts_code: TTS_1}}
    vars: {name: "{{ labels.alertname }}"}
limits: {min_gap: 0s}
routes:
  - matchers: []
    receiver: team
    template: page
    escalate: [{after: 10m, receiver: team, template: call}]
"""


def _fire(store: Store, rules: RuleSet, n: int, at: float, first: int = 1) -> None:
    """Record ``n`` firing alerts (A<first> ...) at ``at`` as a webhook would."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from bridge.alert import Alert, Batch
    from bridge.decide.plan import decide, store_policy
    batch = Batch("alertmanager", [Alert(
        labels={"alertname": f"A{i}"}, annotations={}, status="firing", fingerprint=f"fp{i}",
        source="alertmanager", starts_at=datetime.fromtimestamp(at, UTC))
        for i in range(first, first + n)])
    plan = decide(batch, rules, datetime.fromtimestamp(at, UTC))
    store.record(plan.notifications, store_policy(rules, ZoneInfo("UTC"), at), at)


def _escalator(store: Store, rules: RuleSet) -> Any:
    from zoneinfo import ZoneInfo

    from bridge.deliver.escalation import Escalator
    return Escalator(store, lambda: rules, ZoneInfo("UTC"))


def test_escalations_of_a_storm_call_once_and_fold_the_rest(store: Store, tmp_path: Path,
                                                            fake_juhe: FakeJuhe) -> None:
    """5 episodes escalating to a call for one number at once: 1 call, 4 ``folded``
    (docs/providers.md, Calls); a call that falls due after the gap is made as usual."""
    (tmp_path / "esc.yaml").write_text(ESCALATING, encoding="utf-8")
    rules = load_rules(tmp_path / "esc.yaml", env={})
    clock = Clock()
    esc = _escalator(store, rules)
    _fire(store, rules, 5, T0)
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient(fake_juhe.valid_key, fake_juhe.url) as juhe:
        d = _deliverer(store, rules, fake, juhe, clock)
        while d.run_once():  # the 5 SMS go out at T0 (no gap): the clocks start
            pass
        assert len(fake_juhe.messages) == 5
        assert esc.run_once(T0 + 599) == 0
        assert esc.run_once(T0 + 600) == 5
        clock.at = T0 + 600
        d.run_once()
        assert len(fake.messages) == 1
        clock.at = T0 + 700  # after the gap: nothing is left to call
        d.run_once()
        assert len(fake.messages) == 1
        assert sorted((s, r) for _, s, r in _states(store)) == [
            ("sent", "")] + [("suppressed", "folded")] * 4
        # a sixth alert escalates after the gap: called as usual
        _fire(store, rules, 1, T0 + 700, first=6)
        while d.run_once():
            pass
        assert esc.run_once(T0 + 1300) == 1
        clock.at = T0 + 1300
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages][1:] == ["A6"]


@pytest.mark.parametrize("code", [10001, 10012])
def test_a_refused_key_starts_the_escalation_clock(store: Store, tmp_path: Path,
                                                   fake_juhe: FakeJuhe, code: int) -> None:
    """Juhe answers a configuration/account error and the route has no fallback: the first
    SMS stays ``retrying``, but the step is due at that attempt + after, and runs
    (docs/oncall.md, Escalation)."""
    (tmp_path / "esc.yaml").write_text(ESCALATING, encoding="utf-8")
    rules = load_rules(tmp_path / "esc.yaml", env={})
    clock = Clock()
    esc = _escalator(store, rules)
    _fire(store, rules, 1, T0)
    fake_juhe.fail_next(code, 100)
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient(fake_juhe.valid_key, fake_juhe.url) as juhe:
        d = _deliverer(store, rules, fake, juhe, clock)
        clock.at = T0 + 5
        d.run_once()
        [sms] = [i for i in store.recent(10) if i.channel == "sms"]
        assert sms.state == "retrying" and sms.reason.startswith(f"juhe config error {code}")
        # a later attempt does not move the clock (set once)
        clock.at = sms.due_at
        d.run_once()
        [ep] = store.episodes()
        assert [s.due_at for s in ep.steps] == [T0 + 5 + 600]
        assert esc.run_once(T0 + 604) == 0
        assert esc.run_once(T0 + 605) == 1
        clock.at = T0 + 605
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A1"]
    assert _states(store) == [("A1", "sent", "")]


FOLD_CASES = [
    # (id, state, created_at, lease_until, lease_token, folds)
    ("queued-due-in-the-same-pass", "queued", T0 - 5, 0.0, "", True),
    ("held-by-call-pacing", "queued", T0 - 60, 0.0, "", True),
    ("in-this-claim", "queued", T0 - 5, T0 + 30, "tok", True),
    ("retrying", "retrying", T0 - 300, 0.0, "", True),
    ("created-at-the-same-moment", "queued", T0, 0.0, "", True),
    ("created-after-the-call", "queued", T0 + 0.001, 0.0, "", False),
    ("leased-by-another-claim", "queued", T0 - 5, T0 + 30, "other", False),
    ("lapsed-lease-of-another-claim", "queued", T0 - 5, T0, "other", True),
    ("already-sent", "sent", T0 - 5, 0.0, "", False),
    ("already-suppressed", "suppressed", T0 - 5, 0.0, "", False),
    ("failed", "failed", T0 - 5, 0.0, "", False),
]


@pytest.mark.parametrize("state,created,lease_until,lease_token,expected",
                         [c[1:] for c in FOLD_CASES], ids=[c[0] for c in FOLD_CASES])
def test_which_waiting_calls_fold_into_a_call_that_went_out(
        state: str, created: float, lease_until: float, lease_token: str,
        expected: bool) -> None:
    assert folds_into_call(state, created, lease_until, lease_token, sent_at=T0,
                           token="tok") is expected


def test_calls_beyond_one_claim_fold_too(store: Store, rules: RuleSet,
                                         fake_juhe: FakeJuhe) -> None:
    """25 calls to one number due at once (more than one claim loads): 1 call, 24 folded,
    those not in the claim too."""
    calls = [replace(_call(1), fingerprint=f"fp{i}", alertname=f"A{i}", variables={"name": f"A{i}"},
                     episode=f"2026-11-29T01:{i:02d}:00+00:00") for i in range(25)]
    store.record(calls, Policy(), T0)
    clock = Clock()
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient("k", fake_juhe.url) as juhe:
        d = _deliverer(store, rules, fake, juhe, clock)
        d.run_once()
        clock.at = T0 + 3600
        d.run_once()
        assert [m["vars"]["name"] for m in fake.messages] == ["A0"]
    assert sorted((s, r) for _, s, r in _states(store)) == [
        ("sent", "")] + [("suppressed", "folded")] * 24


@pytest.mark.parametrize("code", [205403, 205405], ids=["transient", "throttled"])
def test_transient_errors_and_throttling_keep_the_escalation_clock_waiting(
        store: Store, tmp_path: Path, fake_juhe: FakeJuhe, code: int) -> None:
    """They are retried soon: the step stays not started (docs/oncall.md, Escalation)."""
    (tmp_path / "esc.yaml").write_text(ESCALATING, encoding="utf-8")
    rules = load_rules(tmp_path / "esc.yaml", env={})
    clock = Clock()
    _fire(store, rules, 1, T0)
    fake_juhe.fail_next(code, 100)
    with FakeAliyun(KEY_ID, SECRET) as fake, JuheClient(fake_juhe.valid_key,
                                                         fake_juhe.url) as juhe:
        _deliverer(store, rules, fake, juhe, clock).run_once()
    [sms] = [i for i in store.recent(10) if i.channel == "sms"]
    assert sms.state == "retrying" and str(code) in sms.reason
    [ep] = store.episodes()
    assert [s.due_at for s in ep.steps] == [None]
