"""Hardening: slow clients, bind address, start-up refusals, log escaping, template budgets,
gunicorn's own error pages, a full disk (issue 10)."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import CATCH_ALL, fixture_bytes

# -- slow or idle clients (SPEC "HTTP endpoints") ------------------------------------------------

PARTIAL = [
    b"POST /webhook/alertmanager HT",                                    # request line
    b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Ty",      # headers
    b"POST /webhook/alertmanager HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    b"Content-Length: 500\r\n\r\n{\"alerts\": [",                       # body
]


def test_sixteen_stalled_connections_do_not_stall_intake(make_bridge: Any) -> None:
    bp = make_bridge(CATCH_ALL)
    body = fixture_bytes("01-am-two-firing-nanosecond.json")
    stalled = []
    try:
        for i in range(16):
            s = socket.create_connection(("127.0.0.1", bp.port), timeout=5)
            s.sendall(PARTIAL[i % len(PARTIAL)])
            stalled.append(s)
        time.sleep(1.5)  # every stalled connection reached a worker and blocks there
        for _ in range(3):
            t0 = time.monotonic()
            r = requests.post(bp.base + "/webhook/alertmanager", data=body,
                              headers={"Content-Type": "application/json"}, timeout=10)
            took = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert took < 1.0, f"answered after {took:.2f}s"
        assert r.json()["alerts"] == 2
    finally:
        for s in stalled:
            s.close()


def test_bind_address_from_env_and_option(make_bridge: Any) -> None:
    bp = make_bridge(CATCH_ALL, BRIDGE_BIND="127.0.0.1")
    assert "listening on 127.0.0.1:" in bp.log() or "bind: 127.0.0.1" in bp.log()
    assert requests.get(bp.base + "/healthz", timeout=5).status_code == 200
    bp.stop()
    bp2 = make_bridge(CATCH_ALL, BRIDGE_BIND="0.0.0.0", start=False)
    bp2.env["BRIDGE_BIND"] = "0.0.0.0"
    bp2.command_args = ["--bind", "127.0.0.2"]
    bp2.start(wait=False)
    ok = False
    end = time.monotonic() + 30
    while time.monotonic() < end and not ok:
        try:
            ok = requests.get(f"http://127.0.0.2:{bp2.port}/healthz", timeout=1).ok
        except requests.RequestException:
            time.sleep(0.1)
    assert ok, bp2.log()[-2000:]
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{bp2.port}/healthz", timeout=2)
    assert "bind: 127.0.0.2:" in bp2.log()


# -- start-up refusals ----------------------------------------------------------------------------

def _serve_refused(make_bridge: Any, **env: str) -> str:
    bp = make_bridge(CATCH_ALL, start=False, **env)
    bp.start(wait=False)
    assert bp.proc is not None
    assert bp.proc.wait(60) != 0
    return bp.log()


def test_sqlite_path_in_a_missing_folder_is_refused(make_bridge: Any, tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir"
    log = _serve_refused(make_bridge, BRIDGE_STORE=f"sqlite:///{missing}/x.db")
    assert f"BRIDGE_STORE: the folder {missing} does not exist" in log
    assert not missing.parent.exists()


def test_retention_shorter_than_repeat_interval_is_refused(make_bridge: Any,
                                                           tmp_path: Path) -> None:
    log = _serve_refused(make_bridge, BRIDGE_RETENTION="1s")
    assert ("routes[0] (everything): repeat_interval 4h is longer than BRIDGE_RETENTION 1s"
            in log), log[-2000:]
    assert "Traceback" not in log


def test_retention_checked_on_reload(make_bridge: Any, tmp_path: Path) -> None:
    bp = make_bridge(CATCH_ALL.replace("    resolved_template: resolved\n",
                                       "    resolved_template: resolved\n"
                                       "    repeat_interval: 1h\n"), BRIDGE_RETENTION="2h")
    (tmp_path / "rules.yaml").write_text(CATCH_ALL.replace(
        "    resolved_template: resolved\n",
        "    resolved_template: resolved\n    repeat_interval: 3h\n"), encoding="utf-8")
    r = bp.post("/-/reload", b"")
    assert r.status_code == 400
    assert r.json()["problems"] == [
        "routes[0] (everything): repeat_interval 3h is longer than BRIDGE_RETENTION 2h: its "
        "dedup records would be pruned first and the alert paged again; raise "
        "BRIDGE_RETENTION or shorten repeat_interval"]


# -- hostile characters in the text log -----------------------------------------------------------

def test_text_log_escapes_nul_and_bidi_from_alert_text(make_bridge: Any, fake_juhe: Any) -> None:
    bp = make_bridge(CATCH_ALL)
    body = {"version": "4", "status": "firing", "receiver": "sms", "alerts": [
        {"status": "firing", "labels": {"alertname": "Disk\u0000Full\u202eevil\u0007"},
         "annotations": {}, "startsAt": "2026-01-01T00:00:00Z", "fingerprint": "aa01"}]}
    r = bp.post("/webhook/alertmanager", body)
    assert r.json()["queued"] == 1
    raw = bp.log_path.read_bytes()
    assert b"Disk\\u0000Full\\u202eevil\\u0007" in raw
    assert b"\x00" not in raw and "\u202e".encode() not in raw and b"\x07" not in raw
