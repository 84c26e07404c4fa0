"""Delivery guarantees through the real ``bridge serve``: retries, permanent failures, crash
safety, repeat_interval and resolved pairing (docs/design.md, Delivery and Juhe)."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
from conftest import CATCH_ALL, KEY, wait_until
from fakejuhe import FakeJuhe

MOBILE = "13800138000"


def alert(name: str, status: str = "firing", starts: str = "2026-11-29T01:00:00Z",
          **labels: str) -> dict[str, Any]:
    return {"status": status, "labels": {"alertname": name, **labels},
            "annotations": {"summary": f"{name} summary"}, "startsAt": starts}


def body(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": list(alerts)}


def states(bridge: Any) -> list[tuple[str, str]]:
    items = bridge.get("/api/notifications").json()["notifications"]
    return sorted((i["alertname"], i["state"]) for i in items)


def wait_states(bridge: Any, expected: list[tuple[str, str]], timeout: float = 15) -> None:
    ok = wait_until(lambda: states(bridge) == expected, timeout, 0.1)
    assert ok, states(bridge)


def test_http_500_twice_then_delivered(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    fake_juhe.http500_next(2)
    bridge = make_bridge(CATCH_ALL)
    assert bridge.post("/webhook/alertmanager", body(alert("A"))).status_code == 200
    [msg] = fake_juhe.wait_for(1, timeout=15)
    assert msg["vars"]["name"] == "A"
    wait_states(bridge, [("A", "sent")])
    [item] = bridge.get("/api/notifications").json()["notifications"]
    assert item["attempts"] == 3
    assert fake_juhe.requests == 3
    time.sleep(0.5)
    assert len(fake_juhe.messages) == 1


def test_transient_code_twice_then_delivered(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    fake_juhe.fail_next(10014, 2)
    bridge = make_bridge(CATCH_ALL)
    bridge.post("/webhook/alertmanager", body(alert("B")))
    wait_states(bridge, [("B", "sent")])
    assert fake_juhe.requests == 3
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["B"]


def test_permanent_code_fails_after_one_request(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    fake_juhe.fail_next(205404, 1)
    bridge = make_bridge(CATCH_ALL)
    bridge.post("/webhook/alertmanager", body(alert("C")))
    wait_states(bridge, [("C", "failed")])
    [item] = bridge.get("/api/notifications?status=failed").json()["notifications"]
    assert "205404" in item["reason"]
    time.sleep(1.0)
    assert fake_juhe.requests == 1
    assert fake_juhe.messages == []
    assert bridge.get("/readyz").status_code == 200


def item_of(bridge: Any, name: str) -> dict[str, Any]:
    [item] = [i for i in bridge.get("/api/notifications").json()["notifications"]
              if i["alertname"] == name]
    return item


def test_wrong_key_stays_retrying_and_goes_out_once_the_key_is_fixed(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Issue 10.1: a configuration error is retried (reason: the error) and shows on /readyz
    until a send succeeds; the SMS goes out when the account is fixed, without a restart."""
    fake_juhe.valid_key = "another-key"
    bridge = make_bridge(CATCH_ALL)
    assert bridge.get("/readyz").status_code == 200
    assert bridge.post("/webhook/alertmanager", body(alert("D"))).json()["queued"] == 1
    assert wait_until(lambda: fake_juhe.requests >= 2, 15)  # tried again, not failed
    item = item_of(bridge, "D")
    assert item["state"] == "retrying" and "juhe config error 10001" in item["reason"]
    r = bridge.get("/readyz")
    assert r.status_code == 503
    assert "juhe configuration error" in r.json()["problems"][0]
    assert "10001" in r.json()["problems"][0]
    assert KEY not in r.text
    fake_juhe.valid_key = KEY  # the account is fixed
    wait_states(bridge, [("D", "sent")])
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["D"]
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 5)


@pytest.mark.parametrize("store", ["sqlite", "redis"])
def test_wrong_key_then_restart_with_the_right_key_and_resend_pages(
        make_bridge: Any, fake_juhe: FakeJuhe, store: str, request: pytest.FixtureRequest
) -> None:
    """Issue 10.1/10.2: with a wrong key the SMS ends failed after BRIDGE_RETRY_FOR; restarted
    with the right key, /readyz shows no stale error and the re-sent alert pages."""
    fake_juhe.valid_key = "the-right-key"
    env = {"BRIDGE_STORE": request.getfixturevalue("redis_url")} if store == "redis" else {}
    bridge = make_bridge(CATCH_ALL, BRIDGE_RETRY_FOR="1s", **env)
    assert bridge.post("/webhook/alertmanager", body(alert("W"))).json()["queued"] == 1
    wait_states(bridge, [("W", "failed")])
    assert fake_juhe.requests >= 2
    assert "10001" in item_of(bridge, "W")["reason"]
    assert bridge.get("/readyz").status_code == 503
    bridge.stop()
    bridge.env["JUHE_KEY"] = "the-right-key"
    bridge.start()
    r = bridge.get("/readyz")
    assert r.status_code == 200, r.text  # the note came from the old key
    answer = bridge.post("/webhook/alertmanager", body(alert("W")))
    assert answer.json() == {"alerts": 1, "queued": 1, "suppressed": 0, "held": 0}
    assert wait_until(lambda: len(fake_juhe.messages) == 1, 15)
    [msg] = fake_juhe.messages
    assert (msg["mobile"], msg["tpl_id"], msg["vars"]["name"]) == (MOBILE, "111", "W")
    time.sleep(0.5)
    assert len(fake_juhe.messages) == 1


def test_gives_up_after_retry_for(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    fake_juhe.http500_next(1000)
    bridge = make_bridge(CATCH_ALL, BRIDGE_RETRY_FOR="1s")
    bridge.post("/webhook/alertmanager", body(alert("F")))
    wait_states(bridge, [("F", "failed")])
    [item] = bridge.get("/api/notifications").json()["notifications"]
    assert item["reason"].startswith("gave up after")
    n = fake_juhe.requests
    time.sleep(1.0)
    assert fake_juhe.requests == n


def test_kill9_after_2xx_loses_nothing_and_sends_once(make_bridge: Any,
                                                      fake_juhe: FakeJuhe) -> None:
    fake_juhe.down()
    bridge = make_bridge(CATCH_ALL)
    r = bridge.post("/webhook/alertmanager", body(alert("G1"), alert("G2")))
    assert r.json()["queued"] == 2
    time.sleep(0.5)
    bridge.kill9()
    assert fake_juhe.messages == []
    fake_juhe.up()
    bridge.start()
    msgs = fake_juhe.wait_for(2, timeout=20)
    time.sleep(1.0)
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == ["G1", "G2"]
    assert len(msgs) == 2
    wait_states(bridge, [("G1", "sent"), ("G2", "sent")])


def test_resolved_pairs_with_paged_firing_only(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(CATCH_ALL)
    bridge.post("/webhook/alertmanager", body(alert("H")))
    fake_juhe.wait_for(1, timeout=10)
    r = bridge.post("/webhook/alertmanager", body(alert("H", "resolved"), alert("Never",
                                                                                "resolved")))
    assert r.json() == {"alerts": 2, "queued": 1, "suppressed": 1, "held": 0}
    msgs = fake_juhe.wait_for(2, timeout=10)
    assert [(m["tpl_id"], m["vars"]) for m in msgs] == [
        ("111", {"name": "H", "host": "-", "summary": "H summary", "at": "11-29 09:00"}),
        ("222", {"name": "H"})]
    again = bridge.post("/webhook/alertmanager", body(alert("H", "resolved")))
    assert again.json()["queued"] == 0
    time.sleep(0.8)
    assert len(fake_juhe.messages) == 2


def test_repeat_interval_pages_again(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    rules = CATCH_ALL.replace("    resolved_template: resolved\n",
                              "    resolved_template: resolved\n    repeat_interval: 2s\n")
    bridge = make_bridge(rules)
    assert bridge.post("/webhook/alertmanager", body(alert("R"))).json()["queued"] == 1
    assert bridge.post("/webhook/alertmanager", body(alert("R"))).json()["queued"] == 0
    time.sleep(2.2)
    assert bridge.post("/webhook/alertmanager", body(alert("R"))).json()["queued"] == 1
    fake_juhe.wait_for(2, timeout=10)
    time.sleep(0.5)
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["R", "R"]


def test_new_episode_pages_again(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(CATCH_ALL)
    assert bridge.post("/webhook/alertmanager", body(alert("S"))).json()["queued"] == 1
    later = alert("S", starts="2026-11-29T03:00:00Z")
    assert bridge.post("/webhook/alertmanager", body(later)).json()["queued"] == 1
    msgs = fake_juhe.wait_for(2, timeout=10)
    assert sorted(m["vars"]["at"] for m in msgs) == ["11-29 09:00", "11-29 11:00"]


def test_dry_run_sends_nothing_and_logs(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(CATCH_ALL, JUHE_KEY="")
    bridge.post("/webhook/alertmanager", body(alert("T")))
    wait_states(bridge, [("T", "sent")])
    assert fake_juhe.requests == 0
    log = bridge.log()
    assert "DRY-RUN" in log and "138****8000" in log
    assert MOBILE not in log


def test_sigterm_stops_cleanly(make_bridge: Any) -> None:
    bridge = make_bridge(CATCH_ALL)
    bridge.signal(signal.SIGTERM)
    assert bridge.proc.wait(20) == 0


def test_stale_firing_after_resolved_pages_nobody(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Found by a trial run: a firing body redelivered after its resolved paged FIRING again."""
    rules = CATCH_ALL.replace("    resolved_template: resolved\n",
                              "    resolved_template: resolved\n    repeat_interval: 1s\n")
    bridge = make_bridge(rules)
    assert bridge.post("/webhook/alertmanager", body(alert("Rep2"))).json()["queued"] == 1
    fake_juhe.wait_for(1, timeout=10)
    assert bridge.post("/webhook/alertmanager",
                       body(alert("Rep2", "resolved"))).json()["queued"] == 1
    fake_juhe.wait_for(2, timeout=10)
    time.sleep(1.2)
    again = bridge.post("/webhook/alertmanager", body(alert("Rep2")))
    assert again.json() == {"alerts": 1, "queued": 0, "suppressed": 1, "held": 0}
    # resolved first, then the firing of that episode: nobody is paged
    assert bridge.post("/webhook/alertmanager",
                       body(alert("OOO", "resolved"))).json()["suppressed"] == 1
    assert bridge.post("/webhook/alertmanager", body(alert("OOO"))).json()["suppressed"] == 1
    time.sleep(0.8)
    assert [(m["tpl_id"], m["vars"]["name"]) for m in fake_juhe.messages] == [
        ("111", "Rep2"), ("222", "Rep2")]


def test_sigterm_finishes_the_sms_in_hand(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Found by a trial run: a stop during a send left it to its 120 s lease, then re-sent."""
    fake_juhe.delay = 1.2  # under the 2 s client timeout of the tests
    bridge = make_bridge(CATCH_ALL)
    bridge.post("/webhook/alertmanager", body(alert("TermMid")))
    assert wait_until(lambda: fake_juhe.requests == 1, 5)
    bridge.signal(signal.SIGTERM)
    assert bridge.proc.wait(30) == 0
    fake_juhe.delay = 0.0
    bridge.start()
    wait_states(bridge, [("TermMid", "sent")], timeout=5)
    time.sleep(1.0)
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["TermMid"]


def test_readyz_forgets_a_config_error_at_reload_and_the_retry_brings_it_back(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Issue 10.2: after a rules reload /readyz shows no error the rules in force have not met;
    a persisting one returns with the next retry of the SMS (at least once a minute)."""
    fake_juhe.valid_key = "another-key"
    bridge = make_bridge(CATCH_ALL, BRIDGE_RETRY_BASE="3s")
    bridge.post("/webhook/alertmanager", body(alert("R")))
    assert wait_until(lambda: bridge.get("/readyz").status_code == 503, 10)
    before = fake_juhe.requests
    assert bridge.post("/-/reload", b"").status_code == 200
    r = bridge.get("/readyz")
    assert r.status_code == 200, r.text
    assert wait_until(lambda: fake_juhe.requests > before, 20)
    assert wait_until(lambda: bridge.get("/readyz").status_code == 503, 5)
    assert "10001" in bridge.get("/readyz").json()["problems"][0]


def test_juhe_config_note_is_tied_to_the_configuration_and_the_time() -> None:
    from bridge.deliver.deliverer import juhe_config_note

    note = '{"reason": "juhe config error 10001: x", "config": "abc", "at": 100.0}'
    assert juhe_config_note(note, "abc", 99.0) == "juhe config error 10001: x"
    assert juhe_config_note(note, "abc", 100.0) == "juhe config error 10001: x"
    assert juhe_config_note(note, "abc", 100.5) is None  # from before the start or reload
    assert juhe_config_note(note, "other", 0.0) is None  # another key or URL met it
    assert juhe_config_note(None, "abc", 0.0) is None
    assert juhe_config_note("plain text from an older version", "abc", 0.0) is None
