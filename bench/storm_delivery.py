#!/usr/bin/env python3
"""One deliverer sending a storm to one mobile, measured on its own (issue 23's storm target):
wall and CPU per SMS of the delivery loop against a bare ``requests`` loop posting the same
forms in the same run, and the store calls it made per SMS.

The storm is stored as ``bridge serve`` stores it: one Alertmanager webhook of ``--storm``
firing alerts (``bench/page.py``'s body and rules: one catch-all route paging one mobile,
``min_gap: 0s``, no storm template) posted to the bridge's Flask app in this process, with no
deliverer running. Then one :class:`bridge.deliver.deliverer.Deliverer` (as
:meth:`bridge.intake.service.Bridge.deliverer` builds it, sidecar and all) runs the body of
:meth:`~bridge.deliver.deliverer.Deliverer.run_forever` pass after pass in this thread until
every SMS is sent. CPU is ``time.process_time`` of this process (the fake Juhe and
redis-server are processes of their own), so it holds while other work loads the machine.

    python bench/storm_delivery.py [--store sqlite|redis] [--storm 1000] [--rounds 3]
                                   [--profile] [--json]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402
from page import MOBILE, body  # noqa: E402
from support import CATCH_ALL  # noqa: E402  (benchlib put tests/ on sys.path)


def bare(url: str, n: int) -> tuple[float, float]:
    """Wall and CPU seconds of ``n`` posts of the relay's form over one ``requests.Session``
    with ``trust_env`` off (as ``bench/relay_app.py`` and the bridge's Juhe client)."""
    from bridge.providers.juhe import encode_tpl_value

    form = {"key": bl.KEY, "mobile": MOBILE, "tpl_id": 111, "tpl_value": encode_tpl_value(
        {"name": "bare", "host": "db-1", "summary": "disk 1% full", "at": "12-07 22:00"})}
    with requests.Session() as s:
        s.trust_env = False
        s.post(url, data=form, timeout=5)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            s.post(url, data=form, timeout=5).json()
        return time.perf_counter() - t0, time.process_time() - c0


def redis_calls(url: str) -> dict[str, int]:
    """Calls per command so far (``INFO commandstats``)."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        stats = r.info("commandstats")
    finally:
        r.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def storm(store: str, juhe_url: str, work: Path, n: int, profile: bool) -> dict[str, Any]:
    """Store one storm of ``n`` alerts, then deliver it; returns the figures."""
    from bridge.config import Settings
    from bridge.intake.service import Bridge
    from bridge.web.app import create_app

    rules = work / "rules.yaml"
    rules.write_text(CATCH_ALL, encoding="utf-8")
    settings = Settings(juhe_key=bl.KEY, juhe_url=juhe_url, store=store, rules_path=str(rules),
                        juhe_timeout=5.0)
    app = create_app(settings)
    tag = os.urandom(3).hex()
    r = app.test_client().post("/webhook/alertmanager", data=body(
        [f"storm-{tag}-{i:04d}" for i in range(n)]), content_type="application/json")
    assert r.status_code == 200, r.data
    bridge = Bridge(settings)
    d = bridge.deliverer()
    d.sender.send("13900000000", 111, {"name": "warm"})  # type: ignore[attr-defined]
    before = bridge.store.counts()["sent"]
    in_send = [0.0, 0.0]  # CPU and wall seconds inside the sender's send
    send = d.sender.send

    def timed_send(*args: Any, **kwargs: Any) -> Any:
        c, w = time.process_time(), time.perf_counter()
        try:
            return send(*args, **kwargs)
        finally:
            in_send[0] += time.process_time() - c
            in_send[1] += time.perf_counter() - w

    d.sender.send = timed_send  # type: ignore[method-assign]
    calls0 = redis_calls(store) if store.startswith("redis") else {}
    prof = cProfile.Profile() if profile else None
    t0, c0 = time.perf_counter(), time.process_time()
    if prof is not None:
        prof.enable()
    while True:  # run_forever's body, until nothing is left
        busy = d.run_once()
        busy += d.sidecar() if d.sidecar is not None else 0
        d._chores()
        d._progress()
        if not busy:
            break
    if prof is not None:
        prof.disable()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sent = bridge.store.counts()["sent"] - before
    out: dict[str, Any] = {"sent": sent, "wall_s": wall, "cpu_s": cpu,
                           "send_cpu_s": in_send[0], "send_wall_s": in_send[1]}
    if calls0:
        calls = {k: v - calls0.get(k, 0) for k, v in redis_calls(store).items()}
        out["redis_calls_per_sms"] = {k: round(v / max(sent, 1), 2)
                                      for k, v in sorted(calls.items()) if v}
    if prof is not None:
        prof.dump_stats(work / "storm.prof")
        print(f"profile: {work / 'storm.prof'}")
        st = pstats.Stats(prof)
        st.sort_stats("cumulative").print_stats(45)
        st.sort_stats("tottime").print_stats(25)
    bridge.store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="sqlite", choices=("sqlite", "redis"))
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the last round")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(filename=os.devnull, level=logging.INFO)  # log lines formatted, dropped
    work = Path(tempfile.mkdtemp(prefix="bench-storm."))
    rows = []
    with bl.Procs() as procs:
        _, juhe_url = bl.start_fake_juhe(procs, work)
        store = (bl.start_redis(procs, work)[1] if args.store == "redis"
                 else f"sqlite:///{work / 'bridge.db'}")
        for k in range(args.rounds):
            bw, bc = bare(juhe_url, args.storm)
            res = storm(store, juhe_url, work, args.storm, args.profile and k == args.rounds - 1)
            res.update(bare_wall_s=bw, bare_cpu_s=bc)
            rows.append(res)
            print(f"round {k + 1}: sent {res['sent']}, deliverer {res['wall_s'] * 1000:.0f} ms "
                  f"wall {res['cpu_s'] / args.storm * 1e6:.0f} us CPU/SMS (in send "
                  f"{res['send_cpu_s'] / args.storm * 1e6:.0f} us CPU, "
                  f"{res['send_wall_s'] / args.storm * 1e6:.0f} us wall); bare loop "
                  f"{bw * 1000:.0f} ms wall {bc / args.storm * 1e6:.0f} us CPU/SMS; "
                  f"{res.get('redis_calls_per_sms', '')}", flush=True)
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("wall_s", "cpu_s", "bare_wall_s", "bare_cpu_s")}
    summary = {"store": args.store, "storm": args.storm, "rounds": len(rows),
               "load": os.getloadavg()[0],
               "wall_ratio": med["wall_s"] / med["bare_wall_s"],
               "cpu_us_per_sms": med["cpu_s"] / args.storm * 1e6,
               "bare_cpu_us_per_sms": med["bare_cpu_s"] / args.storm * 1e6, **med}
    print(json.dumps(summary) if args.json else
          f"median of {len(rows)}: deliverer {med['wall_s'] * 1000:.0f} ms "
          f"({summary['wall_ratio']:.2f}x the bare loop's {med['bare_wall_s'] * 1000:.0f} ms), "
          f"CPU {summary['cpu_us_per_sms']:.0f} us/SMS against "
          f"{summary['bare_cpu_us_per_sms']:.0f}; load {summary['load']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
