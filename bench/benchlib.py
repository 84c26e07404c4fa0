"""Shared plumbing of the benchmarks (``bench/run.py``, ``bench/soak.py``).

Every server a benchmark starts is a :class:`Proc`: a child in its own session (so its PID is
its process group), bound to 127.0.0.1 or reached only through it, and stopped by that group
(SIGTERM, then SIGKILL) from a ``finally`` via :class:`Procs`. Nothing here edits the project.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TESTS = ROOT / "tests"
KEY = "benchkey-7d1e0a"

sys.path.insert(0, str(TESTS))

import support  # noqa: E402
from support import (  # noqa: E402,F401  (re-exported for the benches)
    INTAKE_RULES,
    INTAKE_RULES_ONE_ROUTE,
    free_port,
)

#: gunicorn workers and threads per worker of every intake server the benchmarks start: what
#: ``bridge serve`` runs by default (``WEB_CONCURRENCY`` 2, ``BRIDGE_THREADS`` 32, gthread), set
#: explicitly for the bridge and given to the bare and raw baselines, so ratios compare like
#: with like.
WORKERS = 2
THREADS = 32

# -- processes -------------------------------------------------------------------------------

def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05) -> bool:
    """:func:`support.wait_until` where any exception of ``pred`` means "not yet"."""
    return support.wait_until(pred, timeout, interval, ignore=(Exception,))


class Proc:
    """A child process in its own session; :meth:`stop` ends its whole process group."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT,
                                      env=env, cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(10)
        # a worker left behind by a dead master is still in the group
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._out.close()


class Procs:
    """The servers of one benchmark; ``with Procs() as procs`` stops them all on the way out."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.items.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.items:
            self.items.remove(proc)

    def __enter__(self) -> Procs:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self.items):
            try:
                proc.stop()
            except Exception as e:  # keep stopping the others
                print(f"  ! could not stop {proc.name} ({proc.pid}): {e}", file=sys.stderr)
        self.items.clear()


def start_fake_juhe(procs: Procs, workdir: Path, script: Path | None = None,
                    extra: list[str] | None = None, log: Path | None = None) -> tuple[Proc, str]:
    """Start the fake Juhe (``tests/fakejuhe.py`` or a variant) on a free loopback port;
    returns the process and its send URL."""
    port = free_port()
    argv = [sys.executable, str(script or TESTS / "fakejuhe.py"), "--port", str(port),
            "--key", KEY, *(extra or [])]
    if log is not None:
        argv += ["--log", str(log)]
    proc = procs.add(Proc("fake-juhe", argv, workdir / f"fakejuhe-{port}.out"))
    base = f"http://127.0.0.1:{port}"
    if not wait_until(lambda: requests.get(base + "/_stats", timeout=1).ok, 15):
        raise RuntimeError(f"fake juhe did not start:\n{proc.tail()}")
    return proc, base + "/sms/send"


def start_redis(procs: Procs, workdir: Path) -> tuple[Proc, str]:
    """A redis-server with AOF on a free loopback port, in ``workdir``."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    rdir = workdir / f"redis-{port}"
    rdir.mkdir()
    proc = procs.add(Proc("redis", support.redis_argv(exe, port, rdir), rdir / "redis.out"))
    if not support.redis_ready(port):
        raise RuntimeError(f"redis-server did not start:\n{proc.tail()}")
    return proc, f"redis://127.0.0.1:{port}/0"


def bridge_env(store: str, rules: Path, juhe_url: str, port: int,
               **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BRIDGE_", "JUHE_", "PROMETHEUS_MULTIPROC"))
           and k not in ("REDIS_URL", "PORT", "WEB_CONCURRENCY")}
    env.update({"BRIDGE_STORE": store, "BRIDGE_RULES": str(rules), "JUHE_KEY": KEY,
                "JUHE_URL": juhe_url, "PORT": str(port), "WEB_CONCURRENCY": str(WORKERS),
                "BRIDGE_THREADS": str(THREADS), "BRIDGE_JUHE_TIMEOUT": "5s"})
    env.update(extra)
    return env


def start_bridge(procs: Procs, workdir: Path, env: dict[str, str], name: str = "bridge",
                 command: str = "serve", options: tuple[str, ...] = ()) -> Proc:
    """``bridge serve`` (or ``bridge worker``) with ``env``; waits for ``/healthz``."""
    exe = shutil.which("bridge") or str(Path(sys.executable).parent / "bridge")
    proc = procs.add(Proc(name, [exe, command, *options], workdir / f"{name}.log", env=env,
                          cwd=workdir))
    if command == "serve":
        base = f"http://127.0.0.1:{env['PORT']}"

        def ready() -> bool:
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.tail()}")
            return requests.get(base + "/healthz", timeout=1).ok and len(children(proc.pid)) \
                >= int(env.get("WEB_CONCURRENCY", "2"))

        if not _wait_raise(ready, 40):
            raise RuntimeError(f"{name} did not become healthy:\n{proc.tail()}")
    return proc


def _wait_raise(pred: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return True
        except RuntimeError:
            raise
        except Exception:
            pass
        time.sleep(0.1)
    return False


def start_bare(procs: Procs, workdir: Path, port: int, threads: int = THREADS) -> Proc:
    """``bench/bare_app.py``: a constant-JSON Flask app under ``bridge serve``'s gunicorn
    settings (:data:`WORKERS` workers; gthread with ``threads`` threads each, 0 = sync
    workers) on loopback ``port``; waits until it answers and its workers are up (30 s, else
    RuntimeError)."""
    return _start_app(procs, workdir, "bare", [
        str(BENCH / "bare_app.py"), "--port", str(port), "--workers", str(WORKERS),
        "--threads", str(threads)], port)


def start_raw(procs: Procs, workdir: Path, port: int, store: str, rows_per_alert: int = 1,
              threads: int = THREADS, name: str = "raw") -> Proc:
    """``bench/raw_app.py``, the raw-storage baseline, on ``store`` (``sqlite:PATH`` or a
    ``redis://`` URL of a redis-server with AOF on) writing ``rows_per_alert`` rows per alert
    in one transaction / one EVALSHA, under the same gunicorn settings as :func:`start_bare`;
    waits like it (RuntimeError after 30 s)."""
    return _start_app(procs, workdir, name, [
        str(BENCH / "raw_app.py"), "--port", str(port), "--workers", str(WORKERS),
        "--threads", str(threads), "--store", store, "--rows-per-alert", str(rows_per_alert)],
        port)


def _start_app(procs: Procs, workdir: Path, name: str, argv: list[str], port: int) -> Proc:
    proc = procs.add(Proc(name, [sys.executable, *argv], workdir / f"{name}.log"))
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{name} exited:\n{proc.tail()}")
        return requests.get(base + "/healthz", timeout=1).ok \
            and len(children(proc.pid)) >= WORKERS

    if not _wait_raise(ready, 30):
        raise RuntimeError(f"{name} did not start:\n{proc.tail()}")
    return proc


def raw_stored(store: str) -> int:
    """How many rows ``bench/raw_app.py`` has written to ``store`` (``sqlite:PATH``: rows of
    its table, 0 before it exists; ``redis://``: members of its queue)."""
    if store.startswith("sqlite:"):
        import sqlite3

        conn = sqlite3.connect(store[len("sqlite:"):], timeout=30)
        try:
            return int(conn.execute("SELECT count(*) FROM item").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            conn.close()
    import redis

    client = redis.Redis.from_url(store)
    try:
        return int(client.zcard("raw:queue"))
    finally:
        client.close()


# -- /proc ------------------------------------------------------------------------------------

def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (gunicorn workers of a master)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return sorted(set(out))


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` in MB (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "kernel": platform.release(),
    }


# -- wrk --------------------------------------------------------------------------------------

def ensure_wrk() -> str:
    """The path of ``wrk``; installs the Debian package when missing and running as root."""
    exe = shutil.which("wrk")
    if exe:
        return exe
    print("wrk is not installed (Debian package `wrk`).", flush=True)
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("  trying: apt-get install -y wrk", flush=True)
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=False)
        exe = shutil.which("wrk")
        if exe:
            return exe
    raise SystemExit("wrk is required: apt-get install -y wrk (as root)")


def run_wrk(url: str, seconds: float, connections: int, threads: int = 2,
            script: Path | None = None, tag: str = "t") -> dict[str, Any]:
    """Run wrk against ``url``; returns ``{rps, p50_ms, p90_ms, p99_ms, requests, errors,
    non2xx, duration_s}`` from the JSON line the Lua script's ``done`` prints."""
    argv = [ensure_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(script or BENCH / "webhook.lua"), url, "--", tag]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    m = re.search(r"^JSON (\{.*\})$", res.stdout, re.M)
    if res.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    data: dict[str, Any] = json.loads(m.group(1))
    dur = data["duration_us"] / 1e6
    return {
        "rps": data["requests"] / dur,
        "p50_ms": data["p50_us"] / 1000,
        "p90_ms": data["p90_us"] / 1000,
        "p99_ms": data["p99_us"] / 1000,
        "max_ms": data["max_us"] / 1000,
        "requests": data["requests"],
        "errors": data["connect"] + data["read"] + data["write"] + data["timeout"],
        "non2xx": data["status"],
        "duration_s": dur,
    }


# -- sizes ------------------------------------------------------------------------------------

def sqlite_size(path: Path) -> dict[str, float]:
    """File sizes (MB) of the database and its WAL, and the share of free pages."""
    import sqlite3

    size = path.stat().st_size / 2**20 if path.exists() else 0.0
    wal = Path(str(path) + "-wal")
    wal_size = wal.stat().st_size / 2**20 if wal.exists() else 0.0
    conn = sqlite3.connect(str(path), timeout=30)
    try:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    finally:
        conn.close()
    return {"file_mb": size, "wal_mb": wal_size, "free_pct": 100.0 * free / max(pages, 1)}


def redis_memory(url: str) -> dict[str, float]:
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("memory")
        keys = client.dbsize()
    finally:
        client.close()
    return {"used_mb": info["used_memory"] / 2**20, "keys": float(keys)}


def redis_aof(url: str) -> str:
    """AOF rewrites so far and the AOF's size, from ``INFO persistence``."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        info = client.info("persistence")
    finally:
        client.close()
    return (f"{info.get('aof_rewrites', '?')} AOF rewrites so far, AOF "
            f"{int(info.get('aof_current_size', 0)) / 2**20:.0f} MB")


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- py-spy -----------------------------------------------------------------------------------

#: What a sampled stack is doing, first match wins (a substring of a frame, a label).
SPY_STAGES = (
    ("SQLITE_BEGIN", "waiting for the SQLite write lock (BEGIN IMMEDIATE)"),
    ("SQLITE_COMMIT", "SQLite COMMIT"),
    ("read_response (redis", "waiting for Redis (script round trip)"),
    ("send (bridge/providers/juhe.py", "Juhe HTTP request (fake)"),
    ("mark_sent", "store.mark_sent"),
    ("claim (bridge/store", "store.claim"),
    ("release (bridge/store", "store.release"),
    ("set_status", "store.set_status"),
    ("decide (bridge/decide/plan.py", "decide: route + render"),
    ("record (bridge/store", "store.record (own work)"),
    ("without_lone_surrogates", "without_lone_surrogates"),
    ("(logging/", "logging"),
    ("(prometheus_client/", "metrics"),
    ("parse_body (bridge/sources", "read + parse the body"),
    ("parse (bridge/intake/service.py", "read + parse the body"),
    ("loads (json/", "json.loads"),
    ("(flask/", "flask/werkzeug"),
    ("(werkzeug/", "flask/werkzeug"),
    ("(gunicorn/", "gunicorn (accept, read, write, close)"),
)


def _sqlite_lines() -> tuple[int, int]:
    """Line numbers of BEGIN IMMEDIATE and COMMIT in the SQLite store (read, not assumed)."""
    import bridge.store.sqlite.store as mod

    begin = commit = -1
    for no, line in enumerate(Path(mod.__file__).read_text().splitlines(), 1):
        if 'execute("BEGIN IMMEDIATE")' in line and begin < 0:
            begin = no
        if 'execute("COMMIT")' in line and commit < 0:
            commit = no
    return begin, commit


def spy(pid: int, seconds: float, out: Path, rate: int = 200) -> dict[str, Any] | None:
    """Sample ``pid`` with ``py-spy record`` (raw, per thread) and sum the samples per thread
    and per :data:`SPY_STAGES`; None when py-spy is not installed or cannot attach."""
    exe = shutil.which("py-spy")
    if exe is None:
        return None
    res = subprocess.run([exe, "record", "-p", str(pid), "-d", str(max(1, round(seconds))),
                          "-r", str(rate), "-f", "raw", "-o", str(out), "--threads"],
                         capture_output=True, text=True, timeout=seconds + 60)
    if res.returncode != 0 or not out.exists():
        print(f"    py-spy failed: {res.stderr.strip()[-300:]}")
        return None
    begin, commit = _sqlite_lines()
    per_thread: dict[str, dict[str, int]] = {}
    totals: dict[str, int] = {}
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        thread = re.sub(r"thread \(\d+\): ", "", frames[0]) or "?"
        thread = "delivery thread" if thread == "delivery" else (
            "request thread" if thread == "MainThread" else thread)
        leaf = frames[-1]
        text = stack
        if "_tx (bridge/store/sqlite/store.py" in leaf:
            if f"sqlite.py:{begin})" in leaf:
                text = "SQLITE_BEGIN;" + stack
            elif f"sqlite.py:{commit})" in leaf:
                text = "SQLITE_COMMIT;" + stack
        label = "other"
        for needle, name in SPY_STAGES:
            if needle in text:
                label = name
                break
        bucket = per_thread.setdefault(thread, {})
        bucket[label] = bucket.get(label, 0) + n
        totals[thread] = totals.get(thread, 0) + n
    total = sum(totals.values()) or 1
    return {
        "samples": total,
        "threads": {t: {"share": 100 * totals[t] / total,
                        "stages": {k: 100 * v / total for k, v in
                                   sorted(per_thread[t].items(), key=lambda kv: -kv[1])}}
                    for t in sorted(totals, key=lambda t: -totals[t])},
    }
