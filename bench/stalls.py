#!/usr/bin/env python3
"""Where a served webhook's time goes, and what stalls the slow ones (issue 23, "p99 at 2
connections"): ``bridge serve`` (or the raw baseline) under ``wrk`` with the intake body of
``bench/run.py`` (10 SMS per webhook, delivery on), and at the same time:

* inside every web worker (``bench/stalls_site/sitecustomize.py``): each request's wall time
  and its thread's CPU time in the Flask app, so their difference is time spent waiting (for a
  core, the GIL, a lock), and each garbage collection;
* with ``--trace``: ``perf trace --duration MS`` of the bridge's processes, every system call
  that took longer than that (``fdatasync`` and ``ftruncate`` of the SQLite WAL, lock sleeps);
* with ``--top``: ``top -H`` once in the middle of the run, CPU per thread.

Prints wrk's latency, then per web worker: requests served, in-app wall / CPU / wait
percentiles, the slowest requests with their CPU, garbage collections over 1 ms; then the slow
system calls counted by process and call.

    python bench/stalls.py [--store sqlite|redis|raw] [--conns 2] [--seconds 10]
                           [--trace [MS]] [--top] [--bridge-path DIR]
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank; 0 for none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def worker_report(path: str) -> str | None:
    """One web worker's lines of the report from its ``<pid>.txt``; None if it served none."""
    reqs: list[tuple[float, float]] = []
    gcs: list[tuple[str, float]] = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts[0] == "req" and parts[4].startswith("/webhook/"):
                reqs.append((float(parts[1]), float(parts[2])))
            elif parts[0] == "gc" and float(parts[2]) > 1.0:
                gcs.append((parts[1], float(parts[2])))
    if not reqs:
        return None
    wall = [w for w, _ in reqs]
    cpu = [c for _, c in reqs]
    wait = [w - c for w, c in reqs]
    slow = sorted(reqs, reverse=True)[:6]
    return "\n".join([
        f"  worker {Path(path).stem}: {len(reqs)} webhooks",
        "    in-app ms   p50    p90    p99    max",
        *(f"    {name:<8}{pct(v, .5):6.2f} {pct(v, .9):6.2f} {pct(v, .99):6.2f} {max(v):6.1f}"
          for name, v in (("wall", wall), ("cpu", cpu), ("wait", wait))),
        "    slowest (wall ms, cpu ms): " + ", ".join(f"({w:.0f}, {c:.1f})" for w, c in slow),
        f"    gc over 1 ms: {len(gcs)}" + (f", max {max(ms for _, ms in gcs):.1f} ms (gen "
                                          f"{max(gcs, key=lambda g: g[1])[0]})" if gcs else ""),
    ])


def syscall_report(path: Path) -> str:
    """The slow system calls of a ``perf trace`` output, by process name and call."""
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    worst: dict[tuple[str, str], float] = {}
    pattern = re.compile(r"\(\s*([\d.]+) ms\): ([\w-]+)/\d+ (\w+)\(")
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = pattern.search(line)
        if not m or m.group(3) in ("futex", "epoll_wait", "poll", "select", "ppoll"):
            continue  # threads waiting for work or for the GIL: idle, not stalled
        key = (m.group(2), m.group(3))
        counts[key] += 1
        worst[key] = max(worst.get(key, 0.0), float(m.group(1)))
    lines = [f"    {n:5d} x {proc} {call} (max {worst[(proc, call)]:.1f} ms)"
             for (proc, call), n in counts.most_common(12)]
    return "\n".join(lines) or "    none"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=("sqlite", "redis", "raw"), default="sqlite")
    ap.add_argument("--conns", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--trace", type=float, nargs="?", const=4.0, default=None,
                    help="perf trace system calls longer than this many ms (default 4)")
    ap.add_argument("--top", action="store_true", help="top -H once, mid-run")
    ap.add_argument("--bridge-path", default=None, help="run this checkout's bridge/")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stalls."))
    out = work / "stalls"
    out.mkdir()
    rules = work / "rules.yaml"
    rules.write_text(bl.INTAKE_RULES_ONE_ROUTE, encoding="utf-8")
    src = args.bridge_path or str(BENCH.parent)
    with bl.Procs() as procs:
        _, juhe = bl.start_fake_juhe(procs, work)
        port = bl.free_port()
        if args.store == "raw":
            server = bl.start_raw(procs, work, port, f"sqlite:{work / 'raw.db'}")
        else:
            store = (bl.start_redis(procs, work)[1] if args.store == "redis"
                     else f"sqlite:///{work / 'bridge.db'}")
            env = bl.bridge_env(store, rules, juhe, port, STALLS_OUT=str(out),
                                PYTHONPATH=os.pathsep.join([str(BENCH / "stalls_site"), src]))
            server = bl.start_bridge(procs, work, env)
        url = f"http://127.0.0.1:{port}/webhook/alertmanager"
        bl.run_wrk(url, 2, args.conns, tag="a1")  # warm up
        pids = ",".join(map(str, bl.children(server.pid))) or str(server.pid)
        helpers: list[subprocess.Popen[bytes]] = []
        if args.trace is not None:
            helpers.append(subprocess.Popen(
                ["perf", "trace", "--duration", str(args.trace), "-p", pids,
                 "-o", str(work / "trace.txt")], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        if args.top:
            with open(work / "top.txt", "wb") as f:
                helpers.append(subprocess.Popen(
                    f"sleep {args.seconds / 2:.1f}; top -b -H -n 1 -w 160 -p {pids}",
                    shell=True, stdout=f))
        time.sleep(1.0 if helpers else 0.0)
        result = bl.run_wrk(url, args.seconds, args.conns, tag="b2")
        for h in helpers:
            if h.args[0] == "perf":
                h.send_signal(2)
            h.wait(30)
    print(f"{args.store}, {args.conns} connections, {args.seconds:g} s; load average "
          f"{os.getloadavg()[0]:.2f}; work folder {work}")
    print("wrk: " + json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                for k, v in result.items()}))
    for path in sorted(glob.glob(str(out / "*.txt"))):
        report = worker_report(path)
        if report:
            print(report)
    if args.trace is not None and (work / "trace.txt").exists():
        print(f"  system calls over {args.trace:g} ms (perf trace):")
        print(syscall_report(work / "trace.txt"))
    if args.top and (work / "top.txt").exists():
        lines = (work / "top.txt").read_text(encoding="utf-8").splitlines()
        start = next((i for i, line in enumerate(lines) if "PID" in line and "COMMAND" in line),
                     0)
        print("  top -H (mid-run):")
        print("\n".join("    " + line for line in lines[start:start + 12]))


if __name__ == "__main__":
    main()
