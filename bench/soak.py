#!/usr/bin/env python3
"""A bounded soak of ``bridge serve``: mixed webhooks at a steady rate against a Juhe that fails
5 % of the sends, then checks that nothing was lost, doubled or leaked.

    python bench/soak.py [--minutes 10] [--rate 20] [--store sqlite|redis] [--fail-rate 0.05]

For ``--minutes`` it POSTs ``--rate`` Alertmanager webhooks a second (from 4 sender threads, on
a fixed schedule): new firing groups of 1-3 alerts (50 %), verbatim repeats of earlier bodies
(20 %), resolutions of alerts fired earlier (15 %) and bad bodies (15 %: not JSON, not an
object, ``alerts`` not a list, an alert without labels), to ``bridge serve`` (2 workers and
the delivery process, SQLite in a temporary folder or a redis-server with AOF) whose
``JUHE_URL`` is ``bench/soakjuhe.py``: 5 % of sends fail, a fifth of them permanently (205404)
and the rest transiently (HTTP 500, 205403), which the bridge retries (``BRIDGE_RETRY_BASE``
0.2 s, ``BRIDGE_RETRY_FOR`` 30 s). RSS of the master and each worker is sampled all along.
Then it waits for the queue to drain and checks:

* every webhook got the answer it should (200 for good bodies, 400 for bad ones, never 5xx);
* every decided SMS (the sum of the answers' ``queued``) is in the store as ``sent`` or
  ``failed``, none still pending (store counts, also as ``/metrics`` shows them), and every
  ``failed`` one has a reason (``/api/notifications?status=failed``);
* no SMS went out twice: the fake's log has no two messages with the same (mobile, tpl_id,
  alert name) (each alert name is one fingerprint; it fires once and resolves at most once),
  and it holds exactly as many messages as the store has ``sent``;
* memory is flat: each worker's RSS at the end is within max(8 MB, 10 %) of its RSS after the
  first fifth of the run, and no worker was replaced.

It prints the RSS series and a summary, and appends a "Soak" section to ``bench/RESULTS.md``
(``--no-results`` to skip). Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402
import support  # noqa: E402  (tests/support.py, on sys.path through benchlib)

SOAK_RULES = (support.SPEC_RECEIVERS + """\
templates:
  firing:
    tpl_id: 111
    vars:
      name: "{{ labels.alertname }}"
      host: "{{ labels.instance | default('-') }}"
      summary: "{{ annotations.summary | default('-') }}"
""" + support.RESOLVED + support.NO_GAP + "routes:\n" + support.db_route('team="db"')
              + support.ops_route("everything") + "    resolved_template: resolved\n")

BAD_BODIES = [b"this is not json", b"[1, 2, 3]", b'{"alerts": "none"}',
              b'{"version": "4", "alerts": [{"status": "firing"}]}', b'{"status": "firing"}']


class Traffic:
    """Makes the soak's webhook bodies; only the scheduler thread calls it."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.run = f"{seed % 0x10000:04x}"
        self.n = 0
        self.sent_bodies: list[bytes] = []
        self.firing: list[tuple[float, dict[str, Any]]] = []  # (sent at, alert) not resolved

    def alert(self) -> dict[str, Any]:
        self.n += 1
        critical = self.rng.random() < 0.5
        name = f"S{self.run}-{self.n}"
        starts = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return {
            "status": "firing",
            "labels": {"alertname": name, "severity": "critical" if critical else "warning",
                       "team": "db" if critical else "web", "instance": f"h{self.n % 50}:9100"},
            "annotations": {"summary": f"soak alert {self.n}"},
            "startsAt": starts, "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph",
            "fingerprint": f"{self.run}{self.n:012x}",
        }

    @staticmethod
    def body(alerts: list[dict[str, Any]], status: str) -> bytes:
        return json.dumps({
            "version": "4", "groupKey": "{}:{soak}", "truncatedAlerts": 0, "status": status,
            "receiver": "sms", "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093", "alerts": alerts,
        }).encode()

    def next(self, now: float) -> tuple[str, bytes]:
        """One webhook: (kind, body); kind is firing, repeat, resolved or bad."""
        r = self.rng.random()
        if r < 0.15:
            return "bad", self.rng.choice(BAD_BODIES)
        if r < 0.35 and self.sent_bodies:
            return "repeat", self.rng.choice(self.sent_bodies[-500:])
        ready = [i for i, (t, _) in enumerate(self.firing[:50]) if now - t > 2.0]
        if r < 0.50 and ready:
            i = self.rng.choice(ready)
            _, alert = self.firing.pop(i)
            resolved = {**alert, "status": "resolved",
                        "endsAt": datetime.now(UTC).isoformat().replace("+00:00", "Z")}
            return "resolved", self.body([resolved], "resolved")
        alerts = [self.alert() for _ in range(self.rng.randint(1, 3))]
        body = self.body(alerts, "firing")
        self.sent_bodies.append(body)
        self.firing += [(now, a) for a in alerts]
        return "firing", body


class Sender:
    """Posts webhooks from a few threads and tallies the answers."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.pool = ThreadPoolExecutor(threads)
        self.local = threading.local()
        self.lock = threading.Lock()
        self.answers: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.problems: list[str] = []
        self.latency: list[float] = []

    def submit(self, kind: str, body: bytes) -> None:
        self.pool.submit(self._post, kind, body)

    def _post(self, kind: str, body: bytes) -> None:
        session = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
        t0 = time.perf_counter()
        try:
            r = session.post(self.url, data=body, timeout=30,
                             headers={"Content-Type": "application/json"})
        except requests.RequestException as exc:
            with self.lock:
                self.answers[f"{kind}:error"] += 1
                self.problems.append(f"{kind}: {type(exc).__name__}: {exc}")
            return
        elapsed = time.perf_counter() - t0
        want = 400 if kind == "bad" else 200
        with self.lock:
            self.latency.append(elapsed)
            self.answers[f"{kind}:{r.status_code}"] += 1
            if r.status_code != want:
                self.problems.append(f"{kind}: HTTP {r.status_code} (want {want}): "
                                     f"{r.text[:200]}")
                return
            try:
                data = r.json()
            except ValueError:
                self.problems.append(f"{kind}: answer not JSON: {r.text[:200]}")
                return
            if want == 400:
                if not data.get("error"):
                    self.problems.append(f"bad body answered without error: {data}")
                return
            for k in ("alerts", "queued", "suppressed", "held"):
                self.counts[k] += int(data.get(k, 0))

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def sample_rss(master: int) -> dict[int, float]:
    out = {}
    for pid in [master, *bl.children(master)]:
        rss = bl.rss_mb(pid)
        if rss is not None:
            out[pid] = rss
    return out


def queue_depth(base: str) -> dict[str, float]:
    """``bridge_queue_depth`` per state, as ``/metrics`` shows it."""
    text = requests.get(base + "/metrics", timeout=10).text
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^bridge_queue_depth\{state="(\w+)"\} (\S+)$', text, re.M)}


def main() -> int:
    ap = argparse.ArgumentParser(description="bounded soak of bridge serve")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=20.0, help="webhooks per second")
    ap.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    ap.add_argument("--fail-rate", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    work = Path(tempfile.mkdtemp(prefix="bridge-soak."))
    print(f"soak: {args.minutes:g} min at {args.rate:g} webhooks/s, {args.store}, fake Juhe "
          f"failing {args.fail_rate:.0%}, seed {seed}; work folder {work}", flush=True)
    started = time.time()
    try:
        with bl.Procs() as procs:
            report = soak(args, seed, work, procs)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    report["took"] = time.time() - started
    print_report(report)
    if not args.no_results:
        append_results(report, args, seed)
    return 0 if all(ok for _, ok, _ in report["checks"]) else 1


def soak(args: argparse.Namespace, seed: int, work: Path, procs: bl.Procs) -> dict[str, Any]:
    juhe_log = work / "juhe.jsonl"
    fake, juhe_url = bl.start_fake_juhe(procs, work, script=BENCH / "soakjuhe.py",
                                        extra=["--fail-rate", str(args.fail_rate),
                                               "--seed", str(seed)], log=juhe_log)
    rules = work / "rules.yaml"
    rules.write_text(SOAK_RULES, encoding="utf-8")
    store = f"sqlite:///{work / 'bridge.db'}"
    if args.store == "redis":
        _, store = bl.start_redis(procs, work)
    port = bl.free_port()
    env = bl.bridge_env(store, rules, juhe_url, port, BRIDGE_RETRY_BASE="0.2s",
                        BRIDGE_RETRY_FOR="30s", BRIDGE_DELIVERY_INTERVAL="0.1s")
    bridge = bl.start_bridge(procs, work, env, name="bridge-soak")
    base = f"http://127.0.0.1:{port}"
    sender = Sender(base + "/webhook/alertmanager")
    traffic = Traffic(seed)
    kinds: Counter[str] = Counter()
    duration = args.minutes * 60
    every = max(5.0, duration / 30)
    series: list[tuple[float, dict[int, float], dict[str, float]]] = []
    t0 = time.monotonic()
    next_sample = t0
    i = 0
    print(f"  sending; RSS (MB) of master and workers and queue depth every {every:.0f} s:",
          flush=True)
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        if now >= next_sample:
            rss = sample_rss(bridge.pid)
            try:
                depth = queue_depth(base)
            except requests.RequestException:
                depth = {}
            series.append((now - t0, rss, depth))
            print(f"  t={now - t0:6.0f}s  " + "  ".join(f"{pid}:{mb:.1f}" for pid, mb in
                                                       rss.items())
                  + f"  pending {sum(depth.get(s, 0) for s in ('queued', 'retrying', 'held')):.0f}"
                  f" sent {depth.get('sent', 0):.0f} failed {depth.get('failed', 0):.0f}",
                  flush=True)
            next_sample += every
        due = t0 + i / args.rate
        if due > now:
            time.sleep(min(due - now, 0.05))
            continue
        kind, body = traffic.next(time.time())
        kinds[kind] += 1
        sender.submit(kind, body)
        i += 1
    sender.close()
    sent_for = time.monotonic() - t0
    print(f"  sent {i} webhooks in {sent_for:.0f} s; draining the queue", flush=True)
    drain_t0 = time.monotonic()
    depth = {}
    while time.monotonic() - drain_t0 < 90:
        depth = queue_depth(base)
        if sum(depth.get(s, 0) for s in ("queued", "retrying", "held")) == 0:
            break
        time.sleep(1)
    drained = time.monotonic() - drain_t0
    end_rss = sample_rss(bridge.pid)
    series.append((time.monotonic() - t0, end_rss, depth))
    failed_api = requests.get(base + "/api/notifications",
                              params={"status": "failed", "limit": 1000}, timeout=30).json()
    stats = requests.get(juhe_url.replace("/sms/send", "/_stats"), timeout=10).json()
    log_text = bridge.log.read_text(encoding="utf-8", errors="replace")
    procs.stop(bridge)

    from bridge.store import open_store

    s = open_store(store)
    counts = s.counts()
    s.close()
    messages = [json.loads(line) for line in juhe_log.read_text(encoding="utf-8").splitlines()
                if line.strip()] if juhe_log.exists() else []
    keys = Counter((m["mobile"], m["tpl_id"], m["vars"].get("name")) for m in messages)
    dups = {k: n for k, n in keys.items() if n > 1}

    checks: list[tuple[str, bool, str]] = []
    bad_answers = sender.problems
    checks.append(("every webhook answered as it should (200 good, 400 bad, no 5xx)",
                   not bad_answers,
                   f"{dict(sorted(sender.answers.items()))}"
                   + (f"; first problems: {bad_answers[:3]}" if bad_answers else "")))
    pending = counts["queued"] + counts["retrying"] + counts["held"]
    decided = sender.counts["queued"] + sender.counts["held"]
    finished = counts["sent"] + counts["failed"]
    checks.append(("queue drained: nothing queued, retrying or held", pending == 0,
                   f"after {drained:.0f} s: {counts}"))
    checks.append(("every decided SMS is sent or failed",
                   finished == decided and counts["suppressed"] == 0,
                   f"answers queued {decided:,}; store sent {counts['sent']:,} + failed "
                   f"{counts['failed']:,} = {finished:,}; stored suppressed "
                   f"{counts['suppressed']} (nothing is muted or limited; duplicates and "
                   f"resolved-never-paged, {sender.counts['suppressed']:,} answered, are only "
                   "counted)"))
    failed_items = failed_api.get("notifications", [])
    no_reason = [n for n in failed_items if not n.get("reason")]
    checks.append(("every failed SMS has a reason (/api/notifications?status=failed)",
                   not no_reason and len(failed_items) == min(counts["failed"], 1000),
                   f"{len(failed_items)} failed listed, {len(no_reason)} without reason; e.g. "
                   + (repr(failed_items[0]["reason"]) if failed_items else "-")))
    metrics_ok = all(depth.get(k, -1) == counts[k] for k in counts)
    checks.append(("/metrics bridge_queue_depth agrees with the store", metrics_ok,
                   f"{ {k: int(v) for k, v in depth.items()} }"))
    checks.append(("no SMS sent twice (fake's log: (mobile, tpl_id, name) unique)", not dups,
                   f"{len(messages):,} messages, {len(dups)} repeated"
                   + (f": {list(dups.items())[:3]}" if dups else "")))
    checks.append(("fake's accepted messages = store's sent", len(messages) == counts["sent"],
                   f"{len(messages):,} vs {counts['sent']:,}"))
    flat, mem_text = memory_check(series, bridge.pid)
    checks.append(("memory flat, no worker replaced", flat, mem_text))
    tracebacks = log_text.count("Traceback")
    checks.append(("no traceback in the service log", tracebacks == 0, f"{tracebacks} found"))
    lat = sorted(sender.latency)
    return {
        "webhooks": i, "seconds": sent_for, "kinds": dict(kinds), "answers": sender.counts,
        "counts": counts, "stats": stats, "checks": checks, "series": series,
        "master": bridge.pid, "drained": drained,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else 0.0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0.0,
    }


def memory_check(series: list[tuple[float, dict[int, float], dict[str, float]]],
                 master: int) -> tuple[bool, str]:
    """Each worker present from the first fifth of the run to the end, and its RSS at the end
    within max(8 MB, 10 %) of then."""
    if len(series) < 3:
        return True, "too few samples"
    ref_i = max(1, len(series) // 5)
    ref, last = series[ref_i][1], series[-1][1]
    workers_ref = {p for p in ref if p != master}
    workers_end = {p for p in last if p != master}
    ok = workers_ref == workers_end and bool(workers_end)
    parts = []
    for pid in sorted(workers_ref | workers_end | {master}):
        a, b = ref.get(pid), last.get(pid)
        if a is None or b is None:
            parts.append(f"{pid}: {a} -> {b} (replaced)")
            ok = False
            continue
        grew = b - a
        good = grew <= max(8.0, 0.10 * a)
        ok = ok and good
        role = "master" if pid == master else "worker"
        parts.append(f"{role} {pid}: {a:.1f} -> {b:.1f} MB ({grew:+.1f})")
    return ok, f"from t={series[ref_i][0]:.0f}s to the end: " + "; ".join(parts)


def print_report(rep: dict[str, Any]) -> None:
    print(f"\nsoak: {rep['webhooks']:,} webhooks in {rep['seconds']:.0f} s ({rep['kinds']}); "
          f"answers {dict(rep['answers'])}; p50 {rep['p50_ms']:.1f} ms p99 {rep['p99_ms']:.1f} ms"
          f"; fake Juhe {rep['stats']}")
    for name, ok, text in rep["checks"]:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {text}")


def append_results(rep: dict[str, Any], args: argparse.Namespace, seed: int) -> None:
    m = bl.machine()
    lines = [
        "",
        f"## Soak — {m['date']}",
        "",
        f"Command: `python bench/soak.py --minutes {args.minutes:g} --rate {args.rate:g} "
        f"--store {args.store} --fail-rate {args.fail_rate:g} --seed {seed}` "
        f"({rep['took'] / 60:.1f} min); machine: {m['nproc']} CPUs ({m['cpu']}), "
        f"Python {m['python']}.",
        "",
        f"{rep['webhooks']:,} webhooks in {rep['seconds']:.0f} s ({rep['kinds']}), webhook "
        f"latency p50 {rep['p50_ms']:.1f} ms, p99 {rep['p99_ms']:.1f} ms; answers counted "
        f"{dict(rep['answers'])}; the fake Juhe: {rep['stats']}; queue drained "
        f"{rep['drained']:.0f} s after the last webhook.",
        "",
        "| check | | |",
        "| --- | --- | --- |",
    ]
    for name, ok, text in rep["checks"]:
        lines.append(f"| {name} | **{'PASS' if ok else 'FAIL'}** | {text} |")
    lines += ["", "RSS series (MB; master first, then the workers) and queue depth:", "", "```"]
    for t, rss, depth in rep["series"]:
        pending = sum(depth.get(s, 0) for s in ("queued", "retrying", "held"))
        lines.append(f"t={t:5.0f}s  " + "  ".join(f"{mb:6.1f}" for _, mb in
                                                 sorted(rss.items(),
                                                        key=lambda kv: kv[0] != rep["master"]))
                     + f"   pending {pending:.0f}  sent {depth.get('sent', 0):.0f}"
                     f"  failed {depth.get('failed', 0):.0f}")
    lines.append("```")
    out = BENCH / "RESULTS.md"
    with open(out, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"appended to {out}")


if __name__ == "__main__":
    sys.exit(main())
