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
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from fakeserver import FakeServer, Handler

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


class FakeProvider(FakeServer):
    """Base of the fakes: lifecycle, recording and scripting. Subclasses implement
    :meth:`judge` (request -> (status, JSON body)) and may call :meth:`accept` to record an
    accepted send and :meth:`scripted` to take a queued answer."""

    name = "fake"
    #: the Content-Type of every answer (Tencent's SDK reads errors only from exactly
    #: ``application/json``, as Tencent answers)
    content_type = "application/json;charset=utf-8"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(_Handler, host=host, port=port)
        self._script: deque[Scripted] = deque()
        self._requests: list[Message] = []

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT/``."""
        return f"{self.base_url}/"

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
        self._sleep(delay)
        status, body = self.judge(req)
        with self.lock:
            self._requests.append({"t": time.time(), "method": req.method, "path": req.path,
                                   "headers": dict(req.headers), "body": req.body,
                                   "answer": (status, body)})
        return status, body

class _Handler(Handler):
    def _handle(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        fake = self.server.fake
        assert isinstance(fake, FakeProvider)
        answer = fake._serve(Request(self.command, self.path, headers, body))
        if answer is None:
            self.close_connection = True
            return
        status, obj = answer
        self.send_json(status, json_bytes(obj), fake.content_type)

    do_GET = _handle
    do_POST = _handle
