"""Loaded by every Python process of a ``bridge serve`` that ``bench/stalls.py`` starts (it puts
this folder first on ``PYTHONPATH``): times each request inside the Flask app (wall and the
thread's CPU, so that their difference is time spent waiting: for the GIL, a lock, a core)
and every garbage collection, and writes them to ``$STALLS_OUT/<pid>.txt`` at exit and every
200 requests. Nothing here is part of the bridge.

Lines: ``req WALL_MS CPU_MS UNIX_TIME PATH`` and ``gc GENERATION MS UNIX_TIME``.
"""

from __future__ import annotations

import atexit
import gc
import os
import threading
import time
from typing import Any

OUT = os.environ.get("STALLS_OUT")

if OUT:
    _requests: list[tuple[float, float, float, str]] = []
    _collections: list[tuple[int, float, float]] = []
    _started: dict[int, float] = {}

    def _on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _started[threading.get_ident()] = time.perf_counter()
            return
        began = _started.pop(threading.get_ident(), None)
        if began is not None:
            _collections.append((info["generation"], (time.perf_counter() - began) * 1000,
                                 time.time()))

    def _dump() -> None:
        with open(os.path.join(OUT, f"{os.getpid()}.txt"), "w", encoding="utf-8") as f:
            for gen, ms, at in list(_collections):
                f.write(f"gc {gen} {ms:.3f} {at:.4f}\n")
            for wall, cpu, at, path in list(_requests):
                f.write(f"req {wall:.3f} {cpu:.3f} {at:.4f} {path}\n")

    gc.callbacks.append(_on_gc)
    atexit.register(_dump)

    import flask

    _wsgi_app = flask.Flask.wsgi_app

    def _timed(self: flask.Flask, environ: dict[str, Any], start_response: Any) -> Any:
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return _wsgi_app(self, environ, start_response)
        finally:
            _requests.append(((time.perf_counter() - wall) * 1000,
                              (time.thread_time() - cpu) * 1000, time.time(),
                              str(environ.get("PATH_INFO"))))
            if len(_requests) % 200 == 0:
                _dump()

    flask.Flask.wsgi_app = _timed  # type: ignore[method-assign]
