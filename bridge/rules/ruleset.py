"""The rules in force: :class:`RuleSet`, the merged and checked rules file(s) that
:func:`bridge.rules.load.load_rules` builds, ready to route and render; :class:`RouteId`, where
a route is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from jinja2.environment import Template as JinjaTemplate

from bridge.privacy import mask_mobile
from bridge.rules.checks import step_gap_warning
from bridge.rules.defaults import DEFAULT_MAX_MOBILES_FROM
from bridge.rules.model import VOICE_PREFIX, Heartbeat, Limits, Route, Template
from bridge.rules.render import Renderer
from bridge.rules.schedules import Schedule, oncall_at
from bridge.rules.timeintervals import NamedTimeInterval


@dataclass(frozen=True)
class RouteId:
    """Where a route is written: its file (``""`` for a single file) and its index in that
    file's ``routes``. ``str()`` gives the place that problems, ``bridge check`` and the log
    name an unnamed route by: ``routes[2]``, or ``team-db.yaml: routes[0]`` in a folder."""

    file: str
    index: int

    def __str__(self) -> str:
        return f"{self.file}: routes[{self.index}]" if self.file else f"routes[{self.index}]"


@dataclass
class RuleSet:
    """The merged, checked rules, ready to route and render.

    ``receivers[name]`` are the receiver's mobiles (people resolved); ``people[name]`` a
    person's mobile; ``schedules[name]`` a compiled :class:`~bridge.rules.schedules.Schedule`.
    ``route_ids[i]`` is where route i is written and ``route_names[i]`` its ``name`` or, when
    unnamed, ``str(route_ids[i])``; ``compiled[template][var]`` is the compiled Jinja2
    template of one variable and ``uses[template]`` the names its variables read (e.g.
    ``person``); ``version`` is a short hash of the sources; ``heartbeats[name]`` is a
    heartbeat (docs/heartbeats.md).
    """

    receivers: dict[str, list[str]]
    templates: dict[str, Template]
    time_intervals: dict[str, NamedTimeInterval]
    limits: Limits
    max_var_len: int
    routes: list[Route]
    route_names: list[str]
    compiled: dict[str, dict[str, JinjaTemplate]]
    renderer: Renderer
    files: list[str] = field(default_factory=list)
    version: str = ""
    people: dict[str, str] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    route_ids: list[RouteId] = field(default_factory=list)
    uses: dict[str, frozenset[str]] = field(default_factory=dict)
    max_mobiles_from: int = DEFAULT_MAX_MOBILES_FROM
    #: names templates read that no alert (or storm) provides, with places (``bridge check``)
    template_warnings: list[str] = field(default_factory=list)
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._person_by_mobile: dict[str, str] = {}
        for name, mobile in self.people.items():
            self._person_by_mobile.setdefault(mobile, name)

    def mobiles_from_limit(self, route: Route) -> int:
        """How many numbers ``route`` takes from ``mobiles_from`` per alert: its own
        ``max_mobiles_from``, else the file's, else 10 (docs/rules.md, Routing)."""
        return route.max_mobiles_from or self.max_mobiles_from

    def var_len(self, template: str) -> int:
        """The ``max_var_len`` in force for one template (characters)."""
        own = self.templates[template].max_var_len
        return own if own is not None else self.max_var_len

    def person_of(self, mobile: str) -> str | None:
        """The name of the person whose number ``mobile`` is (the first listed in ``people:``
        when several share it), or ``None``."""
        return self._person_by_mobile.get(mobile)

    def who(self, mobile: str) -> str:
        """A mobile as logs show it: ``zhang 138****8000``, or ``138****8000`` for a number
        that belongs to nobody in ``people:``; a call's address (``voice:<number>``) as
        ``zhang 138****8000 (call)``."""
        if mobile.startswith(VOICE_PREFIX):
            return f"{self.who(mobile[len(VOICE_PREFIX):])} (call)"
        person = self.person_of(mobile)
        return f"{person} {mask_mobile(mobile)}" if person else mask_mobile(mobile)

    def mobiles_for(self, name: str, at: datetime) -> list[str]:
        """The mobiles a receiver or schedule ``name`` pages at the aware time ``at``: the
        receiver's numbers, or those of the people on call
        (:func:`bridge.rules.schedules.oncall_at`).
        Raises ``KeyError`` for a name that is neither (the loader refuses such routes)."""
        if name in self.receivers:
            return self.receivers[name]
        shift = oncall_at(self.schedules[name], at)
        return [self.people[p] for p in shift.people]

    def route_index(self, name: str) -> int | None:
        """The index of the route named (or placed) ``name``, or ``None``."""
        try:
            return self.route_names.index(name)
        except ValueError:
            return None

    def uses_ack_code(self, template: str | None) -> bool:
        """True when ``template`` exists and one of its variables reads ``ack_code``."""
        return template is not None and "ack_code" in self.uses.get(template, ())

    def warnings(self) -> list[str]:
        """What is legal but probably a mistake, with places: a route that escalates while
        none of its templates uses ``ack_code`` (nobody could acknowledge from the SMS), a
        step whose ``after`` is shorter than ``min_gap`` (docs/oncall.md, "Escalation"), a
        name a template reads that nothing provides (docs/rules.md, "Checks")."""
        out = []
        for i, r in enumerate(self.routes):
            if not r.escalate:
                continue
            where = self.route_ids[i] if i < len(self.route_ids) else self.route_names[i]
            names = [r.template, r.resolved_template, *(s.template for s in r.escalate)]
            if not any(self.uses_ack_code(t) for t in names):
                out.append(f"{where}.escalate: the route escalates but none of its templates "
                           "uses ack_code: nobody can acknowledge from the SMS")
            gaps = (step_gap_warning(str(where), j, s.after, self.limits.min_gap)
                    for j, s in enumerate(r.escalate))
            out.extend(w for w in gaps if w is not None)
        return out + self.template_warnings

    def summary(self) -> str:
        """One line for logs and ``bridge check``."""
        mobiles = {m for ms in self.receivers.values() for m in ms}  # of receivers only
        oncall = (f", {len(self.schedules)} schedules, {len(self.people)} people"
                  if self.schedules or self.people else "")
        beats = f", {len(self.heartbeats)} heartbeats" if self.heartbeats else ""
        return (f"{len(self.routes)} routes, {len(self.receivers)} receivers "
                f"({len(mobiles)} mobiles){oncall}{beats}, {len(self.templates)} templates, "
                f"{len(self.time_intervals)} time intervals from {', '.join(self.files)}"
                f" (version {self.version})")
