"""Helpers shared by the test suite (``tests/conftest.py``) and the benchmarks (``bench/``).

No pytest and no ``bridge`` import here, so ``bench/*.py`` can import it as a plain module
(they put ``tests/`` on ``sys.path``, as ``bench/soakjuhe.py`` does for ``fakejuhe``):

* :func:`free_port`, :func:`wait_until`: a loopback port and a bounded poll;
* :func:`redis_argv`, :func:`redis_ready`: the redis-server command line (AOF on, loopback,
  in its own folder) and the wait for it to answer PING;
* the rules files the tests and benchmarks page with, built from shared pieces so that a
  template or a route is written once.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago on every address, never handed out before by this
    process.

    Drawn from 10000-19999, below the kernel's ephemeral range (32768-60999 on Linux), in a
    block of 2,000 ports of this pytest-xdist worker's own (``PYTEST_XDIST_WORKER`` = ``gwN``):
    a port that the kernel picks for ``bind(0)`` is one it also gives to outgoing connections,
    so another test's HTTP client could take it before the server meant to have it binds it.
    (A Redis Cluster node's bus port, port + 10000, stays below the ephemeral range too.)"""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = 10_000 + (index % 5) * 2_000
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(low, low + 2_000)
        if port in _HANDED_OUT:
            continue
        try:
            with socket.socket() as s:
                s.bind(("0.0.0.0", port))
        except OSError:
            continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {low}-{low + 1_999}")


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05, *,
               ignore: tuple[type[BaseException], ...] = ()) -> bool:
    """Poll ``pred()`` every ``interval`` seconds until it is true (-> True) or ``timeout``
    seconds pass (-> False). An exception of a type in ``ignore`` counts as "not yet"; any
    other propagates (a test's probe raises to stop waiting on a dead process)."""
    end = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return True
        except ignore:
            pass
        if time.monotonic() > end:
            return False
        time.sleep(interval)


def stop_group(proc: subprocess.Popen[bytes] | None, grace: float = 10) -> None:
    """SIGTERM the process group of ``proc`` (started with ``start_new_session=True``), wait at
    most ``grace`` seconds, then SIGKILL it; nothing when it already ended."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def redis_argv(exe: str, port: int, workdir: Path) -> list[str]:
    """The redis-server command line: loopback ``port``, data in ``workdir``, AOF on, no RDB."""
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
            "--appendonly", "yes", "--save", "", "--protected-mode", "no"]


def redis_ready(port: int, timeout: float = 10) -> bool:
    """Whether the redis-server on loopback ``port`` answers PING within ``timeout`` seconds."""
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    try:
        return wait_until(lambda: bool(client.ping()), timeout, ignore=(Exception,))
    finally:
        client.close()


# -- rules files -----------------------------------------------------------------------------

#: The resolved template every rules file here shares (tpl_id 222).
RESOLVED = """\
  resolved:
    tpl_id: 222
    vars:
      name: "{{ labels.alertname }}"
"""

#: Receivers of the example rules (docs/rules.md, A complete example): two DBAs and ops.
SPEC_RECEIVERS = """\
receivers:
  dba: ["13800138000", "13800138001"]
  ops: ["13900139000"]
"""

#: The firing template of the example, ``summary`` as given (empty when missing).
SPEC_FIRING = """\
  firing:
    tpl_id: 111
    vars:
      name: "{{ labels.alertname }}"
      host: "{{ labels.instance | default('-') }}"
      summary: "{{ annotations.summary }}"
      at: "{{ starts_at | localtime('%m-%d %H:%M') }}"
"""

#: A firing template that renders whatever labels an alert has (every field has a default).
LENIENT_FIRING = """\
  firing:
    tpl_id: 111
    vars:
      name: "{{ labels.alertname | default('-') }}"
      host: "{{ labels.instance | default(labels.host) | default('-') }}"
      summary: "{{ annotations.summary | default('-') }}"
      at: "{{ starts_at | localtime('%m-%d %H:%M') }}"
"""

#: The resolved template of :data:`LENIENT_FIRING`.
LENIENT_RESOLVED = RESOLVED.replace("alertname }}", "alertname | default('-') }}")

#: Limits that pace nothing.
NO_GAP = """\
limits:
  min_gap: 0s
"""

#: A rules file for end-to-end tests: one catch-all route that also pages resolved alerts.
CATCH_ALL = ("receivers:\n  oncall: [\"13800138000\"]\ntemplates:\n" + LENIENT_FIRING
             + LENIENT_RESOLVED + NO_GAP + """\
routes:
  - name: everything
    matchers: ['alertname=~".*"']
    receiver: oncall
    template: firing
    resolved_template: resolved
""")

def db_route(team: str = "team=~\"db|mysql\"", extra: str = "") -> str:
    """The example's ``db-critical`` route (to ``dba``, resolved paged too, then ``continue``);
    ``team`` is its team matcher, ``extra`` more indented lines before ``continue``."""
    return f"""\
  - name: db-critical
    matchers: ['severity="critical"', '{team}']
    receiver: dba
    template: firing
    resolved_template: resolved
{extra}    continue: true
"""


def ops_route(name: str) -> str:
    """The route that pages ``ops`` for any critical or warning alert."""
    return f"""\
  - name: {name}
    matchers: ['severity=~"critical|warning"']
    receiver: ops
    template: firing
"""


#: The example rules (without the night mute, so tests do not depend on the hour).
SPEC_RULES = (SPEC_RECEIVERS + "templates:\n" + SPEC_FIRING + RESOLVED + NO_GAP + "routes:\n"
              + db_route(extra="    repeat_interval: 4h\n") + ops_route("everything-else"))

#: The benchmarks' intake rules: two routes match every alert of the wrk body (severity
#: critical), each paging its own mobile, so one alert gives two SMS; min_gap 0 and no limits:
#: nothing is suppressed.
INTAKE_RULES = ("receivers:\n  dba: [\"13800138000\"]\n  ops: [\"13900139000\"]\ntemplates:\n"
                + SPEC_FIRING.replace("summary }}", "summary | default('-') }}") + RESOLVED
                + NO_GAP + "routes:\n" + db_route() + ops_route("everything"))

#: The benchmarks' 10-SMS intake rules (issue 14): :data:`INTAKE_RULES`' first route alone (the
#: same template and variables), paging one mobile, so the wrk body of 10 alerts gives 10 SMS.
INTAKE_RULES_ONE_ROUTE = ("receivers:\n  dba: [\"13800138000\"]\ntemplates:\n"
                          + SPEC_FIRING.replace("summary }}", "summary | default('-') }}")
                          + RESOLVED + NO_GAP + "routes:\n" + db_route())
