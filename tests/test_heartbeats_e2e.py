"""Heartbeats through the real ``bridge serve`` (issue 22, docs/heartbeats.md), with
``expect: 30s``: beats (a Watchdog alert in a webhook, or ``/heartbeat/<name>``) page nobody;
silence pages the receiver once, on time, with the template's variables, as an episode with
ack codes, across two instances on one Redis; beats again resolve it once; a heartbeat that
never beat never pages; a restart while missing pages nobody again, and after a start nothing
counts as missing before ``expect`` has passed since it."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from conftest import free_port, wait_until
from fakejuhe import FakeJuhe
from support import stop_group
from test_alertmanager_real import AM_BIN, TOKEN, Alertmanager

from bridge.decide.heartbeats import HeartbeatRecord
from bridge.store import open_store
from bridge.store.base import Store

ZHANG, LI, WANG = "13800138000", "13800138001", "13900139000"
TZ = ZoneInfo("Asia/Shanghai")
RULES = f"""\
people: {{zhang: "{ZHANG}", li: "{LI}", wang: "{WANG}"}}
receivers: {{sre: [zhang, li], lead: [wang]}}
templates:
  page: {{tpl_id: 111, vars: {{name: "{{{{ labels.alertname }}}}"}}}}
  missing:
    tpl_id: 701
    vars: {{hb: "{{{{ name }}}}", expect: "{{{{ expect }}}}",
            seen: "{{{{ last_seen | localtime('%H:%M:%S') }}}}", ack: "{{{{ ack_code }}}}",
            alert: "{{{{ labels.alertname }}}}"}}
  back: {{tpl_id: 702, vars: {{hb: "{{{{ name }}}}", status: "{{{{ status }}}}"}}}}
limits: {{min_gap: 0s}}
routes: [{{receiver: lead, template: page}}]   # everything else pages wang
heartbeats:
  watchdog:
    matchers: ['alertname="Watchdog"']
    expect: 30s
    receiver: sre
    template: missing
    resolved_template: back
  backup:                        # beats only through /heartbeat/backup
    expect: 30s
    receiver: [sre]
    template: missing
"""
WATCHDOG = {"alerts": [{"status": "firing", "labels": {"alertname": "Watchdog",
                                                       "severity": "none"},
                        "startsAt": "2026-12-07T00:00:00Z"}]}
DISK = {"status": "firing", "labels": {"alertname": "DiskFull"},
        "startsAt": "2026-12-07T01:00:00Z"}


def heartbeats(bridge: Any) -> dict[str, dict[str, Any]]:
    r = bridge.get("/api/heartbeats")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["heartbeats"]}


def up_metric(bridge: Any) -> dict[str, float]:
    text = bridge.get("/metrics").text
    return {m[0]: float(m[1]) for m in re.findall(
        r'^bridge_heartbeat_up\{name="([^"]+)"\} (\S+)$', text, re.M)}


def sms(fake: FakeJuhe) -> list[tuple[str, str, dict[str, str]]]:
    return [(m["mobile"], m["tpl_id"], m["vars"]) for m in fake.messages]


def test_two_instances_on_redis_page_once_per_miss_on_time_and_resolve_once(
        make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str) -> None:
    a = make_bridge(RULES, BRIDGE_STORE=redis_url)
    b = make_bridge(RULES, BRIDGE_STORE=redis_url)
    assert {n: h["state"] for n, h in heartbeats(a).items()} == {"watchdog": "waiting",
                                                                 "backup": "waiting"}
    assert "heartbeats: 2; waiting for a first beat (nothing paged until then): watchdog, " \
           "backup" in a.log()
    # a beat in a webhook is not routed; the other alert of the webhook is
    r = a.post("/webhook/alertmanager", {"alerts": [*WATCHDOG["alerts"], DISK]})
    assert r.json() == {"alerts": 2, "queued": 1, "suppressed": 0, "held": 0, "heartbeats": 1}
    assert fake_juhe.wait_for(1, 10) and sms(fake_juhe) == [(WANG, "111", {"name": "DiskFull"})]
    for bridge in (b, a, b):  # Alertmanager sends the Watchdog again and again
        r = bridge.post("/webhook/alertmanager", WATCHDOG)
        assert r.json() == {"alerts": 1, "queued": 0, "suppressed": 0, "held": 0,
                            "heartbeats": 1}, r.text
        time.sleep(0.5)
    seen = heartbeats(a)["watchdog"]
    assert seen["state"] == "up" and seen["due_at"] == seen["last_seen"] + 30
    assert up_metric(b) == {"watchdog": 1.0}  # backup: waiting, absent
    # silence: one page per miss, within 10 s of expect passing, to sre (zhang and li)
    assert wait_until(lambda: len(fake_juhe.messages) >= 3, 45), sms(fake_juhe)
    time.sleep(3)  # a second page, were one wrongly decided, would arrive meanwhile
    pages = fake_juhe.messages[1:]
    assert sorted(m["mobile"] for m in pages) == [ZHANG, LI], sms(fake_juhe)
    for m in pages:
        assert seen["last_seen"] + 30 <= m["t"] <= seen["last_seen"] + 40, (m["t"], seen)
    store: Store = open_store(redis_url)
    try:
        [episode] = [e for e in store.episodes(limit=10) if e.alertname == "HeartbeatMissing"]
    finally:
        store.close()
    assert episode.labels == {"alertname": "HeartbeatMissing", "heartbeat": "watchdog"}
    assert episode.state == "firing" and episode.route == "heartbeat:watchdog"
    assert episode.starts_at == pytest.approx(seen["last_seen"] + 30, abs=1e-5)  # (in µs)
    codes = {p.mobile: p.code for p in episode.paged}
    local = datetime.fromtimestamp(seen["last_seen"], TZ).strftime("%H:%M:%S")
    assert sorted(sms(fake_juhe)[1:]) == sorted(
        (mobile, "701", {"hb": "watchdog", "expect": "30", "seen": local,
                         "ack": str(codes[mobile]), "alert": "HeartbeatMissing"})
        for mobile in (ZHANG, LI))
    missing = heartbeats(b)["watchdog"]
    assert (missing["state"], missing["missing_since"], missing["due_at"]) == (
        "missing", seen["last_seen"] + 30, None)
    assert up_metric(a) == {"watchdog": 0.0}
    assert "heartbeat watchdog missing since" in a.log() + b.log()
    # beats again: one resolved SMS to each of those paged, from either instance
    for bridge in (b, a):
        r = bridge.post("/webhook/alertmanager", WATCHDOG)
        assert r.json()["heartbeats"] == 1
    assert wait_until(lambda: len(fake_juhe.messages) >= 5, 15), sms(fake_juhe)
    time.sleep(2)
    assert sorted(sms(fake_juhe)[3:]) == sorted(
        (mobile, "702", {"hb": "watchdog", "status": "resolved"}) for mobile in (ZHANG, LI))
    assert heartbeats(a)["watchdog"]["state"] == "up" and up_metric(b) == {"watchdog": 1.0}
    store = open_store(redis_url)
    try:
        assert store.episode(episode.id).state == "resolved"  # type: ignore[union-attr]
    finally:
        store.close()
    assert all(h["state"] == "waiting" for n, h in heartbeats(a).items() if n == "backup")


def test_url_beats_auth_unknown_names_and_a_reload(make_bridge: Any, fake_juhe: FakeJuhe,
                                                   tmp_path: Path) -> None:
    bridge = make_bridge(RULES, BRIDGE_TOKEN="hb-token-0123456789")
    auth = {"Authorization": "Bearer hb-token-0123456789"}
    assert bridge.post("/heartbeat/backup", b"").status_code == 401
    assert bridge.get("/api/heartbeats").status_code == 401
    assert bridge.get("/heartbeat/backup", headers=auth).json() == {"heartbeat": "backup",
                                                                    "state": "up"}
    assert bridge.session.head(bridge.base + "/heartbeat/backup", headers=auth,
                               timeout=10).status_code == 200
    r = bridge.post("/heartbeat/backup", b"", headers=auth)
    assert (r.status_code, r.json()) == (200, {"heartbeat": "backup", "state": "up"})
    r = bridge.post("/heartbeat/nope", b"", headers=auth)
    assert (r.status_code, r.json()) == (404, {"error": "no heartbeat 'nope' in the rules"})
    beats = {h["name"]: h for h in bridge.get("/api/heartbeats",
                                              headers=auth).json()["heartbeats"]}
    assert {n: h["state"] for n, h in beats.items()} == {"watchdog": "waiting", "backup": "up"}
    # a reload keeps the state of a heartbeat that keeps its name; a renamed one is new
    (tmp_path / "rules.yaml").write_text(
        RULES.replace("  watchdog:", "  watchdog-2:").replace("expect: 30s\n    receiver: [sre]",
                                                              "expect: 1m\n    receiver: [sre]"),
        encoding="utf-8")
    assert bridge.post("/-/reload", b"", headers=auth).status_code == 200
    after = {h["name"]: h for h in bridge.get("/api/heartbeats",
                                              headers=auth).json()["heartbeats"]}
    assert {n: h["state"] for n, h in after.items()} == {"watchdog-2": "waiting", "backup": "up"}
    assert after["backup"]["last_seen"] == beats["backup"]["last_seen"]
    assert after["backup"]["expect"] == 60
    assert after["backup"]["due_at"] == beats["backup"]["due_at"] + 30


def test_a_restart_while_missing_pages_nobody_again_and_a_start_waits_expect(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    # what an earlier run left in the store: watchdog went missing (its page recorded and
    # the miss finished, as the timer does), backup last beat 100 s ago, still up
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    before = time.time() - 100
    store.beat(["watchdog", "backup"], before)
    claim = store.claim_heartbeat("watchdog", "miss", before, before + 30, before + 30, 60)
    assert claim is not None and store.finish_heartbeat(claim, before + 30)
    store.close()
    bridge = make_bridge(RULES)
    started = time.time()
    states = heartbeats(bridge)
    assert (states["watchdog"]["state"], states["backup"]["state"]) == ("missing", "up")
    assert states["backup"]["due_at"] >= started - 5  # not 30 s after its last beat
    page = bridge.get("/").text
    rows = dict(re.findall(r'data-heartbeat="([^"]+)">.*?<span class="state hb-(\w+)">',
                           page, re.S))
    assert rows == {"watchdog": "missing", "backup": "up"}, page
    check = subprocess.run([shutil.which("bridge") or "bridge", "check"], env=bridge.env,
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    assert re.search(r"^  heartbeat watchdog: 1 matchers, expect 30s -> sre, template missing, "
                     r"resolved back: missing since [-\d]{10} [:\d]{8}, "
                     r"last beat [-\d]{10} [:\d]{8}$",
                     check.stdout, re.M), check.stdout
    assert "  heartbeat backup: /heartbeat/backup only, expect 30s -> sre, template missing: " \
           "up, last beat" in check.stdout
    # backup pages once expect has passed since the start, not before; watchdog never again
    assert wait_until(lambda: len(fake_juhe.messages) >= 2, 45), sms(fake_juhe)
    time.sleep(3)
    assert sorted((m, v["hb"]) for m, _, v in sms(fake_juhe)) == [(ZHANG, "backup"),
                                                                  (LI, "backup")]
    assert all(m["t"] >= started + 29 for m in fake_juhe.messages), (
        [m["t"] - started for m in fake_juhe.messages])
    store = open_store(f"sqlite:///{tmp_path / 'bridge.db'}")
    try:
        assert store.heartbeats()["watchdog"] == HeartbeatRecord(
            "watchdog", before, "missing", before + 30, 0.0)
    finally:
        store.close()


# -- the real chain: Prometheus -> Alertmanager -> bridge --------------------------------------

PROMETHEUS_BIN = shutil.which("prometheus")
PROM_RULES = """\
groups:
  - name: meta
    interval: 1s
    rules:
      - alert: Watchdog
        expr: vector(1)
        labels: {severity: none}
        annotations: {summary: "always firing: the alerting pipeline works"}
"""
class Prometheus:
    """The real Prometheus (Debian's ``prometheus``) on a free loopback port, evaluating the
    Watchdog rule every second and sending to one Alertmanager; ``resend-delay`` 1 s, so that
    its alerts' ``endsAt`` is a few seconds ahead and Alertmanager sees them end soon after
    Prometheus stops."""

    def __init__(self, workdir: Path, alertmanager: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        (workdir / "rules.yml").write_text(PROM_RULES, encoding="utf-8")
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global: {evaluation_interval: 1s, scrape_interval: 15s}\n"
            f"rule_files: [{workdir / 'rules.yml'}]\n"
            "alerting:\n  alertmanagers:\n"
            f"    - static_configs: [{{targets: ['{alertmanager}']}}]\n", encoding="utf-8")
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert PROMETHEUS_BIN is not None
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [PROMETHEUS_BIN, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'prom-data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--rules.alert.resend-delay=1s"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.mark.skipif(PROMETHEUS_BIN is None or AM_BIN is None,
                    reason="prometheus / prometheus-alertmanager are not installed "
                           "(scripts/test installs them with apt-get)")
def test_real_prometheus_and_alertmanager_keep_it_up_and_a_stop_pages_on_time(
        make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(RULES, BRIDGE_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    # the recipe of docs/heartbeats.md with seconds for minutes: the Watchdog route sends at
    # once, and again every repeat_interval while it fires
    am = Alertmanager(tmp_path, bridge.base + "/webhook/alertmanager", group_wait="0s",
                      repeat_interval="2s")
    prom = Prometheus(tmp_path, f"127.0.0.1:{am.port}")

    def watchdog() -> dict[str, Any]:
        r = bridge.get("/api/heartbeats", headers=auth)
        return {h["name"]: h for h in r.json()["heartbeats"]}["watchdog"]

    try:
        am.start()
        prom.start()
        assert wait_until(lambda: watchdog()["state"] == "up", 30, 0.2), (
            f"prometheus:\n{prom.log()[-2000:]}\nalertmanager:\n{am.log()[-2000:]}")
        first = watchdog()["last_seen"]
        assert wait_until(lambda: watchdog()["last_seen"] > first, 10, 0.2)  # beats go on
        prom.stop()
        stopped = time.time()
        assert wait_until(lambda: len(fake_juhe.messages) >= 2, 45), (
            f"{sms(fake_juhe)}\nalertmanager:\n{am.log()[-2000:]}\nbridge:\n{bridge.log()[-3000:]}")
        time.sleep(2)
    finally:
        prom.stop()
        am.stop()
    assert sorted((m, t, v["hb"]) for m, t, v in sms(fake_juhe)) == [
        (ZHANG, "701", "watchdog"), (LI, "701", "watchdog")]
    late = [m["t"] - stopped for m in fake_juhe.messages]
    assert all(29 <= t <= 40 for t in late), late  # within expect + 10 s of the stop
    state = watchdog()
    assert (state["state"], state["missing_since"]) == ("missing", state["last_seen"] + 30)
