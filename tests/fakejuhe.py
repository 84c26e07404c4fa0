#!/usr/bin/env python3
"""A fake Juhe SMS API (``/sms/send``) for the test suite, benches and manual runs.

A real HTTP/1.1 keep-alive server (``ThreadingHTTPServer`` on 127.0.0.1, port 0 by default) in
a background thread. Like a strict fake of Juhe (docs/juhe.md) it takes
GET and POST (form), checks the key, the mobile (``1[3-9]`` + 9 digits) and the ``tpl_id``,
and decodes ``tpl_value`` exactly as Juhe does (form-decode, split on ``&``, each pair on its
first ``=``, ``unquote_plus`` name and value, strip the ``#``); an undecodable ``tpl_value``
gets 205403 as in the shared fake.

In a test::

    with FakeJuhe(valid_key="k") as fake:
        client = JuheClient("k", url=fake.url, timeout=1.0)
        fake.fail_next(10014, 2)          # the next 2 requests answer error_code 10014
        ...
        msgs = fake.wait_for(1, timeout=2.0)

Every knob may be set at any time from any thread. Scripted answers (:meth:`fail_next`,
:meth:`http500_next`, :meth:`respond_next`) queue up in call order and each is used by one
request. While :meth:`down`, the fake closes every open connection and then reads each request
and closes the connection without answering, so a client sees a connection error
(``requests.ConnectionError``, "RemoteDisconnected"/"Connection reset"); the listening port
stays bound, so :meth:`up` always works.

As a script, in its own process (``--port 0`` picks a free port; the first line printed is
``fake juhe on http://127.0.0.1:PORT/sms/send``)::

    python tests/fakejuhe.py --port 18080 --log /tmp/juhe.jsonl [--key testkey] \\
        [--tpls 111,222] [--delay 0.05] [--fail 10014:3] [--http500 2]

writes one JSON line per accepted message and serves ``GET /_stats`` (``{"requests",
"messages", "connections", "down"}``), ``GET /_messages`` (the accepted messages) and
``POST /_control`` with a JSON object of any of ``{"fail_next": [CODE, N], "http500_next": N,
"delay": SECONDS, "down": BOOL, "clear": true}``; these paths are not counted and work while down.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from fakeserver import FakeServer, Handler

__all__ = ["FakeJuhe", "parse_tpl_value", "serve_until_stopped"]

MOBILE = re.compile(r"1[3-9]\d{9}")
Message = dict[str, Any]


def parse_tpl_value(raw: str) -> dict[str, str]:
    """Juhe's decoding of a (form-decoded) ``tpl_value``: pairs split on ``&``, each on its
    first ``=``, name and value ``unquote_plus``-decoded, ``#`` markers stripped.

    Raises ``ValueError`` for a pair without ``=`` or a name not in ``#name#`` form."""
    out: dict[str, str] = {}
    for part in raw.split("&"):
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"pair without '=': {part!r}")
        name, value = part.split("=", 1)
        name = unquote_plus(name)
        if not (len(name) >= 3 and name.startswith("#") and name.endswith("#")):
            raise ValueError(f"variable name not in #name# form: {name!r}")
        out[name[1:-1]] = unquote_plus(value)
    return out


@dataclass(frozen=True)
class _Scripted:
    """One queued answer: HTTP ``status`` with ``body`` (bytes), ``content_type`` and extra
    ``headers``."""

    status: int
    body: bytes
    content_type: str = "application/json;charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()


def _json_bytes(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


class FakeJuhe(FakeServer):
    """A scriptable fake of ``http://v.juhe.cn/sms/send`` on a real socket.

    ``valid_key``: the one key accepted (else 10001). ``valid_tpl_ids``: accepted ``tpl_id``
    strings, ``None`` = any (else 205402). ``host``/``port``: where to listen (port 0 = a free
    one). ``log_path``: append each accepted message as a JSON line.

    Attributes and knobs (all thread-safe, settable while serving): ``delay`` (seconds slept
    before answering each request; a request whose client gave up is still recorded, like a
    real SMS that went out after a read timeout), ``valid_key``, ``valid_tpl_ids``, ``fee``
    (billed units answered, default 1), ``sid_as_number`` (answer ``sid`` as a JSON number),
    ``error_code_as_string`` (answer ``"error_code": "0"`` instead of ``0``).
    """

    name = "fakejuhe"

    def __init__(
        self,
        valid_key: str = "testkey",
        valid_tpl_ids: Iterable[str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_path: str | None = None,
    ) -> None:
        super().__init__(_Handler, host=host, port=port)
        self._valid_key = valid_key
        self._valid_tpl_ids = None if valid_tpl_ids is None else {str(t) for t in valid_tpl_ids}
        self._log_path = log_path
        self._fee = 1
        self._sid_as_number = False
        self._error_code_as_string = False
        self._script: deque[_Scripted] = deque()
        self._requests = 0

    @property
    def url(self) -> str:
        """The send endpoint, ``http://127.0.0.1:PORT/sms/send``."""
        return f"{self.base_url}/sms/send"

    # -- observations ------------------------------------------------------------------------

    @property
    def messages(self) -> list[Message]:
        """A copy of the accepted messages, oldest first. Each is a dict: ``mobile``,
        ``tpl_id`` (str), ``vars`` (decoded as Juhe does), ``raw_tpl_value`` (form-decoded,
        before Juhe's own decoding), ``key``, ``t`` (epoch seconds), ``sid`` (str), ``method``
        (``"POST"``/``"GET"``), ``body`` (the raw form body, or the query for GET)."""
        with self.lock:
            return list(self._messages)

    @property
    def requests(self) -> int:
        """HTTP requests read on ``/sms/send`` (any answer, scripted, or dropped while down)."""
        with self.lock:
            return self._requests

    def clear(self) -> None:
        """Forget messages, counters and queued scripted answers; set ``up``, delay 0."""
        with self.lock:
            self._messages.clear()
            self._script.clear()
            self._requests = 0
            self._connections = 0
            self._delay = 0.0
            self._down = False

    # -- scripting ---------------------------------------------------------------------------

    def fail_next(self, code: int, n: int = 1, reason: str | None = None) -> None:
        """Answer the next ``n`` requests HTTP 200 with ``error_code`` ``code`` (``result``
        ``[]``) and ``reason`` (default "injected failure")."""
        body = _json_bytes(
            {"reason": reason or "injected failure", "result": [], "error_code": code}
        )
        self._queue(_Scripted(200, body), n)

    def http500_next(self, n: int = 1) -> None:
        """Answer the next ``n`` requests with HTTP 500."""
        self._queue(_Scripted(500, _json_bytes({"error": "upstream"})), n)

    def respond_next(
        self,
        status: int,
        body: bytes | str,
        n: int = 1,
        content_type: str = "application/json;charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``n`` requests with exactly this status, body and extra headers
        (e.g. an HTML error page, a non-JSON body, a 429 with ``Retry-After``, a redirect)."""
        raw = body.encode("utf-8") if isinstance(body, str) else body
        extra = tuple((headers or {}).items())
        self._queue(_Scripted(status, raw, content_type, extra), n)

    def _queue(self, item: _Scripted, n: int) -> None:
        with self.lock:
            self._script.extend([item] * n)

    @property
    def valid_key(self) -> str:
        with self.lock:
            return self._valid_key

    @valid_key.setter
    def valid_key(self, key: str) -> None:
        with self.lock:
            self._valid_key = key

    @property
    def valid_tpl_ids(self) -> set[str] | None:
        with self.lock:
            return None if self._valid_tpl_ids is None else set(self._valid_tpl_ids)

    @valid_tpl_ids.setter
    def valid_tpl_ids(self, ids: Iterable[str] | None) -> None:
        with self.lock:
            self._valid_tpl_ids = None if ids is None else {str(t) for t in ids}

    @property
    def fee(self) -> int:
        with self.lock:
            return self._fee

    @fee.setter
    def fee(self, units: int) -> None:
        with self.lock:
            self._fee = units

    @property
    def sid_as_number(self) -> bool:
        with self.lock:
            return self._sid_as_number

    @sid_as_number.setter
    def sid_as_number(self, on: bool) -> None:
        with self.lock:
            self._sid_as_number = on

    @property
    def error_code_as_string(self) -> bool:
        with self.lock:
            return self._error_code_as_string

    @error_code_as_string.setter
    def error_code_as_string(self, on: bool) -> None:
        with self.lock:
            self._error_code_as_string = on

    def stats(self) -> dict[str, Any]:
        """``{"requests", "messages", "connections", "down"}``."""
        with self.lock:
            return {
                "requests": self._requests,
                "messages": len(self._messages),
                "connections": self._connections,
                "down": self._down,
            }

    def control(self, cmd: dict[str, Any]) -> None:
        """Apply a ``/_control`` command (see the module docstring). Raises ``ValueError``
        (also ``KeyError``/``TypeError``) for a malformed one."""
        if not isinstance(cmd, dict):
            raise ValueError("control body must be a JSON object")
        if cmd.get("clear"):
            self.clear()
        if "fail_next" in cmd:
            code, n = cmd["fail_next"]
            self.fail_next(int(code), int(n))
        if "http500_next" in cmd:
            self.http500_next(int(cmd["http500_next"]))
        if "delay" in cmd:
            self.delay = float(cmd["delay"])
        if "down" in cmd:
            if cmd["down"]:
                self.down()
            else:
                self.up()

    # -- used by the handler -----------------------------------------------------------------

    def _begin(self) -> tuple[bool, _Scripted | None, float]:
        """Count a request; returns (down, scripted answer or None, delay seconds)."""
        with self.lock:
            self._requests += 1
            if self._down:
                return True, None, 0.0
            scripted = self._script.popleft() if self._script else None
            return False, scripted, self._delay

    def _judge(self, params: dict[str, list[str]], method: str, raw: str) -> tuple[int, bytes]:
        """Juhe's checks and answer for one unscripted request: (status, JSON body)."""

        with self.lock:
            valid_key, tpls = self._valid_key, self._valid_tpl_ids
            fee, numeric, ec_str = self._fee, self._sid_as_number, self._error_code_as_string

        def get(k: str) -> str | None:
            return params.get(k, [None])[0]

        def fail(code: int, reason: str) -> tuple[int, bytes]:
            ec: int | str = str(code) if ec_str else code
            return 200, _json_bytes({"reason": reason, "result": None, "error_code": ec})

        if get("key") != valid_key:
            return fail(10001, "错误的请求KEY")
        mobile = get("mobile") or ""
        if not MOBILE.fullmatch(mobile):
            return fail(205401, "错误的手机号码")
        tpl_id = get("tpl_id") or ""
        if tpls is not None and tpl_id not in tpls:
            return fail(205402, "错误的短信模板ID,请通过后台确认!!!")
        raw_tpl = get("tpl_value") or ""
        try:
            tvars = parse_tpl_value(raw_tpl)
        except ValueError as e:
            return fail(205403, f"网络错误,请重试 ({e})")
        sid_num = uuid.uuid4().int % 10**17 + 10**17
        sid: int | str = sid_num if numeric else str(sid_num)
        rec: Message = {
            "t": time.time(),
            "method": method,
            "mobile": mobile,
            "tpl_id": tpl_id,
            "vars": tvars,
            "raw_tpl_value": raw_tpl,
            "key": get("key"),
            "sid": str(sid_num),
            "body": raw,
        }
        with self.lock:
            self._messages.append(rec)
            if self._log_path:
                with open(self._log_path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            self.lock.notify_all()
        ok: int | str = "0" if ec_str else 0
        result = {"sid": sid, "fee": fee, "count": 1}
        return 200, _json_bytes({"reason": "操作成功", "result": result, "error_code": ok})


class _Handler(Handler):
    @property
    def fake(self) -> FakeJuhe:
        fake = self.server.fake
        assert isinstance(fake, FakeJuhe)
        return fake

    def _send(
        self,
        status: int,
        body: bytes,
        ctype: str = "application/json;charset=utf-8",
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self.send_json(status, body, ctype, headers)

    def _read_body(self) -> str:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n).decode("utf-8", "replace") if n > 0 else ""

    def _service(self, path: str, method: str, body: str) -> bool:
        """Serve the /_ paths; returns True if it did."""
        fake = self.fake
        if path == "/_stats" and method == "GET":
            self._send(200, _json_bytes(fake.stats()))
        elif path == "/_messages" and method == "GET":
            self._send(200, _json_bytes(fake.messages))
        elif path == "/_control" and method == "POST":
            try:
                fake.control(json.loads(body or "{}"))
            except (ValueError, KeyError, TypeError) as e:
                self._send(400, _json_bytes({"error": str(e)}))
            else:
                self._send(200, _json_bytes(fake.stats()))
        else:
            return False
        return True

    def _handle(self, method: str) -> None:
        fake = self.fake
        u = urlsplit(self.path)
        body = self._read_body() if method == "POST" else ""
        if self._service(u.path, method, body):
            return
        if u.path != "/sms/send":
            self._send(404, _json_bytes({"error": "not found"}))
            return
        down, scripted, delay = fake._begin()
        if down:
            self.close_connection = True  # closed without an answer
            return
        fake._sleep(delay)
        if scripted is not None:
            self._send(scripted.status, scripted.body, scripted.content_type, scripted.headers)
            return
        params = parse_qs(u.query, keep_blank_values=True)
        params.update(parse_qs(body, keep_blank_values=True))
        status, answer = fake._judge(params, method, body if method == "POST" else u.query)
        self._send(status, answer)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")


def main(argv: list[str] | None = None) -> int:
    """Run the fake in this process until SIGINT/SIGTERM."""
    ap = argparse.ArgumentParser(description="fake Juhe SMS API")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=18080, help="0 = a free port (printed)")
    ap.add_argument("--log", default=None, help="JSON-lines file of accepted messages")
    ap.add_argument("--key", default="testkey", help="the one valid key")
    ap.add_argument("--tpls", default=None, help="comma-separated valid tpl_ids (default: any)")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    ap.add_argument("--fail", default=None, metavar="CODE:N", help="first N answer error CODE")
    ap.add_argument("--http500", type=int, default=0, metavar="N", help="first N get HTTP 500")
    args = ap.parse_args(argv)
    tpls = None if args.tpls is None else [t for t in args.tpls.split(",") if t]
    fake = FakeJuhe(args.key, tpls, host=args.host, port=args.port, log_path=args.log)
    fake.delay = args.delay
    if args.http500:
        fake.http500_next(args.http500)
    if args.fail:
        code, _, n = args.fail.partition(":")
        fake.fail_next(int(code), int(n or "1"))
    return serve_until_stopped(fake)


def serve_until_stopped(fake: FakeJuhe) -> int:
    """Run ``fake`` in the foreground, printing its URL, until SIGTERM or SIGINT; returns 0."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    with fake:
        print(f"fake juhe on {fake.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
