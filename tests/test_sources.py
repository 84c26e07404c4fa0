"""Tests of the payload parsers (bridge.sources) against the real webhook bodies in fixtures/.

Expected values come from reading each fixture (tests/fixtures/, as Alertmanager and Grafana send
them); computed fingerprints are Alertmanager's algorithm, itself checked against
prometheus/common's own test vectors below.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bridge.alert import Batch, labels_fingerprint
from bridge.errors import PayloadError
from bridge.sources import PARSERS, alertmanager, grafana
from bridge.sources.common import parse_time, str_map

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> Any:
    """The decoded JSON body of fixture ``name``."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    """An aware UTC datetime; ``us`` is microseconds."""
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


@dataclass(frozen=True)
class Seen:
    """What a test pins down of one parsed alert."""

    status: str
    fingerprint: str
    starts_at: datetime | None
    ends_at: datetime | None = None


# Computed fingerprints (bodies that send none); values from labels_fingerprint, whose algorithm
# is checked against upstream vectors in test_labels_fingerprint_upstream_vectors.
FP_02 = "88cbf0084cf27726"  # {alertname=Fire, severity=critical}
FP_08_B = "fc7a7b82f8b0b28a"  # {alertname=DiskFull, instance=db-b}
FP_11 = "406032328f7f29a7"  # {alertname=TestAlert, environment=lab, severity=warning, ...}
FP_LEGACY_TEST_RULE = "7850fef639404335"  # ruleId 0, ruleUrl http://localhost:3000/, Test rule

T_01 = utc(2020, 2, 6, 0, 17, 58, 432911)  # 00:17:58.432911368Z, nanoseconds truncated
T_16_START = utc(2022, 6, 17, 1, 4, 0, 782137)
T_16_END = utc(2022, 6, 17, 1, 8, 28, 652747)
T_17 = utc(2026, 6, 2, 17, 15, 30)

FIXTURE_CASES = [
    pytest.param(
        "alertmanager",
        "01-am-two-firing-nanosecond.json",
        [Seen("firing", "a1bc48475b20e73d", T_01), Seen("firing", "c2ea85182f28cbd9", T_01)],
        id="01-am-nanoseconds-zero-endsAt",
    ),
    pytest.param(
        "alertmanager",
        "02-am-resolved-offset-no-fingerprint.json",
        # 22:43:58.283995108+01:00 -> 21:43:58.283995Z
        [
            Seen(
                "resolved",
                FP_02,
                utc(2018, 11, 4, 21, 43, 58, 283995),
                utc(2018, 11, 4, 21, 48, 13, 283995),
            )
        ],
        id="02-am-plus0100-no-fingerprint",
    ),
    pytest.param(
        "alertmanager",
        "05-am-chinese-alertname-escaped-receiver.json",
        [
            Seen("firing", "3407d122c7e8c961", utc(2023, 12, 29, 10, 44, 55, 492000)),
            Seen("firing", "e069919362a06972", utc(2023, 12, 29, 10, 44, 40, 492000)),
        ],
        id="05-am-chinese",
    ),
    pytest.param(
        "alertmanager",
        "06-am-newline-backslash-annotation.json",
        [Seen("firing", "4e4c4c3d872bf6d8", utc(2022, 12, 2, 10, 0, 20, 381000))],
        id="06-am-newlines",
    ),
    pytest.param(
        "alertmanager",
        "08-am-truncated-repeat-reason-mixed.json",
        [
            # 12:00:00.5+02:00 -> 10:00:00.500000Z
            Seen("firing", "0123456789abcdef", utc(2026, 10, 6, 10, 0, 0, 500000)),
            Seen("resolved", FP_08_B, utc(2026, 10, 6, 10), utc(2026, 10, 6, 11)),
        ],
        id="08-am-truncated-mixed",
    ),
    pytest.param(
        "alertmanager",
        "11-am-minimal-alerts-only.json",
        [Seen("firing", FP_11, utc(2025, 8, 21, 10))],
        id="11-am-alerts-only",
    ),
    pytest.param("alertmanager", "13-am-empty-alerts-list.json", [], id="13-am-empty-list"),
    pytest.param(
        "grafana",
        "15-gf-docs-two-firing-plus0200-floats.json",
        # 09:51:03.157076+02:00 -> 07:51:03.157076Z (15:51 in Asia/Shanghai)
        [
            Seen("firing", "c6eadffa33fcdf37", utc(2021, 10, 12, 7, 51, 3, 157076)),
            Seen("firing", "bc97ff14869b13e3", utc(2021, 10, 12, 7, 56, 3, 157076)),
        ],
        id="15-gf-plus0200",
    ),
    pytest.param(
        "grafana",
        "16-gf-mixed-one-firing-two-resolved.json",
        # the group says firing; each alert is judged by its own status
        [
            Seen("resolved", "aaafafe0953f0962", T_16_START, T_16_END),
            Seen("resolved", "fb31814ac93dbe7d", T_16_START, T_16_END),
            Seen("firing", "6f9cd313db421ef1", utc(2022, 6, 17, 1, 3, 0, 782137)),
        ],
        id="16-gf-own-status",
    ),
    pytest.param(
        "grafana",
        "17-gf-datasourceerror-values-null-redelivered.json",
        [
            Seen("firing", "b5a3e0633aff0a2f", T_17),
            Seen("firing", "ee79af1ca55d3c5c", T_17),
            Seen("firing", "42fe0f4e137067ac", T_17),
        ],
        id="17-gf-values-null",
    ),
    pytest.param(
        "grafana",
        "22-gf-legacy-alerting-evalmatches.json",
        [Seen("firing", FP_LEGACY_TEST_RULE, None)],
        id="22-gf-legacy-alerting",
    ),
    pytest.param(
        "grafana",
        "23-gf-legacy-ok.json",
        [Seen("resolved", FP_LEGACY_TEST_RULE, None)],
        id="23-gf-legacy-ok",
    ),
    pytest.param(
        "alertmanager",
        "27-derived-juhe-forgery-label.json",
        [Seen("firing", "d1e2f3a4b5c6d7e8", T_01)],
        id="27-am-forgery-text",
    ),
    pytest.param(
        "alertmanager",
        "29-derived-jinja-looking-annotation.json",
        [Seen("firing", "7777777777777777", T_01)],
        id="29-am-jinja-text",
    ),
]


@pytest.mark.parametrize(("source", "name", "expected"), FIXTURE_CASES)
def test_fixture_alerts(source: str, name: str, expected: list[Seen]) -> None:
    batch = PARSERS[source](load(name))
    assert batch.source == source
    seen = [Seen(a.status, a.fingerprint, a.starts_at, a.ends_at) for a in batch.alerts]
    assert seen == expected
    for alert in batch.alerts:
        assert alert.source == source
        for when in (alert.starts_at, alert.ends_at):
            # aware, and in UTC itself (== on aware datetimes compares instants only)
            assert when is None or when.utcoffset() == timedelta(0)


ERROR_CASES = [
    pytest.param(
        "grafana",
        "19-gf-alert-without-labels.json",
        "alerts[0]: missing labels",
        id="19-gf-no-labels",
    ),
    pytest.param(
        "alertmanager",
        "19-gf-alert-without-labels.json",
        "alerts[0]: missing labels",
        id="19-am-no-labels",
    ),
    pytest.param(
        "alertmanager",
        "30-derived-body-is-array.json",
        "body must be a JSON object",
        id="30-am-array",
    ),
    pytest.param(
        "grafana", "30-derived-body-is-array.json", "body must be a JSON object", id="30-gf-array"
    ),
    pytest.param(
        "alertmanager",
        "32-derived-alerts-not-a-list.json",
        "alerts is not a list",
        id="32-am-alerts-object",
    ),
    pytest.param(
        "grafana",
        "32-derived-alerts-not-a-list.json",
        "alerts is not a list",
        id="32-gf-alerts-object",
    ),
    pytest.param(
        "alertmanager",
        "22-gf-legacy-alerting-evalmatches.json",
        "missing alerts",
        id="22-legacy-at-alertmanager",
    ),
]


@pytest.mark.parametrize(("source", "name", "message"), ERROR_CASES)
def test_fixture_errors(source: str, name: str, message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        PARSERS[source](load(name))
    assert str(caught.value) == message


def test_parsers_registry() -> None:
    assert PARSERS == {"alertmanager": alertmanager.parse, "grafana": grafana.parse}


# --- group fields, annotations, values -------------------------------------------------------


def test_01_group_fields_and_generator_url_as_sent() -> None:
    batch = alertmanager.parse(load("01-am-two-firing-nanosecond.json"))
    assert batch.receiver == "ops-zulip"
    assert batch.external_url == "http://alertmanager.example.internal:9093"
    assert batch.common_labels == {"alertname": "High CPU Temperature", "severity": "critical"}
    assert batch.group_labels == {}
    assert (batch.truncated_alerts, batch.ignored) == (0, 0)
    first = batch.alerts[0]
    assert first.labels == {
        "alertname": "High CPU Temperature",
        "host": "host-a",
        "severity": "critical",
    }
    assert first.annotations["description"] == "CPU core temperature is 34.75C"
    assert first.generator_url.endswith(
        "%7Bfeature%3D~%22core_%5B0-9%5D%2B%22%7D%29+%3E+15&g0.tab=1"
    )
    assert first.values == {}


def test_02_unicode_escape_in_url_is_decoded() -> None:
    alert = alertmanager.parse(load("02-am-resolved-offset-no-fingerprint.json")).alerts[0]
    assert alert.generator_url == "http://localhost:9090/graph?g0.expr=vector%28666%29&g0.tab=1"


def test_05_backslashes_and_chinese_text_kept() -> None:
    batch = alertmanager.parse(load("05-am-chinese-alertname-escaped-receiver.json"))
    assert batch.receiver == "web\\.hook\\.prometheusalert"  # one backslash before each dot
    assert batch.alerts[0].name == "服务异常告警"
    assert batch.alerts[0].annotations["at"] == "PHONE_PLACEHOLDER"


def test_06_newlines_and_literal_backslash_t_kept() -> None:
    batch = alertmanager.parse(load("06-am-newline-backslash-annotation.json"))
    text = batch.alerts[0].annotations["summary"]
    assert "\n\\t\\t 1. node_exporter" in text


def test_08_truncated_and_missing_annotations() -> None:
    batch = alertmanager.parse(load("08-am-truncated-repeat-reason-mixed.json"))
    assert batch.truncated_alerts == 2
    assert batch.receiver == "lab"
    assert batch.alerts[1].annotations == {}
    assert batch.alerts[1].generator_url == ""
    assert batch.alerts[1].fingerprint == labels_fingerprint(
        {"alertname": "DiskFull", "instance": "db-b"}
    )


def test_11_only_alerts_gives_defaults() -> None:
    batch = alertmanager.parse(load("11-am-minimal-alerts-only.json"))
    assert (batch.receiver, batch.external_url, batch.truncated_alerts) == ("", "", 0)
    assert batch.common_labels == {} and batch.group_labels == {}
    assert batch.alerts[0].fingerprint == labels_fingerprint(batch.alerts[0].labels)
    assert batch.alerts[0].annotations["summary"] == "测试告警"


def test_13_empty_list_is_not_an_error() -> None:
    batch = alertmanager.parse(load("13-am-empty-alerts-list.json"))
    assert batch.alerts == []
    assert batch.receiver == "ops-zulip"


def test_15_values_are_numbers() -> None:
    batch = grafana.parse(load("15-gf-docs-two-firing-plus0200-floats.json"))
    assert [a.values for a in batch.alerts] == [{"B": 44.23943737541908, "C": 1}] * 2
    assert batch.common_labels == {"team": "blue"}
    assert batch.receiver == "My Super Webhook"


@pytest.mark.parametrize(
    "name",
    [
        "16-gf-mixed-one-firing-two-resolved.json",
        "17-gf-datasourceerror-values-null-redelivered.json",
    ],
    ids=["16-values-missing", "17-values-null"],
)
def test_grafana_values_missing_or_null_are_empty(name: str) -> None:
    assert all(a.values == {} for a in grafana.parse(load(name)).alerts)


# --- legacy Grafana ----------------------------------------------------------------------------


def test_22_legacy_alerting() -> None:
    batch = grafana.parse(load("22-gf-legacy-alerting-evalmatches.json"))
    [alert] = batch.alerts  # one rule is one alert, however many evalMatches
    assert alert.labels == {"alertname": "Test rule", "grafana_state": "alerting"}
    assert alert.annotations == {
        "summary": "Someone is testing the alert notification within grafana.",
        "title": "[Alerting] Test notification",
    }
    assert alert.generator_url == "http://localhost:3000/"
    assert alert.starts_at is None and alert.ends_at is None
    assert batch.ignored == 0


def test_22_23_legacy_same_identity_for_alerting_and_ok() -> None:
    alerting = grafana.parse(load("22-gf-legacy-alerting-evalmatches.json")).alerts[0]
    ok = grafana.parse(load("23-gf-legacy-ok.json")).alerts[0]
    assert (alerting.status, ok.status) == ("firing", "resolved")
    assert ok.labels == {"alertname": "Test rule"}
    assert alerting.fingerprint == ok.fingerprint == FP_LEGACY_TEST_RULE
    assert FP_LEGACY_TEST_RULE == labels_fingerprint(
        {
            "__grafana_rule_id__": "0",
            "__grafana_rule_url__": "http://localhost:3000/",
            "alertname": "Test rule",
        }
    )


def legacy_body(**changes: Any) -> dict[str, Any]:
    """Fixture 22 with ``changes`` applied; a value of ``None`` removes the field."""
    body: dict[str, Any] = load("22-gf-legacy-alerting-evalmatches.json")
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def test_legacy_rule_id_zero_differs_from_other_ids() -> None:
    zero = grafana.parse(legacy_body(ruleId=0)).alerts[0].fingerprint
    one = grafana.parse(legacy_body(ruleId=1)).alerts[0].fingerprint
    missing = grafana.parse(legacy_body(ruleId=None)).alerts[0].fingerprint
    assert len({zero, one, missing}) == 3


def test_legacy_no_data_fires_with_state_label_and_tags() -> None:
    body = legacy_body(state="no_data", tags={"severity": "critical", "alertname": "ignored"})
    alert = grafana.parse(body).alerts[0]
    assert alert.status == "firing"
    assert alert.labels == {
        "severity": "critical",
        "alertname": "Test rule",
        "grafana_state": "no_data",
    }
    assert alert.fingerprint == FP_LEGACY_TEST_RULE


def test_legacy_without_message_title_or_tags() -> None:
    body = legacy_body(message=None, title=None)
    body["tags"] = None
    alert = grafana.parse(body).alerts[0]
    assert alert.annotations == {}
    assert alert.labels == {"alertname": "Test rule", "grafana_state": "alerting"}


@pytest.mark.parametrize("state", ["paused", "pending"])
def test_legacy_paused_pending_ignored(state: str) -> None:
    batch = grafana.parse(legacy_body(state=state))
    assert (batch.alerts, batch.ignored) == ([], 1)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param({"ruleName": None}, "missing ruleName", id="no-ruleName"),
        pytest.param({"ruleName": ""}, "missing ruleName", id="empty-ruleName"),
        pytest.param({"ruleName": 5}, "ruleName: not a string", id="number-ruleName"),
        pytest.param(
            {"state": "exploded"},
            'state: must be "alerting", "no_data", "ok", "paused" or "pending"',
            id="unknown-state",
        ),
        pytest.param({"tags": ["a"]}, "tags: not an object", id="tags-list"),
    ],
)
def test_legacy_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        grafana.parse(legacy_body(**changes))
    assert str(caught.value) == message


# --- Alertmanager-shaped bodies: versions, status, fingerprint, checks -------------------------


@pytest.mark.parametrize("version", ["3", None], ids=["version-3", "no-version"])
def test_alertmanager_other_versions_read_like_4(version: str | None) -> None:
    body = load("01-am-two-firing-nanosecond.json")
    expected = alertmanager.parse(body)
    other = copy.deepcopy(body)
    if version is None:
        del other["version"]
    else:
        other["version"] = version
    assert alertmanager.parse(other) == expected


def test_firing_and_resolved_of_same_labels_share_fingerprint() -> None:
    resolved = load("02-am-resolved-offset-no-fingerprint.json")
    firing = copy.deepcopy(resolved)
    firing["status"] = "firing"
    firing["alerts"][0]["status"] = "firing"
    firing["alerts"][0]["endsAt"] = "0001-01-01T00:00:00Z"
    got_firing = alertmanager.parse(firing).alerts[0]
    got_resolved = alertmanager.parse(resolved).alerts[0]
    assert (got_firing.status, got_resolved.status) == ("firing", "resolved")
    assert got_firing.fingerprint == got_resolved.fingerprint == FP_02
    assert got_firing.ends_at is None


def one_alert(alert: dict[str, Any], **group: Any) -> dict[str, Any]:
    """An Alertmanager-shaped body holding ``alert`` and the group fields ``group``."""
    return {"alerts": [alert], **group}


@pytest.mark.parametrize(
    ("alert_status", "group_status", "expected"),
    [
        pytest.param(None, "resolved", "resolved", id="missing-takes-group"),
        pytest.param(None, None, "firing", id="missing-no-group"),
        pytest.param(None, "odd", "firing", id="missing-odd-group"),
        pytest.param("", "resolved", "resolved", id="empty-takes-group"),
        pytest.param("firing", "resolved", "firing", id="own-beats-group"),
    ],
)
def test_alert_status_defaults(
    alert_status: str | None, group_status: str | None, expected: str
) -> None:
    alert: dict[str, Any] = {"labels": {"a": "b"}}
    if alert_status is not None:
        alert["status"] = alert_status
    group = {} if group_status is None else {"status": group_status}
    for parse in PARSERS.values():
        assert parse(one_alert(alert, **group)).alerts[0].status == expected


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param({}, "missing alerts", id="no-alerts"),
        pytest.param({"alerts": None}, "alerts is not a list", id="alerts-null"),
        pytest.param("text", "body must be a JSON object", id="string-body"),
        pytest.param(None, "body must be a JSON object", id="null-body"),
        pytest.param(
            {"alerts": [{"labels": {}}] * 3 + ["x"]}, "alerts[3]: not an object", id="item-string"
        ),
        pytest.param(
            {"alerts": [{"labels": []}]}, "alerts[0].labels: not an object", id="labels-list"
        ),
        pytest.param(
            {"alerts": [{"labels": None}]}, "alerts[0].labels: not an object", id="labels-null"
        ),
    ],
)
def test_body_errors(payload: Any, message: str) -> None:
    for parse in PARSERS.values():
        with pytest.raises(PayloadError) as caught:
            parse(payload)
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("payload", "names", "warnings", "skipped"),
    [
        pytest.param(
            {"alerts": [{"labels": {"alertname": "A"}, "status": "Firing"},
                        {"labels": {"alertname": "B"}}]},
            ["B"], ['alerts[0].status: must be "firing" or "resolved"; alert skipped'], 1,
            id="bad-status",
        ),
        pytest.param(
            {"alerts": [{"labels": {"alertname": "A"}},
                        {"labels": {"alertname": "B"}, "startsAt": "yesterday"}]},
            ["A", "B"], ["alerts[1].startsAt: not an RFC 3339 time; read as missing"], 0,
            id="bad-startsAt",
        ),
        pytest.param(
            {"alerts": [{"labels": {"alertname": "A"}, "annotations": "x"}]},
            ["A"], ["alerts[0].annotations: not an object; read as empty"], 0,
            id="annotations-string",
        ),
        pytest.param(
            {"alerts": [{"labels": {"alertname": "A"}, "values": [1]}], "commonLabels": [1]},
            ["A"], ["alerts[0].values: not an object; read as empty",
                    "commonLabels: not an object; read as empty"], 0,
            id="values-and-common-labels",
        ),
    ],
)
def test_one_odd_alert_costs_the_others_nothing(payload: Any, names: list[str],
                                                warnings: list[str], skipped: int) -> None:
    """Found by a trial run: one malformed alert got the whole body a 400, and Alertmanager
    does not retry a 4xx, so the good alerts in it were never paged."""
    batch = grafana.parse(payload)
    assert [a.name for a in batch.alerts] == names
    assert list(batch.warnings) == warnings
    assert batch.skipped == skipped
    for a in batch.alerts:
        assert (a.starts_at, dict(a.annotations), dict(a.values)) == (None, {}, {})


def test_overlong_fingerprint_is_replaced() -> None:
    batch = alertmanager.parse(one_alert({"labels": {}, "fingerprint": "f" * 129}))
    assert batch.alerts[0].fingerprint == "cbf29ce484222325"


def test_empty_labels_accepted_and_fingerprinted() -> None:
    batch: Batch = alertmanager.parse(one_alert({"labels": {}, "fingerprint": ""}))
    assert batch.alerts[0].labels == {}
    assert batch.alerts[0].fingerprint == "cbf29ce484222325"  # FNV-1a 64 offset basis


@pytest.mark.parametrize(
    ("value", "expected"),
    [(2, 2), (0, 0), (None, 0), ("2", 0), (-1, 0), (True, 0), (1.5, 0)],
    ids=["int", "zero", "null", "string", "negative", "bool", "float"],
)
def test_truncated_alerts_tolerant(value: Any, expected: int) -> None:
    body: dict[str, Any] = {"alerts": [], "truncatedAlerts": value}
    assert alertmanager.parse(body).truncated_alerts == expected


# --- parse_time ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2020-02-06T00:17:58.432911368Z", utc(2020, 2, 6, 0, 17, 58, 432911)),
        ("2018-11-04T22:43:58.283995108+01:00", utc(2018, 11, 4, 21, 43, 58, 283995)),
        ("2021-10-12T09:51:03.157076+02:00", utc(2021, 10, 12, 7, 51, 3, 157076)),
        ("2026-10-06T12:00:00.5+02:00", utc(2026, 10, 6, 10, 0, 0, 500000)),
        ("2024-01-01T00:30:00-05:30", utc(2024, 1, 1, 6, 0)),
        ("2024-12-31T23:00:00-02:00", utc(2025, 1, 1, 1, 0)),
        ("2024-01-01T00:00:00Z", utc(2024, 1, 1)),
        ("2024-01-01t00:00:00.000000001z", utc(2024, 1, 1)),
        ("2024-02-29T12:00:00.999999999Z", utc(2024, 2, 29, 12, 0, 0, 999999)),
        ("0001-01-01T00:00:00Z", None),
        ("0001-01-01T00:00:00.000+08:00", None),
        ("0001-06-01T12:00:00Z", None),
        ("", None),
        (None, None),
    ],
    ids=[
        "nanoseconds-Z",
        "nanoseconds-plus0100",
        "micro-plus0200",
        "one-digit-plus0200",
        "minus0530",
        "offset-crosses-year",
        "no-fraction",
        "lower-case-t-z",
        "nanoseconds-truncate-not-round",
        "zero-time",
        "year-1-with-offset",
        "year-1-other",
        "empty",
        "null",
    ],
)
def test_parse_time(text: str | None, expected: datetime | None) -> None:
    got = parse_time(text, "t")
    assert got == expected
    if got is not None:
        assert got.tzinfo is UTC


@pytest.mark.parametrize(
    "value",
    [
        "2020-02-06T00:17:58",
        "2020-02-06 00:17:58Z",
        "2020-02-06T00:17:58.Z",
        "2020-02-06T00:17:58.1234567890Z",
        "2020-02-06T00:17:58+0100",
        "2020-02-06T00:17:58+24:00",
        "2020-02-06T00:17:58+01:60",
        "2020-13-01T00:00:00Z",
        "2023-02-29T00:00:00Z",
        "2020-02-06T00:17:60Z",
        "0000-01-01T00:00:00Z",
        "9999-12-31T23:59:59-01:00",
        "2020-02-06T00:17:58Z\n",
        "2020-02-06",
        1580948278,
        [],
    ],
)
def test_parse_time_rejects(value: Any) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_time(value, "alerts[2].startsAt")
    assert str(caught.value) == "alerts[2].startsAt: not an RFC 3339 time"


# --- str_map -----------------------------------------------------------------------------------


def test_str_map_converts_values() -> None:
    got = str_map({"s": "x", "n": 3, "f": 1.5, "b": True, "none": None, "l": [1]}, "labels")
    assert got == {"s": "x", "n": "3", "f": "1.5", "b": "true", "none": "", "l": "[1]"}
    assert str_map(None, "labels") == {}


def test_str_map_rejects_non_objects() -> None:
    with pytest.raises(PayloadError, match=r"^alerts\[0\]\.annotations: not an object$"):
        str_map(["a"], "alerts[0].annotations")


# --- labels_fingerprint ------------------------------------------------------------------------

# prometheus/common model/signature_test.go (TestMetricToFingerprint and the
# BenchmarkMetricToFingerprint* cases): labelSetToFingerprint -> uint64, shown as %016x.
UPSTREAM_VECTORS = [
    ({}, 14695981039346656037),
    ({"name": "garland, briggs", "fear": "love is not enough"}, 5799056148416392346),
    ({"first-label": "first-label-value"}, 5146282821936882169),
    (
        {"first-label": "first-label-value", "second-label": "second-label-value"},
        3195800080984914717,
    ),
    (
        {
            "first-label": "first-label-value",
            "second-label": "second-label-value",
            "third-label": "third-label-value",
        },
        13843036195897128121,
    ),
]


@pytest.mark.parametrize(
    ("labels", "number"), UPSTREAM_VECTORS, ids=["empty", "two", "single", "double", "triple"]
)
def test_labels_fingerprint_upstream_vectors(labels: dict[str, str], number: int) -> None:
    assert labels_fingerprint(labels) == f"{number:016x}"


def test_labels_fingerprint_shape_and_order() -> None:
    assert labels_fingerprint({}) == "cbf29ce484222325"
    assert labels_fingerprint({"a": "1", "b": "2"}) == labels_fingerprint({"b": "2", "a": "1"})
    # the separator byte keeps name/value boundaries apart
    assert labels_fingerprint({"a": "bc"}) != labels_fingerprint({"ab": "c"})
    # utf-8 bytes are hashed, and a leading zero is kept
    fingerprint = labels_fingerprint({"alertname": "服务异常告警"})
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
