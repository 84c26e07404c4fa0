"""Loading the rules: one YAML file, or a folder of them read in name order as one.

Every problem is collected and reported at once, each with its place in the file
(``routes[2].matchers[0]: ...``) and, for a folder, its file (``team-db.yaml: routes[0]...``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jinja2.environment import Template as JinjaTemplate
from pydantic import ValidationError

from bridge.errors import RulesError
from bridge.render import Renderer
from bridge.rules.model import Limits, Route, RulesFile, Template
from bridge.timeintervals import NamedTimeInterval

DEFAULT_MAX_VAR_LEN = 20


class _Loader(yaml.SafeLoader):
    """YAML 1.1 safe loader without base-60 numbers, so that ``start_time: 23:00`` written
    unquoted (as Alertmanager configs usually are) stays the string ``"23:00"``."""


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v
        if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
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


@dataclass
class RuleSet:
    """The merged, checked rules, ready to route and render.

    ``route_names[i]`` is route i's ``name`` or ``routes[i]``; ``compiled[template][var]`` is
    the compiled Jinja2 template of one variable; ``version`` is a short hash of the sources.
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

    def var_len(self, template: str) -> int:
        """The ``max_var_len`` in force for one template (characters)."""
        own = self.templates[template].max_var_len
        return own if own is not None else self.max_var_len

    def summary(self) -> str:
        """One line for logs and ``bridge check``."""
        mobiles = {m for ms in self.receivers.values() for m in ms}
        return (f"{len(self.routes)} routes, {len(self.receivers)} receivers "
                f"({len(mobiles)} mobiles), {len(self.templates)} templates, "
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
    merge_problems, rules = _merge(parts, folder, tz, digest.hexdigest()[:12])
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
    for key in ("receivers", "templates"):
        section = doc.get(key)
        if isinstance(section, dict):
            known[key] = {str(k) for k in section}
            good[key] = {k: v for k, v in section.items() if _valid({key: {k: v}})}
    intervals = doc.get("time_intervals")
    if isinstance(intervals, list):
        known["time_intervals"] = {str(t.get("name")) for t in intervals if isinstance(t, dict)}
        good["time_intervals"] = [t for t in intervals if _valid({"time_intervals": [t]})]
    for key in ("limits", "max_var_len"):
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


def _merge(parts: list[Part], folder: bool, tz: str,
           version: str) -> tuple[list[str], RuleSet | None]:
    """Merge the files' parts and check what refers to what; returns the problems, and the
    rules when there are none."""
    problems: list[str] = []
    receivers: dict[str, list[str]] = {}
    templates: dict[str, Template] = {}
    intervals: dict[str, NamedTimeInterval] = {}
    origin: dict[tuple[str, str], str] = {}
    limits: Limits | None = None
    max_var_len: int | None = None
    routes: list[tuple[str, int, Route]] = []

    def pre(label: str) -> str:
        return f"{label}: " if folder else ""

    def claim(kind: str, name: str, label: str) -> bool:
        first = origin.get((kind, name))
        if first is not None:
            problems.append(f"{label}: {kind}.{name}: already defined in {first}"
                            if folder else f"{kind}.{name}: defined twice")
            return False
        origin[(kind, name)] = label
        return True

    known = {kind: {n for p in parts for n in p.known.get(kind, ())}
             for kind in ("receivers", "templates", "time_intervals")}
    for p in parts:
        label, part = p.label, p.rules
        for name, mobiles in part.receivers.items():
            if claim("receivers", name, label):
                receivers[name] = list(dict.fromkeys(mobiles))
        for name, tpl in part.templates.items():
            if claim("templates", name, label):
                templates[name] = tpl
        for i, ti in enumerate(part.time_intervals):
            if claim("time_intervals", ti.name, label):
                intervals[ti.name] = ti
            elif not folder:
                problems[-1] = f"time_intervals[{i}].name: {ti.name!r} defined twice"
        if part.limits is not None:
            if limits is not None:
                problems.append(f"{label}: limits: already set in {origin[('limits', '')]}"
                                " (limits may come from one file only)")
            else:
                limits = part.limits
                origin[("limits", "")] = label
        if part.max_var_len is not None:
            if max_var_len is not None:
                problems.append(f"{label}: max_var_len: already set in "
                                f"{origin[('max_var_len', '')]}")
            else:
                max_var_len = part.max_var_len
                origin[("max_var_len", "")] = label
        routes.extend((label, p.route_index[i], r) for i, r in enumerate(part.routes))

    renderer = Renderer(tz)
    compiled: dict[str, dict[str, JinjaTemplate]] = {}
    for name, tpl in templates.items():
        label = origin[("templates", name)]
        compiled[name] = {}
        for var, source in tpl.vars.items():
            try:
                compiled[name][var] = renderer.compile(source)
            except ValueError as exc:
                problems.append(f"{pre(label)}templates.{name}.vars.{var}: {exc}")

    limits = limits or Limits()
    templates_known = set(templates) | known["templates"]
    if limits.storm is not None and limits.storm.template not in templates_known:
        problems.append(f"{pre(origin[('limits', '')])}limits.storm.template: unknown template "
                        f"{limits.storm.template!r}")

    if not routes and not any(p.raw_routes for p in parts):
        problems.append("routes: no routes: no alert would ever page anyone")
    names: dict[str, str] = {}
    for label, i, route in routes:
        where = f"{pre(label)}routes[{i}]"
        if route.name is not None:
            if route.name in names:
                problems.append(f"{where}.name: {route.name!r} is also the name of "
                                f"{names[route.name]}")
            names.setdefault(route.name, where)
        if not route.receivers and route.mobiles_from is None:
            problems.append(f"{where}.receiver: a route needs a receiver or mobiles_from")
        for r in route.receivers:
            if r not in receivers and r not in known["receivers"]:
                problems.append(f"{where}.receiver: unknown receiver {r!r}")
        for key in ("template", "resolved_template"):
            t = getattr(route, key)
            if t is not None and t not in templates_known:
                problems.append(f"{where}.{key}: unknown template {t!r}")
        for key in ("mute_time_intervals", "active_time_intervals"):
            for j, ti_name in enumerate(getattr(route, key)):
                if ti_name not in intervals and ti_name not in known["time_intervals"]:
                    problems.append(f"{where}.{key}[{j}]: unknown time interval {ti_name!r}")
    if problems:
        return problems, None
    return [], RuleSet(
        receivers=receivers, templates=templates, time_intervals=intervals, limits=limits,
        max_var_len=max_var_len or DEFAULT_MAX_VAR_LEN, routes=[r for _, _, r in routes],
        route_names=[r.name or f"routes[{n}]" for n, (_, _, r) in enumerate(routes)],
        compiled=compiled, renderer=renderer, files=[p.label for p in parts],
        version=version,
    )
