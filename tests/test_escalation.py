"""Escalation as functions of ``now`` (table tests of :func:`bridge.decide.episodes.step_action`),
ack codes in templates (never cut), the rules' ``escalate:`` checks with places, and the
:class:`bridge.deliver.escalation.Escalator` in-process on a real SQLite store with an injected
clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.alert import Alert, Batch
from bridge.decide.episodes import (
    ACK_PLACEHOLDER,
    CODE_LEN,
    Episode,
    Step,
    already_reason,
    fill_code,
    name_problem,
    new_code,
    step_action,
    valid_code,
)
from bridge.decide.plan import decide, store_policy
from bridge.deliver.escalation import Escalator
from bridge.errors import RulesError
from bridge.rules.load import load_rules
from bridge.rules.render import fold_and_cut
from bridge.store.sqlite.store import SqliteStore
from bridge.web.api import answer

T0 = 1_790_000_000.0
ZHANG, LI, WANG = "13800138000", "13800138001", "13900139000"


def episode(state: str = "firing", **kw: Any) -> Episode:
    fields: dict[str, Any] = dict(
        id="e1", fingerprint="fp", episode="ep", alertname="DiskFull", labels={}, summary="",
        starts_at=None, silence_url=None, route="r", state=state, acknowledged_by=None,
        acknowledged_at=None, acknowledged_via=None, resolved_at=None, created_at=T0, paged=(),
        steps=())
    fields.update(kw)
    return Episode(**fields)


def step(state: str = "pending", due: float | None = T0 + 60) -> Step:
    return Step(index=1, after=60, receiver="b", template="t", due_at=due,
                state=state, reason="")  # type: ignore[arg-type]


@pytest.mark.parametrize(("ep", "st", "now", "expected"), [
    (episode(), step(), T0, ("wait", "")),
    (episode(), step(), T0 + 59.999, ("wait", "")),
    (episode(), step(), T0 + 60, ("page", "")),
    (episode(), step(), T0 + 3600, ("page", "")),          # due while down: runs at start
    (episode(), step(due=None), T0 + 86400, ("wait", "")),  # no SMS out yet: not started
    (episode("acknowledged", acknowledged_by="li"), step(due=None), T0,
     ("cancel", "acknowledged by li")),
    (episode("acknowledged", acknowledged_by="li"), step(), T0 + 60,
     ("cancel", "acknowledged by li")),
    (episode("acknowledged", acknowledged_by="li"), step(), T0, ("cancel", "acknowledged by li")),
    (episode("resolved", resolved_at=T0 + 1), step(), T0 + 60, ("cancel", "resolved")),
    (episode(), step("done"), T0 + 60, ("cancel", "")),
    (episode(), step("cancelled"), T0 + 60, ("cancel", "")),
])
def test_step_action_table(ep: Episode, st: Step, now: float, expected: tuple[str, str]) -> None:
    assert step_action(ep, st, now) == expected


@pytest.mark.parametrize(("by", "problem"), [
    ("zhang", None),
    ("张伟 (DBA on call)", None),
    ("x" * 64, None),
    ("x" * 65, "the name is longer than 64 characters"),
    ("li\x00", "the name contains a control character (U+0000)"),
    ("li\nwang", "the name contains a control character (U+000A)"),
    ("li\u2028", "the name contains a control character (U+2028)"),
    ("li\u202eetirw", "the name contains a bidirectional control character (U+202E)"),
    ("\u2066li\u2069", "the name contains a bidirectional control character (U+2066)"),
    ("li\u200f", "the name contains a bidirectional control character (U+200F)"),
    ("\u200b", "the name has no visible character"),
    (" \u200b\u3000\u0301 ", "the name has no visible character"),
    ("", None),  # empty: the caller's default (the page) or its own error (the API)
    ("  ", None),
    ("li\u200b", None),
], ids=["plain", "cjk", "64", "65", "nul", "newline", "line-sep", "rlo", "lri", "rlm",
        "zero-width-space", "only-invisible", "empty", "spaces", "visible-with-zws"])
def test_name_problem_table(by: str, problem: str | None) -> None:
    assert name_problem(by) == problem


@pytest.mark.parametrize(("state", "fields", "reason"), [
    ("acknowledged", {"acknowledged_by": "zhang", "acknowledged_at": 1796671440.0},
     "already acknowledged by zhang at 2026-12-08 03:24"),
    ("resolved", {"resolved_at": 1796671500.0}, "already resolved at 2026-12-08 03:25"),
    ("resolved", {"acknowledged_by": "li", "acknowledged_at": 1796671440.0,
                  "resolved_at": 1796671500.0}, "already resolved at 2026-12-08 03:25"),
    ("firing", {}, ""),
], ids=["acknowledged", "resolved", "acked-then-resolved", "firing"])
def test_already_reason_table(state: str, fields: dict[str, Any], reason: str) -> None:
    from zoneinfo import ZoneInfo
    assert already_reason(episode(state, **fields), ZoneInfo("Asia/Shanghai")) == reason


def test_codes_are_letters_and_digits_and_never_cut() -> None:
    codes = {new_code() for _ in range(200)}
    assert len(codes) == 200 and all(valid_code(c) and len(c) == CODE_LEN for c in codes)
    assert not valid_code("short") and not valid_code("has-dash-1234") and not valid_code("x" * 17)
    # a value longer than max_var_len keeps the code whole: the text around it is cut
    assert fold_and_cut("确认 " + ACK_PLACEHOLDER + " 请尽快处理磁盘", 16) == (
        "确认 " + ACK_PLACEHOLDER + "…")
    assert fold_and_cut("a very long prefix " + ACK_PLACEHOLDER, 14) == "a…" + ACK_PLACEHOLDER
    assert fold_and_cut(ACK_PLACEHOLDER, 5) == ACK_PLACEHOLDER
    assert fill_code({"a": f"x{ACK_PLACEHOLDER}"}, "Ab3") == {"a": "xAb3"}


RULES = f"""\
people: {{zhang: "{ZHANG}", li: "{LI}", wang: "{WANG}"}}
receivers: {{primary: [zhang], secondary: [li], lead: [wang, zhang]}}
templates:
  page:
    tpl_id: 111
    max_var_len: 10
    vars: {{name: "{{{{ labels.alertname }}}}", esc: "{{{{ escalation }}}}",
            ack: "{{{{ ack_code }}}}"}}
  lead:
    tpl_id: 222
    vars: {{name: "{{{{ labels.alertname }}}}", who: "{{{{ person }}}}",
            esc: "{{{{ escalation }}}}"}}
  ok:
    tpl_id: 333
    vars: {{name: "{{{{ labels.alertname }}}}"}}
limits: {{min_gap: 0s}}
routes:
  - name: db
    receiver: primary
    template: page
    resolved_template: ok
    escalate:
      - {{after: 2s, receiver: secondary}}
      - {{after: 5s, receiver: lead, template: lead}}
"""


def test_escalation_checks_with_places(tmp_path: Path) -> None:
    bad = RULES.replace("receiver: secondary}", "receiver: nobody}").replace(
        "template: lead}", "template: nope}").replace("after: 2s", "after: 0s")
    (tmp_path / "r.yaml").write_text(bad, encoding="utf-8")
    with pytest.raises(RulesError) as exc:
        load_rules(tmp_path / "r.yaml")
    assert exc.value.problems == [
        "routes[0].escalate[0].after: must be greater than 0, got the number 0"]
    (tmp_path / "r.yaml").write_text(RULES.replace("after: 2s", "after: 1s").replace(
        "receiver: secondary}", "receiver: nobody}").replace("template: lead}",
                                                              "template: nope}"), "utf-8")
    with pytest.raises(RulesError) as exc:
        load_rules(tmp_path / "r.yaml")
    assert exc.value.problems == [
        "routes[0].escalate[0].receiver: unknown receiver or schedule 'nobody'",
        "routes[0].escalate[1].template: unknown template 'nope'"]


def test_check_warns_when_no_template_of_an_escalating_route_uses_ack_code(
        tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    assert load_rules(tmp_path / "r.yaml").warnings() == []
    (tmp_path / "r.yaml").write_text(RULES.replace('ack: "{{ ack_code }}"', 'ack: "-"'),
                                     encoding="utf-8")
    assert load_rules(tmp_path / "r.yaml").warnings() == [
        "routes[0].escalate: the route escalates but none of its templates uses ack_code:"
        " nobody can acknowledge from the SMS"]


def firing(status: str = "firing") -> Batch:
    from datetime import UTC, datetime
    return Batch("alertmanager", [Alert(
        labels={"alertname": "DiskFull"}, annotations={"summary": "磁盘满"}, status=status,  # type: ignore[arg-type]
        fingerprint="fp1", source="alertmanager",
        starts_at=datetime(2026, 9, 21, 12, 0, tzinfo=UTC))])


def went_out(store: SqliteStore, at: float) -> None:
    """Send every due SMS at ``at`` (as delivery marks them): starts the escalation clock."""
    for c in store.claim(at, 30, 10):
        store.mark_sent([i.id for i in c.items], "sid", 1, at, token=c.token, pace_until=at)


def test_escalator_pages_each_step_once_at_its_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo
    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    plan = decide(firing(), rules, datetime.fromtimestamp(T0, UTC))
    [o] = store.record(plan.notifications, store_policy(rules, ZoneInfo("UTC"), T0), T0)
    code = o.notification.variables["ack"]
    assert valid_code(code) and o.notification.variables == {"name": "DiskFull", "esc": "0",
                                                             "ack": code}
    esc = Escalator(store, lambda: rules, ZoneInfo("UTC"))
    assert esc.run_once(T0 + 100) == 0  # the route's SMS has not gone out: no clock yet
    went_out(store, T0)
    assert esc.run_once(T0 + 1.9) == 0
    assert esc.run_once(T0 + 2.0) == 1
    assert esc.run_once(T0 + 4.9) == 0
    assert esc.run_once(T0 + 9.0) == 1
    assert esc.run_once(T0 + 100) == 0
    items = sorted(store.recent(limit=-1), key=lambda i: int(i.id))
    e = store.episode(o.episode_id or "")
    assert e is not None
    codes = {p.mobile: p.code for p in e.paged}
    assert [(i.mobile, i.tpl_id, i.variables, i.state) for i in items] == [
        (ZHANG, 111, {"name": "DiskFull", "esc": "0", "ack": code}, "sent"),
        (LI, 111, {"name": "DiskFull", "esc": "1", "ack": codes[LI]}, "queued"),
        (WANG, 222, {"name": "DiskFull", "who": "wang", "esc": "2"}, "queued")]
    assert [(p.mobile, p.level, p.resolved_template) for p in e.paged] == [
        (ZHANG, 0, "ok"), (LI, 1, "ok"), (WANG, 2, "ok")]
    assert [(s.state, s.reason) for s in e.steps] == [
        ("done", "paged 1: li 138****8001"), ("done", "paged 1: wang 139****9000")]
    # resolved goes to the three paged, with the resolved template of the route
    paged = store.episodes_by_key([("fp1", e.episode)])
    plan = decide(firing("resolved"), rules, datetime.fromtimestamp(T0 + 20, UTC), {}, paged)
    assert sorted((n.mobile, n.tpl_id) for n in plan.notifications) == [
        (ZHANG, 333), (LI, 333), (WANG, 333)]
    assert plan.resolved == [("fp1", e.episode)]


def test_escalator_cancels_a_step_whose_template_a_reload_removed(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo
    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    rules = load_rules(tmp_path / "r.yaml")
    store = SqliteStore(str(tmp_path / "b.db"))
    plan = decide(firing(), rules, datetime.fromtimestamp(T0, UTC))
    [o] = store.record(plan.notifications, store_policy(rules, ZoneInfo("UTC"), T0), T0)
    went_out(store, T0)
    (tmp_path / "r.yaml").write_text(RULES.replace("  lead:\n    tpl_id: 222", "  lead2:\n"
                                                   "    tpl_id: 222").replace(
        "template: lead}", "template: lead2}"), encoding="utf-8")
    later = load_rules(tmp_path / "r.yaml")
    esc = Escalator(store, lambda: later, ZoneInfo("UTC"))
    assert esc.run_once(T0 + 10) == 2
    e = store.episode(o.episode_id or "")
    assert e is not None and [(s.state, s.reason) for s in e.steps] == [
        ("done", "paged 1: li 138****8001"),
        ("cancelled", "template 'lead' is no longer in the rules")]
    assert sorted(i.mobile for i in store.recent(limit=-1)) == [ZHANG, LI]


def test_service_api_acknowledge_by_code_metric_and_log(tmp_path: Path,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from bridge import metrics
    from bridge.alert import Alert
    from bridge.config import Settings
    from bridge.intake.service import Bridge

    (tmp_path / "r.yaml").write_text(RULES, encoding="utf-8")
    settings = Settings.from_env({"BRIDGE_RULES": str(tmp_path / "r.yaml"),
                                  "BRIDGE_STORE": f"sqlite:///{tmp_path / 'bridge.db'}"})
    b = Bridge(settings)
    batch = firing()
    counts = answer(b.intake(batch, now=T0))
    assert counts["queued"] == 1
    [e] = b.episodes("firing", 10)
    assert b.episodes("resolved", 10) == [] and b.episode(e.id) == e
    with pytest.raises(ValueError):
        b.episodes("nope", 10)
    code = e.paged[0].code or ""
    assert b.episode_by_code(code, T0) == (e, e.paged[0])
    assert b.episode_by_code("bad-code!", T0) is None
    assert b.by_of(e.paged[0]) == "zhang"
    before = metrics.ACKS.labels("link")._value.get()  # noqa: SLF001
    with caplog.at_level(logging.INFO):
        acked, first = b.acknowledge(e.id, b.by_of(e.paged[0]), "link", now=T0 + 1)
    assert first and (acked.state, acked.acknowledged_by) == ("acknowledged", "zhang")
    assert f"episode {e.id} (DiskFull) acknowledged by zhang via link" in caplog.text
    assert metrics.ACKS.labels("link")._value.get() == before + 1  # noqa: SLF001
    again, first = b.acknowledge(e.id, "li", "api", now=T0 + 2)
    assert not first and again.acknowledged_by == "zhang"
    with pytest.raises(KeyError):
        b.acknowledge("nope", "li", "api")
    with pytest.raises(ValueError):
        b.acknowledge(e.id, "li", "sms")
    assert [b.unknown_code_hit("10.0.0.1", T0) for _ in range(2)] == [1, 2]
    # a resolved SMS whose recorded template a reload removed: a warning, nothing sent
    (tmp_path / "r.yaml").write_text(RULES.replace("resolved_template: ok", "resolved_template:"
                                                   " ok2").replace("  ok:\n", "  ok2:\n"),
                                     encoding="utf-8")
    assert b.holder.reload() == []
    resolved = Batch("alertmanager", [Alert(**{**batch.alerts[0].__dict__,
                                               "status": "resolved"})])
    counts = answer(b.intake(resolved, now=T0 + 3))
    assert counts["queued"] == 0 and counts["warnings"] == [
        "resolved DiskFull: template 'ok' (route db) is no longer in the rules: no resolved"
        " SMS to zhang 138****8000"]
    assert b.episode(e.id) is not None and b.episode(e.id).state == "resolved"  # type: ignore[union-attr]
    b.store.close()


def test_cli_check_warns_and_render_shows_steps_and_the_code_slot(tmp_path: Path) -> None:
    import json

    from test_cli import bridge

    (tmp_path / "rules.yaml").write_text(RULES.replace('ack: "{{ ack_code }}"', 'ack: "-"'),
                                         encoding="utf-8")
    r = bridge("check", "rules.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("  route db: 0 matchers -> primary, template page, resolved ok;"
            " after 2s -> secondary; after 5s -> lead\n") in r.stdout
    assert ("WARNING: routes[0].escalate: the route escalates but none of its templates uses"
            " ack_code: nobody can acknowledge from the SMS\n") in r.stdout
    (tmp_path / "rules.yaml").write_text(RULES, encoding="utf-8")
    assert "WARNING" not in bridge("check", "rules.yaml", cwd=tmp_path).stdout
    (tmp_path / "a.json").write_text(json.dumps({"alerts": [
        {"status": "firing", "labels": {"alertname": "DiskFull"}}]}), encoding="utf-8")
    r = bridge("render", "a.json", "--rules", "rules.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert ("    name = DiskFull\n    esc = 0\n    ack = <ack_code>\n"
            "    tpl_value: #name#=DiskFull&#esc#=0&#ack#=%3Cack_code%3E\n"
            "    escalates: step 1 after 2s -> secondary: li 13800138001 (template page) unless"
            " acknowledged or resolved\n"
            "    escalates: step 2 after 5s -> lead: wang 13900139000, zhang 13800138000 (already"
            " paged: not again) (template lead) unless acknowledged or resolved\n") in r.stdout, \
        r.stdout


def test_episode_info_keeps_the_silence_link() -> None:
    from bridge.decide.plan import episode_info

    batch = Batch("alertmanager", firing().alerts,
                                  external_url="http://am.example:9093/")
    info = episode_info(batch.alerts[0], batch)
    assert info.silence_url == ("http://am.example:9093/#/silences/new?filter="
                                "%7Balertname%3D%22DiskFull%22%7D")
    assert (info.summary, info.annotations) == ("磁盘满", {"summary": "磁盘满"})
    grafana = Alert(labels={"alertname": "X"}, annotations={}, status="firing",
                    fingerprint="f", source="grafana", silence_url="http://g/alerting/silence/new")
    assert episode_info(grafana, Batch("grafana", [grafana])).silence_url == (
        "http://g/alerting/silence/new")
    assert episode_info(firing().alerts[0], firing()).silence_url is None


def test_grafana_silence_url_is_read_from_the_body() -> None:
    from conftest import fixture_bytes

    from bridge.sources import parse_body

    batch = parse_body("grafana", fixture_bytes("15-gf-docs-two-firing-plus0200-floats.json"))
    assert [a.silence_url for a in batch.alerts] == [
        "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers="
        "alertname%3DT2%2Cteam%3Dblue%2Czone%3Dus-1",
        "https://play.grafana.org/alerting/silence/new?alertmanager=grafana&matchers="
        "alertname%3DT1%2Cteam%3Dblue%2Czone%3Deu-1"]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=4))
def test_silence_url_quotes_like_urllib(labels: dict[str, str]) -> None:
    # issue 14: ASCII matchers are quoted by one str.translate, others by urllib; both must
    # give what quote(..., safe="") gives
    from urllib.parse import quote

    from bridge.decide.plan import silence_url

    alert = Alert(labels=labels, annotations={}, status="firing", fingerprint="f",
                  source="alertmanager")
    matchers = "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"
    assert silence_url(alert, Batch("alertmanager", [alert], external_url="http://am/")) == (
        "http://am/#/silences/new?filter=" + quote(matchers, safe=""))
