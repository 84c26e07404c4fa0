#!/usr/bin/env python3
"""The bridge's benchmarks (issue #6), one command, a few minutes, loopback only:

    python bench/run.py [--quick] [--only intake,page,delivery,growth,profile]
                        [--bridge-path DIR]

* **intake** (issue 14): ``wrk`` (32 connections, 10 s; ``--quick`` 3 s) POSTs Alertmanager
  bodies of 10 alerts with fresh fingerprints (``bench/webhook.lua``). Every server runs under
  the same gunicorn settings, ``bridge serve``'s: 2 gthread workers × 32 threads
  (``benchlib.WORKERS``/``THREADS``). Baselines: ``bench/bare_app.py`` (constant-JSON Flask)
  and ``bench/raw_app.py`` (parses the body, writes one row per alert in one SQLite WAL
  transaction / one Redis EVALSHA with AOF on; fresh file / fresh redis-server). The bridge on
  SQLite and on Redis: the **10-SMS body** (``INTAKE_RULES_ONE_ROUTE``: one route, one mobile)
  with ``bridge serve`` (delivery on, sending to the fake Juhe) and with ``serve
  --no-delivery`` + ``bridge worker``, as ratios to the raw baseline; the **20-SMS body**
  (``INTAKE_RULES``: two routes, two mobiles) with ``bridge serve``, as a ratio to bare Flask.
  Also 2 connections (one per worker): the latency of one request without queueing. Every run
  checks that what was answered was stored.
* **page** (issue 23): time from a webhook sent to its SMS at the fake Juhe, idle (40 one-alert
  webhooks 0.3 s apart) and in a storm (one webhook of 1,000 alerts to one mobile), for
  ``bridge serve`` on SQLite and on Redis against a synchronous relay (``bench/page.py``,
  ``bench/relay_app.py``) in the same run.
* **delivery**: SMS/s of one ``Deliverer`` from a store of 2,000 queued SMS to the fake Juhe,
  against a bare ``requests.Session`` loop posting the same forms (``bench/delivery.py``).
* **growth**: intake (``bridge serve``, 10-SMS body) and delivery again with 1,000,000
  finished notifications already in the store (``--quick``: 100,000; ``bench/fill.py``), as
  ratios to the empty store; the store's size before and after ``prune``.
* **memory**: RSS of each gunicorn worker after its intake run.
* **profile**: CPU per webhook in one process against the bare app's, the intake path under
  pyinstrument (``bench/profile_intake.py``), and (full run) a live ``bridge serve`` worker
  under py-spy, when installed.

Writes ``bench/RESULTS.md`` (keeping any soak sections ``bench/soak.py`` appended). Every
server started is stopped by its process group in a ``finally``. ``--bridge-path DIR`` runs
another checkout's ``bridge`` package (``DIR/bridge``) instead, to measure a patch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import benchlib as bl  # noqa: E402

RESULTS = BENCH / "RESULTS.md"
SECTIONS = ("intake", "page", "delivery", "growth", "profile")


@dataclass
class Row:
    """One reported figure: its value, the baseline it is divided by, and its target."""

    section: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline: float | None = None
    target: str = ""
    ok: bool | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline  # type: ignore[operator]


@dataclass
class Report:
    quick: bool
    started: float = field(default_factory=time.time)
    rows: list[Row] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    load_start: float = field(default_factory=lambda: os.getloadavg()[0])

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        ratio = f" = {row.ratio:.2f}× {row.baseline_name}" if row.ratio is not None else ""
        verdict = "" if row.ok is None else f"  [{bl.verdict(row.ok)}: {row.target}]"
        print(f"  {row.name}: {row.value:,.1f} {row.unit}{ratio}{verdict}", flush=True)
        return row

    def detail(self, section: str, line: str) -> None:
        self.details.setdefault(section, []).append(line)


@dataclass(frozen=True)
class Workload:
    """A rules file and the SMS it makes of one ``bench/webhook.lua`` body (10 alerts)."""

    rules: Path
    sms: int


class Bench:
    """The run: settings, a work folder, the servers, the report."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.quick: bool = args.quick
        self.seconds = 3.0 if self.quick else 10.0
        self.lat_seconds = 2.0 if self.quick else 4.0
        self.fill_n = 100_000 if self.quick else 1_000_000
        self.delivery_n = 2000
        self.only = set(args.only.split(",")) if args.only else set(SECTIONS)
        self.work = Path(tempfile.mkdtemp(prefix="bridge-bench."))
        self.rules = self.work / "rules.yaml"
        self.rules.write_text(bl.INTAKE_RULES, encoding="utf-8")
        rules10 = self.work / "rules-10.yaml"
        rules10.write_text(bl.INTAKE_RULES_ONE_ROUTE, encoding="utf-8")
        #: the 10-SMS body (one route, one mobile) and the 20-SMS body (two routes)
        self.w10 = Workload(rules10, 10)
        self.w20 = Workload(self.rules, 20)
        self.report = Report(self.quick)
        self.extra_env = {"PYTHONPATH": args.bridge_path} if args.bridge_path else {}
        self.tag = random.randrange(0x1000, 0xF000)
        self.procs = bl.Procs()
        self.juhe_url = ""

    # -- helpers ------------------------------------------------------------------------
    def next_tag(self) -> str:
        self.tag += 1
        return f"{self.tag % 0x10000:04x}"

    def bridge(self, store: str, name: str, rules: Path, apart: bool = False,
               **env: str) -> tuple[bl.Proc, bl.Proc | None, str]:
        """``bridge serve`` on ``store`` with ``rules``; with ``apart``, ``serve
        --no-delivery`` and a ``bridge worker`` beside it. Returns (serve, worker or None, base
        URL)."""
        port = bl.free_port()
        full = bl.bridge_env(store, rules, self.juhe_url, port, **self.extra_env, **env)
        proc = bl.start_bridge(self.procs, self.work, full, name=name,
                               options=("--no-delivery",) if apart else ())
        worker = None
        if apart:
            worker = bl.start_bridge(self.procs, self.work, full, name=name + "-worker",
                                     command="worker")
        return proc, worker, f"http://127.0.0.1:{port}"

    def wrk(self, base: str, connections: int, seconds: float) -> dict[str, Any]:
        return bl.run_wrk(base + "/webhook/alertmanager", seconds, connections,
                          tag=self.next_tag())

    def worker_rss(self, master: int) -> list[float]:
        return [r for r in (bl.rss_mb(pid) for pid in bl.children(master)) if r is not None]

    def measure(self, base: str, master: int, count: Callable[[], int],
                latency: bool = True) -> dict[str, Any]:
        """The intake measurement every server gets: a 1 s warm-up, 32 connections for
        ``self.seconds`` (RSS of ``master``'s workers right after), then (``latency``) 2
        connections, one per worker. ``count()`` is read before and 1 s after the 32-connection
        run: ``stored`` is what that run added."""
        self.wrk(base, 32, 1)  # warm up: connections, templates, schema
        time.sleep(0.5)
        before = count()
        r = self.wrk(base, 32, self.seconds)
        rss = self.worker_rss(master)
        time.sleep(1)  # let the workers finish what the closed connections left queued
        stored = count() - before
        lat = self.wrk(base, 2, self.lat_seconds) if latency else None
        return {"wrk": r, "lat": lat, "rss": rss, "stored": stored}

    def check(self, label: str, res: dict[str, Any], per_request: int, what: str) -> None:
        """Details line of a 32-connection run, and a note when fewer than ``per_request``
        rows per answered request were stored or wrk saw errors."""
        r, stored = res["wrk"], res["stored"]
        expected = per_request * r["requests"]
        self.report.detail("intake", _wrk_line(f"{label}, 32 conns", r)
                           + f"; {stored:,} {what} stored for {expected:,} expected "
                           f"({per_request} per answered request; requests in flight at the "
                           "end add a few)")
        if res["lat"] is not None:
            self.report.detail("intake", _wrk_line(f"{label}, 2 conns", res["lat"]))
        self.report.detail("memory", f"{label} workers after intake: {_mb(res['rss'])}")
        if stored < expected:
            self.report.notes.append(f"{label}: only {stored} {what} stored for {expected} "
                                     "expected")
        if r["errors"] or r["non2xx"]:
            self.report.notes.append(f"{label}: wrk saw {r['errors']} socket errors and "
                                     f"{r['non2xx']} non-2xx answers")

    # -- intake -------------------------------------------------------------------------
    def intake_bare(self) -> None:
        print(f"intake: bare Flask app (baseline, gthread {bl.WORKERS}×{bl.THREADS})",
              flush=True)
        port = bl.free_port()
        proc = bl.start_bare(self.procs, self.work, port)
        try:
            res = self.measure(f"http://127.0.0.1:{port}", proc.pid, lambda: 0)
        finally:
            self.procs.stop(proc)
        self.report.data["bare"] = res
        r, lat = res["wrk"], res["lat"]
        rep = self.report
        rep.add(Row("intake", "bare Flask: req/s (32 conns)", r["rps"], "req/s"))
        rep.add(Row("intake", "bare Flask: p99 (2 conns)", lat["p99_ms"], "ms"))
        rep.detail("intake", _wrk_line("bare Flask, 32 conns", r))
        rep.detail("intake", _wrk_line("bare Flask, 2 conns", lat))
        rep.detail("memory", f"bare Flask workers: {_mb(res['rss'])}")

    def intake_raw(self, kind: str, label: str) -> dict[str, Any]:
        """The raw-storage baseline (``bench/raw_app.py``, 1 row per alert: the 10-SMS body)
        on a fresh SQLite file or a fresh redis-server with AOF on."""
        print(f"intake: raw {label} baseline, 10 rows per request in one "
              f"{'transaction' if kind == 'sqlite' else 'EVALSHA'}", flush=True)
        rproc = None
        if kind == "sqlite":
            store = f"sqlite:{self.work / 'raw.db'}"
        else:
            rproc, store = bl.start_redis(self.procs, self.work)
        port = bl.free_port()
        try:
            proc = bl.start_raw(self.procs, self.work, port, store, name=f"raw-{kind}")
            try:
                res = self.measure(f"http://127.0.0.1:{port}", proc.pid,
                                   lambda: bl.raw_stored(store))
            finally:
                self.procs.stop(proc)
        finally:
            if rproc is not None:
                self.procs.stop(rproc)
        self.check(f"raw {label}", res, 10, "rows")
        return res

    def intake_bridge(self, kind: str, store: str, label: str, work: Workload, spy: bool,
                      apart: bool = False, latency: bool = True) -> dict[str, Any]:
        """One ``bridge serve`` intake run on ``store`` with ``work``'s rules; returns the
        figures of :meth:`measure`. ``spy``: py-spy one worker under load afterwards."""
        print(f"intake: bridge serve{' --no-delivery + bridge worker' if apart else ''} on "
              f"{label}, {work.sms} SMS per request", flush=True)
        name = f"bridge-{label.replace(' ', '-')}-{work.sms}{'-apart' if apart else ''}"
        proc, worker, base = self.bridge(store, name, work.rules, apart=apart)
        try:
            res = self.measure(base, proc.pid, lambda: _stored(store), latency)
            if spy:
                self.spy(kind, base, proc.pid)
            if worker is not None:
                self.report.detail("memory", f"bridge worker beside serve --no-delivery on "
                                   f"{label}: {bl.rss_mb(worker.pid) or 0:.1f} MB")
        finally:
            if worker is not None:
                self.procs.stop(worker)
            self.procs.stop(proc)
        self.check(f"bridge/{label}, {work.sms} SMS{', delivery apart' if apart else ''}", res,
                   work.sms, "SMS")
        return res

    def spy(self, kind: str, base: str, master: int) -> None:
        """py-spy one worker of ``master`` while 32 connections load it."""
        import threading

        workers = bl.children(master)
        t = threading.Thread(target=lambda: self.wrk(base, 32, self.lat_seconds + 1.5))
        t.start()
        time.sleep(0.5)
        spied = bl.spy(workers[0], self.lat_seconds, self.work / f"spy-{kind}.txt")
        t.join()
        if spied:
            self.report.data[f"spy-{kind}"] = spied

    def intake_store(self, kind: str, label: str) -> dict[str, dict[str, Any]]:
        """The bridge runs on one store: ``serve`` (10 SMS, delivery on), ``apart`` (10 SMS,
        ``--no-delivery`` + ``bridge worker``), ``serve20`` (20 SMS, delivery on); each on a
        fresh SQLite file or a flushed redis-server."""
        plan = (("serve", self.w10, False, not self.quick), ("apart", self.w10, True, False),
                ("serve20", self.w20, False, False))
        rproc, url = bl.start_redis(self.procs, self.work) if kind == "redis" else (None, "")
        out: dict[str, dict[str, Any]] = {}
        try:
            for key, work, apart, spy in plan:
                store = url or f"sqlite:///{self.work / f'intake-{key}.db'}"
                if url:
                    _flush(url)  # one run's backlog is not the next one's work
                out[key] = self.intake_bridge(kind, store, label, work, spy=spy, apart=apart,
                                              latency=key != "serve20")
        finally:
            if rproc is not None:
                self.procs.stop(rproc)
        return out

    def section_intake(self) -> None:
        for kind, label, need in (("sqlite", "SQLite", 0.35), ("redis", "Redis", 0.45)):
            raw = self.intake_raw(kind, label)
            runs = self.intake_store(kind, label)
            self.report.data[f"raw-{kind}"] = raw
            self.report.data[f"intake-{kind}"] = runs["serve"]
            self.intake_rows(label, need, raw, runs)

    def intake_rows(self, label: str, need: float, raw: dict[str, Any],
                    runs: dict[str, dict[str, Any]]) -> None:
        """The table rows of one store: the raw baseline, the bridge against it (10 SMS) and
        against bare Flask (20 SMS), latency without queueing, memory."""
        rep = self.report
        bare = rep.data["bare"]
        rr, rl = raw["wrk"], raw["lat"]
        raw_name = f"raw {label}"
        rep.add(Row("intake", f"{raw_name} (10 rows/request): req/s (32 conns)", rr["rps"],
                    "req/s", "bare req/s", bare["wrk"]["rps"]))
        rep.add(Row("intake", f"{raw_name}: p99 (32 conns)", rr["p99_ms"], "ms"))
        rep.add(Row("intake", f"{raw_name}: p99 (2 conns)", rl["p99_ms"], "ms",
                    "bare p99 (2 conns)", bare["lat"]["p99_ms"]))
        r, lat = runs["serve"]["wrk"], runs["serve"]["lat"]
        name = f"bridge/{label}, 10 SMS"
        rep.add(Row("intake", f"{name}: req/s (32 conns)", r["rps"], "req/s",
                    f"{raw_name} req/s", rr["rps"], f"≥ {need:.2f}× raw",
                    r["rps"] >= need * rr["rps"]))
        rep.add(Row("intake", f"{name}: p99 (2 conns, delivery on)", lat["p99_ms"], "ms",
                    f"{raw_name} p99 (2 conns)", rl["p99_ms"], "≤ 10 ms", lat["p99_ms"] <= 10))
        rep.add(Row("intake", f"{name}: p99 (32 conns)", r["p99_ms"], "ms",
                    f"{raw_name} p99", rr["p99_ms"]))
        a, alat = runs["apart"]["wrk"], runs["apart"]["lat"]
        rep.add(Row("intake", f"{name}, delivery apart: req/s (32 conns)", a["rps"], "req/s",
                    f"{raw_name} req/s", rr["rps"]))
        rep.add(Row("intake", f"{name}, delivery apart: p99 (2 conns)", alat["p99_ms"], "ms",
                    f"{raw_name} p99 (2 conns)", rl["p99_ms"]))
        t = runs["serve20"]["wrk"]
        rep.add(Row("intake", f"bridge/{label}, 20 SMS: req/s (32 conns)", t["rps"], "req/s",
                    "bare req/s", bare["wrk"]["rps"]))
        rss = max(max(run["rss"], default=0.0) for run in runs.values())
        rep.add(Row("memory", f"bridge/{label}: largest worker RSS after intake (3 runs)", rss,
                    "MB", "bare worker RSS", max(bare["rss"], default=0.0), "≤ 80 MB",
                    rss <= 80))

    # -- time to page -------------------------------------------------------------------
    def section_page(self) -> None:
        import page

        results = page.run(self.procs, self.work, self.juhe_url, ["sqlite", "redis"],
                           idle=20 if self.quick else 40, storm=1000,
                           extra_env=self.extra_env, log=lambda m: print(m, flush=True))
        rep = self.report
        rep.data["page"] = results
        relay, runs = results[0], results[1:]
        rep.add(Row("page", "relay: idle p99", relay["idle_p99_ms"], "ms"))
        rep.add(Row("page", "relay: storm of 1,000, last SMS", relay["storm_last_ms"], "ms"))
        for r in runs:
            name = r["label"]
            rep.add(Row("page", f"{name}: idle p50", r["idle_p50_ms"], "ms", "relay p50",
                        relay["idle_p50_ms"]))
            rep.add(Row("page", f"{name}: idle p99", r["idle_p99_ms"], "ms", "relay p99",
                        relay["idle_p99_ms"], "≤ 2.5× relay",
                        r["idle_p99_ms"] <= 2.5 * relay["idle_p99_ms"]))
            rep.add(Row("page", f"{name}: storm, first SMS", r["storm_first_ms"], "ms",
                        "relay first", relay["storm_first_ms"], "≤ 100 ms",
                        r["storm_first_ms"] <= 100))
            rep.add(Row("page", f"{name}: storm, last SMS", r["storm_last_ms"], "ms",
                        "relay last", relay["storm_last_ms"], "≤ 1.2× relay",
                        r["storm_last_ms"] <= 1.2 * relay["storm_last_ms"]))
            if r["idle_n"] != r["idle_sent"] or r["storm_n"] != r["storm_sent"]:
                rep.notes.append(f"page {name}: {r['idle_n']}/{r['idle_sent']} idle and "
                                 f"{r['storm_n']}/{r['storm_sent']} storm SMS arrived")
        rep.details["page"] = page.table(results)

    # -- delivery -----------------------------------------------------------------------
    def deliver(self, store: str, label: str) -> float:
        import delivery

        delivery.fill_queue(store, self.delivery_n)
        rate, sent = delivery.deliverer_rate(store, self.juhe_url, self.rules, self.delivery_n)
        if sent != self.delivery_n:
            self.report.notes.append(f"delivery {label}: {sent} sent of {self.delivery_n}")
        return rate

    def section_delivery(self) -> None:
        import delivery

        print(f"delivery: {self.delivery_n} SMS, bare requests loop (baseline)", flush=True)
        rep = self.report
        bare = max(delivery.bare_rate(self.juhe_url, self.delivery_n) for _ in range(2))
        rep.data["delivery-bare"] = bare
        rep.add(Row("delivery", "bare requests.Session loop", bare, "SMS/s"))
        for kind, label in (("sqlite", "SQLite"), ("redis", "Redis")):
            print(f"delivery: one Deliverer on {label}", flush=True)
            if kind == "sqlite":
                rate = self.deliver(f"sqlite:///{self.work / 'delivery.db'}", label)
            else:
                rproc, url = bl.start_redis(self.procs, self.work)
                try:
                    rate = self.deliver(url, label)
                finally:
                    self.procs.stop(rproc)
            rep.data[f"delivery-{kind}"] = rate
            rep.add(Row("delivery", f"Deliverer on {label}", rate, "SMS/s", "bare loop", bare,
                        "≥ 0.50× bare", rate >= 0.5 * bare))

    # -- growth -------------------------------------------------------------------------
    def section_growth(self) -> None:
        import fill

        rep = self.report
        n = self.fill_n
        for kind, label in (("sqlite", "SQLite"), ("redis", "Redis")):
            print(f"growth: {label} with {n:,} notifications already stored", flush=True)
            rproc = None
            try:
                t0 = time.monotonic()
                if kind == "sqlite":
                    path = self.work / "growth.db"
                    store = f"sqlite:///{path}"
                    from bridge.store import open_store

                    s = open_store(store)
                    s.ping()
                    s.close()
                    fill.fill_sqlite(str(path), n, progress=fill.progress_printer("fill"))
                else:
                    rproc, store = bl.start_redis(self.procs, self.work)
                    fill.fill_redis(store, n, progress=fill.progress_printer("fill"))
                fill_s = time.monotonic() - t0
                rep.detail("growth", f"{label}: filled {n:,} sent notifications (+ dedup) in "
                           f"{fill_s:.1f} s")
                print("  delivery with the fill in place", flush=True)
                rate = self.deliver(store, f"{label} {n:,}")
                res = self.intake_bridge(f"{kind}-full", store, f"{label} +{_short(n)}",
                                         self.w10, spy=False)
                size = _size(store)
                if kind == "redis":
                    rep.detail("growth", f"{label}: after the fill, delivery and intake: "
                               f"{bl.redis_aof(store)} (a rewrite forks redis-server and "
                               "competes for the CPUs)")
                from bridge.store import open_store

                s = open_store(store)
                t1 = time.monotonic()
                pruned = s.prune(time.time() - 5 * 86400)
                prune_s = time.monotonic() - t1
                s.close()
                after = _size(store)
            finally:
                if rproc is not None:
                    self.procs.stop(rproc)
            empty = rep.data.get(f"intake-{kind}")
            d_empty = rep.data.get(f"delivery-{kind}")
            r = res["wrk"]
            if empty:
                e = empty["wrk"]
                rep.add(Row("growth", f"{label} +{_short(n)}: intake req/s", r["rps"], "req/s",
                            "empty store", e["rps"], "≥ 1/1.2 of empty",
                            r["rps"] * 1.2 >= e["rps"]))
                rep.add(Row("growth", f"{label} +{_short(n)}: intake p99", r["p99_ms"], "ms",
                            "empty store", e["p99_ms"], "≤ 1.2× empty",
                            r["p99_ms"] <= 1.2 * e["p99_ms"]))
                rep.add(Row("growth", f"{label} +{_short(n)}: intake p99 (2 conns)",
                            res["lat"]["p99_ms"], "ms", "empty store", empty["lat"]["p99_ms"]))
            if d_empty:
                rep.add(Row("growth", f"{label} +{_short(n)}: delivery", rate, "SMS/s",
                            "empty store", d_empty, "≥ 1/1.2 of empty", rate * 1.2 >= d_empty))
            rep.add(Row("memory", f"{label} +{_short(n)}: largest worker RSS after intake",
                        max(res["rss"]), "MB", "", None, "≤ 80 MB", max(res["rss"]) <= 80))
            rep.detail("growth", f"{label}: size before prune {_size_text(size)}; "
                       f"prune(before = now - 5 d) deleted {pruned:,} items in {prune_s:.1f} s; "
                       f"after {_size_text(after)}")
            rep.data[f"growth-{kind}"] = {"before": size, "after": after, "pruned": pruned,
                                          "prune_s": prune_s}
            key = "file_mb" if kind == "sqlite" else "used_mb"
            rep.add(Row("growth", f"{label} +{_short(n)}: store size after prune",
                        after[key], "MB", "before prune", size[key]))

    # -- profile ------------------------------------------------------------------------
    def profile_run(self, *extra: str) -> dict[str, Any] | None:
        env = {**os.environ, **self.extra_env}
        res = subprocess.run([sys.executable, str(BENCH / "profile_intake.py"), *extra],
                             capture_output=True, text=True, env=env, timeout=300)
        if res.returncode != 0:
            self.report.notes.append(f"profile {' '.join(extra)} failed: {res.stderr[-500:]}")
            return None
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        return out

    def section_profile(self) -> None:
        print("profile: CPU per request in one process (no HTTP server, no profiler)",
              flush=True)
        rep = self.report
        secs = "2" if self.quick else "5"
        bare = self.profile_run("--bare", "--no-profile", "--seconds", secs)
        rproc, url = bl.start_redis(self.procs, self.work)
        try:
            for kind, store in (("sqlite", "sqlite"), ("redis", url)):
                cpu = self.profile_run("--store", store, "--no-profile", "--seconds", secs)
                if cpu is None or bare is None:
                    continue
                rep.add(Row("profile", f"intake CPU per request, {kind} (in one process)",
                            cpu["cpu_ms_per_request"], "ms", "bare Flask",
                            bare["cpu_ms_per_request"]))
        finally:
            self.procs.stop(rproc)
        print("profile: intake path in one process (pyinstrument)", flush=True)
        for kind in ("sqlite", "redis"):
            rproc = None
            try:
                store = "sqlite"
                if kind == "redis":
                    rproc, store = bl.start_redis(self.procs, self.work)
                prof = self.profile_run("--seconds", secs, "--store", store, "--json",
                                        "--top", "12")
            finally:
                if rproc is not None:
                    self.procs.stop(rproc)
            if prof is None:
                continue
            self.report.data[f"profile-{kind}"] = prof
            print(f"  {kind}: {prof['rps']:.0f} req/s in one process under the profiler; "
                  f"stages {prof['stages']}", flush=True)

    # -- the run ------------------------------------------------------------------------
    def run(self) -> None:
        bl.ensure_wrk()
        print(f"work folder {self.work}; {'quick' if self.quick else 'full'} run", flush=True)
        logging.basicConfig(level=logging.WARNING)
        if self.args.bridge_path:
            sys.path.insert(0, self.args.bridge_path)
        import bridge

        print(f"bridge package: {Path(bridge.__file__).parent}", flush=True)
        # the in-process Deliverer logs like bridge serve does, to a file
        from bridge.logs import setup

        setup("text", [bl.KEY])
        handler = logging.getLogger().handlers[0]
        handler.stream = open(self.work / "inprocess.log", "a", encoding="utf-8")  # type: ignore[attr-defined]  # noqa: SIM115
        try:
            with self.procs:
                _, self.juhe_url = bl.start_fake_juhe(self.procs, self.work)
                if self.only & {"intake", "growth"}:
                    self.intake_bare()
                if "intake" in self.only:
                    self.section_intake()
                if "page" in self.only:
                    self.section_page()
                if self.only & {"delivery", "growth"}:
                    self.section_delivery()
                if "growth" in self.only:
                    self.section_growth()
                if "profile" in self.only:
                    self.section_profile()
        finally:
            if self.args.keep:
                print(f"kept {self.work}")
            else:
                shutil.rmtree(self.work, ignore_errors=True)
        took = time.time() - self.report.started
        out = Path(self.args.out)
        write_results(self.report, self.args, took, out)
        print(f"\nwrote {out} ({took / 60:.1f} min)")


# -- small helpers ----------------------------------------------------------------------------

def _mb(values: list[float]) -> str:
    return ", ".join(f"{v:.1f} MB" for v in values) or "-"


def _short(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def _wrk_line(label: str, r: dict[str, Any]) -> str:
    return (f"{label}: {r['rps']:,.0f} req/s, p50 {r['p50_ms']:.1f} ms, p90 {r['p90_ms']:.1f} ms,"
            f" p99 {r['p99_ms']:.1f} ms, max {r['max_ms']:.0f} ms; {r['requests']:,} requests,"
            f" {r['errors']} socket errors, {r['non2xx']} non-2xx")


def _stored(store: str) -> int:
    from bridge.store import open_store

    s = open_store(store)
    try:
        return sum(s.counts().values())
    finally:
        s.close()


def _flush(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.flushall()
    finally:
        client.close()


def _size(store: str) -> dict[str, float]:
    if store.startswith("sqlite:///"):
        return bl.sqlite_size(Path(store[len("sqlite:///"):]))
    return bl.redis_memory(store)


def _size_text(size: dict[str, float]) -> str:
    if "file_mb" in size:
        return (f"file {size['file_mb']:.1f} MB + WAL {size['wal_mb']:.1f} MB "
                f"({size['free_pct']:.0f} % free pages)")
    return f"used_memory {size['used_mb']:.1f} MB, {size['keys']:,.0f} keys"


# -- RESULTS.md -------------------------------------------------------------------------------

def write_results(rep: Report, args: argparse.Namespace, took: float, out: Path) -> None:
    m = bl.machine()
    cmd = "python bench/run.py" + (" --quick" if args.quick else "") + (
        f" --only {args.only}" if args.only else "") + (
        f" --bridge-path {args.bridge_path}" if args.bridge_path else "")
    lines = [
        "# Benchmarks",
        "",
        f"Command: `{cmd}` — {m['date']}, took {took / 60:.1f} min.  ",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, Linux {m['kernel']}; "
        f"load average (1 min) {rep.load_start:.2f} at the start, {os.getloadavg()[0]:.2f} at "
        "the end (other work on the machine shows here and inflates every figure). wrk, "
        "gunicorn, the fake Juhe and redis-server all share these CPUs over loopback, so "
        "absolute numbers are this machine's; the ratios to a baseline measured in the same run "
        "are the figures to compare.",
        "",
        "| | figure | measured | baseline (same run) | ratio | target | |",
        "| --- | --- | ---: | --- | ---: | --- | --- |",
    ]
    for r in rep.rows:
        base = f"{r.baseline_name} {r.baseline:,.1f}" if r.baseline is not None else ""
        ratio = bl.fmt_ratio(r.ratio) if r.ratio is not None else ""
        verdict = "" if r.ok is None else f"**{bl.verdict(r.ok)}**"
        lines.append(f"| {r.section} | {r.name} | {r.value:,.1f} {r.unit} | {base} | {ratio} "
                     f"| {r.target} | {verdict} |")
    if rep.notes:
        lines += ["", "Notes from the run:", ""] + [f"- {n}" for n in rep.notes]
    targets = BENCH / "TARGETS.md"
    if targets.exists():  # why what is missed is missed (kept by hand)
        lines += ["", *targets.read_text(encoding="utf-8").strip().splitlines()[1:]]
    if rep.details.get("page"):
        lines += ["", "## Time to page", "", *rep.details["page"]]
    titles = {"intake": "Intake (wrk)", "growth": "Growth", "memory": "Memory (VmRSS)"}
    for section in ("intake", "growth", "memory"):
        if rep.details.get(section):
            lines += ["", f"## {titles[section]}", ""] + [f"- {d}" for d in rep.details[section]]
    lines += _profile_lines(rep)
    fixes = BENCH / "patches" / "README.md"
    if fixes.exists():
        text = fixes.read_text(encoding="utf-8").strip().splitlines()
        lines += ["", "## Findings and proposed fixes (from bench/patches/README.md)", ""]
        lines += [("#" + t) if t.startswith("## ") else t for t in text[1:]]
    lines += ["", "## How it is measured", "", *HOW]
    text = "\n".join(lines) + "\n"
    soak = ""
    if out.exists():
        old = out.read_text(encoding="utf-8")
        i = old.find("\n## Soak")
        if i >= 0:
            soak = old[i:]
    out.write_text(text + soak, encoding="utf-8")


def _profile_lines(rep: Report) -> list[str]:
    lines: list[str] = []
    for kind in ("sqlite", "redis"):
        prof = rep.data.get(f"profile-{kind}")
        if not prof:
            continue
        if not lines:
            lines += ["", "## Profile of the intake path", ""]
        lines += [f"**In one process, pyinstrument, {kind} store** ({prof['requests']:,} "
                  f"requests, {prof['ms_per_request']:.2f} ms each with the profiler on). "
                  "Share of wall time per stage (inclusive):", ""]
        lines += [f"- {v:.1f} % {k}" for k, v in prof["stages"].items()]
        lines += ["", "Top functions by own time:", ""]
        lines += [f"- {v:.1f} % `{k}`" for k, v in prof["top_own"]]
        lines.append("")
    for kind in ("sqlite", "redis"):
        spied = rep.data.get(f"spy-{kind}")
        if not spied:
            continue
        lines += [f"**Live, py-spy on one `bridge serve` worker ({kind}) under the 32-connection "
                  f"load** ({spied['samples']:,} samples of active threads; share of all "
                  "samples):", ""]
        for thread, info in spied["threads"].items():
            stages = "; ".join(f"{k} {v:.0f} %" for k, v in list(info["stages"].items())[:8])
            lines.append(f"- {thread} ({info['share']:.0f} %): {stages}")
        lines.append("")
    return lines


HOW = [
    "- Intake: `wrk -t2 -c32` with `bench/webhook.lua` (10 firing alerts per body, fingerprints "
    "and instance labels fresh on every request; `min_gap: 0s`, no limits, so nothing is "
    "suppressed). Every server runs under `bridge serve`'s gunicorn settings: 2 gthread workers "
    "× 32 threads, keepalive 2. Baselines of the same run: `bench/bare_app.py`, a constant-JSON "
    "Flask app (gthread 2 × 32 like the bridge, not sync workers); `bench/raw_app.py`, the "
    "raw-storage limit: it parses the same body and writes one row per alert (10 per request) "
    "in one transaction, on SQLite (WAL, `synchronous=NORMAL`, one `executemany` upsert, a "
    "fresh file) or on Redis (one `EVALSHA` of HSET + ZADD per row, a fresh redis-server with "
    "`--appendonly yes`). The bridge (`bridge serve`, delivery on, sending to the fake Juhe "
    "`tests/fakejuhe.py`; or `serve --no-delivery` + `bridge worker`) runs on SQLite in a fresh "
    "file or on a flushed redis-server with AOF, with two rule sets: the 10-SMS body (one route "
    "paging one mobile: the same template and 4 variables as the first route of the 20-SMS "
    "rules), compared with the raw baseline; the 20-SMS body (two routes, each paging its own "
    "mobile), compared with bare Flask. Each run is preceded by a 1 s warm-up; the rows stored "
    "during the 32-connection run are counted against what was answered. The 2-connection runs "
    "(one per worker) show the latency of a request without queueing behind others.",
    "- The p99 at 32 connections is informational: with 32 connections kept busy a closed-loop "
    "load's mean latency is 32 / throughput (Little's law), whatever the code does per request.",
    "- Time to page (`bench/page.py`): the fake Juhe (its own process) stamps each SMS with "
    "`time.time()` when it accepts it; the client stamps each webhook's send with the same "
    "clock. Idle: one-alert webhooks 0.3 s apart; storm: one webhook of 1,000 alerts to one "
    "mobile; rules: one catch-all route, `min_gap: 0s`, fresh fingerprints. Baseline: "
    "`bench/relay_app.py`, a Flask handler sending one SMS per alert to the fake Juhe before "
    "it answers (PrometheusAlert's design), under the same gunicorn settings.",
    "- Delivery: 2,000 queued SMS to distinct mobiles recorded with `Store.record`, then one "
    "`Deliverer` (`run_once` in a loop, one thread) until all are sent; baseline: a "
    "`requests.Session` loop posting the same forms to the same fake (best of two).",
    "- Growth: the store is filled with finished (`sent`) notifications six days old and their "
    "dedup records (`bench/fill.py`: direct SQL for SQLite, a Lua script in the Redis store's "
    "key layout), then delivery and intake (`bridge serve`, 10-SMS body) are measured as above "
    "and compared with the empty store; then `prune(before = now - 5 d)` removes the fill.",
    "- Memory: VmRSS of each gunicorn worker (children of the master) right after its "
    "32-connection run.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description="bridge benchmarks (writes bench/RESULTS.md)")
    ap.add_argument("--quick", action="store_true", help="3 s runs, 100k fill (~3 min)")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(SECTIONS)}")
    ap.add_argument("--bridge-path", help="a folder holding another `bridge` package to run")
    ap.add_argument("--out", default=str(RESULTS), help="where to write the results")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    if args.only and not set(args.only.split(",")) <= set(SECTIONS):
        ap.error(f"--only takes {','.join(SECTIONS)}")
    if args.bridge_path:
        args.bridge_path = str(Path(args.bridge_path).resolve())
    Bench(args).run()


if __name__ == "__main__":
    main()
