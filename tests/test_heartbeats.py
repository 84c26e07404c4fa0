"""Heartbeats, pure (docs/heartbeats.md): the rules' ``heartbeats:`` block and its problems,
the state and the timer's action as functions of ``now`` at the edges, which alerts are beats,
and the notifications of a miss and of its end."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.alert import Alert, Batch
from bridge.decide.episodes import ACK_PLACEHOLDER, Episode, Paged
from bridge.decide.heartbeats import (
    HeartbeatRecord,
    HeartbeatView,
    heartbeat_action,
    heartbeat_view,
    missing_alert,
    plan_back,
    plan_missing,
    split_beats,
)
from bridge.errors import RulesError
from bridge.rules.load import RuleSet, load_rules

ZHANG, LI, WANG = "13800138000", "13800138001", "13900139000"
BASE = f"""\
people: {{zhang: "{ZHANG}", li: "{LI}", wang: "{WANG}"}}
receivers: {{sre: [zhang, li], lead: [wang]}}
templates:
  page: {{tpl_id: 1, vars: {{n: "{{{{ labels.alertname }}}}"}}}}
  hb: {{tpl_id: 7, vars: {{name: "{{{{ name }}}}", expect: "{{{{ expect }}}}",
        seen: "{{{{ last_seen | localtime('%H:%M') }}}}", ack: "{{{{ ack_code }}}}",
        who: "{{{{ person }}}}"}}}}
  back: {{tpl_id: 8, vars: {{name: "{{{{ name }}}}", status: "{{{{ status }}}}"}}}}
routes: [{{receiver: sre, template: page}}]
"""
HEARTBEATS = """\
heartbeats:
  prometheus-main:
    matchers: ['alertname="Watchdog"', 'prometheus="monitoring/k8s"']
    expect: 5m
    receiver: sre
    template: hb
    resolved_template: back
    escalate: [{after: 10m, receiver: lead}]
  backup-job:
    expect: 26h
    receiver: [lead]
    template: hb
"""


def load(tmp_path: Path, text: str) -> RuleSet:
    f = tmp_path / "rules.yaml"
    f.write_text(text, encoding="utf-8")
    return load_rules(f)


def problems_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(RulesError) as info:
        load(tmp_path, text)
    return info.value.problems


def test_heartbeats_load(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + HEARTBEATS)
    assert list(rules.heartbeats) == ["prometheus-main", "backup-job"]
    prom = rules.heartbeats["prometheus-main"]
    assert prom.expect == 300 and prom.receivers == ["sre"] and prom.template == "hb"
    assert [str(m) for m in prom.matchers] == ['alertname="Watchdog"',
                                               'prometheus="monitoring/k8s"']
    assert prom.escalate[0].after == 600 and prom.escalate[0].receiver == "lead"
    assert rules.heartbeats["backup-job"].matchers == []
    assert rules.heartbeats["backup-job"].expect == 26 * 3600
    assert "2 heartbeats" in rules.summary()


@pytest.mark.parametrize(("block", "expected"), [
    pytest.param("  h: {expect: 1m, template: hb}\n",
                 ["heartbeats.h.receiver: a heartbeat needs a receiver (a receiver or schedule,"
                  " or a list of them) to page when it goes missing"], id="no-receiver"),
    pytest.param("  h: {expect: 1m, receiver: sre}\n",
                 ["heartbeats.h.template: a heartbeat needs a template for its page"],
                 id="no-template"),
    pytest.param("  h: {expect: 1m, receiver: [sre, nobody], template: hb}\n",
                 ["heartbeats.h.receiver: unknown receiver or schedule 'nobody'"],
                 id="unknown-receiver"),
    pytest.param("  h: {expect: 1m, receiver: sre, template: nope, resolved_template: gone}\n",
                 ["heartbeats.h.template: unknown template 'nope'",
                  "heartbeats.h.resolved_template: unknown template 'gone'"],
                 id="unknown-template"),
    pytest.param("  h: {expect: 29s, receiver: sre, template: hb}\n",
                 ["heartbeats.h.expect: expect must be at least 30s (got 29s)"],
                 id="expect-under-30s"),
    pytest.param("  h: {expect: soon, receiver: sre, template: hb}\n",
                 ["heartbeats.h.expect: not a duration (like 90s, 5m, 1h30m): 'soon'"],
                 id="expect-not-a-duration"),
    pytest.param("  h: {receiver: sre, template: hb}\n",
                 ["heartbeats.h.expect: missing: this field is required"], id="no-expect"),
    pytest.param("  h: {matchers: ['job=~\"(\"'], expect: 1m, receiver: sre, template: hb}\n",
                 ["heartbeats.h.matchers[0]: invalid regex: '(': missing ), unterminated "
                  "subpattern at position 0"], id="bad-matcher"),
    pytest.param("  h: {expect: 1m, receiver: sre, template: hb,"
                 " escalate: [{after: 5m, receiver: ghost, template: nope}]}\n",
                 ["heartbeats.h.escalate[0].receiver: unknown receiver or schedule 'ghost'",
                  "heartbeats.h.escalate[0].template: unknown template 'nope'"],
                 id="bad-escalation"),
    pytest.param("  h: {expect: 1m, receiver: sre, template: hb, colour: red}\n",
                 ["heartbeats.h.colour: unknown field (expected one of: matchers, expect, receiver,"
                  " template, resolved_template, escalate)"], id="unknown-field"),
    pytest.param("  a/b: {expect: 1m, receiver: sre, template: hb}\n",
                 ["heartbeats: heartbeat name 'a/b' cannot be part of a URL path "
                  "(/heartbeat/<name>): no '/', spaces or control characters"], id="bad-name"),
])
def test_heartbeat_problems_with_their_place(tmp_path: Path, block: str,
                                             expected: list[str]) -> None:
    assert problems_of(tmp_path, BASE + "heartbeats:\n" + block) == expected


def test_heartbeats_merge_by_name_across_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "rules.d"
    folder.mkdir()
    (folder / "10-base.yaml").write_text(BASE, encoding="utf-8")
    (folder / "20-a.yaml").write_text(
        "heartbeats:\n  a: {expect: 1m, receiver: sre, template: hb}\n", encoding="utf-8")
    (folder / "30-b.yaml").write_text(
        "heartbeats:\n  b: {expect: 2m, receiver: lead, template: hb}\n", encoding="utf-8")
    rules = load_rules(folder)
    assert {n: hb.expect for n, hb in rules.heartbeats.items()} == {"a": 60, "b": 120}
    (folder / "40-again.yaml").write_text(
        "heartbeats:\n  a: {expect: 1m, receiver: ghost, template: hb}\n", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(folder)
    assert info.value.problems == [
        "40-again.yaml: heartbeats.a: already defined in 20-a.yaml"]


# -- state and action as functions of now --------------------------------------------------

T0 = 1_000_000.0  # the service's start
EXPECT = 30.0


def rec(last_seen: float, state: str = "up", since: float | None = None,
        lease: float = 0.0) -> HeartbeatRecord:
    return HeartbeatRecord("h", last_seen, state, since, lease)  # type: ignore[arg-type]


@pytest.mark.parametrize(("record", "now", "view", "action"), [
    pytest.param(None, T0 + 10_000, HeartbeatView("waiting", None, None, None), None,
                 id="never-beat-waits-forever"),
    pytest.param(rec(T0 + 100), T0 + 129.999, HeartbeatView("up", T0 + 100, None, T0 + 130),
                 None, id="up-just-before-expect"),
    pytest.param(rec(T0 + 100), T0 + 130, HeartbeatView("missing", T0 + 100, T0 + 130, None),
                 "miss", id="missing-at-expect"),
    pytest.param(rec(T0 - 3600), T0 + 29.999, HeartbeatView("up", T0 - 3600, None, T0 + 30),
                 None, id="after-a-start-not-before-expect-since-the-start"),
    pytest.param(rec(T0 - 3600), T0 + 30, HeartbeatView("missing", T0 - 3600, T0 + 30, None),
                 "miss", id="after-a-start-missing-expect-after-the-start"),
    pytest.param(rec(T0 + 100, "missing", T0 + 130), T0 + 5000,
                 HeartbeatView("missing", T0 + 100, T0 + 130, None), None,
                 id="missing-pages-once"),
    pytest.param(rec(T0 - 3600, "missing", T0 - 3570), T0 + 1,
                 HeartbeatView("missing", T0 - 3600, T0 - 3570, None), None,
                 id="missing-across-a-restart-stays-missing-unpaged"),
    pytest.param(rec(T0 + 200, "missing", T0 + 130), T0 + 200,
                 HeartbeatView("up", T0 + 200, None, T0 + 230), "back",
                 id="a-beat-while-missing-is-back"),
    pytest.param(rec(T0 + 130, "missing", T0 + 130), T0 + 131,
                 HeartbeatView("missing", T0 + 130, T0 + 130, None), None,
                 id="a-beat-at-the-miss-moment-is-not-back"),
    pytest.param(rec(T0 + 100, "up", T0 + 130), T0 + 131,
                 HeartbeatView("missing", T0 + 100, T0 + 130, None), "miss",
                 id="a-lapsed-miss-is-decided-again"),
    pytest.param(rec(T0 + 140, "up", T0 + 130), T0 + 141,
                 HeartbeatView("up", T0 + 140, None, T0 + 170), "back",
                 id="a-beat-after-a-lapsed-miss-resolves-it"),
])
def test_state_and_action_at_the_edges(record: HeartbeatRecord | None, now: float,
                                       view: HeartbeatView, action: str | None) -> None:
    assert heartbeat_view(record, EXPECT, T0, now) == view
    assert heartbeat_action(record, EXPECT, T0, now) == action


# -- beats -------------------------------------------------------------------------------------

def alert(labels: dict[str, str], status: str = "firing") -> Alert:
    return Alert(labels=labels, annotations={}, status=status,  # type: ignore[arg-type]
                 fingerprint="f" + str(len(labels)), source="alertmanager")


def test_only_firing_alerts_matching_every_matcher_are_beats(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + HEARTBEATS)
    watchdog = {"alertname": "Watchdog", "prometheus": "monitoring/k8s"}
    batch = Batch(source="alertmanager", alerts=[
        alert(watchdog), alert({"alertname": "Watchdog", "prometheus": "other"}),
        alert(watchdog, "resolved"), alert({"alertname": "DiskFull"}), alert(watchdog)])
    rest, names, count = split_beats(batch, rules.heartbeats)
    assert (names, count) == (["prometheus-main"], 2)
    assert [a.labels.get("prometheus", "") + a.status for a in rest.alerts] == [
        "otherfiring", "monitoring/k8sresolved", "firing"]
    none = Batch(source="grafana", alerts=[alert({"alertname": "DiskFull"})])
    assert split_beats(none, rules.heartbeats) == (none, [], 0)


# -- the page and its end --------------------------------------------------------------------

def test_plan_missing_pages_the_receivers_with_the_templates_variables(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + HEARTBEATS)
    hb = rules.heartbeats["prometheus-main"]
    seen = datetime(2026, 12, 7, 13, 58, tzinfo=UTC).timestamp()  # 21:58 in Shanghai
    notes = plan_missing("prometheus-main", hb, rules, seen + 300, seen, seen + 301)
    alert = missing_alert("prometheus-main", seen + 300, 300)
    assert [n.mobile for n in notes] == [ZHANG, LI]
    for n, who in zip(notes, ("zhang", "li"), strict=True):
        assert n.variables == {"name": "prometheus-main", "expect": "300", "seen": "21:58",
                               "ack": ACK_PLACEHOLDER, "who": who}
        assert (n.fingerprint, n.status, n.episode, n.route, n.alertname, n.tpl_id) == (
            alert.fingerprint, "firing", "2026-12-07T14:03:00+00:00",
            "heartbeat:prometheus-main", "HeartbeatMissing", 7)
        assert n.resolved_template == "back" and n.state == "queued"
        assert [(s.after, s.receiver, s.template) for s in n.steps] == [(600, "lead", "hb")]
        assert n.info is not None and n.info.labels == {"alertname": "HeartbeatMissing",
                                                        "heartbeat": "prometheus-main"}
    assert notes[0].variables != plan_missing("prometheus-main", hb, rules, seen + 300, None,
                                              seen + 301)[0].variables  # last_seen: none


def test_plan_back_goes_to_those_paged_with_a_resolved_template(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + HEARTBEATS)
    hb = rules.heartbeats["prometheus-main"]
    alert = missing_alert("prometheus-main", T0, 300)
    paged = (Paged(ZHANG, "heartbeat:prometheus-main", "back", T0, 0, "1", "c1"),
             Paged(WANG, "heartbeat:prometheus-main", None, T0 + 600, 1, "2", "c2"))
    episode = Episode("e1", alert.fingerprint, "ep", "HeartbeatMissing", dict(alert.labels),
                      "", T0, None, "heartbeat:prometheus-main", "firing", None, None, None,
                      None, T0, paged, ())
    [n] = plan_back("prometheus-main", hb, episode, rules, T0 + 900)
    assert (n.mobile, n.status, n.episode, n.fingerprint, n.tpl_id, n.variables) == (
        ZHANG, "resolved", "ep", alert.fingerprint, 8,
        {"name": "prometheus-main", "status": "resolved"})


# -- the timer, on a real SQLite store, time injected ------------------------------------------

def test_the_timer_pages_once_at_expect_and_resolves_once(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from bridge.deliver.heartbeats import HeartbeatWatch
    from bridge.store import Policy, open_store

    rules = load(tmp_path, BASE + HEARTBEATS.replace("expect: 5m", "expect: 30s"))
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    watch = HeartbeatWatch(store, lambda: rules, ZoneInfo("Asia/Shanghai"), T0, every=0)

    def pages() -> list[tuple[str, str, str]]:
        return sorted((i.mobile, i.status, i.state) for i in store.recent(100))

    assert watch.run_once(T0 + 10_000) == 0  # never beat: waiting, never pages
    store.beat(["prometheus-main"], T0 + 100)
    assert watch.run_once(T0 + 129.9) == 0 and pages() == []
    assert watch.run_once(T0 + 130) == 1
    assert pages() == [(ZHANG, "firing", "queued"), (LI, "firing", "queued")]
    assert watch.run_once(T0 + 500) == 0  # once per miss
    # a runner that dies after recording: the next one decides the same miss, pages nobody
    store.beat(["backup-job"], T0 + 100)
    claim = store.claim_heartbeat("backup-job", "miss", T0 + 100, T0 + 26 * 3600 + 100,
                                  T0 + 26 * 3600 + 100, 60)
    assert claim is not None
    store.record(plan_missing("backup-job", rules.heartbeats["backup-job"], rules,
                              claim.missing_since, T0 + 100, T0 + 26 * 3600 + 100),
                 Policy(), T0 + 26 * 3600 + 100)
    assert watch.run_once(T0 + 26 * 3600 + 120) == 0  # its lease holds
    assert watch.run_once(T0 + 26 * 3600 + 161) == 1  # lapsed: decided again
    assert watch.run_once(T0 + 26 * 3600 + 162) == 0
    assert [(i.mobile, i.state, i.reason) for i in store.recent(100)
            if i.route == "heartbeat:backup-job"] == [(WANG, "queued", "")]
    assert store.heartbeats()["backup-job"].state == "missing"
    # beats again: one resolved to each of those paged (backup-job has no resolved template)
    store.beat(["prometheus-main"], T0 + 600)
    assert watch.run_once(T0 + 601) == 1
    assert watch.run_once(T0 + 602) == 0
    assert sorted((i.mobile, i.status, i.tpl_id) for i in store.recent(100)
                  if i.status == "resolved") == [(ZHANG, "resolved", 8), (LI, "resolved", 8)]
    [episode] = [e for e in store.episodes(limit=10) if e.route == "heartbeat:prometheus-main"]
    assert episode.state == "resolved" and episode.steps[0].state == "cancelled"
    assert store.heartbeats()["prometheus-main"] == HeartbeatRecord(
        "prometheus-main", T0 + 600, "up", None, 0.0)
    # and the next silence is a new episode that pages again
    assert watch.run_once(T0 + 630) == 1
    assert len([e for e in store.episodes(limit=10)
                if e.route == "heartbeat:prometheus-main"]) == 2
    store.close()


def test_escalation_steps_of_a_miss_see_the_heartbeats_names(tmp_path: Path) -> None:
    from bridge.decide.heartbeats import step_context

    rules = load(tmp_path, BASE + HEARTBEATS)
    notes = plan_missing("prometheus-main", rules.heartbeats["prometheus-main"], rules,
                         T0 + 330, T0 + 30, T0 + 331)
    info = notes[0].info
    assert info is not None
    episode = Episode("e1", notes[0].fingerprint, notes[0].episode, "HeartbeatMissing",
                      info.labels, info.summary, T0 + 330, None, "heartbeat:prometheus-main",
                      "firing", None, None, None, None, T0 + 331, (), (), info.annotations)
    assert step_context(episode, rules) == {
        "name": "prometheus-main", "expect": 300,
        "last_seen": datetime.fromtimestamp(T0 + 30, UTC)}
    other = Episode("e2", "fp", "ep", "DiskFull", {"alertname": "DiskFull"}, "", T0, None,
                    "r", "firing", None, None, None, None, T0, (), ())
    assert step_context(other, rules) == {}


def test_heartbeat_templates_may_read_name_expect_and_last_seen(tmp_path: Path) -> None:
    rules = load(tmp_path, BASE + HEARTBEATS)
    assert rules.template_warnings == []
    typo = BASE.replace('name: "{{ name }}", expect', 'name: "{{ nmae }}", expect') + HEARTBEATS
    assert [w.split(":")[0] + ": " + w.split(": ")[1] for w in
            load(tmp_path, typo).template_warnings] == ["templates.hb.vars.name: 'nmae' is not "
                                                        "a name an alert provides"]


def test_an_escalation_step_of_a_miss_renders_the_heartbeats_names(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from bridge.deliver.escalation import Escalator
    from bridge.deliver.heartbeats import HeartbeatWatch
    from bridge.store import open_store

    rules = load(tmp_path, BASE + HEARTBEATS)
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    zone = ZoneInfo("Asia/Shanghai")
    seen = datetime(2026, 12, 7, 13, 58, tzinfo=UTC).timestamp()  # 21:58 in Shanghai
    store.beat(["prometheus-main"], seen)
    assert HeartbeatWatch(store, lambda: rules, zone, seen, every=0).run_once(seen + 300) == 1
    for c in store.claim(seen + 300, 30, 10):  # the miss's page goes out: the step clock starts
        store.mark_sent([i.id for i in c.items], "sid", 1, seen + 300, token=c.token,
                        pace_until=seen + 300)
    assert Escalator(store, lambda: rules, zone).run_once(seen + 899) == 0
    assert Escalator(store, lambda: rules, zone).run_once(seen + 900) == 1
    [step] = [i for i in store.recent(100) if i.mobile == WANG]
    [episode] = store.episodes(limit=10)
    assert step.variables == {"name": "prometheus-main", "expect": "300", "seen": "21:58",
                              "ack": next(p.code for p in episode.paged if p.mobile == WANG),
                              "who": "wang"}
    store.close()
