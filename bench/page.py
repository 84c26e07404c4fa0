#!/usr/bin/env python3
"""Time to page (issue 23): from a webhook sent to its SMS arriving at the fake Juhe, against a
synchronous relay (``bench/relay_app.py``: a Flask handler calling Juhe before it answers, the
limit) measured in the same run, on the same machine, under the same gunicorn settings.

* **idle**: ``--idle`` (40) one-alert webhooks, ``--gap`` (0.3 s) apart, on an otherwise idle
  service: each SMS's time from its webhook's send to its arrival at the fake Juhe; p50, p99.
* **storm**: one webhook of ``--storm`` (1,000) alerts to one mobile; the first and the last
  SMS's time from the webhook's send, and when the webhook was answered.

Rules: one catch-all route paging one mobile, ``min_gap: 0s`` (the pipeline is measured, not
pacing); every alert has a fresh fingerprint. The fake Juhe (``tests/fakejuhe.py``, its own
process) stamps each SMS with ``time.time()`` when it accepts it; the client stamps the send
with the same clock.

    python bench/page.py [--stores sqlite,redis] [--idle 40] [--gap 0.3] [--storm 1000]
                         [--bridge-path DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402
from support import CATCH_ALL  # noqa: E402  (benchlib put tests/ on sys.path)

MOBILE = "13800138000"


def body(names: list[str]) -> bytes:
    """An Alertmanager webhook firing one alert per name, each with a fresh fingerprint."""
    run = uuid.uuid4().hex[:8]
    return json.dumps({"version": "4", "status": "firing", "receiver": "bench", "alerts": [
        {"status": "firing", "startsAt": "2026-12-07T22:00:00Z",
         "labels": {"alertname": n, "instance": f"db-{i % 7}", "run": run},
         "annotations": {"summary": f"disk {i % 100}% full"}} for i, n in enumerate(names)]
    }).encode()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class Juhe:
    """The fake Juhe's control endpoints (``/_messages``, ``/_control``)."""

    def __init__(self, send_url: str) -> None:
        self.base = send_url.rsplit("/sms/send", 1)[0]
        #: messages the fake had accepted when the last wait ended
        self.seen = 0

    def arrivals(self, prefix: str) -> dict[str, float]:
        """Arrival time of each accepted SMS whose ``name`` starts with ``prefix``."""
        msgs = requests.get(self.base + "/_messages", timeout=30).json()
        return {m["vars"]["name"]: m["t"] for m in msgs
                if str(m["vars"].get("name", "")).startswith(prefix)}

    def wait(self, prefix: str, n: int, timeout: float) -> dict[str, float]:
        """The arrivals of ``prefix`` once ``n`` more SMS than before have arrived (or
        ``timeout`` seconds passed). Polls the cheap ``/_stats`` count, not ``/_messages``:
        the fake Juhe must not spend its time answering the bench while it takes SMS."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count() >= self.seen + n:
                break
            time.sleep(0.05)
        got = self.arrivals(prefix)
        self.seen = self.count()
        return got

    def count(self) -> int:
        return int(requests.get(self.base + "/_stats", timeout=30).json()["messages"])

    def clear(self) -> None:
        requests.post(self.base + "/_control", json={"clear": True}, timeout=10)
        self.seen = 0


def measure(base: str, juhe: Juhe, label: str, idle: int, gap: float,
            storm: int) -> dict[str, Any]:
    """The idle and storm runs against the server at ``base``; returns their figures (ms)."""
    session = requests.Session()
    url = base + "/webhook/alertmanager"
    tag = uuid.uuid4().hex[:6]
    # warm up: connections, templates, the deliverer's first passes
    for i in range(3):
        session.post(url, data=body([f"warm-{tag}-{i}"]), timeout=30)
    juhe.wait(f"warm-{tag}-", 3, 20)
    time.sleep(1.0)
    sent: dict[str, float] = {}
    for i in range(idle):
        name = f"idle-{tag}-{i:03d}"
        sent[name] = time.time()
        session.post(url, data=body([name]), timeout=30).raise_for_status()
        time.sleep(gap)
    got = juhe.wait(f"idle-{tag}-", idle, 30)
    waits = [(got[n] - t) * 1000 for n, t in sent.items() if n in got]
    time.sleep(1.0)
    names = [f"storm-{tag}-{i:04d}" for i in range(storm)]
    t0 = time.time()
    r = session.post(url, data=body(names), timeout=120)
    answered = (time.time() - t0) * 1000
    r.raise_for_status()
    arrived = juhe.wait(f"storm-{tag}-", storm, 120)
    times = sorted(arrived.values())
    out = {
        "label": label, "idle_n": len(waits), "idle_sent": idle,
        "idle_p50_ms": statistics.median(waits) if waits else None,
        "idle_p99_ms": percentile(waits, 0.99) if waits else None,
        "idle_max_ms": max(waits) if waits else None,
        "storm_n": len(times), "storm_sent": storm, "storm_answered_ms": answered,
        "storm_first_ms": (times[0] - t0) * 1000 if times else None,
        "storm_last_ms": (times[-1] - t0) * 1000 if times else None,
    }
    session.close()
    return out


def run(procs: bl.Procs, work: Path, juhe_url: str, stores: list[str], idle: int = 40,
        gap: float = 0.3, storm: int = 1000, extra_env: dict[str, str] | None = None,
        log: Any = print) -> list[dict[str, Any]]:
    """The relay, then ``bridge serve`` on each of ``stores`` (``sqlite``, ``redis``: a
    fresh file, a fresh redis-server with AOF); returns one :func:`measure` result each."""
    juhe = Juhe(juhe_url)
    rules = work / "rules-page.yaml"
    rules.write_text(CATCH_ALL, encoding="utf-8")
    results = []
    port = bl.free_port()
    log("page: synchronous relay (baseline)")
    relay = bl.start_relay(procs, work, port, juhe_url, MOBILE)
    try:
        results.append(measure(f"http://127.0.0.1:{port}", juhe, "relay", idle, gap, storm))
    finally:
        procs.stop(relay)
    juhe.clear()
    for kind in stores:
        log(f"page: bridge serve on {kind}")
        rproc = None
        if kind == "redis":
            rproc, store = bl.start_redis(procs, work)
        else:
            store = f"sqlite:///{work / f'page-{uuid.uuid4().hex[:6]}.db'}"
        port = bl.free_port()
        env = bl.bridge_env(store, rules, juhe_url, port, **(extra_env or {}))
        proc = bl.start_bridge(procs, work, env, name=f"page-{kind}")
        try:
            results.append(measure(f"http://127.0.0.1:{port}", juhe, f"bridge/{kind}", idle,
                                   gap, storm))
        finally:
            procs.stop(proc)
            if rproc is not None:
                procs.stop(rproc)
        juhe.clear()
    return results


def table(results: list[dict[str, Any]]) -> list[str]:
    """Markdown rows: each system's figures and its ratios to the relay's."""
    relay = results[0]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:,.1f}"

    def ratio(x: float | None, base: float | None) -> str:
        return "" if x is None or not base else f" ({x / base:.2f}×)"

    lines = ["| time from webhook sent to SMS at Juhe, ms | idle p50 | idle p99 | storm: first "
             "SMS | storm: last SMS | storm: answered |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        def vs(key: str, r: dict[str, Any] = r) -> str:
            return ms(r[key]) + ("" if r is relay else ratio(r[key], relay[key]))

        cells = [vs("idle_p50_ms"), vs("idle_p99_ms"), ms(r["storm_first_ms"]),
                 vs("storm_last_ms"), ms(r["storm_answered_ms"])]
        lines.append(f"| {r['label']} ({r['idle_n']}/{r['idle_sent']} idle, {r['storm_n']}/"
                     f"{r['storm_sent']} storm) | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--idle", type=int, default=40)
    ap.add_argument("--gap", type=float, default=0.3)
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--bridge-path", help="run DIR/bridge instead of this checkout's")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bridge-page."))
    extra = {"PYTHONPATH": args.bridge_path} if args.bridge_path else {}
    with bl.Procs() as procs:
        _, url = bl.start_fake_juhe(procs, work)
        results = run(procs, work, url, args.stores.split(","), args.idle, args.gap,
                      args.storm, extra)
    print("\n".join(table(results)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
