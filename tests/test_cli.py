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
