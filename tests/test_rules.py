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
        "templates.broken.tpl_id: must be greater than 0, got the number 0",
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


# -- issue 20: checks an on-call engineer tripped over ---------------------------------------------

ACK_RULES = """\
receivers: {r: ['13800138000']}
templates: {t: {tpl_id: 1, vars: {a: "SOURCE"}}}
routes: [{receiver: r, template: t}]
"""


@pytest.mark.parametrize(("source", "why"), [
    pytest.param("{{ ack_code | upper }}", "the filter 'upper' on it", id="filter"),
    pytest.param("{{ ack_code[:6] }}", "a slice or index of it", id="slice"),
    pytest.param("{{ ack_code | truncate(5) }}", "the filter 'truncate' on it", id="truncate"),
    pytest.param("{{ ack_code.upper() }}", "the attribute or method .upper of it", id="method"),
    pytest.param("{{ ack_code ~ 'x' }}", "an operator on it", id="concat"),
    pytest.param("{{ ack_code + 'x' }}", "an operator on it", id="plus"),
    pytest.param("{{ 'x' | replace('x', ack_code) }}", "passing it to the filter 'replace'",
                 id="filter-argument"),
    pytest.param("{% filter upper %}{{ ack_code }}{% endfilter %}",
                 "putting it inside a {% filter %} block", id="filter-block"),
    pytest.param("{% set c = ack_code %}{{ c | lower }}",
                 "giving it another name or putting it in a collection", id="alias"),
])
def test_ack_code_through_anything_is_refused_with_its_place(tmp_path: Path, source: str,
                                                             why: str) -> None:
    """Issue 20 item 1: `{{ ack_code | upper }}` sent Juhe the placeholder; check said OK."""
    assert problems_of(tmp_path, ACK_RULES.replace("SOURCE", source)) == [
        f"templates.t.vars.a: ack_code goes in as it is ({{{{ ack_code }}}}); {why} would send "
        "a code nobody can acknowledge with (line 1)"]


@pytest.mark.parametrize("source", [
    pytest.param("确认 {{ ack_code }} 回复", id="text-around"),
    pytest.param("{{ ack_code if escalation else '-' }}", id="branch"),
    pytest.param("{% if escalation %}{{ ack_code }}{% endif %}", id="in-if"),
])
def test_ack_code_as_it_is_loads(tmp_path: Path, source: str) -> None:
    f = tmp_path / "rules.yaml"
    f.write_text(ACK_RULES.replace("SOURCE", source), encoding="utf-8")
    assert load_rules(f).uses_ack_code("t")


def test_a_changed_ack_code_never_reaches_the_sms() -> None:
    """The runtime guard behind the check: a value carrying a piece of the placeholder (here a
    template compiled without the check) renders as `?`, never the marker."""
    from bridge.rules.render import ACK_PLACEHOLDER, Renderer

    r = Renderer()
    tpls = {"upper": r.compile("{{ ack_code | upper }}"), "cut": r.compile("{{ ack_code[:6] }}"),
            "ok": r.compile("ack {{ ack_code }}"), "plain": r.compile("{{ labels.a }}")}
    out = r.render(tpls, {"ack_code": ACK_PLACEHOLDER, "labels": {"a": "x\ue000y"}}, 40)
    assert out == {"upper": "?", "cut": "?", "ok": f"ack {ACK_PLACEHOLDER}", "plain": "?"}


def test_a_key_written_twice_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    """Issue 20 item 2: a second `routes:` replaced the first; check said OK."""
    text = ("receivers: {r: ['13800138000']}\n"
            "templates: {t: {tpl_id: 1, vars: {a: x}}}\n"
            "routes:\n  - {receiver: r, template: t, matchers: ['severity=\"critical\"']}\n"
            "routes:\n  - {receiver: r, template: t}\n")
    assert problems_of(tmp_path, text) == [
        "line 5: key 'routes' is written twice in one mapping (first on line 3): the second "
        "would silently replace the first"]
    nested = text.replace("vars: {a: x}", "vars: {a: x, a: y}")
    assert problems_of(tmp_path, nested)[0] == (
        "line 2: key 'a' is written twice in one mapping (first on line 2): the second would "
        "silently replace the first")
    # a key a merge brings in may be overridden, as YAML intends
    f = tmp_path / "merge.yaml"
    f.write_text("receivers: {r: ['13800138000']}\n"
                 "templates:\n  t: &t {tpl_id: 1, vars: {a: x}}\n  u: {<<: *t, tpl_id: 2}\n"
                 "routes: [{receiver: r, template: u}]\n", encoding="utf-8")
    assert load_rules(f).templates["u"].tpl_id == 2


def test_a_key_written_twice_in_a_folder_names_the_file(tmp_path: Path) -> None:
    shutil.copytree(EXAMPLES, tmp_path / "d")
    (tmp_path / "d" / "zz.yaml").write_text("people:\n  a: '13800138000'\n  a: '13800138001'\n",
                                            encoding="utf-8")
    with pytest.raises(RulesError) as info:
        load_rules(tmp_path / "d")
    assert info.value.problems == [
        "zz.yaml: line 3: key 'a' is written twice in one mapping (first on line 2): the second "
        "would silently replace the first"]


SRE_RULES = """\
people: {zhang: "13800138000", li: "13800138001", wang: "13900139000", zhao: "13900139001"}
receivers: {dba: [zhang]}
schedules:
  sre:
    members: [zhang, li]
    shift: 1w
    start: 2026-01-05
    handover: HANDOVER
    overrides:
      - {start: "2026-12-24 10:00", end: "2026-12-26 10:00", people: [nobody]}
      - {start: "2026-12-28 10:00", end: "2026-12-27 10:00", people: [li]}
  empty: {members: [], shift: 1d, start: 2026-01-05}
templates: {t: {tpl_id: 1, vars: {a: "{{ ack_code }}"}}}
routes: [{receiver: sre, template: t}]
"""


@pytest.mark.parametrize(("handover", "message"), [
    pytest.param('"24:00"', "handover must be a time \"HH:MM\" from 00:00 to 23:59, got '24:00'"
                 " (24:00 is the next day's 00:00)", id="24:00"),
    pytest.param('"9:00"', "handover must be a time \"HH:MM\" from 00:00 to 23:59, got '9:00'",
                 id="one-digit-hour"),
])
def test_every_problem_at_once_in_the_bridges_words(tmp_path: Path, handover: str,
                                                    message: str) -> None:
    """Issue 20 item 6: the override whose end is before its start hid the unknown person in
    the override before it; pydantic's words; the handover message offered 24:00."""
    assert problems_of(tmp_path, SRE_RULES.replace("HANDOVER", handover)) == [
        f"schedules.sre.handover: {message}",
        "schedules.sre.overrides[1]: end 2026-12-27 10:00 is not after start 2026-12-28 10:00",
        "schedules.empty.members: needs at least 1 member (a person's name, or a list of names "
        "sharing the shift), has none",
        "schedules.sre.overrides[0].people[0]: unknown person 'nobody' (not in people:)",
    ]


def test_a_bad_template_still_has_its_variables_checked(tmp_path: Path) -> None:
    assert problems_of(tmp_path, ACK_RULES.replace("tpl_id: 1", "tpl_id: 0").replace(
        "SOURCE", "{{ ack_code | upper }}")) == [
        "templates.t.tpl_id: must be greater than 0, got the number 0",
        "templates.t.vars.a: ack_code goes in as it is ({{ ack_code }}); the filter 'upper' on "
        "it would send a code nobody can acknowledge with (line 1)"]


def test_a_value_that_fits_no_branch_is_one_problem(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, ACK_RULES.replace("SOURCE", "x").replace(
        "receiver: r, template", "receiver: [5], template"))
    assert problems == ["routes[0].receiver: expected text or a list of text, got a list"]


def test_warnings_for_names_no_alert_provides_and_steps_within_min_gap(tmp_path: Path) -> None:
    """Issue 20 items 3 and 7: a misspelt `{{ ack_url }}` rendered empty; a step after 10s
    paged the secondary before the primary's SMS went out."""
    f = tmp_path / "rules.yaml"
    f.write_text("""\
people: {zhang: "13800138000", li: "13800138001"}
receivers: {primary: [zhang], secondary: [li]}
templates:
  page: {tpl_id: 1, vars: {ack: "{{ ack_code }}", url: "{{ ack_url }}",
                           who: "{{ person }} {{ escalation }} {% set n = 1 %}{{ n }}"}}
  storm: {tpl_id: 2, vars: {n: "{{ count }} {{ alertnames }}", x: "{{ labels.a }}"}}
  unused: {tpl_id: 3, vars: {s: "{{ schedule }}"}}  # what it sees depends on its user
limits: {min_gap: 30s, storm: {threshold: 3, window: 2m, template: storm}}
routes:
  - receiver: primary
    template: page
    escalate: [{after: 10s, receiver: secondary}, {after: 30s, receiver: secondary}]
""", encoding="utf-8")
    rules = load_rules(f)
    alert_names = ("ack_code, annotations, common_labels, ends_at, escalation, external_url, "
                   "fingerprint, generator_url, group_labels, labels, person, receiver, source, "
                   "starts_at, status, values")
    assert rules.warnings() == [
        "routes[0].escalate[0].after: 10s is shorter than min_gap (30s): the step pages the next "
        "person before the first could even be paged again; give the first person at least "
        "min_gap to acknowledge",
        f"templates.page.vars.url: 'ack_url' is not a name an alert provides: it renders empty "
        f"(provided: {alert_names})",
        "templates.storm.vars.x: 'labels' is not a name the storm template provides: it renders "
        "empty (provided: alertnames, count, firing, mobile, resolved, window_end, "
        "window_start)",
    ]
    assert "1 routes, 2 receivers (2 mobiles), 0 schedules, 2 people" in rules.summary()


def test_alert_names_are_what_templates_see() -> None:
    from bridge.decide.plan import base_context
    from bridge.rules.checks import ALERT_NAMES

    context = base_context(_alert({"a": "b"}), Batch("alertmanager", []))
    assert ALERT_NAMES == {*context, "person"}


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("routes:\n  - {reciever: r, template: t}\n",
                 "routes[0].reciever: unknown field (did you mean 'receiver'? expected one of: "
                 "name, matchers, receiver, mobiles_from, max_mobiles_from, template, "
                 "resolved_template, repeat_interval, continue, mute_time_intervals, "
                 "active_time_intervals, escalate)", id="route"),
    pytest.param("schedules:\n  s: {members: [a], shift: 1d, start: 2026-01-01, overides: []}\n",
                 "schedules.s.overides: unknown field (did you mean 'overrides'? expected one "
                 "of: members, shift, handover, start, time_zone, overrides, notify)",
                 id="schedule"),
    pytest.param("limits: {storm: {threshold: 1, window: 1m, template: t, size: 2}}\n",
                 "limits.storm.size: unknown field (expected one of: threshold, window, "
                 "template)", id="storm"),
])
def test_an_unknown_field_names_what_is_expected(tmp_path: Path, text: str,
                                                 expected: str) -> None:
    assert expected in problems_of(tmp_path, text)
