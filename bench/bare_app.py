#!/usr/bin/env python3
"""The intake baseline: a bare Flask app answering every webhook with constant JSON, under the
same gunicorn settings as ``bridge serve`` (gthread workers with 32 threads each, keepalive 2,
timeout 30, no access log), bound to 127.0.0.1. ``--threads 0`` runs sync workers instead.

    python bench/bare_app.py --port 18001 [--workers 2] [--threads 32]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify, request
from gunicorn.app.base import BaseApplication


def create_app() -> Flask:
    app = Flask("bare")

    @app.post("/webhook/<source>")
    def webhook(source: str) -> Any:
        request.get_data(cache=False)  # read the body like the bridge does, then ignore it
        return jsonify({"alerts": 10, "queued": 20, "suppressed": 0, "held": 0})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


class BareApplication(BaseApplication):  # type: ignore[misc]
    """gunicorn on 127.0.0.1:``port`` with the bridge's settings around ``factory()`` (this
    module's constant-JSON app unless given): sync workers, or gthread with ``threads`` > 0 as
    ``bridge serve`` runs. ``bench/raw_app.py`` serves its raw-storage app through it too."""

    def __init__(self, port: int, workers: int, threads: int = 0,
                 factory: Callable[[], Flask] = create_app) -> None:
        self.port = port
        self.workers = workers
        self.threads = threads
        self.factory = factory
        super().__init__()

    def load_config(self) -> None:
        options: dict[str, Any] = {
            "bind": f"127.0.0.1:{self.port}",
            "workers": self.workers,
            "worker_class": "sync",
            "timeout": 30,
            "graceful_timeout": 20,
            "keepalive": 2,
            "control_socket_disable": True,
        }
        if self.threads > 0:
            options.update(worker_class="gthread", threads=self.threads,
                           worker_connections=max(1000, 4 * self.threads))
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.factory()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32, help="gthread threads; 0: sync workers")
    args = ap.parse_args()
    BareApplication(args.port, args.workers, args.threads).run()


if __name__ == "__main__":
    main()
