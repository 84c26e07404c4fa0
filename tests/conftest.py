"""Shared fixtures: a fake Juhe (real HTTP server), a real redis-server, and the real
``bridge serve`` under gunicorn as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
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
    """A real redis-server on a free loopback port, in its own folder, AOF on."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed (.ci/run installs it)")
        self.proc = subprocess.Popen(redis_argv(exe, self.port, self.workdir),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert redis_ready(self.port), "redis-server did not start"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


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

    def kill9(self) -> None:
        """SIGKILL the whole process group (master, workers, delivery threads)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        self.session.close()
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


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
