"""Read-side service functions: what the JSON API and the operator page show (one code path).

Each takes the process's :class:`~bridge.intake.service.Bridge` and returns plain JSON-able data;
the views only shape it into JSON (``/api/*``) or HTML (``GET /``). Mobiles are masked here
(``138****8000``), times are UNIX seconds plus a ``*_local`` text in ``BRIDGE_TZ``.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bridge.decide.episodes import Episode
from bridge.deliver.deliverer import STATUS_JUHE_CONFIG
from bridge.intake.service import Bridge
from bridge.privacy import mask_mobile, redact_url
from bridge.providers.juhe import encode_tpl_value
from bridge.rules.model import call_address, split_address
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
    ``mobile`` (11 digits; its SMS and its calls) and one ``alertname`` (exact) when given.

    Raises ``ValueError`` for an unknown state and
    :class:`~bridge.errors.StoreUnavailable` when the store cannot be read.
    """
    if state is not None and state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}")
    limit = max(1, min(limit, MAX_LIMIT))
    # the store filters by state and mobile; an alert name is filtered here, in a wider read
    items = b.store.recent(MAX_LIMIT if alertname else limit, state, mobile)
    if mobile is not None:
        # a number's calls too: they are kept under its call address (docs/providers.md, Calls)
        items += b.store.recent(MAX_LIMIT if alertname else limit, state, call_address(mobile))
        items.sort(key=lambda i: (i.created_at, int(i.id) if i.id.isdigit() else 0),
                   reverse=True)
        items = items[:MAX_LIMIT if alertname else limit]
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
    shows (:meth:`bridge.intake.service.Bridge.oncall`)."""
    return [v.to_json(mask=True) for v in b.oncall(next_n, at)]


def episode_json(b: Bridge, episode: Episode) -> dict[str, Any]:
    """One episode as ``/api/episodes`` and the pages show it (docs/api.md, GET
    /api/episodes): ``id``, ``alertname``, ``fingerprint``, ``labels``, ``summary``,
    ``starts_at``, ``state``, ``acknowledged_by``/``_at``, ``resolved_at``, ``silence_url``,
    ``silence_id`` (the Alertmanager silence its acknowledgement created, else ``None``),
    ``paged`` (``person``, ``mobile`` masked, ``channel`` (``voice`` for a call), ``at``
    (queued), ``state`` of its notification or
    ``None``, ``sent_at`` (when it was sent, or ended failed; else ``None``), ``level``) and
    ``escalation`` (``index``, ``after`` seconds and as ``after_text`` (``10m``), ``receiver``,
    ``due_at`` (``None`` until the route's first SMS went out), ``ran_at`` (when the step ran,
    else ``None``), ``state``, ``reason``); each time also as ``*_local`` in ``BRIDGE_TZ``.
    Raises :class:`~bridge.errors.StoreUnavailable`."""
    rules = b.holder.rules
    states: dict[str, str] = {}
    sent_at: dict[str, float] = {}
    for mobile in {p.mobile for p in episode.paged if p.item_id}:
        for item in b.store.recent(200, None, mobile):
            states[item.id] = item.state
            if item.state in ("sent", "failed"):
                sent_at[item.id] = item.updated_at
    return {
        "id": episode.id, "alertname": episode.alertname, "fingerprint": episode.fingerprint,
        "labels": dict(episode.labels), "summary": episode.summary,
        "starts_at": episode.starts_at, "starts_at_local": local_time(b, episode.starts_at),
        "state": episode.state, "route": episode.route,
        "acknowledged_by": episode.acknowledged_by, "acknowledged_at": episode.acknowledged_at,
        "acknowledged_at_local": local_time(b, episode.acknowledged_at),
        "acknowledged_via": episode.acknowledged_via,
        "resolved_at": episode.resolved_at, "resolved_at_local": local_time(b, episode.resolved_at),
        "silence_url": episode.silence_url, "silence_id": episode.silence_id,
        "paged": [{"person": rules.person_of(number), "mobile": mask_mobile(number),
                   "channel": channel, "at": p.at, "at_local": local_time(b, p.at),
                   "level": p.level, "route": p.route,
                   "state": states.get(p.item_id) if p.item_id else None,
                   "sent_at": sent_at.get(p.item_id or ""),
                   "sent_at_local": local_time(b, sent_at.get(p.item_id or ""))}
                  for p in episode.paged for channel, number in [split_address(p.mobile)]],
        "escalation": [{"index": s.index, "after": s.after,
                        "after_text": duration_text(s.after), "receiver": s.receiver,
                        "due_at": s.due_at, "due_at_local": local_time(b, s.due_at),
                        "ran_at": s.ran_at, "ran_at_local": local_time(b, s.ran_at),
                        "state": s.state, "reason": s.reason} for s in episode.steps],
    }


def episodes(b: Bridge, state: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
    """Episodes newest first (at most ``limit``, 1 to :data:`MAX_LIMIT`), of one ``state``
    (``firing``, ``acknowledged``, ``resolved``) when given, each as :func:`episode_json`:
    what ``/api/episodes`` answers and the page shows. Raises ``ValueError`` for another state
    and :class:`~bridge.errors.StoreUnavailable`."""
    limit = max(1, min(limit, MAX_LIMIT))
    return [episode_json(b, e) for e in b.episodes(state, limit)]


def heartbeats(b: Bridge, now: float | None = None) -> list[dict[str, Any]]:
    """Every heartbeat of the rules in force at ``now`` (UNIX seconds, default now), as
    ``/api/heartbeats`` answers (``heartbeats``) and the page shows it (docs/heartbeats.md):
    ``name``, ``state`` (``waiting``, ``up``, ``missing``), ``expect`` (seconds) and
    ``expect_text`` (``5m``), ``last_seen``, ``missing_since``, ``due_at`` (UNIX seconds or
    ``None``; ``due_at``: when it counts as missing without another beat), each also as
    ``*_local`` in ``BRIDGE_TZ``, ``matchers`` (text; none: it beats only through its URL) and
    ``receiver`` (names). Raises :class:`~bridge.errors.StoreUnavailable`."""
    out = []
    for name, hb, view in b.heartbeat_views(now):
        out.append({
            "name": name, "state": view.state, "expect": hb.expect,
            "expect_text": duration_text(hb.expect),
            "last_seen": view.last_seen, "last_seen_local": local_time(b, view.last_seen),
            "missing_since": view.missing_since,
            "missing_since_local": local_time(b, view.missing_since),
            "due_at": view.due_at, "due_at_local": local_time(b, view.due_at),
            "matchers": [str(m) for m in hb.matchers], "receiver": hb.receivers,
        })
    return out


def duration_text(seconds: float) -> str:
    """``seconds`` as the rules write a duration: ``30s``, ``10m``, ``2h``, ``1d``, else
    ``90s``-style whole seconds (the page's escalation ``after``)."""
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def now_utc() -> datetime:
    """The current time, aware (UTC), for previews."""
    return datetime.now(UTC)
