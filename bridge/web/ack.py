"""Acknowledging (docs/oncall.md, The acknowledgement page, Acknowledging): the page an SMS links
to, ``GET``/``POST /a/<code>``, and the JSON ``GET /api/episodes`` and
``POST /api/episodes/<id>/ack`` behind ``BRIDGE_TOKEN``.

Views only: they read through :mod:`bridge.intake.readside` (the same functions as the operator
page) and acknowledge through :meth:`bridge.intake.service.Bridge.acknowledge`.

Choices made here (docs/design.md, Acknowledgement):

- **Client address** for the unknown-code limit is ``request.remote_addr`` as gunicorn gives
  it: the TCP peer. gunicorn never rewrites it from ``X-Forwarded-For`` (its
  ``forwarded_allow_ips`` only governs the scheme headers), and the bridge does not read
  ``X-Forwarded-For`` itself, since any client can forge it. Behind a proxy all clients then
  share the proxy's address and its limit; a valid code is always served, so that costs
  nobody with a real code anything.
- **Cross-site POSTs** to ``/a/<code>`` are refused (403): a ``Sec-Fetch-Site`` other than
  ``same-origin`` or ``none``, or else an ``Origin`` whose host is not this request's host.
  A POST with neither header (curl, old phone browsers) is accepted: the code is the
  credential.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, jsonify, render_template, request

from bridge.decide.episodes import (
    EPISODE_STATES,
    UNKNOWN_CODE_LIMIT,
    already_reason,
    name_problem,
)
from bridge.intake import readside
from bridge.web.guard import bridge, error, protected

log = logging.getLogger("bridge.ack")  # stable log name (not the module path)

#: ``/a/<code>`` and the episodes API.
ack = Blueprint("ack", __name__, template_folder="templates")


def cross_site() -> bool:
    """True when this POST comes from another site's page (``Sec-Fetch-Site``, else
    ``Origin``)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site.strip().lower() not in ("same-origin", "none")
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    if origin.strip().lower() == "null":
        return True
    return urlsplit(origin.strip()).netloc.lower() != request.host.lower()


def _page(name: str, status: int = 200, **context: Any) -> tuple[str, int]:
    return render_template(f"ack/{name}", **context), status


def _unknown_code() -> Any:
    """404 for an unknown or expired code, 429 once this client has tried more than
    :data:`UNKNOWN_CODE_LIMIT` unknown codes in the current minute."""
    client = request.remote_addr or "-"
    count = bridge().unknown_code_hit(client)
    if count > UNKNOWN_CODE_LIMIT:
        log.warning("429 for /a/: %s tried %d unknown codes this minute", client, count)
        return _page("unknown.html", 429, too_many=True)
    return _page("unknown.html", 404, too_many=False)


@ack.route("/a/<code>", methods=["GET", "POST"])
def ack_page(code: str) -> Any:
    """The acknowledgement page: ``GET`` shows the episode and changes nothing; ``POST``
    acknowledges as the person the code was sent to (docs/oncall.md, Acknowledging)."""
    b = bridge()
    found = b.episode_by_code(code)
    if found is None:
        return _unknown_code()
    episode, paged = found
    done: bool | None = None
    if request.method == "POST":
        if cross_site():
            log.warning("403 cross-site POST /a/ from %s (Origin %s)", request.remote_addr,
                        request.headers.get("Origin", "-"))
            return _page("unknown.html", 403, cross=True)
        episode, done = b.acknowledge(episode.id, b.by_of(paged), "link")
    view = readside.episode_json(b, episode)
    pending = [s for s in view["escalation"] if s["state"] == "pending"]
    ended = [s for s in view["escalation"] if s["state"] != "pending"]
    return _page("episode.html", e=view, tz=b.settings.tz, done=done, pending=pending,
                 ended=ended, code=code, me=b.by_of(paged))


@ack.get("/api/episodes")
@protected
def api_episodes() -> Any:
    """Episodes newest first: ``?state=firing|acknowledged|resolved``, ``?limit=`` (1-1000,
    default 50) -> ``{"episodes": [...]}`` (:func:`bridge.intake.readside.episode_json`)."""
    try:
        limit = int(request.args.get("limit", "50"))
    except ValueError:
        return error("limit must be a whole number", 400)
    state = request.args.get("state") or None
    if state is not None and state not in EPISODE_STATES:
        return error(f"state must be one of {', '.join(EPISODE_STATES)}", 400)
    return jsonify({"episodes": readside.episodes(bridge(), state, limit)})


@ack.post("/api/episodes/<id>/ack")
@protected
def api_ack(id: str) -> Any:
    """Acknowledge episode ``id`` with JSON ``{"by": "name"}`` -> 200 ``{"acknowledged":
    true|false, "episode": {...}}``; when false (it already was, or resolved) also ``reason``
    (:func:`already_reason`: by whom and when); 400 bad body or a name :func:`name_problem`
    refuses, 404 unknown id, 503 store down (docs/api.md)."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return error('body must be a JSON object {"by": "name"}', 400)
    by = body.get("by")
    if not isinstance(by, str) or not by.strip():
        return error('"by" must be a non-empty string naming who acknowledges', 400)
    problem = name_problem(by)
    if problem:
        return error(f'"by": {problem}', 400)
    b = bridge()
    try:
        episode, done = b.acknowledge(id, by, "api")
    except KeyError:
        return error(f"no episode {id!r}", 404)
    answer = {"acknowledged": done, "episode": readside.episode_json(b, episode)}
    if not done:
        answer["reason"] = already_reason(episode, b.settings.zone)
    return jsonify(answer)
