"""Rules files: every problem with its place (and file, for a folder), merging a folder,
rendering (sandbox, truncation, folding), routing and planning. Pure: no server."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SPEC_RULES
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.alert import Alert, Batch
from bridge.decide.plan import decide
from bridge.errors import RulesError
from bridge.rules.load import load_rules
from bridge.rules.render import fold_and_cut

EXAMPLES = Path(__file__).parent.parent / "examples" / "rules.d"
NOW = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai


def problems_of(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "rules.yaml"
    f.write_text(text, encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(f)
    return info.value.problems


def test_spec_example_loads(tmp_path: Path) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(SPEC_RULES, encoding="utf-8")
    rules = load_rules(f)
    assert rules.route_names == ["db-critical", "everything-else"]
    assert rules.receivers["dba"] == ["13800138000", "13800138001"]
    assert rules.routes[0].repeat_interval == 4 * 3600
    assert rules.routes[1].repeat_interval == 4 * 3600  # Alertmanager's default
    assert rules.limits.min_gap == 0


def test_repo_rules_file_loads() -> None:
    rules = load_rules(Path(__file__).parent.parent / "rules.yaml")
    assert rules.limits.min_gap == 60 and rules.limits.storm is not None
    assert rules.time_intervals["night"].active_at(datetime(2026, 11, 29, 16, 0, tzinfo=UTC))


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("routes:\n  - matchers: ['a=\"b\"', 'c=~\"(x\"']\n    receiver: r\n"
                 "    template: t\n", "routes[0].matchers[1]: invalid regex", id="bad-regex"),
    pytest.param("receivers: {r: ['12345']}\n", "receivers.r[0]: not an 11-digit mainland China"
                 " mobile number: '12345'", id="bad-mobile"),
    pytest.param("receivers: {r: []}\n", "receivers: receiver 'r' has no mobile numbers",
                 id="empty-receiver"),
    pytest.param("templates: {t: {tpl_id: 1, vars: {'a-b': x}}}\n",
                 "templates.t.vars.a-b: variable name must be a plain identifier", id="var-name"),
    pytest.param("templates: {t: {tpl_id: 1, vars: {a: '{{ x'}}}\n",
                 "templates.t.vars.a: template syntax error", id="jinja-syntax"),
    pytest.param("templates: {t: {tpl_id: 'abc', vars: {}}}\n", "templates.t.tpl_id: ",
                 id="tpl-id"),
    pytest.param("routes:\n  - receiver: nobody\n    template: t\n",
                 "routes[0].receiver: unknown receiver 'nobody'", id="unknown-receiver"),
    pytest.param("receivers: {r: ['13800138000']}\nroutes:\n  - receiver: r\n    template: t\n",
                 "routes[0].template: unknown template 't'", id="unknown-template"),
    pytest.param("receivers: {r: ['13800138000']}\ntemplates: {t: {tpl_id: 1, vars: {}}}\n"
                 "routes:\n  - receiver: r\n    template: t\n    mute_time_intervals: [night]\n",
                 "routes[0].mute_time_intervals[0]: unknown time interval 'night'",
                 id="unknown-interval"),
    pytest.param("routes:\n  - receiver: r\n    template: t\n    repeat_interval: soon\n",
                 "routes[0].repeat_interval: not a duration", id="bad-duration"),
    pytest.param("routes:\n  - receiver: r\n    template: t\n    colour: red\n",
                 "routes[0].colour: unknown field", id="unknown-field"),
    pytest.param("limits: {storm: {threshold: 3, window: 2m, template: nope}}\n",
                 "limits.storm.template: unknown template 'nope'", id="storm-template"),
    pytest.param("routes: [1\n", "invalid YAML", id="yaml-syntax"),
    pytest.param("receivers: {r: ['13800138000']}\ntemplates: {t: {tpl_id: 1, vars: {}}}\n"
                 "routes: [{receiver: [], template: t}]\n",
                 "routes[0].receiver: a route needs a receiver or mobiles_from",
                 id="empty-receiver-list"),
    pytest.param("receivers: {r: ['13800138000']}\ntemplates: {t: {tpl_id: 1, vars: {}}}\n",
                 "routes: no routes: no alert would ever page anyone", id="no-routes"),
    pytest.param("receivers: {r: ['13800138000']}\ntemplates: {t: {tpl_id: 1, vars: {}}}\n"
                 "routes: [{name: a, receiver: r, template: t}, {name: a, receiver: r, "
                 "template: t}]\n", "routes[1].name: 'a' is also the name of routes[0]",
                 id="duplicate-route-name"),
    pytest.param("- a\n- b\n", "(top level): must be a mapping", id="not-a-mapping"),
])
def test_problem_is_reported_with_its_place(tmp_path: Path, text: str, expected: str) -> None:
    problems = problems_of(tmp_path, text)
    assert any(p.startswith(expected) or expected in p for p in problems), problems


def test_every_problem_at_once(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, """\
receivers: {r: ['13800138000']}
templates: {t: {tpl_id: 1, vars: {a: x}}}
routes:
  - receiver: a
    template: t
  - receiver: r
    template: b
  - receiver: r
    template: t
    active_time_intervals: [c]
""")
    assert problems == [
        "routes[0].receiver: unknown receiver 'a'",
        "routes[1].template: unknown template 'b'",
        "routes[2].active_time_intervals[0]: unknown time interval 'c'",
    ]


def test_unquoted_times_and_numbers_read_as_alertmanager_writes_them(tmp_path: Path) -> None:
    f = tmp_path / "r.yaml"
    f.write_text("""\
receivers: {r: [13800138000]}
templates: {t: {tpl_id: 1, vars: {a: x}}}
time_intervals:
  - name: night
    time_intervals: [{times: [{start_time: 23:00, end_time: 24:00}]}]
routes: [{receiver: r, template: t, mute_time_intervals: [night]}]
""", encoding="utf-8")
    rules = load_rules(f)
    assert rules.receivers["r"] == ["13800138000"]
    assert rules.time_intervals["night"].active_at(datetime(2026, 1, 1, 23, 30, tzinfo=UTC))


def test_folder_loads_as_one() -> None:
    rules = load_rules(EXAMPLES)
    assert rules.files == ["00-base.yaml", "team-db.yaml", "team-web.yaml"]
    assert rules.route_names == ["db-critical", "web-critical", "web-warning"]
    assert set(rules.receivers) == {"dba", "web"}
    assert rules.limits.storm is not None and rules.limits.storm.template == "storm"


def test_folder_ignores_hidden_files(tmp_path: Path) -> None:
    d = tmp_path / "rules.d"
    shutil.copytree(EXAMPLES, d)
    (d / ".team-db.yaml.swp.yaml").write_text("receivers: {dba: ['13700137000']}\n")
    assert load_rules(d).files == ["00-base.yaml", "team-db.yaml", "team-web.yaml"]


def test_folder_duplicate_names_both_files(tmp_path: Path) -> None:
    d = tmp_path / "rules.d"
    shutil.copytree(EXAMPLES, d)
    (d / "team-x.yml").write_text("receivers:\n  dba: ['13700137000']\n", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(d)
    assert info.value.problems == [
        "team-x.yml: receivers.dba: already defined in team-db.yaml"]


def test_folder_problems_carry_file_and_place(tmp_path: Path) -> None:
    d = tmp_path / "rules.d"
    shutil.copytree(EXAMPLES, d)
    (d / "team-db.yaml").write_text(
        "routes:\n  - receiver: dbx\n    template: firing\n    matchers: ['a=~\"(\"']\n",
        encoding="utf-8")
    (d / "zz-limits.yaml").write_text("limits: {min_gap: 1s}\n", encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(d)
    problems = info.value.problems
    assert problems[0].startswith("team-db.yaml: routes[0].matchers[0]: invalid regex")
    (d / "team-db.yaml").write_text("routes:\n  - receiver: dbx\n    template: firing\n",
                                    encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(d)
    assert info.value.problems == [
        "zz-limits.yaml: limits: already set in 00-base.yaml (limits may come from one file only)",
        "team-db.yaml: routes[0].receiver: unknown receiver 'dbx'",
    ]


@pytest.mark.parametrize(("value", "n", "expected"), [
    ("short", 20, "short"),
    ("exactly twenty chars", 20, "exactly twenty chars"),
    ("twenty-one characters", 20, "twenty-one characte…"),
    ("a\nb\r\nc\td", 20, "a b c d"),
    ("line\\tliteral", 20, "line\\tliteral"),
    ("  padded\n", 20, "padded"),
    ("服务异常告警服务异常告警服务异常告警服务异常告警", 10, "服务异常告警服务异…"),
    ("x\u2028y\x00z", 20, "x y z"),
    ("zero\u200bwidth \u202eevil\u202c", 20, "zerowidth evil"),
    ("soft\u00adhy\u061cph\u180een", 20, "softhyphen"),
    # a ZWJ stays inside an emoji sequence (family, technologist), and only there
    ("\U0001F468\u200d\U0001F469\u200d\U0001F467 ok", 20,
     "\U0001F468\u200d\U0001F469\u200d\U0001F467 ok"),
    ("\U0001F9D1\u200d\U0001F4BB\u200d", 20, "\U0001F9D1\u200d\U0001F4BB"),
    ("a\u200db \u200d\U0001F525", 20, "ab \U0001F525"),
    ("\u2764\ufe0f\u200d\U0001F525 x", 20, "\u2764\ufe0f\u200d\U0001F525 x"),
    ("abc\U0001F468\u200d\U0001F469", 5, "abc\U0001F468…"),
])
def test_fold_and_cut(value: str, n: int, expected: str) -> None:
    assert fold_and_cut(value, n) == expected
    assert len(fold_and_cut(value, n)) <= n


def _alert(labels: dict[str, str], status: str = "firing", **ann: str) -> Alert:
    return Alert(labels=labels, annotations=ann, status=status,  # type: ignore[arg-type]
                 fingerprint="f" * 16, source="alertmanager",
                 starts_at=datetime(2026, 11, 29, 1, 2, tzinfo=UTC))


def _rules(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    f = tmp_path / "r.yaml"
    f.write_text(text, encoding="utf-8")
    return load_rules(f)


def test_plan_first_route_wins_per_mobile_and_continue(tmp_path: Path) -> None:
    rules = _rules(tmp_path, SPEC_RULES)
    batch = Batch("alertmanager", [_alert({"alertname": "X", "severity": "critical",
                                           "team": "db"})])
    plan = decide(batch, rules, NOW)
    assert [(n.route, n.mobile) for n in plan.notifications] == [
        ("db-critical", "13800138000"), ("db-critical", "13800138001"),
        ("everything-else", "13900139000")]
    warning = Batch("alertmanager", [_alert({"alertname": "Y", "severity": "warning",
                                             "team": "db"})])
    assert [n.route for n in decide(warning, rules, NOW).notifications] == ["everything-else"]
    nothing = Batch("alertmanager", [_alert({"alertname": "Z"})])
    assert decide(nothing, rules, NOW).unrouted == 1


def test_plan_resolved_only_with_resolved_template(tmp_path: Path) -> None:
    rules = _rules(tmp_path, SPEC_RULES)
    batch = Batch("alertmanager", [_alert({"alertname": "X", "severity": "critical",
                                           "team": "db"}, "resolved")])
    plan = decide(batch, rules, NOW)
    assert [(n.mobile, n.tpl_id, n.variables) for n in plan.notifications] == [
        ("13800138000", 222, {"name": "X"}), ("13800138001", 222, {"name": "X"})]


def test_plan_mobiles_from_valid_invalid_duplicates(tmp_path: Path) -> None:
    rules = _rules(tmp_path, """\
receivers: {r: ['13800138000']}
templates: {t: {tpl_id: 1, vars: {n: '{{ labels.alertname }}'}}}
routes: [{receiver: r, template: t, mobiles_from: oncall_mobile}]
""")
    a = _alert({"alertname": "X", "oncall_mobile": "13900139000, 12345,13800138000,,13900139000"})
    plan = decide(Batch("alertmanager", [a]), rules, NOW)
    assert [n.mobile for n in plan.notifications] == ["13800138000", "13900139000"]
    assert plan.skipped_mobiles == ["****"]
    b = _alert({"alertname": "X"}, oncall_mobile="13700137000，13600136000")
    plan = decide(Batch("alertmanager", [b]), rules, NOW)
    assert [n.mobile for n in plan.notifications] == ["13800138000", "13700137000",
                                                      "13600136000"]
    c = _alert({"alertname": "X",
                "oncall_mobile": "+8613500135000;13900139001 0086-139-0013-9002、8613700137001"})
    plan = decide(Batch("alertmanager", [c]), rules, NOW)
    assert [n.mobile for n in plan.notifications] == [
        "13800138000", "13500135000", "13900139001", "13900139002", "13700137001"]
    assert plan.skipped_mobiles == []


def test_plan_counts_a_firing_alert_that_pages_nobody(tmp_path: Path) -> None:
    """Found by a verification run: a route whose mobiles_from label is missing paged nobody,
    silently."""
    rules = _rules(tmp_path, """\
templates: {t: {tpl_id: 1, vars: {n: x}}}
routes: [{template: t, mobiles_from: oncall_mobile}]
""")
    plan = decide(Batch("alertmanager", [_alert({"alertname": "X"})]), rules, NOW)
    assert (plan.notifications, plan.unrouted) == ([], 1)


def test_plan_muted_at_night_is_suppressed(tmp_path: Path) -> None:
    rules = load_rules(Path(__file__).parent.parent / "rules.yaml")
    batch = Batch("alertmanager", [_alert({"alertname": "X", "severity": "warning"})])
    night = datetime(2026, 11, 29, 16, 30, tzinfo=UTC)  # 00:30 in Shanghai
    [n] = decide(batch, rules, night).notifications
    assert (n.state, n.reason) == ("suppressed", "muted")
    [n] = decide(batch, rules, NOW).notifications
    assert (n.state, n.reason) == ("queued", "")


def test_plan_active_time_intervals(tmp_path: Path) -> None:
    rules = _rules(tmp_path, """\
receivers: {r: ['13800138000']}
templates: {t: {tpl_id: 1, vars: {n: x}}}
time_intervals:
  - name: office
    time_intervals:
      - weekdays: ['monday:friday']
        times: [{start_time: '09:00', end_time: '18:00'}]
        location: Asia/Shanghai
routes: [{receiver: r, template: t, active_time_intervals: [office]}]
""")
    batch = Batch("alertmanager", [_alert({"alertname": "X"})])
    sunday_noon = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    monday_ten = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)
    assert decide(batch, rules, sunday_noon).notifications[0].state == "suppressed"
    assert decide(batch, rules, monday_ten).notifications[0].state == "queued"


def test_render_sandbox_and_context(tmp_path: Path) -> None:
    rules = _rules(tmp_path, """\
receivers: {r: ['13800138000']}
max_var_len: 40
templates:
  t:
    tpl_id: 1
    vars:
      mro: "{{ labels.__class__.__mro__ }}"
      lit: "{{ annotations.summary }}"
      at: "{{ starts_at | localtime('%Y-%m-%d %H:%M') }}"
      v: "{{ values.B | round(1) }}"
      bad: "{{ labels.alertname | int + 'x' }}"
      src: "{{ source }}/{{ status }}"
routes: [{receiver: r, template: t}]
""")
    a = Alert(labels={"alertname": "X"}, annotations={"summary": "{{ 7*7 }} {% for %}"},
              status="firing", fingerprint="f", source="grafana",
              starts_at=datetime(2026, 11, 29, 16, 30, tzinfo=UTC), values={"B": 44.2394})
    [n] = decide(Batch("grafana", [a]), rules, NOW).notifications
    assert n.variables == {"mro": "", "lit": "{{ 7*7 }} {% for %}", "at": "2026-11-30 00:30",
                           "v": "44.2", "bad": "?", "src": "grafana/firing"}


def test_structural_and_reference_problems_together(tmp_path: Path) -> None:
    """Found by a trial run: reference problems showed only after the structural ones were
    fixed, so `bridge check` took several rounds."""
    problems = problems_of(tmp_path, """\
receivers:
  dba: ["1380013800"]
  ops: ["13900139000"]
templates:
  firing: {tpl_id: 1, vars: {a: "{{ x"}}
  broken: {tpl_id: 0, vars: {}}
routes:
  - name: r1
    receiver: ops
    template: nope
    mute_time_intervals: [day]
  - name: r1
    receiver: dba
    template: broken
""")
    assert problems == [
        "receivers.dba[0]: not an 11-digit mainland China mobile number: '1380013800'",
        "templates.broken.tpl_id: Input should be greater than 0",
        "templates.firing.vars.a: template syntax error: unexpected end of template, expected "
        "'end of print statement'. (line 1)",
        "routes[0].template: unknown template 'nope'",
        "routes[0].mute_time_intervals[0]: unknown time interval 'day'",
        "routes[1].name: 'r1' is also the name of routes[0]",
    ]


def test_a_route_with_a_bad_field_still_has_its_references_checked(tmp_path: Path) -> None:
    """Found by a verification run: a bad regex hid the same route's unknown receiver."""
    problems = problems_of(tmp_path, """\
receivers: {ops: ["13900139000"]}
templates: {firing: {tpl_id: 111, vars: {name: "{{ labels.alertname }}"}}}
routes:
  - name: a
    matchers: ['severity=~"("']
    receiver: nobody
    template: nosuch
  - name: a
    receiver: ops
    template: firing
    repeat_interval: soon
""")
    assert problems == [
        "routes[0].matchers[0]: invalid regex: '(': missing ), unterminated subpattern at "
        "position 0",
        "routes[1].repeat_interval: not a duration (like 90s, 5m, 1h30m): 'soon'",
        "routes[0].receiver: unknown receiver 'nobody'",
        "routes[0].template: unknown template 'nosuch'",
        "routes[1].name: 'a' is also the name of routes[0]",
    ]


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(
    "ab 磁盘\n\t\x00\x7f\x9f\u2028\u200b\u200d\u202e\ufeff\u00ad👨👩\ufe0f…"), max_size=40),
    st.integers(min_value=1, max_value=30))
def test_fold_and_cut_fast_path_changes_nothing(value: str, max_len: int) -> None:
    # issue 14: fold_and_cut skips its three substitutions when one scan finds nothing to
    # change; the result is what the substitutions give
    from bridge.rules import render

    folded = render._CONTROL.sub(" ", render._STRAY_ZWJ.sub("", render._INVISIBLE.sub("", value)))
    assert fold_and_cut(value, max_len) == fold_and_cut(folded, max_len)
    assert fold_and_cut(value, 1000) == folded.strip()
