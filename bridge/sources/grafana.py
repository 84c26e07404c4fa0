"""Grafana webhook bodies: unified alerting and the legacy dashboard alert.

Sources: Grafana's webhook contact point (``"version": "1"``, Alertmanager-shaped, with
``values``), documented in grafana/grafana ``docs/sources/alerting/configure-notifications/
manage-contact-points/integrations/webhook-notifier.md``; and the legacy dashboard-alert
webhook (``ruleId``, ``ruleName``, ``ruleUrl``, ``state``, ``evalMatches``, ``tags``,
``message``, ``title``) of Grafana before unified alerting. docs/api.md says how the legacy
body maps onto an alert.
"""

from __future__ import annotations

from typing import Any

from bridge.alert import Alert, Batch, Status, labels_fingerprint
from bridge.errors import PayloadError
from bridge.sources.common import opt_str, parse_group, require_object, str_map

#: Fields that make a body without ``alerts`` a legacy dashboard alert.
LEGACY_FIELDS = ("ruleName", "state", "evalMatches")
_LEGACY_STATUS: dict[str, Status] = {"alerting": "firing", "no_data": "firing", "ok": "resolved"}
_LEGACY_IGNORED = ("paused", "pending")


def parse(payload: Any) -> Batch:
    """Parse a decoded Grafana webhook body into a :class:`Batch` (``source="grafana"``).

    A body without ``alerts`` but with any of ``ruleName``/``state``/``evalMatches`` is a legacy
    dashboard alert (see :func:`parse_legacy`); anything else is read as unified alerting:
    like Alertmanager, plus each alert's ``values`` (name -> number; ``null`` -> ``{}``).

    Raises :class:`~bridge.errors.PayloadError` naming the place of the problem, e.g.
    ``"body must be a JSON object"``, ``"missing alerts"``, ``"alerts[0]: missing labels"``.
    """
    body = require_object(payload)
    if body.get("alerts") is None and any(name in body for name in LEGACY_FIELDS):
        return parse_legacy(body)
    return parse_group(body, "grafana", with_values=True)


def legacy_fingerprint(rule_id: Any, rule_url: Any, rule_name: str) -> str:
    """The identity of a legacy Grafana rule, as 16 hex digits.

    :func:`labels_fingerprint` over ``__grafana_rule_id__`` (``ruleId`` as text; ``0`` is a
    valid id), ``__grafana_rule_url__`` and ``alertname`` (``ruleName``). It does not depend on
    ``state``, so the ``alerting`` and the ``ok`` body of one rule share it.
    """
    return labels_fingerprint(
        {
            "__grafana_rule_id__": opt_str(rule_id),
            "__grafana_rule_url__": opt_str(rule_url),
            "alertname": rule_name,
        }
    )


def parse_legacy(body: dict[str, Any]) -> Batch:
    """Parse a legacy Grafana dashboard-alert body: one rule is one alert.

    Labels: the rule's ``tags`` (``null`` -> none), ``alertname`` = ``ruleName`` and, for
    ``alerting``/``no_data``, ``grafana_state`` = the state. Annotations: ``summary`` =
    ``message`` and ``title``, when present. ``state`` ``alerting``/``no_data`` -> firing,
    ``ok`` -> resolved, ``paused``/``pending`` -> a batch with no alert and ``ignored=1``.
    ``starts_at`` is ``None`` (the bridge starts the episode when it first sees it alerting);
    ``generator_url`` = ``ruleUrl``; fingerprint from :func:`legacy_fingerprint`.
    ``evalMatches`` do not make more alerts.

    Raises :class:`~bridge.errors.PayloadError` for a missing or empty ``ruleName``, a
    ``ruleName`` that is not a string, an unknown ``state`` and ``tags`` that is not an object.
    """
    rule_name = body.get("ruleName")
    if rule_name is None or rule_name == "":
        raise PayloadError("missing ruleName")
    if not isinstance(rule_name, str):
        raise PayloadError("ruleName: not a string")
    state = body.get("state")
    if state in _LEGACY_IGNORED:
        return Batch(source="grafana", alerts=[], ignored=1)
    if not isinstance(state, str) or state not in _LEGACY_STATUS:
        raise PayloadError('state: must be "alerting", "no_data", "ok", "paused" or "pending"')

    labels = str_map(body.get("tags"), "tags")
    labels["alertname"] = rule_name
    if _LEGACY_STATUS[state] == "firing":
        labels["grafana_state"] = state
    annotations: dict[str, str] = {}
    for field, annotation in (("message", "summary"), ("title", "title")):
        text = opt_str(body.get(field))
        if text:
            annotations[annotation] = text

    alert = Alert(
        labels=labels,
        annotations=annotations,
        status=_LEGACY_STATUS[state],
        fingerprint=legacy_fingerprint(body.get("ruleId"), body.get("ruleUrl"), rule_name),
        source="grafana",
        generator_url=opt_str(body.get("ruleUrl")),
    )
    return Batch(source="grafana", alerts=[alert])
