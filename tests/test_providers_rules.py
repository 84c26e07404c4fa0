"""The rules' provider checks (docs/providers.md): fallback and voice templates, links in a
voice template's variables, calls as resolved or storm templates, ``limits.calls`` bounds, and
credentials in the environment unless dry-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import RulesError
from bridge.rules.load import load_rules

BASE = """\
receivers: {team: ["13800138000"]}
templates:
  page: {tpl_id: 111, vars: {name: "{{ labels.alertname }}"}}
%s
routes:
  - {matchers: [], receiver: team, template: page%s}
"""
CREDS = {"JUHE_KEY": "k", "ALIYUN_ACCESS_KEY_ID": "id", "ALIYUN_ACCESS_KEY_SECRET": "s",
         "TENCENTCLOUD_SECRET_ID": "id", "TENCENTCLOUD_SECRET_KEY": "s"}


def _load(tmp_path: Path, templates: str, route: str = "",
          env: dict[str, str] | None = None) -> list[str]:
    (tmp_path / "r.yaml").write_text(BASE % (templates, route), encoding="utf-8")
    try:
        load_rules(tmp_path / "r.yaml", env=CREDS if env is None else env)
    except RulesError as exc:
        return exc.problems
    return []


CASES = [
    ("fallback-aliyun-ok", "  f: {tpl_id: 2, vars: {}, fallback: {aliyun: {sign_name: s, "
     "template_code: SMS_1}}}", "", []),
    ("voice-tencent-numbers-ok", "  c: {vars: {a: '{{ labels.x }}'}, voice: {tencent: "
     "{template_id: 123, voice_sdk_app_id: 1400000001}}}", "", []),
    ("voice-and-tpl_id", "  c: {tpl_id: 2, vars: {}, voice: {aliyun: {tts_code: T}}}", "",
     ["templates.c: a voice template is a call: it has no tpl_id"]),
    ("neither", "  c: {vars: {}}", "",
     ["templates.c: tpl_id: required (or voice: for a phone call)"]),
    ("two-providers", "  c: {vars: {}, voice: {aliyun: {tts_code: T}, tencent: "
     "{template_id: '1', voice_sdk_app_id: '2'}}}", "",
     ["templates.c.voice: name exactly one provider: aliyun or tencent"]),
    ("url-text", "  c: {vars: {u: 'see https://x.example/{{ labels.a }}'}, voice: "
     "{aliyun: {tts_code: T}}}", "",
     ["templates.c.vars.u: a call cannot read out a link (URL text): carriers refuse links "
      "in calls"]),
    ("url-field", "  c: {vars: {u: '{{ generator_url }}'}, voice: {aliyun: {tts_code: T}}}",
     "", ["templates.c.vars.u: a call cannot read out a link (generator_url): carriers refuse"
          " links in calls"]),
    ("call-as-resolved", "  c: {vars: {}, voice: {aliyun: {tts_code: T}}}",
     ", resolved_template: c",
     ["routes[0].resolved_template: 'c' is a voice template: a resolved alert gets no call"]),
]


@pytest.mark.parametrize("templates,route,expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_provider_templates(tmp_path: Path, templates: str, route: str,
                            expected: list[str]) -> None:
    assert _load(tmp_path, templates, route) == expected


@pytest.mark.parametrize("env,expected", [
    ({"JUHE_KEY": "k"}, ["templates.f.fallback.aliyun: no aliyun credentials in the "
                         "environment: set ALIYUN_ACCESS_KEY_ID and ALIYUN_ACCESS_KEY_SECRET",
                         "templates.c.voice.tencent: no tencent credentials in the "
                         "environment: set TENCENTCLOUD_SECRET_KEY"]),
    ({}, []),
], ids=["live", "dry-run"])
def test_credentials_must_be_in_the_environment_unless_dry_run(
        tmp_path: Path, env: dict[str, str], expected: list[str]) -> None:
    templates = ("  f: {tpl_id: 2, vars: {}, fallback: {aliyun: {sign_name: s, template_code: "
                 "S}}}\n  c: {vars: {}, voice: {tencent: {template_id: '1', "
                 "voice_sdk_app_id: '2'}}}")
    if env:
        env = {**env, "TENCENTCLOUD_SECRET_ID": "id"}
    assert _load(tmp_path, templates, env=env) == expected


@pytest.mark.parametrize("calls,ok", [("{per_hour: 5, per_day: 20, min_gap: 60s}", True),
                                      ("{per_hour: 6}", False), ("{per_day: 21}", False),
                                      ("{min_gap: 30s}", False)],
                         ids=["defaults", "hour-6", "day-21", "gap-30s"])
def test_limits_calls_may_only_lower_the_defaults(tmp_path: Path, calls: str,
                                                  ok: bool) -> None:
    problems = _load(tmp_path, f"limits: {{calls: {calls}}}")
    assert (problems == []) is ok, problems
