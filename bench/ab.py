#!/usr/bin/env python3
"""A/B a patch to ``bridge/`` without touching the working tree: copy ``bridge/`` to a temporary
folder, apply the patch(es) there (``git apply``), and compare the copy with the original,
interleaved round by round, on figures that hold still on a busy machine:

* intake: CPU ms per webhook in one process (``bench/profile_intake.py --no-profile``: the
  Flask app, 10 alerts, 20 SMS, no HTTP server, no delivery), SQLite and Redis;
* delivery (``--delivery``): SMS/s of one Deliverer to the fake Juhe (``bench/delivery.py``).

    python bench/ab.py bench/patches/render-once.diff [more.diff ...] [--rounds 4] [--delivery]
    python bench/ab.py --revs ca1d807 HEAD~2 HEAD [--sms 10]

Prints the median of each figure for A (as is) and B (patched) and B's ratio to A; with
``--revs``, for the ``bridge/`` of each git revision (``git archive``), each as a ratio to the
first (what a series of commits bought). To run the
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


def rev_copy(rev: str) -> Path:
    """``bridge/`` of git revision ``rev`` in a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"bridge-rev-{rev.replace('/', '_')}."))
    archive = subprocess.run(["git", "archive", rev, "bridge"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def cpu_ms(path: Path | None, store: str, seconds: float, sms: int = 20) -> float:
    res = subprocess.run([sys.executable, str(BENCH / "profile_intake.py"), "--no-profile",
                          "--seconds", str(seconds), "--store", store, "--sms", str(sms)],
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
    ap.add_argument("patches", nargs="*")
    ap.add_argument("--revs", nargs="+", metavar="REV",
                    help="compare the bridge/ of these git revisions instead of patches")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--sms", type=int, default=20, choices=(10, 20),
                    help="SMS per webhook (profile_intake.py --sms)")
    ap.add_argument("--delivery", action="store_true", help="also Deliverer SMS/s")
    ap.add_argument("--print-path", action="store_true",
                    help="keep the patched copy and print its folder")
    args = ap.parse_args()
    if bool(args.patches) == bool(args.revs):
        ap.error("give patches or --revs")
    variants: list[tuple[str, Path | None]] = (
        [(rev, rev_copy(rev)) for rev in args.revs] if args.revs
        else [("A", None), ("B", patched_copy(args.patches))])
    work = Path(tempfile.mkdtemp(prefix="bridge-ab-work."))
    results: dict[tuple[str, str], list[float]] = {}
    try:
        with bl.Procs() as procs:
            _, redis_url = bl.start_redis(procs, work)
            juhe_url = ""
            if args.delivery:
                _, juhe_url = bl.start_fake_juhe(procs, work)
            for rnd in range(args.rounds):
                for label, path in variants:
                    _measure(results, label, path, args, rnd, work, redis_url, juhe_url)
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for label, path in variants:
            if path is None:
                continue
            if args.print_path:
                print(f"copy of {label} kept: {path} (python bench/run.py --bridge-path {path})")
            else:
                shutil.rmtree(path, ignore_errors=True)
    _report(results, [label for label, _ in variants], args)


def _measure(results: dict[tuple[str, str], list[float]], label: str, path: Path | None,
             args: argparse.Namespace, rnd: int, work: Path, redis_url: str,
             juhe_url: str) -> None:
    for kind, store in (("sqlite", "sqlite"), ("redis", redis_url)):
        v = cpu_ms(path, store, args.seconds, args.sms)
        results.setdefault((f"intake CPU ms/webhook ({args.sms} SMS), {kind}", label),
                           []).append(v)
        if args.delivery:
            st = (f"sqlite:///{work}/d-{rnd}-{label}.db" if kind == "sqlite"
                  else redis_url[:-1] + "1")  # db 1: nothing else queued
            r = delivery_rate(path, work, juhe_url, st)
            results.setdefault((f"Deliverer SMS/s, {kind}", label), []).append(r)


def _report(results: dict[tuple[str, str], list[float]], labels: list[str],
            args: argparse.Namespace) -> None:
    what = " ".join(args.revs) if args.revs else "patches: " + " ".join(args.patches)
    print(f"{what}; medians of {args.rounds} interleaved rounds, each as a ratio to "
          f"{labels[0]}")
    for name in dict.fromkeys(k for k, _ in results):
        first = statistics.median(results[(name, labels[0])])
        cells = [f"{label} {statistics.median(results[(name, label)]):.2f} "
                 f"({statistics.median(results[(name, label)]) / first:.2f}×)"
                 for label in labels]
        print(f"  {name}: " + "  ".join(cells))


if __name__ == "__main__":
    main()
