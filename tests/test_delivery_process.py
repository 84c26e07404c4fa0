"""Issue 14: ``bridge serve`` delivers in one process beside the web workers, supervised by the
master: started after the workers, started again when it dies, stopped with them, following a
SIGHUP's rules; ``--no-delivery`` runs none."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from conftest import CATCH_ALL, ROOT, alive, wait_until
from fakejuhe import FakeJuhe
from test_escalation_e2e import LI, WANG, ZHANG
from test_escalation_e2e import alert as critical
from test_escalation_e2e import rules as escalation_rules

from bridge.deliveryproc import Backoff, describe_status

MOBILE = "13800138000"


def alert(*names: str) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": n}, "startsAt": "2026-11-29T01:00:00Z"}
        for n in names]}


def states(bridge: Any) -> list[tuple[str, str]]:
    items = bridge.get("/api/notifications").json()["notifications"]
    return sorted((i["alertname"], i["state"]) for i in items)


def one_delivery_pid(bridge: Any) -> int:
    assert wait_until(lambda: len(bridge.delivery_pids()) == 1, 10), bridge.children()
    [pid] = bridge.delivery_pids()
    return int(pid)


def test_one_delivery_process_beside_the_workers_sends_each_sms_once(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    bridge = make_bridge(CATCH_ALL)
    assert wait_until(lambda: len(bridge.children()) == 3, 10), bridge.children()
    pid = one_delivery_pid(bridge)
    assert len(bridge.web_pids()) == 2 and pid not in bridge.web_pids()
    assert f"delivery: runs in process {pid} (beside the web workers)" in bridge.log()
    names = [f"P{i}" for i in range(6)]
    for n in names[:3]:
        assert bridge.post("/webhook/alertmanager", alert(n)).json()["queued"] == 1
    assert bridge.post("/webhook/alertmanager", alert(*names[3:])).json()["queued"] == 3
    fake_juhe.wait_for(6, timeout=15)
    time.sleep(1.0)  # one more, were any sent twice, would arrive meanwhile
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == names
    assert {m["mobile"] for m in fake_juhe.messages} == {MOBILE}
    assert states(bridge) == [(n, "sent") for n in names]
    # every send from the delivery process, none from a web worker
    senders = re.findall(r"\[(\d+)\] bridge\.delivery: sent to ", bridge.log())
    assert senders == [str(pid)] * 6
    # its counters on the web side's /metrics
    metrics = bridge.get("/metrics").text
    assert re.search(r'^bridge_deliveries_total\{outcome="sent"\} 6\.0$', metrics, re.M), metrics
    assert bridge.delivery_pids() == [pid]


def test_kill9_of_the_delivery_process_starts_a_new_one_and_sends_each_once(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Killed while its SMS wait for a retry (Juhe unreachable, none in hand): a new process
    starts within the backoff (1 s) and sends each of them once when Juhe is back."""
    fake_juhe.down()
    bridge = make_bridge(CATCH_ALL, BRIDGE_RETRY_BASE="2s")
    old = one_delivery_pid(bridge)
    assert bridge.post("/webhook/alertmanager", alert("K1", "K2", "K3")).json()["queued"] == 3
    assert wait_until(lambda: states(bridge) == [("K1", "retrying"), ("K2", "retrying"),
                                                 ("K3", "retrying")], 10), states(bridge)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: bridge.delivery_pids() not in ([], [old]), 10), bridge.children()
    [new] = bridge.delivery_pids()
    log = bridge.log()
    assert f"delivery process {old} died (killed by SIGKILL)" in log
    assert f"delivery: restarted in process {new}" in log
    assert not alive(old)
    fake_juhe.up()
    fake_juhe.wait_for(3, timeout=20)
    time.sleep(1.0)
    assert sorted(m["vars"]["name"] for m in fake_juhe.messages) == ["K1", "K2", "K3"]
    assert states(bridge) == [("K1", "sent"), ("K2", "sent"), ("K3", "sent")]
    assert re.findall(r"\[(\d+)\] bridge\.delivery: sent to ", bridge.log()) == [str(new)] * 3
    assert len(bridge.web_pids()) == 2


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_sigterm_stops_workers_and_delivery_after_the_sms_in_hand(
        make_bridge: Any, fake_juhe: FakeJuhe, sig: int) -> None:
    """SIGTERM (gunicorn's graceful stop) or SIGINT (its quick stop of the web workers): the
    delivery process finishes the SMS in hand and marks it, then everything is gone."""
    fake_juhe.delay = 1.5  # under the 2 s client timeout of the tests
    bridge = make_bridge(CATCH_ALL)
    assert wait_until(lambda: len(bridge.children()) == 3, 10), bridge.children()
    pids = [*bridge.children(), bridge.proc.pid]
    delivery = one_delivery_pid(bridge)
    bridge.post("/webhook/alertmanager", alert("InHand"))
    assert wait_until(lambda: fake_juhe.requests == 1, 5)
    t0 = time.monotonic()
    bridge.signal(sig)
    assert bridge.proc.wait(15) == 0
    assert time.monotonic() - t0 < 10
    assert wait_until(lambda: not any(alive(p) for p in pids), 5)
    log = bridge.log()
    assert f"delivery process {delivery} stopped (exit code 0)" in log
    assert "did not stop in time" not in log
    fake_juhe.delay = 0.0
    bridge.start()
    assert states(bridge) == [("InHand", "sent")]  # marked before the stop, not left to a lease
    time.sleep(1.0)
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["InHand"]


def test_sigterm_as_the_workers_boot_stops_at_once(make_bridge: Any) -> None:
    """Found in this change: a SIGTERM the master passed on to a worker it had just forked was
    caught by the worker's copy of the master's handler and lost, so ``bridge serve`` took
    graceful_timeout (20 s) to stop (the 20 s ``proc.wait`` timeout seen once in
    ``test_sigterm_stops_cleanly``). It hit about one stop in eight sent as the workers boot on
    a loaded machine, rarely on an idle one: this repeats that stop, a race check, not a proof.
    Forks now happen with the stop signals blocked."""
    bridge = make_bridge(CATCH_ALL, start=False, WEB_CONCURRENCY="3")
    for _ in range(6):
        bridge.start(wait=False)
        assert wait_until(lambda: "Booting worker with pid" in bridge.log(), 20, 0.002)
        bridge.signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert bridge.proc.wait(15) == 0
        assert time.monotonic() - t0 < 8, bridge.log()[-3000:]
        bridge.log_path.write_text("")


def test_sigquit_kills_the_delivery_process_at_once(make_bridge: Any,
                                                    fake_juhe: FakeJuhe) -> None:
    fake_juhe.delay = 1.8
    bridge = make_bridge(CATCH_ALL, BRIDGE_JUHE_TIMEOUT="10s")
    assert wait_until(lambda: len(bridge.children()) == 3, 10), bridge.children()
    pids = [*bridge.children(), bridge.proc.pid]
    delivery = one_delivery_pid(bridge)
    bridge.post("/webhook/alertmanager", alert("Quit"))
    assert wait_until(lambda: fake_juhe.requests == 1, 5)
    bridge.signal(signal.SIGQUIT)
    assert bridge.proc.wait(10) == 0
    assert wait_until(lambda: not any(alive(p) for p in pids), 5)
    assert f"delivery process {delivery} stopped (killed by SIGKILL)" in bridge.log()


def test_kill9_of_the_master_alone_stops_the_delivery_process(make_bridge: Any) -> None:
    bridge = make_bridge(CATCH_ALL)
    delivery = one_delivery_pid(bridge)
    os.kill(bridge.proc.pid, signal.SIGKILL)
    bridge.proc.wait(5)
    assert wait_until(lambda: not alive(delivery), 10)
    assert f"the master (pid {bridge.proc.pid}) is gone; stopping" in bridge.log()


def test_sighup_rules_are_what_the_delivery_process_uses(make_bridge: Any, fake_juhe: FakeJuhe,
                                                          tmp_path: Any) -> None:
    """The escalation step runs in the delivery process: after a SIGHUP that gave its receiver
    another person, the step pages that person. The delivery process survives the SIGHUP."""
    before = escalation_rules(steps="[{after: 4s, receiver: secondary}]")
    bridge = make_bridge(before)
    delivery = one_delivery_pid(bridge)
    assert bridge.post("/webhook/alertmanager", critical("Hup")).json()["queued"] == 1
    assert wait_until(lambda: len(fake_juhe.messages) == 1, 10)
    after = before.replace("secondary: [li]", "secondary: [wang]")
    assert after != before
    (tmp_path / "rules.yaml").write_text(after, encoding="utf-8")
    os.kill(delivery, signal.SIGHUP)  # as a terminal's hang-up would, to the whole group
    bridge.signal(signal.SIGHUP)
    assert wait_until(lambda: f"[{delivery}] bridge.reload: rules reloaded in pid {delivery}"
                      in bridge.log(), 10), bridge.log()[-3000:]
    assert wait_until(lambda: len(fake_juhe.messages) == 2, 15)
    time.sleep(1.0)
    assert [(m["mobile"], m["vars"]["esc"]) for m in fake_juhe.messages] == [(ZHANG, "0"),
                                                                             (WANG, "1")]
    assert "via secondary: li" not in bridge.log() and LI not in bridge.log()
    assert bridge.delivery_pids() == [delivery]
    assert re.findall(r"\[(\d+)\] bridge\.delivery: sent to ", bridge.log()) == [str(delivery)] * 2
    bridge.signal(signal.SIGTERM)  # once hung here: see the test below
    assert bridge.proc.wait(15) == 0
    assert f"delivery process {delivery} stopped (exit code 0)" in bridge.log()


def test_a_stop_signal_while_the_main_thread_holds_the_stop_lock_still_stops() -> None:
    """Found in this change: the delivery process set its stop event in a SIGTERM handler,
    which runs in the main thread, maybe while that thread holds the event's lock inside
    ``stop.wait()``: it waited for it forever and ``bridge serve`` did not stop (nor
    ``bridge worker``, which did the same). The signal is now taken by a thread of its own."""
    code = textwrap.dedent("""\
        import os, signal, threading, time
        import logging
        from bridge.deliveryproc import stop_on_signals
        logging.basicConfig(level=logging.INFO)
        stop = threading.Event()
        stop_on_signals(stop)
        with stop._cond:  # what stop.wait() holds between its checks
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        print("stopped" if stop.wait(5) else "running")
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=20, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert (r.returncode, r.stdout) == (0, "stopped\n"), r.stderr
    assert "SIGTERM: delivery stops after the SMS in hand" in r.stderr


def test_no_delivery_runs_no_delivery_process(make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    serve = make_bridge(CATCH_ALL, start=False)
    serve.command_args = ["--no-delivery"]
    serve.start()
    assert wait_until(lambda: len(serve.web_pids()) == 2, 10)
    assert serve.post("/webhook/alertmanager", alert("NoDelivery")).json()["queued"] == 1
    time.sleep(1.5)
    assert serve.delivery_pids() == []
    assert fake_juhe.requests == 0
    assert "delivery: off (--no-delivery): no delivery process; run `bridge worker`" in \
        serve.log()
    assert "delivery: runs in process" not in serve.log()
    worker = make_bridge(CATCH_ALL, command="worker")
    [msg] = fake_juhe.wait_for(1, timeout=20)
    assert msg["vars"]["name"] == "NoDelivery"
    time.sleep(0.5)
    assert len(fake_juhe.messages) == 1
    worker.stop()
    assert "delivery worker started" in worker.log()


def test_backoff_doubles_to_its_cap_and_resets_after_a_healthy_run() -> None:
    b = Backoff(first=1.0, most=30.0, healthy=60.0)
    assert [b.after_death(0.1) for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.after_death(61.0) == 1.0
    assert b.after_death(0.5) == 2.0


def test_exit_status_in_words() -> None:
    assert describe_status(None) == "exit status unknown"
    assert describe_status(0) == "exit code 0"
    assert describe_status(3 << 8) == "exit code 3"
    assert describe_status(signal.SIGKILL) == "killed by SIGKILL"



def pause_and_resume(pid: int) -> None:
    """``kill -STOP``, then ``kill -CONT`` after longer than the signal thread's 1 s wait (as
    ``docker pause``/``unpause``, a debugger or Ctrl-Z + ``fg`` do)."""
    os.kill(pid, signal.SIGSTOP)
    time.sleep(1.5)
    os.kill(pid, signal.SIGCONT)
    time.sleep(0.5)


@pytest.mark.parametrize("how", ["sigterm", "kill9_master"])
def test_a_paused_and_resumed_delivery_process_still_delivers_and_stops(
        make_bridge: Any, fake_juhe: FakeJuhe, how: str) -> None:
    """Issue 22: one pause and resume crashed the delivery process's signal thread
    (``ValueError: 1263049536 is not a valid Signals``: CPython's ``sigtimedwait`` answers an
    uninitialised siginfo when a SIGCONT interrupts it after its timeout); after that SIGTERM
    to the master waited 20 s and SIGKILLed it, and a ``kill -9`` of the master left it running
    under PID 1."""
    bridge = make_bridge(CATCH_ALL)
    delivery = one_delivery_pid(bridge)
    pause_and_resume(delivery)
    assert bridge.post("/webhook/alertmanager", alert("Resumed")).json()["queued"] == 1
    fake_juhe.wait_for(1, timeout=10)
    assert bridge.delivery_pids() == [delivery]
    t0 = time.monotonic()
    if how == "sigterm":
        bridge.signal(signal.SIGTERM)
        assert bridge.proc.wait(15) == 0
        assert f"delivery process {delivery} stopped (exit code 0)" in bridge.log()
    else:
        os.kill(bridge.proc.pid, signal.SIGKILL)
        bridge.proc.wait(5)
        assert wait_until(lambda: not alive(delivery), 10)
        assert f"the master (pid {bridge.proc.pid}) is gone; stopping" in bridge.log()
    assert time.monotonic() - t0 < 5
    assert not alive(delivery)
    log = bridge.log()
    assert "Traceback" not in log and "did not stop in time" not in log, log[-3000:]
    assert [m["vars"]["name"] for m in fake_juhe.messages] == ["Resumed"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG)")
def test_the_kernel_stops_the_child_when_its_master_is_killed(tmp_path: Any) -> None:
    """``stop_with_parent``: with the ``getppid()`` check slowed to once a minute, the child
    still stops within a second of a ``kill -9`` of its parent (the kernel's SIGTERM)."""
    out = tmp_path / "child.txt"
    code = textwrap.dedent(f"""\
        import logging, os, signal, threading, time
        from bridge.deliveryproc import signals_blocked, stop_on_signals, stop_with_parent
        logging.basicConfig(level=logging.INFO)
        parent = os.getpid()
        with signals_blocked():
            pid = os.fork()
            if pid == 0:
                assert stop_with_parent(parent)
                stop = threading.Event()
                stop_on_signals(stop, parent=parent, every=60.0)
                open({str(out)!r} + ".ready", "w").close()
                t0 = time.monotonic()
                stopped = stop.wait(20)
                open({str(out)!r}, "w").write(f"{{stopped}} {{time.monotonic() - t0:.3f}}")
                os._exit(0)
        while not os.path.exists({str(out)!r} + ".ready"):
            time.sleep(0.01)
        time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)
        """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == -signal.SIGKILL
    assert wait_until(out.exists, 10), r.stderr
    stopped, waited = out.read_text().split()
    assert stopped == "True" and float(waited) < 1.5, r.stderr


def metric(bridge: Any, name: str) -> float:
    m = re.search(rf"^{name} (\S+)$", bridge.get("/metrics").text, re.M)
    assert m, name
    return float(m.group(1))


def test_a_hung_delivery_process_is_named_by_readyz_killed_and_replaced(
        make_bridge: Any, fake_juhe: FakeJuhe) -> None:
    """Issue 22: ``kill -STOP`` of the delivery process left the service "ready" for 90 s with
    nobody paged. Now: /readyz answers 503 naming delivery within the stall time, the master
    kills the hung process and starts a new one, which sends the SMS stored meanwhile once."""
    bridge = make_bridge(CATCH_ALL, BRIDGE_DELIVERY_STALL="3s")
    old = one_delivery_pid(bridge)
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 10)
    assert metric(bridge, "bridge_delivery_lag_seconds") == 0.0
    assert metric(bridge, "bridge_delivery_last_pass_timestamp_seconds") > time.time() - 10
    os.kill(old, signal.SIGSTOP)
    t0 = time.monotonic()
    assert bridge.post("/webhook/alertmanager", alert("Stuck")).json()["queued"] == 1
    assert wait_until(lambda: bridge.get("/readyz").status_code == 503, 6, 0.05), \
        bridge.get("/readyz").text
    assert time.monotonic() - t0 < 4.5
    problems = bridge.get("/readyz").json()["problems"]
    assert problems and all(p.startswith("delivery: ") for p in problems), problems
    assert metric(bridge, "bridge_delivery_lag_seconds") >= 2.5
    assert wait_until(lambda: bridge.delivery_pids() not in ([], [old]), 10), bridge.children()
    [new] = bridge.delivery_pids()
    [msg] = fake_juhe.wait_for(1, timeout=10)
    assert msg["vars"]["name"] == "Stuck"
    assert wait_until(lambda: bridge.get("/readyz").status_code == 200, 10), \
        bridge.get("/readyz").text
    time.sleep(1.0)
    assert len(fake_juhe.messages) == 1
    assert states(bridge) == [("Stuck", "sent")]
    log = bridge.log()
    assert re.search(rf"delivery process {old} finished no pass of its loop for 3\.\d+s "
                     r"\(BRIDGE_DELIVERY_STALL 3s\): killed", log), log[-3000:]
    assert f"delivery process {old} died (killed by SIGKILL)" in log
    assert f"delivery: restarted in process {new}" in log
    assert re.findall(r"\[(\d+)\] bridge\.delivery: sent to ", log) == [str(new)]
    assert not alive(old)


def test_readyz_of_a_no_delivery_instance_follows_any_deliverer_on_redis(
        make_bridge: Any, fake_juhe: FakeJuhe, redis_url: str) -> None:
    """Issue 22: ``/readyz`` judges delivery by any deliverer sharing the store, so a
    ``--no-delivery`` instance is ready while a ``bridge worker`` delivers, and not while
    none does."""
    serve = make_bridge(CATCH_ALL, start=False, BRIDGE_STORE=redis_url,
                        BRIDGE_DELIVERY_STALL="3s")
    serve.command_args = ["--no-delivery"]
    serve.start()
    assert serve.get("/readyz").status_code == 200  # young: nobody is blamed yet
    assert wait_until(lambda: serve.get("/readyz").status_code == 503, 8, 0.1)
    [problem] = serve.get("/readyz").json()["problems"]
    assert problem.startswith("delivery: no deliverer has finished a pass of its loop since "
                              "this process started")
    worker = make_bridge(CATCH_ALL, command="worker", BRIDGE_STORE=redis_url,
                         BRIDGE_DELIVERY_STALL="3s")
    assert wait_until(lambda: serve.get("/readyz").status_code == 200, 10), \
        serve.get("/readyz").text
    assert worker.proc is not None
    worker.proc.send_signal(signal.SIGSTOP)
    try:
        assert wait_until(lambda: serve.get("/readyz").status_code == 503, 8, 0.1)
        [problem] = serve.get("/readyz").json()["problems"]
        assert re.fullmatch(r"delivery: no deliverer has finished a pass of its loop for "
                            r"\d+\.\ds \(BRIDGE_DELIVERY_STALL 3s\)", problem), problem
    finally:
        worker.proc.send_signal(signal.SIGCONT)
    assert wait_until(lambda: serve.get("/readyz").status_code == 200, 10)
