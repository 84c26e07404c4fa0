"""bridge.decide.routing.explain: what each route made of an alert, as a table of cases (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from bridge.decide.routing import RouteVerdict, explain
from bridge.rules.model import Route
from bridge.rules.timeintervals import NamedTimeInterval

NOW = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)  # 23:30 in Asia/Shanghai
INTERVALS = {
    "night": NamedTimeInterval.model_validate(
        {"name": "night", "time_intervals": [{"times": [{"start_time": "23:00",
                                                         "end_time": "24:00"}],
                                              "location": "Asia/Shanghai"}]}),
    "office": NamedTimeInterval.model_validate(
        {"name": "office", "time_intervals": [{"times": [{"start_time": "09:00",
                                                          "end_time": "18:00"}],
                                               "location": "Asia/Shanghai"}]}),
}


def routes(*specs: dict[str, Any]) -> list[Route]:
    return [Route.model_validate({"template": "firing", "receiver": "ops", **s}) for s in specs]


DB = {"matchers": ['severity="critical"', 'team=~"db|mysql"']}
ANY = {"matchers": ['severity=~"critical|warning"']}


@pytest.mark.parametrize(("labels", "status", "specs", "expected"), [
    pytest.param({"severity": "warning", "team": "db"}, "firing", [DB, ANY],
                 [RouteVerdict("r0", "no match", 'severity="critical" against '
                                                 'severity="warning"'),
                  RouteVerdict("r1", "matched")], id="first-failed-matcher"),
    pytest.param({"severity": "critical"}, "firing", [DB],
                 [RouteVerdict("r0", "no match", 'team=~"db|mysql" against no label team '
                                                 '(matches as "")')], id="missing-label"),
    pytest.param({"severity": "critical", "team": "db"}, "firing", [DB, ANY],
                 [RouteVerdict("r0", "matched"),
                  RouteVerdict("r1", "not reached",
                               "an earlier route matched without continue")],
                 id="first-match-wins"),
    pytest.param({"severity": "critical", "team": "db"}, "firing",
                 [{**DB, "continue": True}, {**ANY, "mute_time_intervals": ["night"]}],
                 [RouteVerdict("r0", "matched"),
                  RouteVerdict("r1", "muted", "mute_time_intervals night")],
                 id="continue-then-muted"),
    pytest.param({"severity": "warning"}, "firing",
                 [{**ANY, "active_time_intervals": ["office"]}],
                 [RouteVerdict("r0", "muted", "outside active_time_intervals office")],
                 id="outside-active"),
    pytest.param({"severity": "warning"}, "resolved", [ANY],
                 [RouteVerdict("r0", "no resolved template",
                               "this route sends nothing when the alert resolves")],
                 id="resolved-without-template"),
])
def test_explain(labels: dict[str, str], status: str, specs: list[dict[str, Any]],
                 expected: list[RouteVerdict]) -> None:
    rs = routes(*specs)
    assert explain(labels, status, rs, [f"r{i}" for i in range(len(rs))], INTERVALS,
                   NOW) == expected
