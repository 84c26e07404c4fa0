#!/usr/bin/env python3
"""A/B a patch to ``bridge/`` without touching the working tree: copy ``bridge/`` to a temporary
folder, apply the patch(es) there (``git apply``), and compare the copy with the original,
interleaved round by round, on figures that hold still on a busy machine:

* intake: CPU ms per webhook in one process (``bench/profile_intake.py --no-profile``: the
  Flask app, 10 alerts, 20 SMS, no HTTP server, no delivery), SQLite and Redis;
* delivery (``--delivery``): SMS/s of one Deliverer to the fake Juhe (``bench/delivery.py``).

    python bench/ab.py bench/patches/render-once.diff [more.diff ...] [--rounds 4] [--delivery]

Prints the median of each figure for A (as is) and B (patched) and B's ratio to A. To run the
whole benchmark on the patched code, ``--print-path`` keeps the copy and prints its folder, for
``python bench/run.py --bridge-path DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402

DELIVERY = r"""
import json, logging, sys
sys.path.insert(0, sys.argv[4])
from pathlib import Path
import benchlib, delivery
from bridge.logs import setup
work, url, store = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
setup("text", [benchlib.KEY])
logging.getLogger().handlers[0].stream = open(work / "deliver.log", "a")
rules = work / "rules.yaml"
rules.write_text(benchlib.INTAKE_RULES)
delivery.fill_queue(store, 2000)
print(json.dumps(delivery.deliverer_rate(store, url, rules, 2000)[0]))
"""


def patched_copy(patches: list[str]) -> Path:
    folder = Path(tempfile.mkdtemp(prefix="bridge-ab."))
    shutil.copytree(ROOT / "bridge", folder / "bridge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for patch in patches:
        res = subprocess.run(["git", "apply", str(Path(patch).resolve())],
                             cwd=folder, capture_output=True, text=True)
        if res.returncode != 0:
            res = subprocess.run(["patch", "-p1", "-i", str(Path(patch).resolve())],
                                 cwd=folder, capture_output=True, text=True)
        if res.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise SystemExit(f"{patch} does not apply:\n{res.stdout}{res.stderr}")
    return folder


def env_for(path: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if path is not None:
        env["PYTHONPATH"] = str(path)
    return env


def cpu_ms(path: Path | None, store: str, seconds: float) -> float:
    res = subprocess.run([sys.executable, str(BENCH / "profile_intake.py"), "--no-profile",
                          "--seconds", str(seconds), "--store", store],
                         capture_output=True, text=True, env=env_for(path), timeout=300)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return float(json.loads(res.stdout.strip().splitlines()[-1])["cpu_ms_per_request"])


def delivery_rate(path: Path | None, work: Path, juhe_url: str, store: str) -> float:
    res = subprocess.run([sys.executable, "-c", DELIVERY, str(work), juhe_url, store,
                          str(BENCH)], capture_output=True, text=True, env=env_for(path),
                         timeout=300)
    if res.returncode != 0:
        raise RuntimeError(res.stderr[-2000:])
    return float(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description="A/B a bridge/ patch on stable figures")
    ap.add_argument("patches", nargs="+")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--delivery", action="store_true", help="also Deliverer SMS/s")
    ap.add_argument("--print-path", action="store_true",
                    help="keep the patched copy and print its folder")
    args = ap.parse_args()
    copy = patched_copy(args.patches)
    work = Path(tempfile.mkdtemp(prefix="bridge-ab-work."))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        with bl.Procs() as procs:
            _, redis_url = bl.start_redis(procs, work)
            juhe_url = ""
            if args.delivery:
                _, juhe_url = bl.start_fake_juhe(procs, work)
            for rnd in range(args.rounds):
                for label, path in (("A", None), ("B", copy)):
                    for kind, store in (("sqlite", "sqlite"), ("redis", redis_url)):
                        v = cpu_ms(path, store, args.seconds)
                        results.setdefault((f"intake CPU ms/webhook, {kind}", label), []).append(v)
                        if args.delivery:
                            st = (f"sqlite:///{work}/d-{rnd}-{label}.db" if kind == "sqlite"
                                  else redis_url[:-1] + "1")  # db 1: nothing else queued
                            r = delivery_rate(path, work, juhe_url, st)
                            results.setdefault((f"Deliverer SMS/s, {kind}", label), []).append(r)
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if args.print_path:
            print(f"patched copy kept: {copy} (python bench/run.py --bridge-path {copy})")
        else:
            shutil.rmtree(copy, ignore_errors=True)
    print(f"patches: {' '.join(args.patches)}; medians of {args.rounds} interleaved rounds")
    for name in dict.fromkeys(k for k, _ in results):
        a = statistics.median(results[(name, "A")])
        b = statistics.median(results[(name, "B")])
        print(f"  {name}: A {a:.2f}  B {b:.2f}  B/A {b / a:.2f}×")


if __name__ == "__main__":
    main()
