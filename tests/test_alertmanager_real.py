"""The real Prometheus Alertmanager (Debian's ``prometheus-alertmanager``) in front of the real
``bridge serve``: alerts posted to Alertmanager's API reach the fake Juhe as exactly one firing
SMS and one resolved SMS per alert, although Alertmanager sends the group again and again."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import requests
from conftest import CATCH_ALL, free_port, wait_until
from fakejuhe import FakeJuhe
from support import stop_group

AM_BIN = shutil.which("prometheus-alertmanager")
TOKEN = "am-token-7c1e94f2b0"
MOBILE = "13800138000"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

pytestmark = pytest.mark.skipif(
    AM_BIN is None,
    reason="prometheus-alertmanager is not installed (scripts/test installs it with apt-get)")

# One group for every alert (no group_by), flushed every second: each change of the group makes
# Alertmanager send the whole group again, alerts already paged included.
AM_CONFIG = """\
route:
  receiver: bridge
  group_wait: {group_wait}
  group_interval: 1s
  repeat_interval: {repeat_interval}
receivers:
  - name: bridge
    webhook_configs:
      - url: {url}
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"""


class Alertmanager:
    """The real Alertmanager on a free loopback port, clustering off, state in ``workdir``."""

    def __init__(self, workdir: Path, webhook_url: str, *, group_wait: str = "1s",
                 repeat_interval: str = "1h") -> None:
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "alertmanager.yml"
        self.config.write_text(AM_CONFIG.format(url=webhook_url, token=TOKEN,
                                                group_wait=group_wait,
                                                repeat_interval=repeat_interval),
                               encoding="utf-8")
        self.log_path = workdir / "alertmanager.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        assert AM_BIN is not None
        storage = self.workdir / "am-data"
        storage.mkdir()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [AM_BIN, f"--config.file={self.config}", f"--storage.path={storage}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=",
                 f"--web.external-url={self.base}"],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        ok = wait_until(self._ready, 20, 0.1)
        assert ok, f"alertmanager did not start:\n{self.log()[-3000:]}"

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"alertmanager exited {self.proc.returncode}:\n"
                                 f"{self.log()[-3000:]}")
        try:
            return requests.get(self.base + "/-/ready", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_group(self.proc)
        self.proc = None

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        r = requests.post(self.base + "/api/v2/alerts", json=alerts, timeout=10)
        assert r.status_code == 200, r.text

    def alerts(self) -> list[dict[str, Any]]:
        r = requests.get(self.base + "/api/v2/alerts", timeout=10)
        assert r.status_code == 200, r.text
        return list(r.json())

    def webhook_metric(self, name: str) -> float:
        """``name{integration="webhook"}`` from Alertmanager's own /metrics."""
        text = requests.get(self.base + "/metrics", timeout=10).text
        m = re.search(rf'^{name}\{{integration="webhook"\}} (\S+)$', text, re.M)
        assert m, f"{name} not in alertmanager's /metrics"
        return float(m.group(1))


@pytest.fixture
def alertmanager_and_bridge(tmp_path: Path, make_bridge: Any) -> Iterator[tuple[Alertmanager,
                                                                              Any]]:
    bridge = make_bridge(CATCH_ALL, BRIDGE_TOKEN=TOKEN)
    am = Alertmanager(tmp_path, bridge.base + "/webhook/alertmanager")
    try:
        am.start()
        yield am, bridge
    finally:
        am.stop()


def am_alert(name: str, instance: str, summary: str, starts: datetime,
             ends: datetime | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {
        "labels": {"alertname": name, "instance": instance, "severity": "critical"},
        "annotations": {"summary": summary},
        "startsAt": starts.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if ends is not None:
        alert["endsAt"] = ends.strftime("%Y-%m-%dT%H:%M:%SZ")
    return alert


def sms(msg: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    return msg["mobile"], msg["tpl_id"], msg["vars"]


def wait_sms(fake: FakeJuhe, n: int, what: str, am: Alertmanager, bridge: Any,
             timeout: float = 15) -> list[dict[str, Any]]:
    msgs = fake.wait_for(n, timeout=timeout)
    assert len(msgs) >= n, (f"{what}: {len(msgs)} SMS after {timeout}s, expected {n}\n"
                            f"alertmanager:\n{am.log()[-2000:]}\nbridge:\n{bridge.log()[-2000:]}")
    return msgs


def test_real_alertmanager_pages_once_and_resolves_once(
        alertmanager_and_bridge: tuple[Alertmanager, Any], fake_juhe: FakeJuhe) -> None:
    am, bridge = alertmanager_and_bridge
    starts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    at = starts.astimezone(ZoneInfo("Asia/Shanghai")).strftime("%m-%d %H:%M")
    disk = am_alert("DiskFull", "db-1:9100", "disk / is 97% full", starts)
    cpu = am_alert("HighCPU", "web-2:9100", "cpu at 99% & rising", starts)

    # 1. the first alert: one firing SMS
    am.post_alerts([disk])
    msgs = wait_sms(fake_juhe, 1, "first alert", am, bridge)
    assert [sms(m) for m in msgs] == [
        (MOBILE, "111", {"name": "DiskFull", "host": "db-1:9100",
                         "summary": "disk / is 97% full", "at": at})]

    # 2. a second alert joins the group: Alertmanager sends [DiskFull, HighCPU]; only HighCPU
    #    is new to the bridge
    am.post_alerts([cpu])
    msgs = wait_sms(fake_juhe, 2, "second alert", am, bridge)
    assert sms(msgs[1]) == (MOBILE, "111", {"name": "HighCPU", "host": "web-2:9100",
                                            "summary": "cpu at 99% & rising", "at": at})

    # 3. both alerts re-posted as Prometheus does on every evaluation, several group intervals
    #    pass: nobody is paged again
    for _ in range(3):
        am.post_alerts([disk, cpu])
        time.sleep(1.2)
    assert len(fake_juhe.messages) == 2, [m["vars"] for m in fake_juhe.messages]
    assert am.webhook_metric("alertmanager_notifications_total") >= 2
    fingerprints = {a["labels"]["alertname"]: a["fingerprint"] for a in am.alerts()}
    assert set(fingerprints) == {"DiskFull", "HighCPU"}

    # 4. DiskFull resolves: Alertmanager sends [DiskFull resolved, HighCPU firing again]
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    am.post_alerts([am_alert("DiskFull", "db-1:9100", "disk / is 97% full", starts, past)])
    msgs = wait_sms(fake_juhe, 3, "DiskFull resolved", am, bridge)
    assert sms(msgs[2]) == (MOBILE, "222", {"name": "DiskFull"})

    # 5. HighCPU resolves (and DiskFull again, as a sender that repeats itself would)
    am.post_alerts([am_alert("DiskFull", "db-1:9100", "disk / is 97% full", starts, past),
                    am_alert("HighCPU", "web-2:9100", "cpu at 99% & rising", starts, past)])
    msgs = wait_sms(fake_juhe, 4, "HighCPU resolved", am, bridge)
    assert sms(msgs[3]) == (MOBILE, "222", {"name": "HighCPU"})

    # 6. several more group intervals: exactly the four SMS, each sent once
    time.sleep(3)
    msgs = fake_juhe.messages
    assert sorted((m["tpl_id"], m["vars"]["name"]) for m in msgs) == [
        ("111", "DiskFull"), ("111", "HighCPU"), ("222", "DiskFull"), ("222", "HighCPU")]
    assert all(m["mobile"] == MOBILE for m in msgs)

    # Alertmanager really sent the group at least four times, always with the token
    assert am.webhook_metric("alertmanager_notifications_total") >= 4
    assert am.webhook_metric("alertmanager_notifications_failed_total") == 0
    assert "status code 401" not in am.log()

    # the bridge's own record: four notifications, all sent, Alertmanager's fingerprints
    assert bridge.get("/api/notifications").status_code == 401
    r = bridge.get("/api/notifications", headers=AUTH)
    assert r.status_code == 200, r.text
    items = [n for n in r.json()["notifications"] if n["state"] != "suppressed"]
    assert sorted((n["alertname"], n["status"], n["state"], n["tpl_id"]) for n in items) == [
        ("DiskFull", "firing", "sent", 111), ("DiskFull", "resolved", "sent", 222),
        ("HighCPU", "firing", "sent", 111), ("HighCPU", "resolved", "sent", 222)]
    assert {n["mobile"] for n in items} == {"138****8000"}
    assert {n["route"] for n in items} == {"everything"}
    assert {(n["alertname"], n["fingerprint"]) for n in items} == set(fingerprints.items())
    sids = {m["sid"] for m in msgs}
    assert {str(n["sid"]) for n in items} == sids
    sent = bridge.get("/api/notifications", params={"status": "sent"}, headers=AUTH).json()
    assert len(sent["notifications"]) == 4
