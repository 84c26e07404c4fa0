#!/usr/bin/env python3
"""The time-to-page baseline: a synchronous relay (PrometheusAlert's design), a Flask handler
that sends one SMS per firing alert to Juhe before it answers, under the same gunicorn settings
as ``bridge serve`` (``bench/bare_app.py``'s :class:`BareApplication`). Nothing is stored,
deduplicated, retried or paced: the limit of how soon an SMS can reach Juhe.

Each SMS carries the variables of the bench's ``firing`` template (``name``, ``host``,
``summary``, ``at``), form-encoded as Juhe wants them, through one ``requests.Session`` per
thread (kept alive, and reading no proxy settings from the environment per send, as the
bridge's sender does).

    python bench/relay_app.py --port 18003 --juhe-url URL --key KEY [--mobile 13800138000]
"""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any
from urllib.parse import quote

import requests
from bare_app import BareApplication  # bench/ is on sys.path when run as a script
from flask import Flask, jsonify, request


def tpl_value(variables: dict[str, str]) -> str:
    """Juhe's ``tpl_value``: ``#name#=value`` pairs joined by ``&``, each part URL-encoded."""
    return "&".join(f"{quote(f'#{k}#')}={quote(v)}" for k, v in variables.items())


def create_app(juhe_url: str, key: str, mobile: str, tpl_id: int = 111) -> Flask:
    app = Flask("relay")
    local = threading.local()

    def session() -> requests.Session:
        s: requests.Session | None = getattr(local, "session", None)
        if s is None:
            s = local.session = requests.Session()
            s.trust_env = False  # as the bridge's Juhe client: no environment scan per send
        return s

    @app.post("/webhook/<source>")
    def webhook(source: str) -> Any:
        body = json.loads(request.get_data(cache=False))
        sent = 0
        for alert in body.get("alerts") or []:
            if alert.get("status") != "firing":
                continue
            labels, notes = alert.get("labels") or {}, alert.get("annotations") or {}
            variables = {"name": labels.get("alertname", "-"),
                         "host": labels.get("instance", "-"),
                         "summary": notes.get("summary", "-"),
                         "at": str(alert.get("startsAt", ""))[5:16].replace("T", " ")}
            r = session().post(juhe_url, data={"key": key, "mobile": mobile, "tpl_id": tpl_id,
                                               "tpl_value": tpl_value(variables)}, timeout=5)
            sent += r.json().get("error_code") == 0
        return jsonify({"alerts": len(body.get("alerts") or []), "sent": sent})

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok"})

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--juhe-url", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--mobile", default="13800138000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=32)
    args = ap.parse_args()
    BareApplication(args.port, args.workers, args.threads,
                    lambda: create_app(args.juhe_url, args.key, args.mobile)).run()


if __name__ == "__main__":
    main()
