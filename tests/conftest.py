"""Shared fixtures: a fake Juhe (real HTTP server), a real redis-server, and the real
``bridge serve`` under gunicorn as a subprocess."""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

sys.path.insert(0, str(Path(__file__).parent))

from fakejuhe import FakeJuhe  # noqa: E402

# the rules strings and helpers are re-exported: tests import them from conftest
from support import (  # noqa: E402,F401
    CATCH_ALL,
    SPEC_RULES,
    free_port,
    redis_argv,
    redis_ready,
    stop_group,
    wait_until,
)

ROOT = Path(__file__).parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
KEY = "testkey-5f2a9c"


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    return json.loads(fixture_bytes(name))


def drop_bridge_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unset every BRIDGE_*/JUHE_*/REDIS_URL/PORT variable of the developer's shell."""
    for k in list(os.environ):
        if k.startswith(("BRIDGE_", "JUHE_", "PROMETHEUS_MULTIPROC")) or k in ("REDIS_URL",
                                                                               "PORT"):
            monkeypatch.delenv(k)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BRIDGE_*/JUHE_*/REDIS_URL from the developer's shell leaks into a test."""
    drop_bridge_environ(monkeypatch)


@pytest.fixture
def fake_juhe() -> Iterator[FakeJuhe]:
    with FakeJuhe(valid_key=KEY) as fake:
        yield fake


class RedisServer:
    """A real redis-server on a free loopback port, in its own folder, AOF on; ``args`` are
    more command-line options (e.g. ``--replicaof``, ``--cluster-enabled yes``)."""

    def __init__(self, workdir: Path, port: int | None = None,
                 args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.args = list(args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
             "--appendonly", "yes", "--save", "", "--protected-mode", "no",
             "--repl-diskless-sync-delay", "0", "--logfile", str(self.workdir / "redis.log"),
             *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        client = redis.Redis(port=self.port, socket_timeout=1)
        ok = wait_until(lambda: _ping(client), 10)
        client.close()
        assert ok, "redis-server did not start"

    def client(self) -> Any:
        """A redis-py client of this server (decoded answers, short timeouts)."""
        import redis

        return redis.Redis(port=self.port, socket_timeout=2, decode_responses=True)

    def kill9(self) -> None:
        """SIGKILL: nothing is flushed or handed over, as when a machine dies."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _info(server: RedisServer, section: str) -> dict[str, Any]:
    try:
        with server.client() as c:
            return dict(c.info(section))
    except Exception:
        return {}


class SentinelSet:
    """A master, two replicas and three sentinels (``redis-server --sentinel``, down-after
    1 s) on free loopback ports, watching the master ``mymaster``. Two replicas so that after a
    failover one is left to confirm the new master's writes (``BRIDGE_REDIS_WAIT=1``)."""

    SERVICE = "mymaster"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes = [RedisServer(workdir / f"node{i}") for i in range(3)]
        self.sentinel_ports = [free_port() for _ in range(3)]
        self.sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.SERVICE}"

    def sentinel(self, n: int = 0) -> Any:
        import redis

        return redis.Redis(port=self.sentinel_ports[n], socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        master = self.nodes[0]
        master.start()
        for node in self.nodes[1:]:
            node.args = ["--replicaof", "127.0.0.1", str(master.port)]
            node.start()
        assert wait_until(lambda: self._replicas_online(master) == 2, 20), "replicas not synced"
        for port in self.sentinel_ports:
            folder = self.workdir / f"sentinel{port}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {folder}\n"
                f"logfile {folder / 'sentinel.log'}\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {master.port} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 3000\n"
                f"sentinel parallel-syncs {self.SERVICE} 2\n", encoding="utf-8")
            self.sentinels.append(subprocess.Popen(
                [exe, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL))
        assert wait_until(self._sentinels_ready, 30, 0.2), "sentinels did not see each other"

    def _sentinels_ready(self) -> bool:
        try:
            for n in range(3):
                with self.sentinel(n) as s:
                    if len(s.sentinel_sentinels(self.SERVICE)) != 2 or len(
                            s.sentinel_slaves(self.SERVICE)) != 2:
                        return False
            return True
        except Exception:
            return False

    @staticmethod
    def _replicas_online(server: RedisServer) -> int:
        info = _info(server, "replication")
        return sum(1 for k, v in info.items()
                   if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online")

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it."""
        for n in range(3):
            try:
                with self.sentinel(n) as s:
                    addr = s.sentinel_get_master_addr_by_name(self.SERVICE)
                if addr:
                    return int(addr[1])
            except Exception:
                continue
        return None

    def master(self) -> RedisServer:
        port = self.master_port()
        return next(n for n in self.nodes if n.port == port)

    def replicas(self) -> list[RedisServer]:
        port = self.master_port()
        return [n for n in self.nodes if n.port != port]

    def wait_for_new_master(self, old_port: int, timeout: float) -> RedisServer:
        """Until every sentinel names another master and it answers as master (bounded)."""
        def promoted() -> bool:
            try:
                for n in range(3):
                    with self.sentinel(n) as s:
                        addr = s.sentinel_get_master_addr_by_name(self.SERVICE)
                    if not addr or int(addr[1]) == old_port:
                        return False
                return _info(self.master(), "replication").get("role") == "master"
            except Exception:
                return False
        assert wait_until(promoted, timeout, 0.05), "no replica was promoted"
        return self.master()

    def heal(self, timeout: float = 30) -> None:
        """Start whatever node is down as a replica of the current master; wait until the
        master has both replicas online and the sentinels know them."""
        master = self.master()
        for node in self.nodes:
            if node.proc is None:
                node.args = ["--replicaof", "127.0.0.1", str(master.port)]
                node.start()
        assert wait_until(lambda: self._replicas_online(master) == 2, timeout, 0.1), \
            "replicas did not come back"

    def flush(self) -> None:
        with self.master().client() as c:
            c.flushall()
            c.wait(2, 2000)

    def stop(self) -> None:
        for proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.sentinels = []
        for node in self.nodes:
            node.stop()


def free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(100):
        port = free_port()
        if port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise AssertionError("no free port pair for a cluster node")


class ClusterSet:
    """A real Redis Cluster of three masters (no replicas) made by ``redis-cli --cluster
    create`` on free loopback ports."""

    def __init__(self, workdir: Path) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(3):
            port = free_cluster_port()
            self.nodes.append(RedisServer(workdir / f"cluster{i}", port, [
                "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                "--cluster-node-timeout", "2000"]))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None or shutil.which("redis-server") is None:
            pytest.skip("redis-server / redis-cli are not installed (.ci/run installs them)")
        for node in self.nodes:
            node.start()
        subprocess.run([cli, "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                       timeout=60)

        def ok() -> bool:
            for node in self.nodes:
                try:
                    with node.client() as c:
                        if c.cluster("info").get("cluster_state") != "ok":
                            return False
                except Exception:
                    return False
            return True
        assert wait_until(ok, 30, 0.1), "the cluster did not become ok"

    def flush(self) -> None:
        for node in self.nodes:
            with node.client() as c:
                c.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    """A master, two replicas and three sentinels, started once per test module."""
    sentinels = SentinelSet(tmp_path_factory.mktemp("sentinel"))
    try:
        sentinels.start()
        yield sentinels
    finally:
        sentinels.stop()


@pytest.fixture
def sentinel_url(redis_sentinel: SentinelSet) -> str:
    """The sentinel URL of a flushed, healthy master with two replicas."""
    redis_sentinel.heal()
    redis_sentinel.flush()
    return redis_sentinel.url


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    """A three-master Redis Cluster, made once per test module."""
    cluster = ClusterSet(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_url(redis_cluster: ClusterSet) -> str:
    """The URL of the flushed cluster."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """A flushed Redis database for one test."""
    import redis

    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis.Redis.from_url(redis_server.url)
    client.flushdb()
    yield redis_server.url
    try:
        client.flushdb()
    except Exception:
        pass
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A fresh store of each kind: a SQLite file in ``tmp_path`` and a flushed Redis database
    (``redis_url``); closed after the test. tests/test_store.py overrides it with every Redis
    topology."""
    from bridge.store import open_store

    url = (f"sqlite:///{tmp_path / 'bridge.db'}" if request.param == "sqlite"
           else request.getfixturevalue("redis_url"))
    s = open_store(url)
    yield s
    s.close()


class BridgeProcess:
    """The real ``bridge serve`` (gunicorn) as a subprocess in its own process group."""

    def __init__(self, workdir: Path, env: dict[str, str], command: str = "serve") -> None:
        self.workdir = workdir
        self.port = int(env.get("PORT") or free_port())
        # the code under test, whatever else is installed
        self.env = {**os.environ, "PORT": str(self.port),
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    **env}
        self.command = command
        self.command_args: list[str] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"bridge-{self.port}-{command}.log"
        self.session = requests.Session()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> BridgeProcess:
        exe = shutil.which("bridge") or str(Path(sys.executable).parent / "bridge")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([exe, self.command, *self.command_args],
                                         cwd=self.workdir, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        if wait and self.command == "serve":
            ok = wait_until(self._healthy, 30, 0.1)
            assert ok, f"bridge did not start:\n{self.log()[-3000:]}"
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"bridge exited {self.proc.returncode}:\n{self.log()[-3000:]}")
        try:
            return requests.get(self.base + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def post(self, path: str, body: bytes | str | dict[str, Any] | list[Any],
             headers: dict[str, str] | None = None, **kw: Any) -> requests.Response:
        if isinstance(body, dict | list):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode("utf-8")
        h = {"Content-Type": "application/json", **(headers or {})}
        return self.session.post(self.base + path, data=body, headers=h, timeout=30, **kw)

    def get(self, path: str, **kw: Any) -> requests.Response:
        return self.session.get(self.base + path, timeout=30, **kw)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def children(self) -> dict[int, str]:
        """The master's child processes now, pid -> name (``/proc/PID/comm``): ``bridge`` for
        a web worker, ``bridge-delivery`` for the delivery process."""
        assert self.proc is not None
        return children_of(self.proc.pid)

    def web_pids(self) -> list[int]:
        """The web workers' pids now."""
        return sorted(p for p, name in self.children().items() if name != "bridge-delivery")

    def delivery_pids(self) -> list[int]:
        """The delivery processes' pids now (one while ``bridge serve`` delivers)."""
        return sorted(p for p, name in self.children().items() if name == "bridge-delivery")

    def kill9(self) -> None:
        """SIGKILL the whole process group (master, web workers, delivery process)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.session.close()
        stop_group(self.proc, grace=20)


#: One firing alert that the example rules page to three mobiles (dba twice, ops once).
DB_DOWN = {"alerts": [{"status": "firing", "startsAt": "2026-11-29T01:00:00Z",
                       "labels": {"alertname": "DBDown", "severity": "critical", "team": "db"}}]}


def post_many(bridges: list[BridgeProcess], body: Any, n: int) -> list[requests.Response]:
    """``n`` POSTs of ``body`` to ``/webhook/alertmanager`` at once, spread over ``bridges``
    in turn, each on its own connection (so that successive ones land on either worker)."""
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        return list(pool.map(
            lambda i: bridges[i % len(bridges)].post("/webhook/alertmanager", body,
                                                     headers={"Connection": "close"}),
            range(n)))


def children_of(parent: int) -> dict[int, str]:
    """The live child processes of ``parent`` (from ``/proc``), pid -> ``comm``."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            head, _, tail = (d / "stat").read_text().rpartition(")")
            fields = tail.split()
            if int(fields[1]) == parent and fields[0] != "Z":
                out[int(d.name)] = head.split("(", 1)[1]
        except (OSError, IndexError, ValueError):
            continue
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def bridge_env(workdir: Path, fake_juhe: FakeJuhe, rules_path: str, **env: str) -> dict[str, str]:
    """The environment of a test's ``bridge serve``: SQLite in ``workdir``, the fake Juhe with
    the right key, 2 workers, short delivery interval, retry base and Juhe timeout; ``env``
    adds or overrides variables."""
    return {
        "JUHE_KEY": KEY, "JUHE_URL": fake_juhe.url, "BRIDGE_RULES": rules_path,
        "BRIDGE_STORE": f"sqlite:///{workdir / 'bridge.db'}", "WEB_CONCURRENCY": "2",
        "BRIDGE_DELIVERY_INTERVAL": "0.1s", "BRIDGE_RETRY_BASE": "0.2s",
        "BRIDGE_JUHE_TIMEOUT": "2s", **env,
    }


@pytest.fixture
def make_bridge(tmp_path: Path, fake_juhe: FakeJuhe) -> Iterator[Any]:
    """``make_bridge(rules=..., **env)`` starts a ``bridge serve`` on SQLite in ``tmp_path``
    (unless ``BRIDGE_STORE`` is given) with ``JUHE_KEY``/``JUHE_URL`` pointing at the fake."""
    started: list[BridgeProcess] = []

    def make(rules: str = CATCH_ALL, command: str = "serve", start: bool = True,
             **env: str) -> BridgeProcess:
        rules_path = env.pop("BRIDGE_RULES", None)
        if rules_path is None:
            rules_file = tmp_path / "rules.yaml"
            rules_file.write_text(rules, encoding="utf-8")
            rules_path = str(rules_file)
        bp = BridgeProcess(tmp_path, bridge_env(tmp_path, fake_juhe, rules_path, **env), command)
        started.append(bp)
        if start:
            bp.start()
        return bp

    yield make
    for bp in started:
        bp.stop()
