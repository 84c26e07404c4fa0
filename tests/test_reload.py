"""Live rules reload through the real ``bridge serve``: POST /-/reload and SIGHUP, in every
worker, refusing a bad version whole, under a steady stream of webhooks."""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from conftest import CATCH_ALL, wait_until
from fakejuhe import FakeJuhe

EXAMPLES = Path(__file__).parent.parent / "examples" / "rules.d"
OLD, NEW = "13800138000", "13700137000"


def metric(bridge: Any, name: str) -> float:
    text = bridge.get("/metrics").text
    m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
    assert m, text
    return float(m.group(1))


def alert(name: str) -> dict[str, Any]:
    return {"alerts": [{"status": "firing", "labels": {"alertname": name},
                        "startsAt": "2026-11-29T01:00:00Z"}]}


def test_reload_under_load_takes_effect_everywhere(make_bridge: Any, fake_juhe: FakeJuhe,
                                                   tmp_path: Path) -> None:
    bridge = make_bridge(CATCH_ALL)
    rules = tmp_path / "rules.yaml"
    answers: list[int] = []
    stop = threading.Event()
    sent: list[str] = []

    def stream() -> None:
        import requests

        i = 0
        while not stop.is_set() and i < 600:
            name = f"A{i:04d}"
            r = requests.post(bridge.base + "/webhook/alertmanager", json=alert(name),
                              headers={"Connection": "close"}, timeout=10)
            answers.append(r.status_code)
            sent.append(name)
            i += 1
            time.sleep(0.005)

    t = threading.Thread(target=stream)
    t.start()
    time.sleep(1.5)
    rules.write_text(CATCH_ALL.replace(OLD, NEW), encoding="utf-8")
    r = bridge.post("/-/reload", b"")
    assert r.status_code == 200, r.text
    reloaded_at = len(sent)
    # enough webhooks after the reload to reach both workers (a count, not a time: a loaded
    # machine sends fewer a second)
    assert wait_until(lambda: len(sent) > reloaded_at + 25, 30)
    stop.set()
    t.join(30)
    assert set(answers) == {200}
    total = len(sent)
    assert total > reloaded_at + 20
    msgs = fake_juhe.wait_for(total, timeout=30)
    time.sleep(0.5)
    msgs = fake_juhe.messages
    names = [m["vars"]["name"] for m in msgs]
    assert sorted(names) == sorted(sent)  # none lost, none doubled
    by_name = {m["vars"]["name"]: m["mobile"] for m in msgs}
    # everything posted after the reload answered goes to the new mobile, in both workers
    assert {by_name[n] for n in sent[reloaded_at + 2:]} == {NEW}
    assert by_name[sent[0]] == OLD
    assert metric(bridge, "bridge_rules_last_reload_successful") == 1.0


def test_bad_edit_is_refused_then_fixed(make_bridge: Any, fake_juhe: FakeJuhe,
                                        tmp_path: Path) -> None:
    bridge = make_bridge(CATCH_ALL)
    rules = tmp_path / "rules.yaml"
    t0 = metric(bridge, "bridge_rules_last_reload_success_timestamp_seconds")
    rules.write_text(CATCH_ALL.replace("receiver: oncall", "receiver: nobody"), encoding="utf-8")
    r = bridge.post("/-/reload", b"")
    assert r.status_code == 400
    assert r.json()["problems"] == ["routes[0].receiver: unknown receiver 'nobody'"]
    assert "error" in r.json()
    for _ in range(4):  # both workers
        assert metric(bridge, "bridge_rules_last_reload_successful") == 0.0
    assert bridge.get("/readyz").status_code == 200
    assert bridge.post("/webhook/alertmanager", alert("StillRouted")).json()["queued"] == 1
    [msg] = fake_juhe.wait_for(1, timeout=10)
    assert msg["mobile"] == OLD
    assert "rules reload refused" in bridge.log()
    rules.write_text(CATCH_ALL.replace(OLD, NEW), encoding="utf-8")
    assert bridge.post("/-/reload", b"").status_code == 200
    for _ in range(4):
        assert metric(bridge, "bridge_rules_last_reload_successful") == 1.0
    assert metric(bridge, "bridge_rules_last_reload_success_timestamp_seconds") > t0
    assert bridge.post("/webhook/alertmanager", alert("Fixed")).json()["queued"] == 1
    msgs = fake_juhe.wait_for(2, timeout=10)
    assert msgs[1]["mobile"] == NEW


def test_sighup_reloads_like_post(make_bridge: Any, fake_juhe: FakeJuhe, tmp_path: Path) -> None:
    bridge = make_bridge(CATCH_ALL)
    rules = tmp_path / "rules.yaml"
    rules.write_text("routes: [oops\n", encoding="utf-8")
    bridge.signal(signal.SIGHUP)
    assert wait_until(lambda: metric(bridge, "bridge_rules_last_reload_successful") == 0.0, 10)
    rules.write_text(CATCH_ALL.replace(OLD, NEW), encoding="utf-8")
    bridge.signal(signal.SIGHUP)
    assert wait_until(lambda: metric(bridge, "bridge_rules_last_reload_successful") == 1.0, 10)
    for i in range(4):
        assert bridge.post("/webhook/alertmanager", alert(f"H{i}"),
                           headers={"Connection": "close"}).json()["queued"] == 1
    msgs = fake_juhe.wait_for(4, timeout=10)
    assert {m["mobile"] for m in msgs} == {NEW}


def test_queued_sms_keeps_what_it_was_rendered_with(make_bridge: Any, fake_juhe: FakeJuhe,
                                                    tmp_path: Path) -> None:
    fake_juhe.down()
    bridge = make_bridge(CATCH_ALL)
    bridge.post("/webhook/alertmanager", alert("Before"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL.replace("tpl_id: 111", "tpl_id: 999"), encoding="utf-8")
    assert bridge.post("/-/reload", b"").status_code == 200
    # dedup survives the reload
    assert bridge.post("/webhook/alertmanager", alert("Before")).json()["suppressed"] == 1
    fake_juhe.up()
    [msg] = fake_juhe.wait_for(1, timeout=15)
    assert (msg["tpl_id"], msg["vars"]["name"]) == ("111", "Before")


def test_folder_rules_serve_and_reload(make_bridge: Any, fake_juhe: FakeJuhe,
                                       tmp_path: Path) -> None:
    folder = tmp_path / "rules.d"
    shutil.copytree(EXAMPLES, folder)
    base = folder / "00-base.yaml"
    base.write_text(base.read_text().replace("min_gap: 60s", "min_gap: 0s"))
    bridge = make_bridge(BRIDGE_RULES=str(folder))
    body = {"alerts": [{"labels": {"alertname": "Disk", "severity": "critical", "team": "db"},
                        "startsAt": "2026-11-29T01:00:00Z"}]}
    assert bridge.post("/webhook/alertmanager", body).json()["queued"] == 2
    (folder / "team-x.yaml").write_text("receivers: {dba: ['13700137000']}\n")
    r = bridge.post("/-/reload", b"")
    assert r.status_code == 400
    assert r.json()["problems"] == ["team-x.yaml: receivers.dba: already defined in team-db.yaml"]
    msgs = fake_juhe.wait_for(2, timeout=10)
    assert sorted(m["mobile"] for m in msgs) == ["13800138000", "13800138001"]


def test_a_worker_restart_keeps_the_shared_runtime(make_bridge: Any, fake_juhe: FakeJuhe,
                                                   tmp_path: Path) -> None:
    """Found by a trial run: a worker's exit unwound the master's stack in the fork and
    deleted the runtime folder (metrics, rules snapshot) under the other workers."""
    import os

    bridge = make_bridge(CATCH_ALL)
    assert bridge.proc is not None
    assert wait_until(lambda: len(bridge.web_pids()) == 2, 10)
    first = bridge.web_pids()
    os.kill(first[0], signal.SIGTERM)
    assert wait_until(lambda: len(set(bridge.web_pids()) - set(first)) == 1, 15)
    (tmp_path / "rules.yaml").write_text(CATCH_ALL.replace(OLD, NEW), encoding="utf-8")
    for _ in range(4):
        assert bridge.post("/-/reload", b"", headers={"Connection": "close"}).status_code == 200
        assert metric(bridge, "bridge_rules_last_reload_successful") == 1.0
    assert bridge.post("/webhook/alertmanager", alert("AfterRestart")).json()["queued"] == 1
    [msg] = fake_juhe.wait_for(1, timeout=10)
    assert msg["mobile"] == NEW


def test_concurrent_reloads_never_fail(make_bridge: Any, tmp_path: Path) -> None:
    """Found by a trial run: simultaneous reloads in two workers collided on the snapshot
    folder and answered 500."""
    import concurrent.futures

    import requests

    bridge = make_bridge(CATCH_ALL)

    def reload(_: int) -> int:
        r = requests.post(bridge.base + "/-/reload", headers={"Connection": "close"}, timeout=30)
        return r.status_code

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(reload, range(60)))
    assert codes == [200] * 60
    (tmp_path / "rules.yaml").unlink()
    r = bridge.post("/-/reload", b"")
    assert (r.status_code, r.json()["problems"]) == (400, [f"{tmp_path / 'rules.yaml'}: no such "
                                                           "file or folder"])
