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
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2 import TemplateSyntaxError, meta
from jinja2.environment import Template as JinjaTemplate
from pydantic import ValidationError

from bridge.config import Settings
from bridge.errors import RulesError
from bridge.rules.checks import (
    _BRANCHES,
    DuplicateKeyLoader,
    ack_code_problems,
    duplicate_problems,
    fields_at,
    own_words,
    union_words,
    unknown_field,
    unknown_name_warnings,
)
from bridge.rules.defaults import DEFAULT_MAX_MOBILES_FROM, DEFAULT_MAX_VAR_LEN
from bridge.rules.model import (
    _LOOKS_LIKE_NUMBER,
    Heartbeat,
    Limits,
    Route,
    RulesFile,
    Template,
    valid_mobile,
)
from bridge.rules.render import Renderer
from bridge.rules.ruleset import RouteId, RuleSet
from bridge.rules.schedules import Schedule, ScheduleSpec
from bridge.rules.timeintervals import NamedTimeInterval

#: The blocks merged by name across a folder (``time_intervals`` too, kept as a list).
_NAMED = ("people", "receivers", "schedules", "templates", "heartbeats")


class _Loader(DuplicateKeyLoader):
    """YAML 1.1 safe loader without base-60 numbers, so that ``start_time: 23:00`` written
    unquoted (as Alertmanager configs usually are) stays the string ``"23:00"``, and without
    timestamps, so that a date such as ``start: 2026-02-30`` reaches the rules' own checks as
    text (and is refused with its place) instead of failing inside the YAML parser. A key
    written twice in one mapping is noted (:class:`~bridge.rules.checks.DuplicateKeyLoader`)."""


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


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("routes", 2, "matchers", 0)`` -> ``routes[2].matchers[0]``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError, doc: Any = None) -> list[str]:
    """Every error of ``exc`` with its place, in the bridge's words
    (:func:`~bridge.rules.checks.own_words`); the errors of one value that fits none of a
    union's branches (``receiver: [5]``) become one (``doc`` gives the value as written)."""
    problems: list[str] = []
    unions: dict[tuple[int | str, ...], list[str]] = {}
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if p not in ("function-plain", "function-after",
                                                        "function-before", "[key]"))
        branch = next((i for i, p in enumerate(loc) if isinstance(p, str) and p in _BRANCHES),
                      None)
        if branch is not None:
            place = loc[:branch]
            if place not in unions:
                problems.append(format_loc(place))
            unions.setdefault(place, []).append(str(loc[branch]))
            continue
        if err["type"] == "extra_forbidden" and loc:
            problems.append(f"{format_loc(loc)}: "
                            f"{unknown_field(str(loc[-1]), fields_at(RulesFile, loc[:-1]))}")
            continue
        problems.append(f"{format_loc(loc)}: {own_words(err)}")
    for place, branches in unions.items():
        i = problems.index(format_loc(place))
        problems[i] += f": {union_words(branches, _at(doc, place))}"
    return problems


def _at(doc: Any, loc: tuple[int | str, ...]) -> Any:
    """The value at ``loc`` in the raw document (``None`` where there is none)."""
    for part in loc:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def rules_files(path: Path) -> list[Path]:
    """The files a rules path stands for: itself, or a folder's ``*.yaml``/``*.yml`` files in
    name order."""
    if path.is_dir():
        return sorted(p for p in path.iterdir()
                      if p.suffix in (".yaml", ".yml") and p.is_file()
                      and not p.name.startswith("."))  # editors' swap and backup files
    return [path]


def load_rules(path: str | Path, tz: str = Settings.tz,
               env: Mapping[str, str] | None = None) -> RuleSet:
    """Read, validate and compile the rules at ``path`` (a file or a folder of ``*.yaml``).

    ``env`` (default ``os.environ``) says which providers have credentials: a template that
    sends through Aliyun or Tencent Cloud without them is a problem unless ``JUHE_KEY`` is unset
    (dry-run) (docs/providers.md, Configuration).

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
            loader = _Loader(text.decode("utf-8"))
            try:
                doc: Any = loader.get_single_data()
            finally:
                loader.dispose()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{f}: cannot read: {exc}")
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
            problems.append(f"{prefix}{where}invalid YAML: {getattr(exc, 'problem', exc)}")
            continue
        problems.extend(prefix + p for p in duplicate_problems(loader.duplicates))
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
            problems.extend(prefix + p for p in _pydantic_problems(exc, doc))
            parts.append(_salvage(label, doc))
    merge_problems, rules = _build(parts, folder, tz, digest.hexdigest()[:12],
                                   os.environ if env is None else env)
    problems.extend(merge_problems)
    if problems or rules is None:
        raise RulesError(problems)
    return rules


@dataclass
class Part:
    """One file's share of the rules. ``route_index[i]`` is route i's index in its file; a file
    with structural problems is *salvaged*: its valid pieces are kept so that the reference
    checks can still run, and ``known`` holds the names its invalid pieces define (so that a
    route naming them is not also reported as naming an unknown receiver); ``refs`` are the
    people named by its invalid receivers and schedules, ``(place, name)``, so that an unknown
    person there is reported beside the structural problem (docs/rules.md, "Checks")."""

    label: str
    rules: RulesFile
    route_index: list[int]
    known: dict[str, set[str]] = field(default_factory=dict)
    raw_routes: int = 0
    refs: list[tuple[str, str]] = field(default_factory=list)


def _salvage(label: str, doc: dict[str, Any]) -> Part:
    """The valid pieces of a file whose whole failed validation (see :class:`Part`)."""
    good: dict[str, Any] = {}
    known: dict[str, set[str]] = {}
    refs: list[tuple[str, str]] = []
    for key in _NAMED:
        section = doc.get(key)
        if isinstance(section, dict):
            known[key] = {str(k) for k in section}
            good[key] = {k: v for k, v in section.items() if _valid({key: {k: v}})}
            good[key].update(_STAND_INS.get(key, _no_stand_ins)(section))
            refs.extend(_raw_refs(key, {k: v for k, v in section.items() if k not in good[key]}))
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
                len(routes) if isinstance(routes, list) else 0, refs)


def _no_stand_ins(section: dict[Any, Any]) -> dict[Any, Any]:
    return {}


def _names_in(value: Any) -> list[str]:
    """The names in one raw member or ``people`` entry (a name or a list of names)."""
    group = value if isinstance(value, list) else [value]
    return [w.strip() for w in group if isinstance(w, str) and w.strip()]


def _raw_refs(key: str, invalid: dict[Any, Any]) -> list[tuple[str, str]]:
    """``(place, name)`` of the people that invalid receivers or schedules name, read from
    the raw YAML (numbers left out: the model reports a bad one)."""
    out: list[tuple[str, str]] = []
    for name, spec in invalid.items():
        if key == "receivers" and isinstance(spec, list):
            out += [(f"receivers.{name}[{j}]", e.strip()) for j, e in enumerate(spec)
                    if isinstance(e, str) and e.strip() and not _LOOKS_LIKE_NUMBER.fullmatch(
                        e.strip())]
        if key != "schedules" or not isinstance(spec, dict):
            continue
        members = spec.get("members")
        for i, member in enumerate(members if isinstance(members, list) else []):
            who = _names_in(member)
            out += [(f"schedules.{name}.members[{i}]" + (f"[{j}]" if len(who) > 1 else ""), w)
                    for j, w in enumerate(who)]
        overrides = spec.get("overrides")
        for i, o in enumerate(overrides if isinstance(overrides, list) else []):
            if isinstance(o, dict):
                out += [(f"schedules.{name}.overrides[{i}].people[{j}]", w)
                        for j, w in enumerate(dict.fromkeys(_names_in(o.get("people"))))]
    return out


def _template_stand_ins(section: dict[Any, Any]) -> dict[Any, Any]:
    """Invalid templates whose ``vars`` are valid, with a stand-in ``tpl_id`` and no
    ``max_var_len``, so that their variables are still compiled and checked."""
    out: dict[Any, Any] = {}
    for name, spec in section.items():
        if isinstance(spec, dict) and not _valid({"templates": {name: spec}}):
            stand_in = {"tpl_id": 1, "vars": spec.get("vars")}
            if _valid({"templates": {name: stand_in}}):
                out[name] = stand_in
    return out


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


#: Per named block, what stands in for its invalid entries so that the rest of them is still
#: checked.
_STAND_INS = {"schedules": _schedule_stand_ins, "templates": _template_stand_ins}


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
        if "receiver" in bad and not stripped.get("mobiles_from"):
            # stands in for the bad receiver (already reported), so that the route is not
            # also reported as having none; a salvaged route never pages
            stripped["mobiles_from"] = "(invalid receiver)"
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
    heartbeats: dict[str, Heartbeat] = field(default_factory=dict)
    intervals: dict[str, NamedTimeInterval] = field(default_factory=dict)
    limits: Limits | None = None
    max_var_len: int | None = None
    max_mobiles_from: int | None = None
    routes: list[tuple[RouteId, Route]] = field(default_factory=list)
    origin: dict[tuple[str, str], str] = field(default_factory=dict)
    known: dict[str, set[str]] = field(default_factory=dict)
    raw_routes: bool = False
    #: (file, place, name) of people named by invalid receivers and schedules (Part.refs)
    refs: list[tuple[str, str, str]] = field(default_factory=list)

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
        m.refs.extend((label, place, who) for place, who in p.refs)
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
            where = f"{m.pre('templates', name)}templates.{name}.vars.{var}"
            try:
                out.templates[name][var] = renderer.compile(source)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
            problems.extend(f"{where}: {p}" for p in ack_code_problems(renderer.env, source))
        out.uses[name] = frozenset().union(*(_names_read(renderer, s) for s in tpl.vars.values()))
    for name, spec in m.schedules.items():
        out.schedules[name] = spec.compile(name, tz)
        problems.extend(f"{m.pre('schedules', name)}schedules.{name}.{p}"
                        for p in spec.instant_problems(out.schedules[name]))
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


def _check_notify(m: _Merged) -> list[str]:
    """Schedules' ``notify.template`` that is not a template (docs/oncall.md, Shift
    notices)."""
    templates = m.names("templates", m.templates)
    return [f"{m.pre('schedules', name)}schedules.{name}.notify.template: unknown template "
            f"{spec.notify.template!r}" for name, spec in m.schedules.items()
            if spec.notify is not None and spec.notify.template not in templates]


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
        if name in receivers:
            other = m.origin.get(("receivers", name))
            problems.append(f"{where}: {name!r} is also a receiver"
                            + (f" (in {other})" if m.folder and other else "")
                            + ": schedules and receivers share one namespace")
    for label, place, who in m.refs:
        if who not in people:
            problems.append(f"{label + ': ' if m.folder else ''}{place}: unknown person {who!r}"
                            + (" (not in people:, not a mobile number)"
                               if place.startswith("receivers.") else " (not in people:)"))
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


def _check_escalation(where: str, route: Route | Heartbeat, pageable: set[str],
                      templates: set[str]) -> list[str]:
    """The references of a route's (or heartbeat's) ``escalate`` steps: receiver or schedule,
    template."""
    problems: list[str] = []
    for j, step in enumerate(route.escalate):
        if step.receiver not in pageable:
            problems.append(f"{where}.escalate[{j}].receiver: unknown receiver or schedule "
                            f"{step.receiver!r}")
        if step.template is not None and step.template not in templates:
            problems.append(f"{where}.escalate[{j}].template: unknown template "
                            f"{step.template!r}")
    return problems


def _check_heartbeat(m: _Merged, name: str, hb: Heartbeat) -> list[str]:
    """One heartbeat's references (docs/heartbeats.md): it needs a receiver (receivers or
    schedules) and a template; every name it gives must exist."""
    where = f"{m.pre('heartbeats', name)}heartbeats.{name}"
    pageable = m.names("receivers", m.receivers) | m.names("schedules", m.schedules)
    templates = m.names("templates", m.templates)
    problems: list[str] = []
    if not hb.receivers:
        problems.append(f"{where}.receiver: a heartbeat needs a receiver (a receiver or "
                        "schedule, or a list of them) to page when it goes missing")
    problems += [f"{where}.receiver: unknown receiver or schedule {r!r}"
                 for r in hb.receivers if r not in pageable]
    if hb.template is None:
        problems.append(f"{where}.template: a heartbeat needs a template for its page")
    for key in ("template", "resolved_template"):
        t = getattr(hb, key)
        if t is not None and t not in templates:
            problems.append(f"{where}.{key}: unknown template {t!r}")
    return problems + _check_escalation(where, hb, pageable, templates)


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
    problems.extend(_check_notify(m))
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
    for name, hb in m.heartbeats.items():
        problems.extend(_check_heartbeat(m, name, hb))
    return problems


#: The environment variables each provider needs (docs/providers.md, Configuration).
CREDENTIALS = {"aliyun": ("ALIYUN_ACCESS_KEY_ID", "ALIYUN_ACCESS_KEY_SECRET"),
               "tencent": ("TENCENTCLOUD_SECRET_ID", "TENCENTCLOUD_SECRET_KEY")}
#: Text in a voice variable's source, or a name it reads, that makes its value a link
#: (carriers refuse links in calls).
_URL_TEXT = re.compile(r"https?://|www\.|\.(?:com|cn|net|org|io)\b", re.IGNORECASE)
_URL_NAMES = frozenset({"generator_url", "external_url", "silence_url"})


def _check_providers(m: _Merged, uses: dict[str, frozenset[str]],
                     env: Mapping[str, str]) -> list[str]:
    """Templates that send through Aliyun or Tencent Cloud: credentials in ``env`` (unless
    dry-run), no link in a voice template's variables, no call as a resolved or storm
    template (docs/providers.md)."""
    problems: list[str] = []
    dry_run = not env.get("JUHE_KEY")
    for name, tpl in m.templates.items():
        where = f"{m.pre('templates', name)}templates.{name}"
        for key, spec in (("fallback", tpl.fallback), ("voice", tpl.voice)):
            if spec is None:
                continue
            missing = [v for v in CREDENTIALS[spec.provider] if not env.get(v)]
            if missing and not dry_run:
                problems.append(f"{where}.{key}.{spec.provider}: no {spec.provider} credentials "
                                f"in the environment: set {' and '.join(missing)}")
        if tpl.voice is None:
            continue
        for var, source in tpl.vars.items():
            read = _URL_NAMES & _names_read_source(source, uses.get(name, frozenset()))
            if _URL_TEXT.search(source) or read:
                problems.append(f"{where}.vars.{var}: a call cannot read out a link "
                                f"({', '.join(sorted(read)) or 'URL text'}): carriers refuse "
                                "links in calls")
    problems += _check_call_uses(m)
    return problems


def _names_read_source(source: str, uses: frozenset[str]) -> set[str]:
    """The URL-valued names a variable's source mentions (a cheap textual test, narrowed by
    what the template as a whole reads)."""
    return {n for n in _URL_NAMES if n in uses and n in source}


def _check_call_uses(m: _Merged) -> list[str]:
    """A voice template is refused as a route's ``resolved_template`` (no resolved call) and
    as the storm template (calls are never folded)."""
    problems: list[str] = []
    calls = {n for n, t in m.templates.items() if t.voice is not None}
    for rid, route in m.routes:
        if route.resolved_template in calls:
            problems.append(f"{rid}.resolved_template: {route.resolved_template!r} is a voice "
                            "template: a resolved alert gets no call")
    storm = (m.limits or Limits()).storm
    if storm is not None and storm.template in calls:
        problems.append(f"{m.pre('limits')}limits.storm.template: {storm.template!r} is a voice"
                        " template: calls are never folded into a storm SMS")
    return problems


def _build(parts: list[Part], folder: bool, tz: str, version: str,
           env: Mapping[str, str]) -> tuple[list[str], RuleSet | None]:
    """Merge, compile and check the parts; returns the problems, and the rules when there
    are none."""
    merged, problems = _merge(parts, folder)
    renderer = Renderer(tz)
    compiled, compile_problems = _compile(merged, renderer, tz)
    problems += (compile_problems + _check_references(merged)
                 + _check_providers(merged, compiled.uses, env))
    if problems:
        return problems, None
    ids = [rid for rid, _ in merged.routes]
    routes = [r for _, r in merged.routes]
    storm = merged.limits.storm.template if merged.limits and merged.limits.storm else None
    routed = {t for r in routes for t in (r.template, r.resolved_template,
                                          *(s.template for s in r.escalate)) if t}
    beating = {t for hb in merged.heartbeats.values()
               for t in (hb.template, hb.resolved_template, *(s.template for s in hb.escalate))
               if t}
    noticed = frozenset(s.notify.template for s in merged.schedules.values() if s.notify)
    warnings = [merged.pre("templates", name) + w for name, tpl in merged.templates.items()
                for w in unknown_name_warnings(renderer.env, {name: tpl.vars}, storm, routed,
                                               beating, noticed)]
    return [], RuleSet(
        receivers=compiled.receivers, templates=merged.templates,
        time_intervals=merged.intervals, limits=merged.limits or Limits(),
        max_var_len=merged.max_var_len or DEFAULT_MAX_VAR_LEN, routes=routes,
        route_names=[r.name or str(rid) for rid, r in merged.routes],
        compiled=compiled.templates, renderer=renderer, files=[p.label for p in parts],
        version=version, people=dict(merged.people), schedules=compiled.schedules,
        route_ids=ids, uses=compiled.uses,
        max_mobiles_from=merged.max_mobiles_from or DEFAULT_MAX_MOBILES_FROM,
        heartbeats=dict(merged.heartbeats),
        template_warnings=warnings,
    )
