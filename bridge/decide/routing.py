"""Which routes an alert takes (Alertmanager semantics, flattened to one level), and why not.

Routes are tried in order; the first whose matchers all hold wins, and the search goes on past
it only when it says ``continue: true``. :func:`explain` answers "why was this not paged?" for
``bridge render`` and the operator page's playground. Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bridge.rules.model import Route
from bridge.rules.timeintervals import NamedTimeInterval


def route(labels: Mapping[str, str], routes: list[Route]) -> list[int]:
    """Indexes of the routes an alert with ``labels`` takes, in order (possibly none)."""
    hits: list[int] = []
    for i, r in enumerate(routes):
        if all(m.matches(labels) for m in r.matchers):
            hits.append(i)
            if not r.continue_:
                break
    return hits


def mute_reason(r: Route, intervals: Mapping[str, NamedTimeInterval], now: datetime) -> str:
    """Why route ``r`` is muted at ``now`` (aware), or ``""`` when it is not.

    Alertmanager semantics: muted while any of ``mute_time_intervals`` is active
    (``mute_time_intervals night``), or while ``active_time_intervals`` is set and none of them
    is active (``outside active_time_intervals office, weekend``).
    """
    for name in r.mute_time_intervals:
        if intervals[name].active_at(now):
            return f"mute_time_intervals {name}"
    if r.active_time_intervals and not any(intervals[n].active_at(now)
                                           for n in r.active_time_intervals):
        return f"outside active_time_intervals {', '.join(r.active_time_intervals)}"
    return ""


@dataclass(frozen=True)
class RouteVerdict:
    """What one route made of one alert.

    ``outcome``: ``matched`` (it pages), ``muted`` (it matched but a time interval holds it
    back: ``why`` names it), ``no match`` (``why`` is the first matcher that failed against
    the alert's value, e.g. ``severity="critical" against severity="warning"``), ``not
    reached`` (an earlier route matched without ``continue``) or ``no resolved template``
    (it matched a resolved alert but sends nothing on resolve).
    """

    route: str
    outcome: str
    why: str = ""


def explain(labels: Mapping[str, str], status: str, routes: Sequence[Route],
            names: Sequence[str], intervals: Mapping[str, NamedTimeInterval],
            now: datetime) -> list[RouteVerdict]:
    """One :class:`RouteVerdict` per route, in order, for an alert with ``labels`` and
    ``status`` (``firing``/``resolved``) at ``now`` (aware); ``names[i]`` names route i.

    A missing label is shown as ``""`` (it matches as the empty string, docs/rules.md, Matchers).
    """
    out: list[RouteVerdict] = []
    stopped = False
    for r, name in zip(routes, names, strict=True):
        if stopped:
            out.append(RouteVerdict(name, "not reached", "an earlier route matched "
                                                          "without continue"))
            continue
        failed = next((m for m in r.matchers if not m.matches(labels)), None)
        if failed is not None:
            actual = labels.get(failed.name)
            shown = f'{failed.name}="{actual}"' if actual is not None else \
                f"no label {failed.name} (matches as \"\")"
            out.append(RouteVerdict(name, "no match", f"{failed} against {shown}"))
            continue
        stopped = not r.continue_
        if status != "firing" and r.resolved_template is None:
            out.append(RouteVerdict(name, "no resolved template",
                                    "this route sends nothing when the alert resolves"))
            continue
        muted = mute_reason(r, intervals, now)
        out.append(RouteVerdict(name, "muted" if muted else "matched", muted))
    return out
