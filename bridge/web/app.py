"""The Flask application factory, as in Flask's tutorial: :func:`create_app` builds the bridge
(or takes the parts a test hands it) and composes the blueprints: the webhooks and JSON API
(:mod:`bridge.web.api`, with the error handlers), the operator page (:mod:`bridge.web.page`),
acknowledgement (:mod:`bridge.web.ack`) and heartbeats (:mod:`bridge.web.heartbeat`). It
defines no view.
"""

from __future__ import annotations

import os

from flask import Flask

from bridge.config import Settings
from bridge.intake.service import Bridge
from bridge.providers.base import Sender
from bridge.store.base import Store
from bridge.web import ack, api, heartbeat, page
from bridge.web.calendar import calendar


def create_app(settings: Settings | None = None, *, store: Store | None = None,
               client: Sender | None = None, state_dir: str | None = None) -> Flask:
    """Build the app: ``settings`` default to the environment (``Settings.from_env()``);
    ``store`` and ``client`` default to the ones the settings name; ``state_dir`` is the
    runtime folder one ``bridge serve`` shares (default ``$BRIDGE_RUNTIME_DIR``, or none).

    Raises :class:`~bridge.errors.RulesError` when the rules fail their checks and
    ``ValueError`` for unreadable settings or an unusable ``BRIDGE_STORE``.
    """
    settings = settings or Settings.from_env()
    b = Bridge(settings, store=store, client=client,
               state_dir=state_dir or os.environ.get("BRIDGE_RUNTIME_DIR") or None)
    app = Flask("bridge", static_folder=None)  # the page blueprint serves /static
    app.extensions["bridge"] = b
    # One byte more than allowed: werkzeug cuts a chunked body (no Content-Length) at this limit
    # without an error, so the webhook reads up to limit + 1 bytes and refuses what is longer.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes + 1
    app.json.ensure_ascii = False  # type: ignore[attr-defined]
    app.register_blueprint(api.api)
    page.init_app(app, settings)
    app.register_blueprint(ack.ack)
    app.register_blueprint(heartbeat.views)
    app.register_blueprint(calendar)
    return app
