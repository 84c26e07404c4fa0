"""Heartbeat views (docs/heartbeats.md): ``GET``/``HEAD``/``POST /heartbeat/<name>``, a beat
for a cron job or anything that cannot send an alert, and ``GET /api/heartbeats``; both behind
the webhooks' auth (``BRIDGE_TOKEN``). Views only: they beat through
:meth:`bridge.intake.service.Bridge.beat` and read through
:func:`bridge.intake.readside.heartbeats`."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from bridge.intake import readside
from bridge.web.guard import bridge, error, protected

#: ``/heartbeat/<name>`` and ``/api/heartbeats``.
views = Blueprint("heartbeat", __name__)


@views.route("/heartbeat/<name>", methods=["GET", "HEAD", "POST"])
@protected
def beat(name: str) -> Any:
    """A beat of heartbeat ``name``: 200 ``{"heartbeat": name, "state": ...}`` (its state
    after the beat), 404 for a name the rules do not declare, 503 when the store cannot take
    it. A body, if any, is not read."""
    try:
        view = bridge().beat(name)
    except KeyError:
        return error(f"no heartbeat {name!r} in the rules", 404)
    return jsonify({"heartbeat": name, "state": view.state})


@views.get("/api/heartbeats")
@protected
def heartbeats() -> Any:
    """Every heartbeat with its state: see :func:`bridge.intake.readside.heartbeats`."""
    return jsonify({"heartbeats": readside.heartbeats(bridge())})
