#!/usr/bin/env python3
"""One deliverer sending a storm to one mobile, measured on its own (issue 23's storm target):
wall and CPU per SMS of the delivery loop against a bare ``requests`` loop posting the same
form in the same run, and the CPU the fake Juhe and redis-server spent meanwhile.

The storm is stored as ``bridge serve`` stores it: one Alertmanager webhook of ``--storm``
firing alerts (``bench/page.py``'s body and rules: one catch-all route paging one mobile,
``min_gap: 0s``, no storm template) posted to the bridge's Flask app in this process, with no
deliverer running. Then one :class:`bridge.deliver.deliverer.Deliverer` (as
:meth:`bridge.intake.service.Bridge.deliverer` builds it, sidecar and all) runs the body of
:meth:`~bridge.deliver.deliverer.Deliverer.run_forever` pass after pass in this thread until
nothing is left. CPU is ``time.process_time`` of this process and ``/proc/PID/stat`` of the
fake Juhe and redis-server: unlike the wall time, it holds while other work loads the machine,
and the chain (sender + fake Juhe + redis-server, which take turns) is what a send waits for.

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


def cpu_of(pid: int | None) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far (0 for ``None``)."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Meter:
    """Wall and CPU seconds of this process, the fake Juhe and redis-server over a span."""

    def __init__(self, juhe: int, redis: int | None) -> None:
        self.pids = {"juhe": juhe, "redis": redis}

    def __enter__(self) -> dict[str, float]:
        self.out: dict[str, float] = {}
        self.t0 = (time.perf_counter(), time.process_time(),
                   *(cpu_of(p) for p in self.pids.values()))
        return self.out

    def __exit__(self, *exc: object) -> None:
        now = (time.perf_counter(), time.process_time(), *(cpu_of(p) for p in self.pids.values()))
        names = ("wall", "cpu", *(f"{k}_cpu" for k in self.pids))
        self.out.update({k: b - a for k, a, b in zip(names, self.t0, now, strict=True)})


def bare(url: str, n: int, meter: Meter) -> dict[str, float]:
    """``n`` posts of the relay's form over one ``requests.Session`` with ``trust_env`` off
    (as ``bench/relay_app.py`` and the bridge's Juhe client), measured by ``meter``."""
    from bridge.providers.juhe import encode_tpl_value

    form = {"key": bl.KEY, "mobile": MOBILE, "tpl_id": 111, "tpl_value": encode_tpl_value(
        {"name": "bare", "host": "db-1", "summary": "disk 1% full", "at": "12-07 22:00"})}
    with requests.Session() as s:
        s.trust_env = False
        s.post(url, data=form, timeout=5)
        with meter as out:
            for _ in range(n):
                s.post(url, data=form, timeout=5).json()
    return out


def stored_storm(store: str, juhe_url: str, work: Path, n: int) -> Any:
    """Store one storm of ``n`` alerts through the Flask app; returns a
    :class:`~bridge.intake.service.Bridge` on the same store and rules."""
    from bridge.config import Settings
    from bridge.intake.service import Bridge
    from bridge.web.app import create_app

    rules = work / "rules.yaml"
    rules.write_text(CATCH_ALL, encoding="utf-8")
    settings = Settings(juhe_key=bl.KEY, juhe_url=juhe_url, store=store, rules_path=str(rules),
                        juhe_timeout=5.0)
    tag = os.urandom(3).hex()
    r = create_app(settings).test_client().post("/webhook/alertmanager", data=body(
        [f"storm-{tag}-{i:04d}" for i in range(n)]), content_type="application/json")
    assert r.status_code == 200, r.data
    return Bridge(settings)


def storm(store: str, juhe_url: str, work: Path, n: int, meter: Meter,
          profile: bool) -> dict[str, float]:
    """Store one storm of ``n`` alerts, then deliver it; returns the figures."""
    bridge = stored_storm(store, juhe_url, work, n)
    d = bridge.deliverer()
    d.sender.send("13900000000", 111, {"name": "warm"})  # connect first, as bare() does
    before = bridge.store.counts()["sent"]
    prof = cProfile.Profile() if profile else None
    with meter as out:
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
    out["sent"] = bridge.store.counts()["sent"] - before
    bridge.store.close()
    if prof is not None:
        prof.dump_stats(work / "storm.prof")
        print(f"profile: {work / 'storm.prof'}")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(40)
    return out


def line(k: int, n: int, res: dict[str, float], base: dict[str, float]) -> str:
    """One round's figures, per SMS."""
    def us(x: float) -> str:
        return f"{x / n * 1e6:.0f}"

    chain = res["cpu"] + res["juhe_cpu"] + res["redis_cpu"]
    bchain = base["cpu"] + base["juhe_cpu"] + base["redis_cpu"]
    return (f"round {k}: sent {res['sent']:.0f}; deliverer {res['wall'] * 1000:.0f} ms, bare "
            f"loop {base['wall'] * 1000:.0f} ms ({res['wall'] / base['wall']:.2f}x); us CPU per "
            f"SMS: deliverer {us(res['cpu'])} juhe {us(res['juhe_cpu'])} redis "
            f"{us(res['redis_cpu'])} = {us(chain)}, bare {us(base['cpu'])} juhe "
            f"{us(base['juhe_cpu'])} = {us(bchain)} ({chain / bchain:.2f}x)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="sqlite", choices=("sqlite", "redis"))
    ap.add_argument("--storm", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="cProfile the last round")
    ap.add_argument("--json", action="store_true", help="print the medians as one JSON object")
    args = ap.parse_args()
    logging.basicConfig(filename=os.devnull, level=logging.INFO)  # log lines formatted, dropped
    work = Path(tempfile.mkdtemp(prefix="bench-storm."))
    rows = []
    with bl.Procs() as procs:
        juhe, juhe_url = bl.start_fake_juhe(procs, work)
        rpid = None
        if args.store == "redis":
            rproc, store = bl.start_redis(procs, work)
            rpid = rproc.pid
        else:
            store = f"sqlite:///{work / 'bridge.db'}"
        meter = Meter(juhe.pid, rpid)
        for k in range(args.rounds):
            base = bare(juhe_url, args.storm, meter)
            res = storm(store, juhe_url, work, args.storm, meter,
                        args.profile and k == args.rounds - 1)
            rows.append((res, base))
            if not args.json:
                print(line(k + 1, args.storm, res, base), flush=True)

    def med(f: Any) -> float:
        return float(statistics.median(f(r, b) for r, b in rows))

    n = args.storm
    summary = {
        "store": args.store, "storm": n, "rounds": len(rows), "load": os.getloadavg()[0],
        "wall_ms": med(lambda r, b: r["wall"] * 1000),
        "bare_wall_ms": med(lambda r, b: b["wall"] * 1000),
        "wall_ratio": med(lambda r, b: r["wall"] / b["wall"]),
        "cpu_us": med(lambda r, b: r["cpu"] / n * 1e6),
        "chain_cpu_us": med(lambda r, b: (r["cpu"] + r["juhe_cpu"] + r["redis_cpu"]) / n * 1e6),
        "bare_chain_cpu_us": med(lambda r, b: (b["cpu"] + b["juhe_cpu"]) / n * 1e6),
    }
    summary["chain_ratio"] = summary["chain_cpu_us"] / summary["bare_chain_cpu_us"]
    print(json.dumps(summary) if args.json else
          f"median of {len(rows)}: deliverer {summary['wall_ms']:.0f} ms, "
          f"{summary['wall_ratio']:.2f}x the bare loop; chain CPU {summary['chain_cpu_us']:.0f} "
          f"us/SMS, {summary['chain_ratio']:.2f}x the bare loop's; load {summary['load']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
