"""Loading the rules: one YAML file, or a folder of them read in name order as one.

Every problem is collected and reported at once, each with its place in the file
(``routes[2].matchers[0]: ...``) and, for a folder, its file (``team-db.yaml: routes[0]...``).

The stages, each its own function: every file is read and validated on its own
(:class:`~bridge.rules.model.RulesFile`; a file with problems is salvaged so that the later
checks still run on its valid pieces), :func:`_merge` joins the files by name, :func:`_compile`
compiles templates and schedules and resolves people to mobiles, :func:`_check_references`
checks what refers to what; :func:`_build` runs the last three and makes the :class:`RuleSet`.
A route is named by where it is written (:class:`RouteId`) wherever it has no ``name``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, meta
from jinja2.environment import Template as JinjaTemplate
from pydantic import ValidationError

from bridge.errors import RulesError
from bridge.privacy import mask_mobile
from bridge.rules.model import Limits, Route, RulesFile, Template, valid_mobile
from bridge.rules.render import Renderer
from bridge.rules.schedules import Schedule, ScheduleSpec, oncall_at
from bridge.rules.timeintervals import NamedTimeInterval

DEFAULT_MAX_VAR_LEN = 20
#: Numbers one alert's ``mobiles_from`` may page per route unless the rules say otherwise.
DEFAULT_MAX_MOBILES_FROM = 10
#: The blocks merged by name across a folder (``time_intervals`` too, kept as a list).
_NAMED = ("people", "receivers", "schedules", "templates")


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader without base-60 numbers, so that ``start_time: 23:00`` written
    unquoted (as Alertmanager configs usually are) stays the string ``"23:00"``, and without
    timestamps, so that a date such as ``start: 2026-02-30`` reaches the rules' own checks as
    text (and is refused with its place) instead of failing inside the YAML parser."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float",
                       "tag:yaml.org,2002:timestamp")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


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
    ``person``); ``version`` is a short hash of the sources.
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

    def __post_init__(self) -> None:
        self._person_by_mobile: dict[str, str] = {}
        for name, mobile in self.people.items():
            self._person_by_mobile.setdefault(mobile, name)

    def mobiles_from_limit(self, route: Route) -> int:
        """How many numbers ``route`` takes from ``mobiles_from`` per alert: its own
        ``max_mobiles_from``, else the file's, else 10 (SPEC "Rules file")."""
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
        that belongs to nobody in ``people:``."""
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
        none of its templates uses ``ack_code`` (nobody could acknowledge from the SMS)."""
        out = []
        for i, r in enumerate(self.routes):
            if not r.escalate:
                continue
            names = [r.template, r.resolved_template, *(s.template for s in r.escalate)]
            if not any(self.uses_ack_code(t) for t in names):
                where = self.route_ids[i] if i < len(self.route_ids) else self.route_names[i]
                out.append(f"{where}.escalate: the route escalates but none of its templates "
                           "uses ack_code: nobody can acknowledge from the SMS")
        return out

    def summary(self) -> str:
        """One line for logs and ``bridge check``."""
        mobiles = {m for ms in self.receivers.values() for m in ms} | set(self.people.values())
        oncall = (f", {len(self.schedules)} schedules, {len(self.people)} people"
                  if self.schedules or self.people else "")
        return (f"{len(self.routes)} routes, {len(self.receivers)} receivers "
                f"({len(mobiles)} mobiles){oncall}, {len(self.templates)} templates, "
                f"{len(self.time_intervals)} time intervals from {', '.join(self.files)}"
                f" (version {self.version})")


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("routes", 2, "matchers", 0)`` -> ``routes[2].matchers[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-plain", "function-after",
                                                        "function-before", "[key]"))
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        problems.append(f"{format_loc(loc)}: {msg}")
    return problems


def rules_files(path: Path) -> list[Path]:
    """The files a rules path stands for: itself, or a folder's ``*.yaml``/``*.yml`` files in
    name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.suffix in (".yaml", ".yml") and p.is_file()
                      and not p.name.startswith("."))  # editors' swap and backup files
    return [path]


def load_rules(path: str | Path, tz: str = "Asia/Shanghai") -> RuleSet:
    """Read, validate and compile the rules at ``path`` (a file or a folder of ``*.yaml``).

    Raises :class:`RulesError` listing every problem, each prefixed by its file when ``path``
    is a folder.
    """
    root = Path(path)
    if not root.exists():
        raise RulesError([f"{root}: no such file or folder (set BRIDGE_RULES)"])
    folder = root.is_dir()
    files = rules_files(root)
    if folder and not files:
        raise RulesError([f"{root}: no *.yaml or *.yml files in this folder"])
    problems: list[str] = []
    parts: list[Part] = []
    digest = hashlib.sha256()
    for f in files:
        label = f.name
        prefix = f"{f.name}: " if folder else ""
        try:
            text = f.read_bytes()
            digest.update(f.name.encode() + b"\0" + text)
            doc: Any = yaml.load(text.decode("utf-8"), Loader=_Loader)  # noqa: S506
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{f}: cannot read: {exc}")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problems.append(f"{prefix}{where}invalid YAML: {getattr(exc, 'problem', exc)}")
            continue
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            problems.append(f"{prefix}(top level): must be a mapping of receivers, templates, "
                            "routes, ...")
            continue
        try:
            rf = RulesFile.model_validate(doc)
            parts.append(Part(label, rf, list(range(len(rf.routes)))))
        except ValidationError as exc:
            problems.extend(prefix + p for p in _pydantic_problems(exc))
            parts.append(_salvage(label, doc))
    merge_problems, rules = _build(parts, folder, tz, digest.hexdigest()[:12])
    problems.extend(merge_problems)
    if problems or rules is None:
        raise RulesError(problems)
    return rules


@dataclass
class Part:
    """One file's share of the rules. ``route_index[i]`` is route i's index in its file; a file
    with structural problems is *salvaged*: its valid pieces are kept so that the reference
    checks can still run, and ``known`` holds the names its invalid pieces define (so that a
    route naming them is not also reported as naming an unknown receiver)."""

    label: str
    rules: RulesFile
    route_index: list[int]
    known: dict[str, set[str]] = field(default_factory=dict)
    raw_routes: int = 0


def _salvage(label: str, doc: dict[str, Any]) -> Part:
    """The valid pieces of a file whose whole failed validation (see :class:`Part`)."""
    good: dict[str, Any] = {}
    known: dict[str, set[str]] = {}
    for key in _NAMED:
        section = doc.get(key)
        if isinstance(section, dict):
            known[key] = {str(k) for k in section}
            good[key] = {k: v for k, v in section.items() if _valid({key: {k: v}})}
            if key == "schedules":
                good[key].update((k, v) for k, v in _schedule_stand_ins(section).items())
    intervals = doc.get("time_intervals")
    if isinstance(intervals, list):
        known["time_intervals"] = {str(t.get("name")) for t in intervals if isinstance(t, dict)}
        good["time_intervals"] = [t for t in intervals if _valid({"time_intervals": [t]})]
    for key in ("limits", "max_var_len", "max_mobiles_from"):
        if key in doc and _valid({key: doc[key]}):
            good[key] = doc[key]
    routes = doc.get("routes")
    index: list[int] = []
    if isinstance(routes, list):
        good["routes"] = []
        for i, r in enumerate(routes):
            kept = r if _valid({"routes": [r]}) else _without_bad_fields(r)
            if kept is not None:
                good["routes"].append(kept)
                index.append(i)
    return Part(label, RulesFile.model_validate(good), index, known,
                len(routes) if isinstance(routes, list) else 0)


#: Neutral values standing in for a schedule's bad settings, so that its people are still
#: checked against ``people:`` in the same run.
_SCHEDULE_STAND_INS = {"shift": "1d", "start": "2000-01-01", "handover": "09:00",
                       "time_zone": "UTC"}


def _schedule_stand_ins(section: dict[str, Any]) -> dict[str, Any]:
    """Invalid schedules whose only bad fields are settings, with those replaced by neutral
    values (a schedule with bad ``members`` or ``overrides`` is left out)."""
    out: dict[str, Any] = {}
    for name, spec in section.items():
        if not isinstance(spec, dict) or _valid({"schedules": {name: spec}}):
            continue
        try:
            ScheduleSpec.model_validate(spec)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) if e["loc"] else "" for e in exc.errors()}
            if bad <= set(_SCHEDULE_STAND_INS):
                fixed = {**spec, **{k: _SCHEDULE_STAND_INS[k] for k in bad}}
                if _valid({"schedules": {name: fixed}}):
                    out[name] = fixed
    return out


def _without_bad_fields(route: Any) -> dict[str, Any] | None:
    """An invalid route without its invalid fields, so that its other fields can still be
    checked against the rest (``None`` when that leaves nothing checkable)."""
    if not isinstance(route, dict):
        return None
    try:
        RulesFile.model_validate({"routes": [route]})
    except ValidationError as exc:
        bad = {e["loc"][2] for e in exc.errors() if len(e["loc"]) > 2}
        if not bad or "template" in bad:
            return None
        stripped = {k: v for k, v in route.items() if k not in bad}
        return stripped if _valid({"routes": [stripped]}) else None
    return route


def _valid(doc: dict[str, Any]) -> bool:
    try:
        RulesFile.model_validate(doc)
    except ValidationError:
        return False
    return True


@dataclass
class _Merged:
    """The files' parts merged by name, before compiling and checking references.

    ``origin[(kind, name)]`` is the file that defined it; ``known[kind]`` names defined by
    invalid pieces of salvaged files (see :class:`Part`); ``routes`` in file order."""

    folder: bool
    people: dict[str, str] = field(default_factory=dict)
    receivers: dict[str, list[str]] = field(default_factory=dict)
    schedules: dict[str, ScheduleSpec] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    intervals: dict[str, NamedTimeInterval] = field(default_factory=dict)
    limits: Limits | None = None
    max_var_len: int | None = None
    max_mobiles_from: int | None = None
    routes: list[tuple[RouteId, Route]] = field(default_factory=list)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    known: dict[str, set[str]] = field(default_factory=dict)
    raw_routes: bool = False

    def pre(self, kind: str, name: str = "") -> str:
        """``"team-db.yaml: "`` for what that file defined, ``""`` for a single file."""
        return f"{self.origin[(kind, name)]}: " if self.folder else ""

    def names(self, kind: str, defined: Any) -> set[str]:
        """The names of ``kind`` defined, valid or not (for reference checks)."""
        return set(defined) | self.known.get(kind, set())


def _claim(m: _Merged, problems: list[str], kind: str, name: str, label: str) -> bool:
    """Record that ``label`` defines ``kind.name``; False (a problem naming both files) when
    an earlier file did."""
    first = m.origin.get((kind, name))
    if first is not None:
        problems.append(f"{label}: {kind}.{name}: already defined in {first}"
                        if m.folder else f"{kind}.{name}: defined twice")
        return False
    m.origin[(kind, name)] = label
    return True


def _single(m: _Merged, problems: list[str], key: str, value: Any, label: str) -> Any:
    """The value of a block that one file at most may set (``limits``, ``max_var_len``)."""
    if value is None:
        return getattr(m, key)
    if getattr(m, key) is not None:
        problems.append(f"{label}: {key}: already set in {m.origin[(key, '')]}"
                        + (" (limits may come from one file only)" if key == "limits" else ""))
        return getattr(m, key)
    m.origin[(key, "")] = label
    return value


def _merge(parts: list[Part], folder: bool) -> tuple[_Merged, list[str]]:
    """Merge the files' parts: named blocks by name (the same name twice is a problem naming
    both files), routes concatenated, ``limits``/``max_var_len`` from one file at most."""
    m = _Merged(folder, known={kind: {n for p in parts for n in p.known.get(kind, ())}
                               for kind in (*_NAMED, "time_intervals")})
    problems: list[str] = []
    for p in parts:
        label, part = p.label, p.rules
        for kind in _NAMED:
            target = getattr(m, kind)
            for name, value in getattr(part, kind).items():
                if _claim(m, problems, kind, name, label):
                    target[name] = list(dict.fromkeys(value)) if kind == "receivers" else value
        for i, ti in enumerate(part.time_intervals):
            if _claim(m, problems, "time_intervals", ti.name, label):
                m.intervals[ti.name] = ti
            elif not folder:
                problems[-1] = f"time_intervals[{i}].name: {ti.name!r} defined twice"
        m.limits = _single(m, problems, "limits", part.limits, label)
        m.max_var_len = _single(m, problems, "max_var_len", part.max_var_len, label)
        m.max_mobiles_from = _single(m, problems, "max_mobiles_from", part.max_mobiles_from,
                                     label)
        file = label if folder else ""
        m.routes.extend((RouteId(file, p.route_index[i]), r) for i, r in enumerate(part.routes))
        m.raw_routes = m.raw_routes or bool(p.raw_routes)
    return m, problems


@dataclass
class _Compiled:
    """What compiling produced: Jinja2 templates per variable, the names each template's
    variables read, schedules with their zones, receivers as mobiles."""

    templates: dict[str, dict[str, JinjaTemplate]]
    uses: dict[str, frozenset[str]]
    schedules: dict[str, Schedule]
    receivers: dict[str, list[str]]


def _compile(m: _Merged, renderer: Renderer, tz: str) -> tuple[_Compiled, list[str]]:
    """Compile the templates (syntax problems with their place) and schedules, and resolve
    receivers' people to mobiles (an unknown person is left for :func:`_check_references`)."""
    problems: list[str] = []
    out = _Compiled({}, {}, {}, {})
    for name, tpl in m.templates.items():
        out.templates[name] = {}
        for var, source in tpl.vars.items():
            try:
                out.templates[name][var] = renderer.compile(source)
            except ValueError as exc:
                problems.append(f"{m.pre('templates', name)}templates.{name}.vars.{var}: {exc}")
        out.uses[name] = frozenset().union(*(_names_read(renderer, s) for s in tpl.vars.values()))
    for name, spec in m.schedules.items():
        out.schedules[name] = spec.compile(name, tz)
    for name, entries in m.receivers.items():
        mobiles = [e if valid_mobile(e) else m.people.get(e, "") for e in entries]
        out.receivers[name] = list(dict.fromkeys(x for x in mobiles if x))
    return out, problems


def _names_read(renderer: Renderer, source: str) -> set[str]:
    """The context names a variable's source reads (``person``, ``labels``, ...)."""
    try:
        return meta.find_undeclared_variables(renderer.env.parse(source))
    except TemplateSyntaxError:
        return set()  # reported by compiling


def _check_people(m: _Merged) -> list[str]:
    """Receivers' and schedules' names that are not people; schedules named like receivers."""
    problems: list[str] = []
    people = m.names("people", m.people)
    for name, entries in m.receivers.items():
        for j, entry in enumerate(entries):
            if not valid_mobile(entry) and entry not in people:
                problems.append(f"{m.pre('receivers', name)}receivers.{name}[{j}]: unknown "
                                f"person {entry!r} (not in people:, not a mobile number)")
    receivers = m.names("receivers", m.receivers)
    for name, spec in m.schedules.items():
        where = f"{m.pre('schedules', name)}schedules.{name}"
        for place, who in spec.people():
            if who not in people:
                problems.append(f"{where}.{place}: unknown person {who!r} (not in people:)")
        if spec.notify is not None and spec.notify.template not in m.names("templates",
                                                                           m.templates):
            problems.append(f"{where}.notify.template: unknown template "
                            f"{spec.notify.template!r}")
        if name in receivers:
            other = m.origin.get(("receivers", name))
            problems.append(f"{where}: {name!r} is also a receiver"
                            + (f" (in {other})" if m.folder and other else "")
                            + ": schedules and receivers share one namespace")
    return problems


def _check_route(m: _Merged, rid: RouteId, route: Route) -> list[str]:
    """One route's references: receivers or schedules, templates, escalation steps, time
    intervals."""
    where = str(rid)
    pageable = m.names("receivers", m.receivers) | m.names("schedules", m.schedules)
    templates = m.names("templates", m.templates)
    problems: list[str] = []
    if not route.receivers and route.mobiles_from is None:
        problems.append(f"{where}.receiver: a route needs a receiver or mobiles_from")
    problems += [f"{where}.receiver: unknown receiver {r!r}"
                 for r in route.receivers if r not in pageable]
    for key in ("template", "resolved_template"):
        t = getattr(route, key)
        if t is not None and t not in templates:
            problems.append(f"{where}.{key}: unknown template {t!r}")
    problems += _check_escalation(where, route, pageable, templates)
    intervals = m.names("time_intervals", m.intervals)
    for key in ("mute_time_intervals", "active_time_intervals"):
        for j, ti_name in enumerate(getattr(route, key)):
            if ti_name not in intervals:
                problems.append(f"{where}.{key}[{j}]: unknown time interval {ti_name!r}")
    return problems


def _check_escalation(where: str, route: Route, pageable: set[str],
                      templates: set[str]) -> list[str]:
    """The references of a route's ``escalate`` steps: receiver or schedule, template."""
    problems: list[str] = []
    for j, step in enumerate(route.escalate):
        if step.receiver not in pageable:
            problems.append(f"{where}.escalate[{j}].receiver: unknown receiver or schedule "
                            f"{step.receiver!r}")
        if step.template is not None and step.template not in templates:
            problems.append(f"{where}.escalate[{j}].template: unknown template "
                            f"{step.template!r}")
    return problems


def _check_references(m: _Merged) -> list[str]:
    """What refers to what, once merged: the storm template, people, and every route
    (also: at least one route, no two routes of one name)."""
    problems: list[str] = []
    limits = m.limits or Limits()
    if limits.storm is not None and limits.storm.template not in m.names("templates",
                                                                         m.templates):
        problems.append(f"{m.pre('limits')}limits.storm.template: unknown template "
                        f"{limits.storm.template!r}")
    problems.extend(_check_people(m))
    if not m.routes and not m.raw_routes:
        problems.append("routes: no routes: no alert would ever page anyone")
    names: dict[str, str] = {}
    for rid, route in m.routes:
        if route.name is not None:
            if route.name in names:
                problems.append(f"{rid}.name: {route.name!r} is also the name of "
                                f"{names[route.name]}")
            names.setdefault(route.name, str(rid))
        problems.extend(_check_route(m, rid, route))
    return problems


def _build(parts: list[Part], folder: bool, tz: str,
           version: str) -> tuple[list[str], RuleSet | None]:
    """Merge, compile and check the parts; returns the problems, and the rules when there
    are none."""
    merged, problems = _merge(parts, folder)
    renderer = Renderer(tz)
    compiled, compile_problems = _compile(merged, renderer, tz)
    problems += compile_problems + _check_references(merged)
    if problems:
        return problems, None
    ids = [rid for rid, _ in merged.routes]
    routes = [r for _, r in merged.routes]
    return [], RuleSet(
        receivers=compiled.receivers, templates=merged.templates,
        time_intervals=merged.intervals, limits=merged.limits or Limits(),
        max_var_len=merged.max_var_len or DEFAULT_MAX_VAR_LEN, routes=routes,
        route_names=[r.name or str(rid) for rid, r in merged.routes],
        compiled=compiled.templates, renderer=renderer, files=[p.label for p in parts],
        version=version, people=dict(merged.people), schedules=compiled.schedules,
        route_ids=ids, uses=compiled.uses,
        max_mobiles_from=merged.max_mobiles_from or DEFAULT_MAX_MOBILES_FROM,
    )
