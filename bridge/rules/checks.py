"""Checks of the rules beyond their structure: how templates use ``ack_code`` and the names an
alert provides, escalation steps against ``min_gap``, duplicate YAML keys, and problems told
in the bridge's own words (docs/rules.md, "Checks"; docs/oncall.md, "Ack codes").

Pure: each function takes what it checks and returns problems or warnings as text, without
their place prefix unless it says otherwise.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

import yaml
from jinja2 import Environment, TemplateSyntaxError, meta, nodes

#: What a route's or an escalation step's template sees (docs/rules.md, "Templates and their
#: variables"): the alert (``bridge.rules.render.alert_context``), ``escalation``, ``ack_code``
#: and ``person``.
ALERT_NAMES = frozenset({
    "labels", "annotations", "status", "starts_at", "ends_at", "fingerprint", "source",
    "generator_url", "values", "receiver", "external_url", "common_labels", "group_labels",
    "escalation", "ack_code", "person",
})
#: What a heartbeat's templates see besides an alert's names (docs/heartbeats.md, Going
#: missing).
HEARTBEAT_NAMES = frozenset({"name", "expect", "last_seen"})
#: What a shift notice's template sees (docs/oncall.md, "Shift notices").
NOTICE_NAMES = frozenset({"person", "schedule", "start", "end", "next"})
#: What the storm template sees (docs/rules.md, "Storms").
STORM_NAMES = frozenset({"count", "firing", "resolved", "alertnames", "mobile", "window_start",
                         "window_end"})

# -- ack_code ----------------------------------------------------------------------------------

#: Blocks whose output is changed or kept aside before it reaches the SMS.
_ENCLOSING = {nodes.FilterBlock: "putting it inside a {% filter %} block",
              nodes.AssignBlock: "putting it inside a {% set %} block",
              nodes.Macro: "putting it inside a macro",
              nodes.CallBlock: "putting it inside a {% call %} block"}


def _use(parent: nodes.Node, child: nodes.Node) -> str:
    """What ``parent`` does with ``ack_code`` (its child ``child``), in words."""
    if isinstance(parent, nodes.Filter):
        return (f"the filter {parent.name!r} on it" if parent.node is child
                else f"passing it to the filter {parent.name!r}")
    if isinstance(parent, nodes.Getitem):
        return "a slice or index of it" if parent.node is child else "indexing with it"
    if isinstance(parent, nodes.Getattr):
        return f"the attribute or method .{parent.attr} of it"
    if isinstance(parent, nodes.Call):
        return "calling it" if parent.node is child else "passing it to a call"
    if isinstance(parent, nodes.Test):
        return f"the test 'is {parent.name}' on it"
    if isinstance(parent, nodes.BinExpr | nodes.UnaryExpr | nodes.Concat | nodes.Compare
                  | nodes.Operand):
        return "an operator on it"
    if isinstance(parent, nodes.CondExpr | nodes.If):
        return "a condition on it"
    if isinstance(parent, nodes.For):
        return "a loop over it"
    if isinstance(parent, nodes.Assign | nodes.Keyword | nodes.Pair | nodes.Tuple
                  | nodes.List | nodes.Dict):
        return "giving it another name or putting it in a collection"
    return f"this use of it ({type(parent).__name__})"


def _misuse(name: nodes.Name, parents: list[nodes.Node]) -> str | None:
    """Why this occurrence of ``ack_code`` does not put it in as it is, or ``None``."""
    if name.ctx != "load":
        return "assigning to it"
    child: nodes.Node = name
    i = len(parents) - 1
    cond = parents[i]
    while isinstance(cond, nodes.CondExpr) and child is not cond.test:
        child, i = cond, i - 1  # either branch of `a if c else b` puts it in as it is
        cond = parents[i]
    if not isinstance(parents[i], nodes.Output):
        return _use(parents[i], child)
    for p in parents[:i]:
        for kind, where in _ENCLOSING.items():
            if isinstance(p, kind):
                return where
    return None


def ack_code_problems(env: Environment, source: str) -> list[str]:
    """Each place where one variable's ``source`` does anything to ``ack_code`` but put it in
    as it is (``{{ ack_code }}``, with any text around it, or a branch of ``a if c else b``):
    a filter, slice, method, operator, test, loop, assignment or an enclosing filter/set
    block would turn the code the record step fills in into something nobody can
    acknowledge with (docs/oncall.md, "Ack codes"). Syntax errors give no problem here (the
    compile step reports them)."""
    try:
        tree = env.parse(source)
    except TemplateSyntaxError:
        return []
    problems: list[str] = []

    def walk(node: nodes.Node, parents: list[nodes.Node]) -> None:
        if isinstance(node, nodes.Name) and node.name == "ack_code":
            why = _misuse(node, parents)
            if why is not None:
                problems.append(f"ack_code goes in as it is ({{{{ ack_code }}}}); {why} would "
                                f"send a code nobody can acknowledge with (line {node.lineno})")
        for child in node.iter_child_nodes():
            walk(child, [*parents, node])

    walk(tree, [])
    return list(dict.fromkeys(problems))


# -- names no alert provides -------------------------------------------------------------------

def unknown_names(env: Environment, source: str, provided: Iterable[str]) -> list[str]:
    """The names ``source`` reads that neither ``provided`` nor the environment's globals
    (``range``, ...) give, sorted; such a name renders empty (e.g. a misspelt ``ack_url``)."""
    try:
        read = meta.find_undeclared_variables(env.parse(source))
    except TemplateSyntaxError:
        return []
    return sorted(read - set(provided) - set(env.globals))


def unknown_name_warnings(env: Environment, templates: Mapping[str, Mapping[str, str]],
                          storm: str | None, routed: set[str],
                          beating: frozenset[str] | set[str] = frozenset(),
                          noticed: frozenset[str] = frozenset()) -> list[str]:
    """``templates.NAME.vars.VAR: ...`` for every name a variable reads that its template's
    users do not provide: routes and escalation steps give :data:`ALERT_NAMES`, the storm
    template (``storm``) :data:`STORM_NAMES`; a template both use gets either; ``routed``
    are the templates routes or steps name; ``beating`` those heartbeats name, which also
    see :data:`HEARTBEAT_NAMES`; ``noticed`` those schedules' ``notify`` names
    (:data:`NOTICE_NAMES`). A template none of them names is not checked (what it sees
    depends on its user). ``templates`` maps a template's name to its variables' sources."""
    out: list[str] = []
    for name, variables in templates.items():
        provided: set[str] = set()
        if name == storm:
            provided |= STORM_NAMES
        if name in routed:
            provided |= ALERT_NAMES
        if name in beating:
            provided |= ALERT_NAMES | HEARTBEAT_NAMES
        if name in noticed:
            provided |= NOTICE_NAMES
        if not provided:
            continue
        for var, source in variables.items():
            for unknown in unknown_names(env, source, provided):
                out.append(f"templates.{name}.vars.{var}: {unknown!r} is not a name "
                           f"{_user(name, storm, noticed - routed - set(beating))} "
                           f"provides: it renders empty (provided: "
                           f"{', '.join(sorted(provided))})")
    return out


def _user(name: str, storm: str | None, only_noticed: Iterable[str]) -> str:
    """Who gives a template its names, for a warning (``only_noticed``: the templates only
    shift notices use)."""
    if name == storm:
        return "the storm template"
    return "a shift notice" if name in only_noticed else "an alert"


# -- escalation against min_gap -----------------------------------------------------------------

def step_gap_warning(where: str, index: int, after: float, min_gap: float) -> str | None:
    """A warning for escalation step ``index`` of the route at ``where`` when its ``after``
    (seconds) is shorter than ``min_gap`` (seconds): the step pages the next person before the
    first one could be paged again, so they get less time to acknowledge than SMS to one mobile
    are apart (docs/oncall.md, "Escalation")."""
    if after >= min_gap:
        return None
    return (f"{where}.escalate[{index}].after: {after:g}s is shorter than min_gap "
            f"({min_gap:g}s): the step pages the next person before the first could even be "
            f"paged again; give the first person at least min_gap to acknowledge")


# -- duplicate keys -------------------------------------------------------------------------------

class DuplicateKeyLoader(yaml.SafeLoader):
    """A safe loader that notes every key written twice in one mapping (PyYAML keeps the last
    silently): ``duplicates`` holds ``(key, first line, second line)``, lines 1-based. Keys a
    merge (``<<: *anchor``) brings in may be overridden, as YAML intends."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.duplicates: list[tuple[str, int, int]] = []

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        """The mapping, noting duplicate keys (see the class); as SafeLoader otherwise."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        self.duplicates.append((str(key), seen[key], line))
                    else:
                        seen[key] = line
                except TypeError:
                    continue  # an unhashable key: SafeLoader refuses it itself
        return super().construct_mapping(node, deep=deep)


def duplicate_problems(duplicates: list[tuple[str, int, int]]) -> list[str]:
    """Problems for :attr:`DuplicateKeyLoader.duplicates` (without a file prefix)."""
    return [f"line {second}: key {key!r} is written twice in one mapping (first on line "
            f"{first}): the second would silently replace the first"
            for key, first, second in sorted(duplicates, key=lambda d: (d[2], d[1]))]


# -- pydantic's messages in the bridge's words -----------------------------------------------------

def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"{str(value).lower()}"
    if isinstance(value, int | float):
        return f"the number {_number(value)}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


#: What one entry of a list is, by the list's field name, for "needs at least 1 ...".
_ENTRIES = {"members": "member (a person's name, or a list of names sharing the shift)",
            "people": "person", "escalate": "step", "matchers": "matcher"}


def own_words(err: Mapping[str, Any]) -> str:
    """One pydantic error (``ValidationError.errors()`` item) in the bridge's words, naming
    what is expected; a message the bridge's own validators wrote is kept as it is."""
    kind, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    got = _kind(value)
    words = {
        "missing": "missing: this field is required",
        "extra_forbidden": "unknown field",
        "too_short": f"needs at least {ctx.get('min_length')} "
                     f"{_ENTRIES.get(str(err['loc'][-1]), 'entry')}, has none",
        "too_long": f"takes at most {ctx.get('max_length')} entries",
        "greater_than": f"must be greater than {_number(ctx.get('gt'))}, got {got}",
        "greater_than_equal": f"must be at least {_number(ctx.get('ge'))}, got {got}",
        "less_than": f"must be less than {_number(ctx.get('lt'))}, got {got}",
        "less_than_equal": f"must be at most {_number(ctx.get('le'))}, got {got}",
        "int_parsing": f"expected a whole number, got {got}",
        "int_type": f"expected a whole number, got {got}",
        "int_from_float": f"expected a whole number, got {got}",
        "float_parsing": f"expected a number, got {got}",
        "float_type": f"expected a number, got {got}",
        "string_type": f"expected text, got {got}",
        "bool_type": f"expected true or false, got {got}",
        "bool_parsing": f"expected true or false, got {got}",
        "list_type": f"expected a list, got {got}",
        "dict_type": f"expected a mapping (name: value), got {got}",
        "model_type": f"expected a mapping (field: value), got {got}",
        "model_attributes_type": f"expected a mapping (field: value), got {got}",
    }
    if kind in words:
        return words[kind]
    return str(err["msg"]).removeprefix("Value error, ")


#: How a union's branch (a part of pydantic's error place) reads in an error message.
_BRANCHES = {"str": "text", "list[str]": "a list of text", "int": "a whole number",
             "float": "a number", "none": "nothing", "bool": "true or false"}


def union_words(branches: list[str], value: Any) -> str:
    """One message for a value that fits none of a union's ``branches`` (pydantic's tags,
    e.g. ``["str", "list[str]"]``), e.g. ``expected text or a list of text, got the number 5``."""
    wanted = [_BRANCHES.get(b, b) for b in dict.fromkeys(branches)]
    return f"expected {' or '.join(wanted)}, got {_kind(value)}"


def _model_in(annotation: Any) -> Any:
    """The pydantic model an annotation holds (``list[Route]``, ``Limits | None``,
    ``dict[str, Template]``, ``Annotated[...]``), or ``None``."""
    if hasattr(annotation, "model_fields"):
        return annotation
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType,
                                         typing.Annotated):
        for arg in reversed(args) if typing.get_origin(annotation) is dict else args:
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def fields_at(model: Any, loc: tuple[int | str, ...]) -> list[str]:
    """The fields the model at ``loc`` (a place under ``model``, a pydantic model class)
    accepts, as written (aliases), or ``[]`` when the place holds no model."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if model is not None else None
        if field is None:  # a name in a mapping of models (templates.NAME)
            continue
        model = _model_in(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def unknown_field(name: str, expected: list[str]) -> str:
    """``unknown field`` with a close match and what is expected, e.g. ``unknown field (did
    you mean 'receiver'? expected one of: name, matchers, ...)``."""
    if not expected:
        return "unknown field"
    close = difflib.get_close_matches(name, expected, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown field ({hint}expected one of: {', '.join(expected)})"
