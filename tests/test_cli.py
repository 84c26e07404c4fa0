"""The ``bridge`` command line as an operator runs it: check, render, send-test, worker."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import CATCH_ALL, FIXTURES, KEY, SPEC_RULES
from fakejuhe import FakeJuhe

ROOT = Path(__file__).parent.parent


def bridge(*args: str, cwd: Path, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("bridge") or str(Path(sys.executable).parent / "bridge")
    full = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "JUHE_"))}
    full["PYTHONPATH"] = os.pathsep.join([str(ROOT), full.get("PYTHONPATH", "")])
    return subprocess.run([exe, *args], cwd=cwd, env={**full, **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def test_check_ok_prints_summary(tmp_path: Path) -> None:
    r = bridge("check", str(ROOT / "rules.yaml"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OK: 2 routes, 2 receivers (3 mobiles), 3 templates, 1 time intervals" in r.stdout
    assert "route db-critical: 2 matchers -> dba, template firing, resolved resolved" in r.stdout


def test_check_reads_bridge_rules_and_dotenv(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(CATCH_ALL)
    (tmp_path / ".env").write_text("BRIDGE_RULES=mine.yaml\n")
    r = bridge("check", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("mine.yaml: OK: 1 routes")
    # the environment wins over .env
    r = bridge("check", cwd=tmp_path, env={"BRIDGE_RULES": "missing.yaml"})
    assert r.returncode == 1
    assert "missing.yaml: no such file or folder" in r.stderr


def test_check_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(CATCH_ALL.replace("receiver: oncall", "receiver: nobody")
                 .replace("template: firing", "template: nope"))
    r = bridge("check", str(f), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{f}: 2 problem(s):",
        "  routes[0].receiver: unknown receiver 'nobody'",
        "  routes[0].template: unknown template 'nope'",
    ]


def test_check_folder(tmp_path: Path) -> None:
    r = bridge("check", str(ROOT / "examples" / "rules.d"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "from 00-base.yaml, team-db.yaml, team-web.yaml" in r.stdout


def test_render_prints_every_sms_without_sending(tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    r = bridge("render", str(FIXTURES / "27-derived-juhe-forgery-label.json"), "--rules",
               str(rules), cwd=tmp_path, env={"JUHE_KEY": KEY, "JUHE_URL": fake_juhe.url})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].endswith("27-derived-juhe-forgery-label.json: alertmanager, 1 alerts, "
                             "1 notifications")
    assert lines[1] == ("- route everything: firing High CPU Temperature -> 13800138000 "
                        "tpl_id 111 [queued]")
    assert "    host = #code#=1&#x#=2" in lines
    assert ("    tpl_value: #name#=High%20CPU%20Temperature&#host#=%23code%23%3D1%26%23x%23%3D2"
            "&#summary#=%23code%23%3D1%26%23x%23%3D2&#at#=02-06%2008%3A17") in lines
    assert KEY not in r.stdout + r.stderr
    assert fake_juhe.requests == 0
    assert not (tmp_path / "bridge.db").exists()


def test_render_grafana_detected_and_muted_shown(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SPEC_RULES.replace("routes:\n", "time_intervals:\n  - name: always\n"
                              "    time_intervals: [{}]\nroutes:\n")
                     .replace("    receiver: ops\n", "    receiver: ops\n"
                              "    mute_time_intervals: [always]\n"))
    r = bridge("render", str(FIXTURES / "17-gf-datasourceerror-values-null-redelivered.json"),
               "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "grafana, 3 alerts, 3 notifications" in r.stdout
    assert r.stdout.count("-> 13900139000 tpl_id 111 [suppressed (muted)]") == 3


def test_render_bad_payload(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    r = bridge("render", str(FIXTURES / "32-derived-alerts-not-a-list.json"), "--rules",
               str(rules), cwd=tmp_path)
    assert r.returncode == 1
    assert "alerts is not a list" in r.stderr


def test_send_test_sends_one_real_sms(tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    r = bridge("send-test", "13800138000", "--template", "firing", "--var",
               "summary=A#1&b=2 50% +1 中文", "--rules", str(rules), cwd=tmp_path,
               env={"JUHE_KEY": KEY, "JUHE_URL": fake_juhe.url})
    assert r.returncode == 0, r.stderr
    assert "sent: sid " in r.stdout
    [msg] = fake_juhe.messages
    assert msg["vars"] == {"name": "test", "host": "test", "summary": "A#1&b=2 50% +1 中文",
                           "at": "test"}
    assert KEY not in r.stdout + r.stderr


def test_send_test_reports_juhe_refusal(tmp_path: Path, fake_juhe: FakeJuhe) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    fake_juhe.valid_key = "other"
    r = bridge("send-test", "13800138000", "--template", "resolved", "--rules", str(rules),
               cwd=tmp_path, env={"JUHE_KEY": KEY, "JUHE_URL": fake_juhe.url})
    assert r.returncode == 1
    assert "ConfigError 10001" in r.stderr
    assert KEY not in r.stdout + r.stderr


def test_render_reads_bodies_as_the_webhook_does(tmp_path: Path) -> None:
    """Found by a trial run: render crashed on a lone surrogate and on deep nesting, which
    the webhook handles."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    odd = tmp_path / "odd.json"
    odd.write_bytes(b'{"alerts":[{"labels":{"alertname":"x\\ud800"},'
                    b'"startsAt":"2026-11-29T01:00:00Z"}]}')
    r = bridge("render", str(odd), "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "    name = x\ufffd" in r.stdout.splitlines()
    deep = tmp_path / "deep.json"
    deep.write_bytes(b"[" * 100000)
    r = bridge("render", str(deep), "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 1
    assert "body is not valid JSON: nested too deeply" in r.stderr


def test_render_says_why_an_alert_pages_nobody(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(SPEC_RULES)
    body = tmp_path / "info.json"
    body.write_text('{"version": "4", "alerts": [{"status": "firing", "fingerprint": "f1",'
                    ' "labels": {"alertname": "Info", "severity": "info", "team": "db"}}]}')
    r = bridge("render", str(body), "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"{body}: alertmanager, 1 alerts, 0 notifications, 1 matched no route"
    assert lines[1:4] == [
        "- firing Info [f1] pages nobody:",
        '    route db-critical: no match: severity="critical" against severity="info"',
        '    route everything-else: no match: severity=~"critical|warning" against '
        'severity="info"',
    ]


# -- issue 20 ------------------------------------------------------------------------------------

ISSUE20_RULES = """\
people: {zhang: "13800138000", li: "13800138001", wang: "13900139000", zhao: "13900139001"}
receivers: {primary: [zhang], secondary: [li]}
templates:
  page: {tpl_id: 111, vars: {name: "{{ labels.alertname }}", ack: "ACK"}}
  ok: {tpl_id: 333, vars: {name: "{{ labels.alertname }}"}}
routes:
  - name: db
    receiver: primary
    template: page
    resolved_template: ok
    escalate: [{after: 10s, receiver: secondary}]
"""


def test_check_refuses_ack_code_through_a_filter_and_duplicate_keys(tmp_path: Path) -> None:
    """Issue 20 items 1 and 2, as `bridge check` shows them."""
    f = tmp_path / "rules.yaml"
    f.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_code | upper }}")
                 + "routes:\n  - {receiver: secondary, template: page}\n", encoding="utf-8")
    r = bridge("check", str(f), cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"{f}: 2 problem(s):",
        "  line 12: key 'routes' is written twice in one mapping (first on line 6): the second "
        "would silently replace the first",
        "  templates.page.vars.ack: ack_code goes in as it is ({{ ack_code }}); the filter "
        "'upper' on it would send a code nobody can acknowledge with (line 1)",
    ]


def test_check_warns_and_counts_mobiles_per_receiver(tmp_path: Path) -> None:
    """Issue 20 items 3 and 7: no warning for a step within min_gap or a misspelt name, and
    "1 receivers (4 mobiles)" for one person."""
    f = tmp_path / "rules.yaml"
    f.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_url }}").replace(
        "receivers: {primary: [zhang], secondary: [li]}", "receivers: {primary: [zhang]}")
        .replace("receiver: secondary", "receiver: primary"), encoding="utf-8")
    r = bridge("check", str(f), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "OK: 1 routes, 1 receivers (1 mobiles), 0 schedules, 4 people" in r.stdout
    warnings = [line for line in r.stdout.splitlines() if line.startswith("WARNING")]
    assert warnings[1:] == [
        "WARNING: routes[0].escalate[0].after: 10s is shorter than min_gap (60s): the step pages "
        "the next person before the first could even be paged again; give the first person at "
        "least min_gap to acknowledge",
        "WARNING: templates.page.vars.ack: 'ack_url' is not a name an alert provides: it "
        "renders empty (provided: ack_code, annotations, common_labels, ends_at, escalation, "
        "external_url, fingerprint, generator_url, group_labels, labels, person, receiver, "
        "source, starts_at, status, values)",
    ]


def _body(status: str, starts: str = "2026-09-21T12:00:00Z") -> bytes:
    import json

    return json.dumps({"version": "4", "alerts": [{
        "status": status, "fingerprint": "fp1", "startsAt": starts,
        "labels": {"alertname": "DiskFull"}}]}).encode()


def test_render_shows_a_call_step_calling_those_already_paged_by_sms(tmp_path: Path) -> None:
    # a voice step calls every number of its receiver, also those the route paged by SMS
    # (docs/providers.md, Calls): render must not say "already paged: not again" for them
    rules = tmp_path / "rules.yaml"
    rules.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_code }}").replace(
        "  ok: {", "  call: {voice: {aliyun: {tts_code: TTS_1}}, vars: {name: x}}\n  ok: {")
        .replace("[{after: 10s, receiver: secondary}]",
                 "[{after: 10s, receiver: primary, template: call}, "
                 "{after: 20s, receiver: primary}]"), encoding="utf-8")
    (tmp_path / "firing.json").write_bytes(_body("firing"))
    r = bridge("render", "firing.json", "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    steps = [line for line in r.stdout.splitlines() if "escalates:" in line]
    assert steps == [
        "    escalates: step 1 after 10s -> primary: zhang 13800138000 (template call) unless "
        "acknowledged or resolved",
        "    escalates: step 2 after 20s -> primary: zhang 13800138000 (already paged: not "
        "again) (template page) unless acknowledged or resolved"]


def test_render_sends_a_resolved_alert_to_those_paged_for_its_episode(tmp_path: Path) -> None:
    """Issue 20 item 8: render sent a resolved alert to today's routes; intake sends it to
    whoever was paged for the stored episode."""
    from bridge.config import Settings
    from bridge.intake.service import Bridge
    from bridge.sources import parse_body

    rules = tmp_path / "rules.yaml"
    rules.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_code }}"), encoding="utf-8")
    db = tmp_path / "bridge.db"
    b = Bridge(Settings.from_env({"BRIDGE_RULES": str(rules), "BRIDGE_STORE": f"sqlite:///{db}"}))
    b.intake(parse_body("alertmanager", _body("firing")))
    [episode] = b.episodes("firing", 10)
    b.store.close()
    # today the route pages li: the resolved SMS still goes to zhang, who was paged
    rules.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_code }}").replace(
        "receiver: primary", "receiver: secondary"), encoding="utf-8")
    (tmp_path / "resolved.json").write_bytes(_body("resolved"))
    (tmp_path / "other.json").write_bytes(_body("resolved", "2026-09-22T12:00:00Z"))
    env = {"BRIDGE_STORE": f"sqlite:///{db}"}
    r = bridge("render", "resolved.json", "--rules", str(rules), cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1:4] == [
        "- route db: resolved DiskFull -> zhang 13800138000 tpl_id 333 [queued]",
        "    name = DiskFull",
        "    tpl_value: #name#=DiskFull",
    ]
    assert (f"- resolved DiskFull [fp1]: goes to those paged for its stored episode "
            f"{episode.id} (zhang 138****8000), as intake sends it") in r.stdout.splitlines()
    r = bridge("render", "other.json", "--rules", str(rules), cwd=tmp_path, env=env)
    assert r.stdout.splitlines()[1] == ("- route db: resolved DiskFull -> li 13800138001 "
                                        "tpl_id 333 [suppressed (not paged)]")
    assert ("- resolved DiskFull [fp1]: no episode of it is stored: nobody was paged for it, "
            "so intake sends no resolved SMS") in r.stdout.splitlines()
    r = bridge("render", "resolved.json", "--rules", str(rules), cwd=tmp_path,
               env={"BRIDGE_STORE": "sqlite:///none.db"})
    assert r.stdout.splitlines()[1] == ("- route db: resolved DiskFull -> li 13800138001 "
                                        "tpl_id 333 [queued]")
    assert ("- resolved DiskFull [fp1]: no store read (none.db does not exist): shown going to "
            "the routes as they are now; intake sends it only to the mobiles paged for its "
            "episode") in r.stdout.splitlines()
    assert not (tmp_path / "none.db").exists()


def test_render_prints_no_none_limits_and_whom_a_step_pages(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(ISSUE20_RULES.replace("ACK", "{{ ack_code }}"), encoding="utf-8")
    (tmp_path / "firing.json").write_bytes(_body("firing"))
    r = bridge("render", "firing.json", "--rules", str(rules), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "None" not in r.stdout
    assert ("    escalates: step 1 after 10s -> secondary: li 13800138001 (template page) unless "
            "acknowledged or resolved") in r.stdout.splitlines()
    assert r.stdout.splitlines()[-1] == (
        "(dedup, repeat_interval and limits are decided by the store when served: min_gap 60s, "
        "no per_mobile_per_hour limit, no per_day limit, storm off)")
