#!/usr/bin/env python3
"""Profile the intake hot path (one webhook: JSON -> parse -> plan -> store -> answer) with
pyinstrument, in one process, through the real Flask app on a real store.

The app is ``create_app(Bridge(settings))`` as a gunicorn worker builds it, with prometheus
multiprocess mode on and INFO logging to a file, as under ``bridge serve``; the body is the
one ``bench/webhook.lua`` sends (10 firing alerts, fresh fingerprints, two routes matching ->
20 SMS per request). No delivery thread runs: this is the request path alone.

    python bench/profile_intake.py [--seconds 5] [--store sqlite|redis URL] [--html FILE]

Prints req/s, the share of wall time per stage and the top functions by own time; with
``--json`` prints them as one JSON object (bench/run.py reads that).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import INTAKE_RULES  # noqa: E402

#: Stages of one request: a frame whose function is one of these counts its inclusive time.
STAGES = {
    "json.loads (body)": ("loads", "json/__init__.py"),
    "without_lone_surrogates": ("without_lone_surrogates", "bridge/app.py"),
    "parse (sources)": ("parse", "bridge/service.py"),
    "decide (route+render)": ("decide", "bridge/plan.py"),
    "store.record": ("record", "bridge/store/"),
    "logging (intake lines)": ("info", "logging/__init__.py"),
    "metrics (prometheus)": ("inc", "prometheus_client/"),
    "jsonify answer": ("jsonify", "flask/json/__init__.py"),
}


def body(n: int, alerts: int = 10) -> bytes:
    """The wrk body (see webhook.lua) for request ``n``."""
    items = []
    for i in range(1, alerts + 1):
        inst = f"db-p-{n}-{i}:9100"
        items.append({
            "status": "firing",
            "labels": {"alertname": "DiskFull", "severity": "critical", "team": "db",
                       "instance": inst, "job": "node"},
            "annotations": {"summary": f"disk /var 97% full on {inst}",
                            "description": "bench alert"},
            "startsAt": "2026-01-01T00:00:00.123456789Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph?g0.expr=up",
            "fingerprint": f"fe{n:010x}{i:04x}",
        })
    return json.dumps({
        "version": "4", "groupKey": '{}:{alertname="DiskFull"}', "truncatedAlerts": 0,
        "status": "firing", "receiver": "sms", "groupLabels": {"alertname": "DiskFull"},
        "commonLabels": {"alertname": "DiskFull", "severity": "critical", "team": "db"},
        "commonAnnotations": {}, "externalURL": "http://alertmanager:9093", "alerts": items,
    }, separators=(",", ":")).encode()


def walk(frame: Any, own: dict[str, float], incl: dict[str, float], stack: set[str]) -> None:
    """Sum own time per function and inclusive time per stage over pyinstrument's tree."""
    path = (frame.file_path or "").replace(os.sep, "/")
    key = f"{frame.function} ({_short(path)}:{frame.line_no})"
    own[key] += frame.total_self_time
    entered = []
    for stage, (fn, where) in STAGES.items():
        if frame.function == fn and where in path and stage not in stack:
            incl[stage] += frame.time
            entered.append(stage)
    stack.update(entered)
    for child in frame.children:
        walk(child, own, incl, stack)
    stack.difference_update(entered)


def _short(path: str) -> str:
    for marker in ("/bridge/", "site-packages/", "/lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1] if marker != "/bridge/" else "bridge/" + \
                path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--store", default="sqlite", help="sqlite (temporary) or a redis:// URL")
    ap.add_argument("--html", help="also write pyinstrument's HTML report here")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--no-profile", action="store_true",
                    help="only time the requests (ms per request without the profiler)")
    args = ap.parse_args()

    from pyinstrument import Profiler

    tmp = Path(tempfile.mkdtemp(prefix="bench-profile."))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
    (tmp / "metrics").mkdir()
    rules = tmp / "rules.yaml"
    rules.write_text(INTAKE_RULES, encoding="utf-8")
    store = f"sqlite:///{tmp / 'bridge.db'}" if args.store == "sqlite" else args.store

    from bridge.app import create_app
    from bridge.config import Settings
    from bridge.logs import setup
    from bridge.service import Bridge

    setup("text", ["k"])
    handler = logging.getLogger().handlers[0]
    handler.stream = open(tmp / "bridge.log", "a", encoding="utf-8")  # type: ignore[attr-defined]  # noqa: SIM115
    settings = Settings(juhe_key="k", juhe_url="http://127.0.0.1:9/sms/send", store=store,
                        rules_path=str(rules))
    app = create_app(Bridge(settings))
    client = app.test_client()
    for n in range(50):  # warm up: connections, schema, templates
        client.post("/webhook/alertmanager", data=body(n), content_type="application/json")
    bodies = [body(n) for n in range(1000, 1000 + 20000)]

    profiler = Profiler(interval=0.0005)
    done = 0
    if not args.no_profile:
        profiler.start()
    t0 = time.perf_counter()
    c0 = time.process_time()
    while time.perf_counter() - t0 < args.seconds and done < len(bodies):
        r = client.post("/webhook/alertmanager", data=bodies[done],
                        content_type="application/json")
        assert r.status_code == 200 and r.json["queued"] == 20, r.data  # type: ignore[index]
        done += 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if args.no_profile:
        print(json.dumps({"requests": done, "seconds": elapsed, "rps": done / elapsed,
                          "ms_per_request": 1000 * elapsed / done,
                          "cpu_ms_per_request": 1000 * cpu / done, "store": args.store}))
        return
    session = profiler.stop()

    own: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    root = session.root_frame()
    walk(root, own, incl, set())
    total = root.time if root is not None else elapsed
    out = {
        "requests": done, "seconds": elapsed, "rps": done / elapsed, "ms_per_request":
        1000 * elapsed / done, "store": args.store,
        "stages": {k: round(100 * v / total, 1) for k, v in
                   sorted(incl.items(), key=lambda kv: -kv[1])},
        "top_own": [(k, round(100 * v / total, 1)) for k, v in
                    sorted(own.items(), key=lambda kv: -kv[1])[:args.top]],
    }
    if args.html:
        Path(args.html).write_text(profiler.output_html(), encoding="utf-8")
    if args.json:
        print(json.dumps(out, ensure_ascii=False))
        return
    print(f"{done} requests in {elapsed:.1f}s: {out['rps']:.0f} req/s in one process, "
          f"{out['ms_per_request']:.2f} ms per request (profiler on)")
    print("share of wall time per stage (inclusive):")
    for k, v in out["stages"].items():
        print(f"  {v:5.1f}%  {k}")
    print("top functions by own time:")
    for k, v in out["top_own"]:
        print(f"  {v:5.1f}%  {k}")


if __name__ == "__main__":
    main()
