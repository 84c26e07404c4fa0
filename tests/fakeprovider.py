"""The common part of the fake provider APIs (tests/fakealiyun.py, tests/faketencent.py): a real
HTTP/1.1 keep-alive server on 127.0.0.1 (port 0 by default) in a background thread that reads
every request, records it, lets the subclass judge it (signature first, then the API's own
checks) and answers JSON, like tests/fakejuhe.py.

Knobs, settable from any thread at any time: :meth:`FakeProvider.respond_next` queues exact
answers (each used by one request that passed the signature check: a fake never answers a
badly signed request with success), :meth:`down`/:meth:`up` make the server drop requests
unanswered, ``delay`` sleeps before each answer. :attr:`requests` lists every request read
(``{"t", "method", "path", "headers", "body", "answer": (status, body)}``), :attr:`messages`
the accepted sends (the subclass's shape), :meth:`wait_for` waits for them.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

Message = dict[str, Any]
Answer = tuple[int, dict[str, Any]]


def json_bytes(obj: object) -> bytes:
    """``obj`` as UTF-8 JSON, non-ASCII kept."""
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


@dataclass(frozen=True)
class Scripted:
    """One queued answer: HTTP ``status`` and the JSON ``body``."""

    status: int
    body: dict[str, Any]


@dataclass(frozen=True)
class Request:
    """One request as read: ``method``, ``path`` (with the query), ``headers`` (names lower
    case), ``body`` (bytes)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeProvider:
    """Base of the fakes: lifecycle, recording and scripting. Subclasses implement
    :meth:`judge` (request -> (status, JSON body)) and may call :meth:`accept` to record an
    accepted send and :meth:`scripted` to take a queued answer."""

    name = "fake"
    #: the Content-Type of every answer (Tencent's SDK reads errors only from exactly
    #: ``application/json``, as Tencent answers)
    content_type = "application/json;charset=utf-8"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.lock = threading.Condition()
        self._host = host
        self._port = port
        self._delay = 0.0
        self._down = False
        self._script: deque[Scripted] = deque()
        self._messages: list[Message] = []
        self._requests: list[Message] = []
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        self._stopping.clear()
        server = _Server((self._host, self._port), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True,
                                        name=self.name)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close every connection and the port (idempotent)."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        self._close_open_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError(f"{self.name} not started")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"http://{self._host}:{self.port}/"

    # -- observations ------------------------------------------------------------------------
    @property
    def messages(self) -> list[Message]:
        """A copy of the accepted sends, oldest first."""
        with self.lock:
            return list(self._messages)

    @property
    def requests(self) -> list[Message]:
        """A copy of every request read, oldest first."""
        with self.lock:
            return list(self._requests)

    def wait_for(self, n: int, timeout: float) -> list[Message]:
        """Wait at most ``timeout`` seconds for ``n`` accepted sends; returns them all."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self._messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
            return list(self._messages)

    def clear(self) -> None:
        """Forget messages, requests and queued answers; up, no delay."""
        with self.lock:
            self._messages.clear()
            self._requests.clear()
            self._script.clear()
            self._delay = 0.0
            self._down = False

    # -- scripting ---------------------------------------------------------------------------
    def respond_next(self, status: int, body: dict[str, Any], n: int = 1) -> None:
        """Answer the next ``n`` well-signed requests with ``status`` and ``body``."""
        with self.lock:
            self._script.extend([Scripted(status, body)] * n)

    def down(self) -> None:
        """Close open connections and drop each request unanswered."""
        with self.lock:
            self._down = True
        self._close_open_connections()

    def up(self) -> None:
        with self.lock:
            self._down = False

    @property
    def delay(self) -> float:
        with self.lock:
            return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        with self.lock:
            self._delay = float(seconds)

    # -- for subclasses ----------------------------------------------------------------------
    def judge(self, req: Request) -> Answer:  # pragma: no cover - abstract
        raise NotImplementedError

    def scripted(self) -> Scripted | None:
        """The next queued answer, if any."""
        with self.lock:
            return self._script.popleft() if self._script else None

    def accept(self, message: Message) -> None:
        """Record an accepted send and wake :meth:`wait_for`."""
        with self.lock:
            self._messages.append(message)
            self.lock.notify_all()

    # -- used by the handler -----------------------------------------------------------------
    def _serve(self, req: Request) -> Answer | None:
        with self.lock:
            down, delay = self._down, self._delay
        if down:
            return None
        if delay > 0:
            self._stopping.wait(delay)
        status, body = self.judge(req)
        with self.lock:
            self._requests.append({"t": time.time(), "method": req.method, "path": req.path,
                                   "headers": dict(req.headers), "body": req.body,
                                   "answer": (status, body)})
        return status, body

    def _connected(self, sock: socket.socket) -> None:
        with self.lock:
            self._open.add(sock)

    def _disconnected(self, sock: socket.socket) -> None:
        with self.lock:
            self._open.discard(sock)

    def _close_open_connections(self) -> None:
        with self.lock:
            socks = list(self._open)
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeProvider

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.fake._connected(self.connection)

    def finish(self) -> None:
        self.server.fake._disconnected(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        answer = self.server.fake._serve(Request(self.command, self.path, headers, body))
        if answer is None:
            self.close_connection = True
            return
        status, obj = answer
        raw = json_bytes(obj)
        self.send_response(status)
        self.send_header("Content-Type", self.server.fake.content_type)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = _handle
    do_POST = _handle
