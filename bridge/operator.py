"""Read-side service functions: what the JSON API and the operator page show (one code path).

Each takes the process's :class:`~bridge.service.Bridge` and returns plain JSON-able data; the
views only shape it into JSON (``/api/*``) or HTML (``GET /``). Mobiles are masked here
(``138****8000``), times are UNIX seconds plus a ``*_local`` text in ``BRIDGE_TZ``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bridge.delivery import STATUS_JUHE_CONFIG
from bridge.juhe import encode_tpl_value
from bridge.privacy import mask_mobile, redact_url
from bridge.service import Bridge
from bridge.store.base import STATES, Item

#: The most rows one read returns (``?limit=``).
MAX_LIMIT = 1000


def local_time(b: Bridge, ts: float | None) -> str:
    """``ts`` (UNIX seconds) as ``YYYY-MM-DD HH:MM:SS`` in ``BRIDGE_TZ``; ``""`` for none."""
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, b.settings.zone).strftime("%Y-%m-%d %H:%M:%S")


def notification_json(b: Bridge, item: Item) -> dict[str, Any]:
    """One stored notification as the API and the page show it: :meth:`Item.to_json` with the
    mobile masked, plus ``variables``, the encoded ``tpl_value``, Juhe's ``fee`` and
    ``created_local``/``updated_local`` (``BRIDGE_TZ``)."""
    data = item.to_json()
    data.update(mobile=mask_mobile(item.mobile), variables=dict(item.variables),
                person=b.holder.rules.person_of(item.mobile),  # by the rules in force now
                tpl_value=encode_tpl_value(item.variables), fee=item.fee,
                created_local=local_time(b, item.created_at),
                updated_local=local_time(b, item.updated_at))
    return data


def notifications(b: Bridge, limit: int = 50, state: str | None = None,
                  mobile: str | None = None, alertname: str | None = None
                  ) -> list[dict[str, Any]]:
    """The most recent notifications, newest first: at most ``limit`` (1 to
    :data:`MAX_LIMIT`), of one ``state`` (one of :data:`~bridge.store.base.STATES`), one
    ``mobile`` (11 digits) and one ``alertname`` (exact) when given.

    Raises ``ValueError`` for an unknown state and
    :class:`~bridge.errors.StoreUnavailable` when the store cannot be read.
    """
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    limit = max(1, min(limit, MAX_LIMIT))
    # the store filters by state and mobile; an alert name is filtered here, in a wider read
    items = b.store.recent(MAX_LIMIT if alertname else limit, state, mobile)
    if alertname:
        items = [i for i in items if i.alertname == alertname][:limit]
    return [notification_json(b, i) for i in items]


def status(b: Bridge) -> dict[str, Any]:
    """What is in force: ``store`` (URL without password, ``ok``, ``error``), ``rules``
    (``version``, ``summary``, ``last_reload_ok``, ``last_success``/``_local``, ``problems``),
    ``dry_run``, ``auth`` (``token``, ``grafana_hmac``), ``juhe_url`` and ``juhe_error`` (the
    configuration error of the last send that met one, or ``""``), ``tz``, ``warnings``."""
    store: dict[str, Any] = {"url": redact_url(b.store.url), "ok": True, "error": ""}
    juhe_error = ""
    try:
        b.store.ping()
        juhe_error = b.store.get_status(STATUS_JUHE_CONFIG) or ""
    except Exception as exc:  # StoreUnavailable or a driver error: show it, do not fail
        store.update(ok=False, error=str(exc))
    state = b.holder.state
    rules = b.holder.rules
    s = b.settings
    return {
        "store": store,
        "rules": {"version": rules.version, "summary": rules.summary(),
                  "last_reload_ok": bool(state.get("ok")),
                  "last_success": state.get("success_ts"),
                  "last_success_local": local_time(b, state.get("success_ts")),
                  "problems": list(state.get("problems") or [])},
        "dry_run": s.dry_run,
        "juhe_url": "" if s.dry_run else s.juhe_url,
        "juhe_error": juhe_error,
        "auth": {"token": bool(s.token), "grafana_hmac": bool(s.grafana_hmac_secret)},
        "tz": s.tz,
        "warnings": list(s.warnings),
        "now_local": local_time(b, time.time()),
    }


def oncall(b: Bridge, next_n: int = 3, at: float | None = None) -> list[dict[str, Any]]:
    """Per schedule, who is on call at ``at`` (UNIX seconds, default now) and the ``next_n``
    shifts after, mobiles masked: what ``/api/oncall`` answers (``schedules``) and the page
    shows (:meth:`bridge.service.Bridge.oncall`)."""
    return [v.to_json(mask=True) for v in b.oncall(next_n, at)]


def episodes(b: Bridge, state: str | None = None,
             limit: int = 50) -> list[dict[str, Any]] | None:
    """SLOT (episodes and acknowledgement, SPEC "On call"): episodes newest first, as
    ``/api/episodes`` answers. ``None`` while this build has no episodes: the page then says
    so. The episodes work replaces this body with its service function."""
    return None


def now_utc() -> datetime:
    """The current time, aware (UTC), for previews."""
    return datetime.now(UTC)
