#!/usr/bin/env python3
"""Profile the intake hot path (one webhook: JSON -> parse -> plan -> store -> answer) with
pyinstrument, in one process, through the real Flask app on a real store.

The app is ``create_app(settings)`` as a gunicorn worker builds it, with prometheus
multiprocess mode on and INFO logging to a file, as under ``bridge serve``; the body is the
one ``bench/webhook.lua`` sends (10 firing alerts, fresh fingerprints, two routes matching ->
20 SMS per request; ``--sms 10``: one route, 10 SMS). No delivery thread runs: this is the
request path alone.

    python bench/profile_intake.py [--seconds 5] [--store sqlite|redis URL] [--html FILE]

Prints req/s, the share of wall time per stage and the top functions by own time; with
``--json`` prints them as one JSON object (bench/run.py reads that).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from benchlib import INTAKE_RULES  # noqa: E402
from support import INTAKE_RULES_ONE_ROUTE  # noqa: E402  (benchlib put tests/ on sys.path)

#: Stages of one request: a frame whose function and file match one of a stage's
#: (function, file fragment) pairs counts its inclusive time, once per stack. Old and new
#: names of the same step are listed together, so the table survives refactoring.
STAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "read + parse the body": (("parse_body", "bridge/sources/"),
                              ("parse", "bridge/intake/service.py")),
    "  read_body: json.loads + surrogates": (("read_body", "bridge/sources/"),
                                             ("without_lone_surrogates", "bridge/web/app.py")),
    "decide (route + render)": (("decide", "bridge/decide/plan.py"),),
    "  Renderer.render (Jinja2)": (("render", "bridge/rules/render.py"),),
    "store.record": (("record", "bridge/store/"),),
    "logging (intake lines)": (("info", "logging/__init__.py"),),
    "metrics (prometheus)": (("inc", "prometheus_client/"),),
    "jsonify answer": (("jsonify", "flask/json/__init__.py"),),
}


RUN = random.randrange(0x10000)


def body(n: int, alerts: int = 10) -> bytes:
    """The wrk body (see webhook.lua) for request ``n`` (fingerprints fresh in every run)."""
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
            "fingerprint": f"{RUN:04x}{n:08x}{i:04x}",
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
    if not frame.function.startswith("["):  # pyinstrument's synthetic [self]/[await] frames
        key = f"{frame.function} ({_short(path)}:{frame.line_no})"
        own[key] += frame.total_self_time
    entered = []
    for stage, names in STAGES.items():
        if stage not in stack and any(frame.function == fn and where in path
                                      for fn, where in names):
            incl[stage] += frame.time
            entered.append(stage)
    stack.update(entered)
    for child in frame.children:
        walk(child, own, incl, stack)
    stack.difference_update(entered)


def _short(path: str) -> str:
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    m = re.search(r"/lib/python3\.\d+/(.*)$", path)
    if m:
        return m.group(1)
    if "/bridge/" in path:
        return "bridge/" + path.rsplit("/bridge/", 1)[1]
    return path.rsplit("/", 1)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--store", default="sqlite", help="sqlite (temporary) or a redis:// URL")
    ap.add_argument("--bare", action="store_true",
                    help="drive bench/bare_app.py's constant-JSON app instead (the baseline)")
    ap.add_argument("--html", help="also write pyinstrument's HTML report here")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--sms", type=int, default=20, choices=(10, 20),
                    help="SMS per webhook: 20 (two routes, INTAKE_RULES) or 10 (one route)")
    ap.add_argument("--no-profile", action="store_true",
                    help="only time the requests: wall and CPU ms per request, no profiler")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-profile."))
    try:
        out = measure(args, tmp)
    finally:
        logging.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json or args.no_profile:
        print(json.dumps(out, ensure_ascii=False))
        return
    print(f"{out['requests']} requests in {out['seconds']:.1f}s: {out['rps']:.0f} req/s in one "
          f"process, {out['ms_per_request']:.2f} ms per request (profiler on)")
    print("share of wall time per stage (inclusive):")
    for k, v in out["stages"].items():
        print(f"  {v:5.1f}%  {k}")
    print("top functions by own time:")
    for k, v in out["top_own"]:
        print(f"  {v:5.1f}%  {k}")


def make_app(args: argparse.Namespace, tmp: Path) -> Any:
    """The Flask app to drive: the bridge's (as a gunicorn worker builds it) or the bare one."""
    if args.bare:
        from bare_app import create_app as bare_app

        return bare_app()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp / "metrics")
    (tmp / "metrics").mkdir()
    rules = tmp / "rules.yaml"
    rules.write_text(INTAKE_RULES if args.sms == 20 else INTAKE_RULES_ONE_ROUTE,
                     encoding="utf-8")
    store = f"sqlite:///{tmp / 'bridge.db'}" if args.store == "sqlite" else args.store

    from bridge.config import Settings
    from bridge.logs import setup
    try:
        from bridge.web.app import create_app
    except ImportError:  # a bridge/ from before issue 21's layout (bench/ab.py --revs)
        from bridge.app import create_app  # type: ignore[no-redef]

    setup("text", ["k"])
    handler = logging.getLogger().handlers[0]
    handler.stream = open(tmp / "bridge.log", "a", encoding="utf-8")  # type: ignore[attr-defined]  # noqa: SIM115
    settings = Settings(juhe_key="k", juhe_url="http://127.0.0.1:9/sms/send", store=store,
                        rules_path=str(rules))
    return create_app(settings)


def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from pyinstrument import Profiler

    client = make_app(args, tmp).test_client()
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
        assert r.status_code == 200 and r.json["queued"] == args.sms, r.data  # type: ignore[index]
        done += 1
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    out: dict[str, Any] = {
        "requests": done, "seconds": elapsed, "rps": done / elapsed,
        "ms_per_request": 1000 * elapsed / done, "cpu_ms_per_request": 1000 * cpu / done,
        "store": "bare" if args.bare else args.store.split(":")[0],
    }
    if args.no_profile:
        return out
    session = profiler.stop()
    own: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    root = session.root_frame()
    if root is None:
        return out
    walk(root, own, incl, set())
    out["stages"] = {k: round(100 * incl[k] / root.time, 1) for k in STAGES if k in incl}
    out["top_own"] = [(k, round(100 * v / root.time, 1))
                      for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:args.top]]
    if args.html:
        Path(args.html).write_text(profiler.output_html(), encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
