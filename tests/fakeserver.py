"""What the fake providers share (tests/fakejuhe.py, tests/fakeprovider.py): a real HTTP/1.1
keep-alive server on 127.0.0.1 (port 0 by default: a free one) in a background thread, that
tracks its open connections so that :meth:`FakeServer.down` can cut them and :meth:`stop` can
close them all, and a ``delay`` slept before each answer (cut short by :meth:`stop`).

A fake subclasses :class:`FakeServer` (its API: scripting, recording, judging) and
:class:`Handler` (reading a request and answering it through ``self.server.fake``), and passes
its handler class to ``FakeServer.__init__``.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


class FakeServer:
    """Lifecycle, connections, ``down``/``up``, ``delay`` and :meth:`wait_for` of a fake.
    ``lock`` is a ``threading.Condition`` that guards the subclass's state too (notify it after
    appending to ``_messages``). Thread-safe."""

    #: the server thread's name and the name in errors
    name = "fake"

    def __init__(self, handler: type[Handler], *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.lock = threading.Condition()
        self._handler = handler
        self._host = host
        self._port = port
        self._delay = 0.0
        self._down = False
        self._connections = 0
        self._open: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        #: the accepted sends, oldest first (each fake records its own shape)
        self._messages: list[dict[str, Any]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread; returns self. Raises ``OSError`` if the port is
        taken, ``RuntimeError`` if already started."""
        if self._server is not None:
            raise RuntimeError(f"{self.name} already started")
        self._stopping.clear()
        server = Server((self._host, self._port), self._handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever,
                                        kwargs={"poll_interval": 0.01}, daemon=True,
                                        name=self.name)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the port (idempotent)."""
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
        """The bound port (after :meth:`start`)."""
        if self._server is None:
            raise RuntimeError(f"{self.name} not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self._host}:{self.port}"

    def wait_for(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Wait at most ``timeout`` seconds until at least ``n`` sends were accepted; returns
        a copy of all of them (fewer than ``n`` if the time ran out)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while len(self._messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.lock.wait(left)
            return list(self._messages)

    # -- knobs -------------------------------------------------------------------------------

    def down(self) -> None:
        """Become unreachable: close open connections, then drop each request unanswered."""
        with self.lock:
            self._down = True
        self._close_open_connections()

    def up(self) -> None:
        """Answer requests again."""
        with self.lock:
            self._down = False

    @property
    def is_down(self) -> bool:
        with self.lock:
            return self._down

    @property
    def delay(self) -> float:
        """Seconds slept before answering each request."""
        with self.lock:
            return self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        with self.lock:
            self._delay = float(seconds)

    @property
    def connections(self) -> int:
        """TCP connections accepted so far (keep-alive reuse keeps this low)."""
        with self.lock:
            return self._connections

    # -- used by the handler -----------------------------------------------------------------

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)

    def _connected(self, sock: socket.socket) -> None:
        with self.lock:
            self._connections += 1
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


class Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout) or a connection closed by down()/stop() is expected.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class Handler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1, no Nagle, quiet, and telling the fake of each connection."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else each keep-alive answer waits ~40 ms on delayed ACK
    server: Server

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

    def send_json(self, status: int, body: bytes, content_type: str,
                  headers: tuple[tuple[str, str], ...] = ()) -> None:
        """Answer ``status`` with ``body`` (already encoded) of ``content_type``."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
